"""grader/report/gradescope.py: Gradescope's results.json, field by field against its spec."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from grader.report.gradescope import gradescope_results, write_gradescope
from grader.results import TaskResult
from grader.rubric import Rubric
from tests.graded import GRADESCOPE_TEST, GRADESCOPE_TOP, GRADESCOPE_VISIBILITY, ci_graded


def test_gradescope_fields_follow_the_spec(cnn_rubric: Rubric, tmp_path: Path) -> None:
    path = write_gradescope(ci_graded(cnn_rubric), tmp_path / "results.json", 41.6, "quick")
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
    assert tests[2]["output"].startswith("partial credit: 25 of 50 points; top-1 accuracy 72.50%")
    assert tests[3]["output"].startswith("not checked on a subset")
    assert data["leaderboard"] == [
        {"name": "Accuracy", "value": 72.5, "order": "desc"},
        {"name": "Parameters", "value": 5370, "order": "asc"},
    ]
    assert data["output"].startswith("55 / 100 points")


def test_gradescope_overview_carries_the_alerts(cnn_rubric: Rubric) -> None:
    result = ci_graded(cnn_rubric)
    result.alerts = ["cnn: the claimed test accuracy 92.00% is 27.00 points above"]
    output = gradescope_results(result, 1.0, "quick")["output"].splitlines()
    assert "Look at this: cnn: the claimed test accuracy 92.00% is 27.00 points above" in output


def test_gradescope_tells_a_stopped_tasks_error_once_in_the_overview(cnn_rubric: Rubric) -> None:
    data = gradescope_results(ci_graded(cnn_rubric, error="weights/model.pt is missing"), 1.0, "quick")
    assert "task cnn stopped at stage weights: weights/model.pt is missing" in data["output"].splitlines()
    outputs = [t["output"] for t in data["tests"]]
    assert outputs[2:4] == ["no evidence: task cnn stopped at stage weights"] * 2
    assert not any("is missing" in o for o in outputs)


def test_gradescope_leaderboard_names_tasks_when_there_are_several(cnn_rubric: Rubric) -> None:
    result = ci_graded(cnn_rubric)
    other = TaskResult("tiny", "Tiny", params=99)
    result.tasks["tiny"] = other
    board = gradescope_results(result, 1.0, "full")["leaderboard"]
    assert [(e["name"], e["value"]) for e in board] == [
        ("Accuracy (cnn)", 72.5), ("Parameters (cnn)", 5370), ("Parameters (tiny)", 99),
    ]  # fmt: skip


def test_gradescope_matches_the_golden_file(
    cnn_rubric: Rubric, tmp_path: Path, golden: Callable[[str, str], None]
) -> None:
    path = write_gradescope(ci_graded(cnn_rubric), tmp_path / "results.json", 41.6, "quick")
    golden("gradescope.json", path.read_text(encoding="utf-8"))
