"""``index.html``: one static page in the output folder linking every student's report.

All links are relative, so the folder can be copied, zipped or served as it is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from grader.files import write_atomic
from grader.report.gradebook import Failure, student_status
from grader.report.render import environment
from grader.results import GradeResult

CLASS_FILES = (
    ("Class report (PDF)", "class_report.pdf"),
    ("Class report (HTML)", "class_report.html"),
    ("Gradebook (CSV)", "gradebook.csv"),
    ("Canvas import (CSV)", "canvas.csv"),
    ("Moodle import (CSV)", "moodle.csv"),
)


@dataclass(frozen=True)
class IndexRow:
    student_id: str
    name: str | None
    report: str | None  # relative link; None when the student has no report
    total: float | None
    max_total: float | None
    pending: float
    status: str
    reason: str = ""


def _graded_row(result: GradeResult) -> IndexRow:
    return IndexRow(
        result.student_id,
        result.student_name,
        f"{quote(result.student_id)}/report.pdf",
        result.total,
        result.max_total,
        result.pending_manual,
        student_status(result),
    )


def _failed_row(failure: Failure) -> IndexRow:
    stage = f" ({failure.stage})" if failure.stage else ""
    return IndexRow(failure.student_id, None, None, None, None, 0.0, "failed", f"{failure.reason}{stage}")


def _links(out_dir: Path, class_report: Path | None) -> list[tuple[str, str]]:
    """(label, relative href) of the class-level files that exist."""
    found = {name: out_dir / name for _, name in CLASS_FILES}
    if class_report is not None:
        found["class_report.pdf"] = class_report
        found["class_report.html"] = class_report.with_suffix(".html")
    return [
        (label, quote(Path(os.path.relpath(found[name], out_dir)).as_posix()))
        for label, name in CLASS_FILES
        if found[name].is_file()
    ]


def render_index(
    results: Sequence[GradeResult], failures: Sequence[Failure], links: Sequence[tuple[str, str]], title: str
) -> str:
    rows = sorted([*map(_graded_row, results), *map(_failed_row, failures)], key=lambda r: r.student_id)
    template = environment().get_template("index.html")
    return template.render(title=title, rows=rows, links=links)


def write_index(
    results: Sequence[GradeResult],
    failures: Sequence[Failure],
    out_dir: Path,
    *,
    class_report: Path | None = None,
    title: str | None = None,
) -> Path:
    """Write ``out_dir/index.html``: links to each ``<student_id>/report.pdf`` with totals.

    The class report (``class_report``, default ``out_dir/class_report.pdf``) and the
    gradebook CSVs are linked when they exist, so write them first.
    """
    out_dir = out_dir.resolve()
    heading = title or (results[0].rubric_title if results else "Grading results")
    html = render_index(results, failures, _links(out_dir, class_report), heading)
    path = out_dir / "index.html"
    write_atomic(path, html.encode("utf-8"))
    return path
