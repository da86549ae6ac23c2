"""The class-level outputs of a batch, rebuilt from stored results after every run.

OUT/gradebook.csv (+ canvas.csv, moodle.csv), OUT/class_report.{html,pdf} and OUT/index.html
cover the students of the last run's rows: graded now, unchanged from before, or failed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from grader.batch.records import Row
from grader.overrides import Override
from grader.report import Failure, find_similar, gradebook, write_class_report, write_gradebooks, write_index
from grader.report.stored import load_stored, reapply_overrides
from grader.rubric import Rubric

SUMMARY = "batch.json"


def write_class_outputs(
    out: Path,
    rubric: Rubric,
    rows: list[Row],
    overrides: list[Override],
    test_images: np.ndarray | None,
    force: bool = False,
) -> list[str]:
    """Apply the overrides, then write the gradebooks, class report and index.
    Returns the students whose results.json and PDF were rewritten."""
    sources = {r.student_id: Path(r.source) for r in rows if r.status != "failed"}
    failures = [Failure(r.student_id, r.reason) for r in rows if r.status == "failed"]
    results, unreadable = load_stored(out, set(sources))
    failures += [Failure(student_id, reason) for student_id, reason in unreadable.items()]
    folders = {student_id: path for student_id, path in sources.items() if str(path) != "."}
    rewritten = reapply_overrides(out, results, overrides, test_images, force, folders)
    graded = [results[s] for s in sorted(results)]
    write_gradebooks(gradebook(graded, rubric, failures), out)
    flags = find_similar([(sources[r.student_id], r) for r in graded])
    write_class_report(graded, failures, rubric, out, flags)
    write_index(graded, failures, out)
    return rewritten


def last_rows(out: Path) -> list[Row]:
    """The rows of the last batch run in ``out``; without one, a row per stored result."""
    try:
        data = json.loads((out / SUMMARY).read_text(encoding="utf-8"))
        return [Row(**row) for row in data["rows"]]
    except (OSError, ValueError, KeyError, TypeError):
        return [Row(p.parent.name, "", "graded") for p in sorted(out.glob("*/results.json"))]
