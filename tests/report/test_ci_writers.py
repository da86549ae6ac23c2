"""The CI outputs of one graded submission: JUnit XML, Gradescope JSON, Markdown summary.

The result is scored by the real scoring code from hand-made measurements under
rubrics/cifar10-cnn.yaml, so the numbers are known:

  item 1 model_valid    10/10 pass
  item 2 params_limit   20/20 pass (5,370 of 1,000,000)
  item 3 test_accuracy  25/50 partial (72.5% on the subset; 60% → 0, 85% → full)
  item 4 claim          0/10 not_checked (accuracy measured on a subset)
  item 5 manual         0/10 manual
  total 55/100, 10 points not checked, 10 pending
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree

from grader.ci import CiRun, policy_problems, publish, resolve_profile
from grader.errors import UsageError
from grader.report.gradebook import gradebook
from grader.report.gradescope import gradescope_results, write_gradescope
from grader.report.junit import write_junit
from grader.report.summary import cell, markdown_summary
from grader.results import Evaluation, GradeResult, TaskResult
from grader.rubric import Rubric, find_rubric, load_rubric
from grader.scoring import score_all
from tests.conftest import junit_schema

# Gradescope's autograder results format: the keys it reads at the top and per test.
GRADESCOPE_TOP = {
    "score", "execution_time", "output", "output_format", "test_output_format", "test_name_format",
    "visibility", "stdout_visibility", "extra_data", "tests", "leaderboard",
}  # fmt: skip
GRADESCOPE_TEST = {
    "score", "max_score", "status", "name", "name_format", "number", "output", "output_format",
    "tags", "visibility", "extra_data",
}  # fmt: skip
GRADESCOPE_VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}


@pytest.fixture(scope="module")
def cnn_rubric() -> Rubric:
    return load_rubric(find_rubric("cifar10-cnn"))


def graded(
    rubric: Rubric, params: int = 5370, accuracy: float = 72.5, error: str | None = None
) -> GradeResult:
    task = TaskResult(
        "cnn",
        "CIFAR-10 CNN",
        model="model.py:Net",
        weights="weights/model.pt",
        params=params,
        trainable_params=params,
        macs={"thop": 259_072, "ptflops": 283_658},
        module_counts={"Conv2d": 1},
        forward_ok=True,
        weights_loaded=True,
        claimed_test_accuracy=85.0,
        limits={"params": 1_000_000},
        evaluation=Evaluation(1000, accuracy, 90.0, {}, [], [], subset_per_class=100),
    )
    if error:
        task.fail("weights", error)
        task.evaluation = None
    result = GradeResult(
        "B000000001", "Test Student", rubric.id, rubric.title, "0" * 64, "0.1.0",
        "2026-01-31T12:00:00+00:00", "cpu", {"backend": "bwrap"}, {"cnn": task},
    )  # fmt: skip
    result.items = score_all(rubric, result.tasks)
    return result


def test_scores_of_the_sample_result(cnn_rubric: Rubric) -> None:
    result = graded(cnn_rubric)
    assert [(i.score, i.status) for i in result.items] == [
        (10, "pass"), (20, "pass"), (25, "partial"), (0, "not_checked"), (0, "manual"),
    ]  # fmt: skip
    assert (result.total, result.max_total, result.not_checked, result.pending_manual) == (55, 100, 10, 10)
    assert "first 100 test images of each class" in result.items[2].message
    assert result.to_dict()["not_checked"] == 10
    assert GradeResult.from_dict(result.to_dict()).items == result.items


def test_junit_is_valid_and_carries_points_and_outcomes(cnn_rubric: Rubric, tmp_path: Path) -> None:
    result = graded(cnn_rubric)
    result.items[4].task = None  # a manual item of no task is filed under the rubric
    path = write_junit(result, tmp_path / "junit.xml", 12.3456)
    doc = etree.parse(str(path))
    junit_schema().assertValid(doc)
    suite = doc.getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped"), suite.get("time")) == (
        "5", "0", "2", "12.346",
    )  # fmt: skip
    assert suite.get("timestamp") == "2026-01-31T12:00:00"
    suite_props = {p.get("name"): p.get("value") for p in suite.findall("properties/property")}
    assert (suite_props["score"], suite_props["max_score"], suite_props["not_checked"]) == ("55", "100", "10")
    cases = suite.findall("testcase")
    assert [c.get("classname") for c in cases] == ["cnn"] * 4 + ["cifar10-cnn"]
    assert cases[2].get("name") == "3: Test accuracy (full points at 85%) [25/50 pts]"
    assert [c.find("properties") for c in cases] == [None] * 5  # xunit2 has none on a test case
    assert cases[2].find("failure") is None and "72.50%" in (cases[2].findtext("system-out") or "")
    skipped = cases[3].find("skipped")
    assert skipped is not None and skipped.get("message", "").startswith("not checked on a subset")
    assert cases[4].find("skipped") is not None


def test_junit_failure_holds_the_item_message(cnn_rubric: Rubric, tmp_path: Path) -> None:
    result = graded(cnn_rubric, params=1_000_123)
    path = write_junit(result, tmp_path / "junit.xml", 1.0)
    doc = etree.parse(str(path))
    junit_schema().assertValid(doc)
    failure = doc.find(".//testcase[2]/failure")
    assert failure is not None and failure.get("type") == "fail"
    message = "1,000,123 parameters, over the limit of 1,000,000 by 123"
    assert failure.get("message") == message == failure.text == result.items[1].message
    assert doc.getroot().get("failures") == "1"


def test_junit_escapes_what_a_student_wrote(cnn_rubric: Rubric, tmp_path: Path) -> None:
    nasty = 'weights/<model>.pt & "quotes" ]]> \u00e9'
    path = write_junit(graded(cnn_rubric, error=nasty), tmp_path / "junit.xml", 1.0)
    doc = etree.parse(str(path))
    junit_schema().assertValid(doc)
    failures = doc.findall(".//failure")
    assert len(failures) == 2  # the model built and was counted; accuracy and claim lack evidence
    assert failures[0].get("message") == f"{nasty} (stage: weights)"


def test_gradescope_fields_follow_the_spec(cnn_rubric: Rubric, tmp_path: Path) -> None:
    path = write_gradescope(graded(cnn_rubric), tmp_path / "results.json", 41.6, "quick")
    data = json.loads(path.read_text())
    assert set(data) <= GRADESCOPE_TOP
    assert data["score"] == 55 and data["execution_time"] == 42
    assert data["visibility"] in GRADESCOPE_VISIBILITY and data["stdout_visibility"] in GRADESCOPE_VISIBILITY
    assert data["extra_data"]["max_score"] == 100 and data["extra_data"]["profile"] == "quick"
    tests = data["tests"]
    assert all(set(t) <= GRADESCOPE_TEST and t["visibility"] in GRADESCOPE_VISIBILITY for t in tests)
    assert [(t["number"], t["score"], t["max_score"], t.get("status")) for t in tests] == [
        ("1", 10, 10, "passed"), ("2", 20, 20, "passed"), ("3", 25, 50, "failed"),
        ("4", 0, 10, None), ("5", 0, 10, None),
    ]  # fmt: skip
    assert sum(t["score"] for t in tests) == data["score"]
    assert sum(t["max_score"] for t in tests) == data["extra_data"]["max_score"]
    assert tests[0]["name"] == "1: The model builds and classifies a CIFAR-10 image"
    assert tests[3]["output"].startswith("not checked on a subset")
    assert data["leaderboard"] == [
        {"name": "Accuracy", "value": 72.5, "order": "desc"},
        {"name": "Parameters", "value": 5370, "order": "asc"},
    ]
    assert data["output"].startswith("55 / 100 points")


def test_gradescope_leaderboard_names_tasks_when_there_are_several(cnn_rubric: Rubric) -> None:
    result = graded(cnn_rubric)
    other = TaskResult("tiny", "Tiny", params=99)
    result.tasks["tiny"] = other
    board = gradescope_results(result, 1.0, "full")["leaderboard"]
    assert [(e["name"], e["value"]) for e in board] == [
        ("Accuracy (cnn)", 72.5), ("Parameters (cnn)", 5370), ("Parameters (tiny)", 99),
    ]  # fmt: skip


def test_summary_has_the_score_table_limits_and_accuracy(cnn_rubric: Rubric) -> None:
    result = graded(cnn_rubric)
    result.warnings = ["a | pipe\nand a <b>tag</b>"]
    text = markdown_summary(result, "quick", [])
    assert "**55 / 100 points** (profile `quick`)" in text
    assert "- 10 points not checked in CI; the full grading scores them" in text
    assert "✅ **CI check passed**" in text
    assert "| 2 | cnn | At most 1,000,000 parameters | 20 / 20 | ✅ pass |" in text
    assert "| 3 | cnn | Test accuracy (full points at 85%) | 25 / 50 | 🟡 partial |" in text
    assert "| 4 | cnn | Reported test accuracy matches the measured one | 0 / 10 | ⏭️ not checked |" in text
    assert "| **Total** | | | **55 / 100** | | |" in text
    assert "| cnn | parameters | 5,370 | 1,000,000 | ✅ yes |" in text
    assert "| cnn | MACs (thop) | 259,072 | — | — |" in text
    assert "| cnn | 72.50% | 90.00% | 1,000 (first 100 per class) | 85.00% |" in text
    assert "- ⚠️ a \\| pipe and a &lt;b&gt;tag&lt;/b&gt;" in text


def test_summary_lists_why_the_check_failed(cnn_rubric: Rubric) -> None:
    result = graded(cnn_rubric, params=2_000_000)
    problems = policy_problems(result, "limits")
    text = markdown_summary(result, "quick", problems)
    assert "❌ **CI check failed**" in text
    assert "- item 2 (At most 1,000,000 parameters): 2,000,000 parameters, over the limit" in text
    assert "| cnn | parameters | 2,000,000 | 1,000,000 | ❌ no |" in text


def test_cell_keeps_a_table_row_on_one_line() -> None:
    assert cell("a|b\n\nc  d") == "a\\|b c d"


def test_policy_levels(cnn_rubric: Rubric) -> None:
    fine, over, broken = (
        graded(cnn_rubric),
        graded(cnn_rubric, params=2_000_000),
        graded(cnn_rubric, error="weights/model.pt is missing"),
    )
    low = graded(cnn_rubric, accuracy=50.0)  # item 3 fails, no limit broken
    assert [len(policy_problems(r, "limits")) for r in (fine, over, broken, low)] == [0, 1, 1, 0]
    assert [len(policy_problems(r, "load")) for r in (fine, over, broken, low)] == [0, 0, 1, 0]
    assert [len(policy_problems(r, "any")) for r in (fine, over, broken, low)] == [0, 1, 3, 1]
    assert [len(policy_problems(r, "never")) for r in (fine, over, broken, low)] == [0, 0, 0, 0]
    assert policy_problems(broken, "load") == ["task cnn stopped at weights: weights/model.pt is missing"]


def test_publish_appends_summary_and_step_outputs(cnn_rubric: Rubric, tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.md"
    summary_file.write_text("# earlier step\n")
    (tmp_path / "out.md").write_text("the summary\n")
    run = CiRun(graded(cnn_rubric), "quick", 3.0, {"summary": tmp_path / "out.md"}, ["a problem"])
    env = {"GITHUB_STEP_SUMMARY": str(summary_file), "GITHUB_OUTPUT": str(tmp_path / "outputs")}
    printed: list[str] = []
    publish(run, env, printed.append)
    assert printed == []  # not on GitHub Actions: no workflow command
    publish(run, {"GITHUB_ACTIONS": "true"}, printed.append)
    assert printed == ["::notice title=Autograding complete::Points 55/100"]
    assert summary_file.read_text() == "# earlier step\nthe summary\n"
    outputs = (tmp_path / "outputs").read_text().splitlines()
    assert outputs == ["score=55", "max-score=100", "profile=quick", "passed=false"]


def test_profiles() -> None:
    assert resolve_profile("auto", "cpu") == "quick"
    assert resolve_profile("auto", "cuda") == "full"
    assert resolve_profile("full", "cpu") == "full"
    with pytest.raises(UsageError, match="--profile 'fast'"):
        resolve_profile("fast", "cpu")


def test_not_checked_cells_stay_empty_in_the_gradebook(cnn_rubric: Rubric) -> None:
    rows = gradebook([graded(cnn_rubric)], cnn_rubric)
    row = rows.iloc[0]
    assert row["3"] == 25 and row["4"] != row["4"]  # NaN: not scored yet
    assert row["status"] == "pending review"
