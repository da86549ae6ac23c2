"""``results.json`` in Gradescope's autograder format, one test per rubric item.

Gradescope reads ``score`` (the submission's total), ``execution_time`` (seconds),
``output``, ``visibility``, ``stdout_visibility``, ``extra_data``, ``tests`` and
``leaderboard``. Each test carries ``name``, ``number``, ``score``, ``max_score``,
``status`` (``passed``/``failed``), ``output``, ``tags`` and ``visibility``. The format
has no top-level maximum, so the rubric's total goes in ``extra_data.max_score``.

Only full points pass: a partial score is ``failed``, its output starting with its points
(``ItemResult.outcome``, the rule junit.xml and the CI summary follow too). Items a grading
left out (``manual``, ``not_checked``) are listed with score 0 and no status, their output
saying why; the leaderboard has each task's accuracy (higher is
better) and parameter count (lower is better).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grader.files import write_atomic
from grader.results import GradeResult, ItemResult

VISIBILITY = "visible"  # students see their feedback as soon as the autograder finishes


def gradescope_results(result: GradeResult, seconds: float, profile: str) -> dict[str, Any]:
    return {
        "score": result.total,
        "execution_time": round(seconds),
        "output": _overview(result, profile),
        "visibility": VISIBILITY,
        "stdout_visibility": "hidden",
        "extra_data": {
            "max_score": result.max_total,
            "not_checked": result.not_checked,
            "pending_manual": result.pending_manual,
            "profile": profile,
            "rubric": result.rubric,
            "student_id": result.student_id,
            "grader_version": result.grader_version,
        },
        "tests": [_test(item) for item in result.items],
        "leaderboard": leaderboard(result),
    }


def _test(item: ItemResult) -> dict[str, Any]:
    test: dict[str, Any] = {
        "name": f"{item.id}: {item.title}",
        "number": item.id,
        "score": item.score,
        "max_score": item.max_score,
        "output": item.outcome_message,
        "tags": [item.task] if item.task else [],
        "visibility": VISIBILITY,
    }
    if item.outcome != "skipped":
        test["status"] = item.outcome
    return test


def leaderboard(result: GradeResult) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    many = len(result.tasks) > 1
    for task in result.tasks.values():
        suffix = f" ({task.id})" if many else ""
        if task.test_accuracy is not None:
            entries.append({"name": f"Accuracy{suffix}", "value": task.test_accuracy, "order": "desc"})
        if task.params is not None:
            entries.append({"name": f"Parameters{suffix}", "value": task.params, "order": "asc"})
    return entries


def _overview(result: GradeResult, profile: str) -> str:
    lines = [f"{result.total:g} / {result.max_total:g} points ({result.rubric_title}; profile {profile})"]
    if result.not_checked:
        lines.append(f"{result.not_checked:g} points not checked here; the full grading scores them")
    if result.pending_manual:
        lines.append(f"{result.pending_manual:g} points pending TA review")
    lines += [t.stopped for t in result.tasks.values() if t.stopped]
    lines += [f"Look at this: {alert}" for alert in result.alerts]
    lines += result.warnings
    return "\n".join(lines)


def write_gradescope(result: GradeResult, path: Path, seconds: float, profile: str) -> Path:
    text = json.dumps(gradescope_results(result, seconds, profile), indent=2, ensure_ascii=False) + "\n"
    write_atomic(path, text.encode("utf-8"))
    return path
