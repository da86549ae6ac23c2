"""grader/report/junit.py: junit.xml against Jenkins xUnit's schema, points and outcomes, escaping."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lxml import etree

from grader.report.junit import write_junit
from grader.rubric import Rubric
from tests.conftest import junit_schema
from tests.graded import ci_graded


def test_junit_is_valid_and_carries_points_and_outcomes(cnn_rubric: Rubric, tmp_path: Path) -> None:
    result = ci_graded(cnn_rubric)
    result.items[4].task = None  # a manual item of no task is filed under the rubric
    path = write_junit(result, tmp_path / "junit.xml", 12.3456)
    doc = etree.parse(str(path))
    junit_schema().assertValid(doc)
    suite = doc.getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped"), suite.get("time")) == (
        "5", "1", "2", "12.346",
    )  # fmt: skip
    assert suite.get("timestamp") == "2026-01-31T12:00:00"
    suite_props = {p.get("name"): p.get("value") for p in suite.findall("properties/property")}
    assert (suite_props["score"], suite_props["max_score"], suite_props["not_checked"]) == ("55", "100", "10")
    cases = suite.findall("testcase")
    assert [c.get("classname") for c in cases] == ["cnn"] * 4 + ["cifar10-cnn"]
    assert cases[2].get("name") == "3: Test accuracy (full points at 85%) [25/50 pts]"
    assert [c.find("properties") for c in cases] == [None] * 5  # xunit2 has none on a test case
    # Only full points pass: 25 of 50 is a failure saying its points, as in Gradescope's results.json.
    partial = cases[2].find("failure")
    assert partial is not None and partial.get("type") == "partial"
    assert partial.get("message", "").startswith("partial credit: 25 of 50 points; top-1 accuracy 72.50%")
    assert cases[2].find("system-out") is None
    skipped = cases[3].find("skipped")
    assert skipped is not None and skipped.get("message", "").startswith("not checked on a subset")
    assert cases[4].find("skipped") is not None


def test_junit_failure_holds_the_item_message(cnn_rubric: Rubric, tmp_path: Path) -> None:
    result = ci_graded(cnn_rubric, params=1_000_123)
    path = write_junit(result, tmp_path / "junit.xml", 1.0)
    doc = etree.parse(str(path))
    junit_schema().assertValid(doc)
    failure = doc.find(".//testcase[2]/failure")
    assert failure is not None and failure.get("type") == "fail"
    message = "1,000,123 parameters, over the limit of 1,000,000 by 123"
    assert failure.get("message") == message == failure.text == result.items[1].message
    assert doc.getroot().get("failures") == "2"  # the parameters, and accuracy's partial credit


def test_junit_escapes_what_a_student_wrote(cnn_rubric: Rubric, tmp_path: Path) -> None:
    nasty = 'weights/<model>.pt & "quotes" ]]> \u00e9'
    path = write_junit(ci_graded(cnn_rubric, error=nasty), tmp_path / "junit.xml", 1.0)
    doc = etree.parse(str(path))
    junit_schema().assertValid(doc)
    failures = doc.findall(".//failure")
    assert len(failures) == 2  # the model built and was counted; accuracy and claim lack evidence
    assert failures[0].get("message") == "no evidence: task cnn stopped at stage weights"
    stopped = f"task cnn stopped at stage weights: {nasty}"
    assert failures[0].text == f"no evidence: task cnn stopped at stage weights\n{stopped}"


def test_junit_matches_the_golden_file(
    cnn_rubric: Rubric, tmp_path: Path, golden: Callable[[str, str], None]
) -> None:
    path = write_junit(ci_graded(cnn_rubric, params=1_000_123), tmp_path / "junit.xml", 12.5)
    golden("junit.xml", path.read_text(encoding="utf-8"))
