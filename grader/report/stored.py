"""Reports again from stored results: no model runs, only results.json files are read.

``grader report`` uses this after a TA edits the overrides file: every student's
results.json gets the overrides applied afresh (starting from the grader's own scores),
and the PDFs of students whose scores changed are drawn again. Their appendix shows the
student's code when the submission folder is still there, unchanged since its grading.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from grader.errors import GraderError
from grader.overrides import Override, apply_overrides
from grader.report.render import write_report
from grader.report.results_json import write_results_json
from grader.results import GradeResult
from grader.submission import content_hash

RESULTS = "results.json"


def load_stored(out_dir: Path, only: set[str] | None = None) -> tuple[dict[str, GradeResult], dict[str, str]]:
    """Every OUT/<student_id>/results.json (or those of ``only``), by student id, and the
    reasons the unreadable ones could not be read back."""
    found: dict[str, GradeResult] = {}
    problems: dict[str, str] = {}
    for path in sorted(out_dir.glob(f"*/{RESULTS}")):
        student_id = path.parent.name
        if only is not None and student_id not in only:
            continue
        try:
            found[student_id] = GradeResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
            problems[student_id] = (
                f"{path} cannot be read back ({type(err).__name__}: {err}); "
                f"grade the student again (run-all --only {student_id} --force)"
            )
    return found, problems


def reapply_overrides(
    out_dir: Path,
    results: dict[str, GradeResult],
    overrides: list[Override],
    test_images: np.ndarray | None,
    force: bool = False,
    sources: Mapping[str, Path] | None = None,
) -> list[str]:
    """Apply ``overrides`` to each stored result; rewrite results.json and the PDF where
    scores changed (every one with ``force``). ``sources`` are the submission folders by
    student id, for the PDFs' appendix of code. Returns the students rewritten."""
    rewritten = []
    for student_id, result in results.items():
        before = _scores(result)
        apply_overrides(result, overrides)
        if force or _scores(result) != before:
            target = out_dir / student_id
            write_results_json(result, target / RESULTS)
            write_report(result, target, test_images, as_graded((sources or {}).get(student_id), result))
            rewritten.append(student_id)
    return rewritten


def as_graded(folder: Path | None, result: GradeResult) -> Path | None:
    """``folder`` when it still holds the submission ``result`` graded (same content hash)."""
    if folder is None or not folder.is_dir():
        return None
    try:
        same = content_hash(folder.resolve()) == result.submission_sha256
    except (GraderError, OSError):
        return None
    return folder.resolve() if same else None


def _scores(result: GradeResult) -> list[tuple[str, float, str, str | None]]:
    return [(i.id, i.score, i.message, i.override.by if i.override else None) for i in result.items]
