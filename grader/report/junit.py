"""``junit.xml``: one ``<testcase>`` per rubric item, for CI systems that read JUnit reports.

The layout is Jenkins xUnit's JUnit schema (``junit-10.xsd``, pytest's "xunit2" family), which
GitHub, GitLab and Jenkins all read. That schema has no properties on a test case, so an
item's points travel in its name (``[7.5/10 pts]``); the suite's ``<properties>`` hold the
totals.

  pass                 a passing test
  partial, fail, error ``<failure message=…>`` holding the item's message; a partial score
                       is a failure whose message starts with its points (``ItemResult.outcome``,
                       the rule Gradescope's results.json and the CI summary follow too)
  manual, not_checked  ``<skipped message=…>``: nothing was checked that could fail
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

from grader.files import write_atomic
from grader.report.render import score
from grader.results import GradeResult, ItemResult


def testcase_name(item: ItemResult) -> str:
    """``"3: Test accuracy [37.5/50 pts]"``."""
    return f"{item.id}: {item.title} [{score(item.score)}/{score(item.max_score)} pts]"


def junit_tree(result: GradeResult, seconds: float) -> ET.Element:
    """``<testsuites>`` holding one ``<testsuite>`` (the rubric) for one submission."""
    counts = {
        "tests": str(len(result.items)),
        "failures": str(sum(i.outcome == "failed" for i in result.items)),
        "errors": "0",
        "time": f"{seconds:.3f}",
    }
    root = ET.Element("testsuites", {"name": f"grader ci: {result.rubric}", **counts})
    skipped = str(sum(i.outcome == "skipped" for i in result.items))
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": result.rubric,
            **counts,
            "skipped": skipped,
            "timestamp": _timestamp(result.graded_at),
            "hostname": "grader",
        },
    )
    _properties(
        suite,
        {
            "student_id": result.student_id,
            "score": score(result.total),
            "max_score": score(result.max_total),
            "not_checked": score(result.not_checked),
            "pending_manual": score(result.pending_manual),
            "grader_version": result.grader_version,
        },
    )
    for item in result.items:
        task = result.tasks.get(item.task or "")
        _testcase(suite, item, result.rubric, task.stopped if task else None)
    return root


def _testcase(suite: ET.Element, item: ItemResult, rubric_id: str, stopped: str | None) -> None:
    case = ET.SubElement(
        suite, "testcase", {"classname": item.task or rubric_id, "name": testcase_name(item), "time": "0"}
    )
    message = item.outcome_message
    if item.outcome == "failed":
        failure = ET.SubElement(case, "failure", {"message": message, "type": item.status})
        # A CI page shows one test case at a time: the body says why its task stopped.
        failure.text = f"{message}\n{stopped}" if item.status == "error" and stopped else message
    elif item.outcome == "skipped":
        ET.SubElement(case, "skipped", {"message": item.message})
    else:
        ET.SubElement(case, "system-out").text = item.message


def _properties(parent: ET.Element, values: dict[str, str]) -> None:
    props = ET.SubElement(parent, "properties")
    for name, value in values.items():
        ET.SubElement(props, "property", {"name": name, "value": value})


def _timestamp(iso: str) -> str:
    """JUnit's timestamp has no time zone: ``2026-01-31T12:00:00`` (UTC)."""
    return datetime.fromisoformat(iso).replace(tzinfo=None).isoformat(timespec="seconds")


def write_junit(result: GradeResult, path: Path, seconds: float) -> Path:
    tree = junit_tree(result, seconds)
    ET.indent(tree)
    data = ET.tostring(tree, encoding="utf-8", xml_declaration=True) + b"\n"
    write_atomic(path, data)
    return path
