"""The class gradebook: one row per student, and the CSV files an LMS imports.

``gradebook`` builds a DataFrame from the batch's results; ``write_gradebooks`` writes
it as ``gradebook.csv`` (for the course staff) plus ``canvas.csv`` and ``moodle.csv``
shaped for those LMS's grade imports. Names come from students' manifests, so text
cells that a spreadsheet would read as a formula are written with a leading ``'``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from grader.files import write_atomic
from grader.results import GradeResult
from grader.rubric import GRADEBOOK_IDENTITY, GRADEBOOK_TOTALS, Rubric

FAILED = "failed"
IDENTITY, TOTALS = GRADEBOOK_IDENTITY, GRADEBOOK_TOTALS
CANVAS_IDENTITY = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
CANVAS_POINTS_ROW = "    Points Possible"  # the label Canvas's own export gives its second row
MOODLE_IDENTITY = ("ID number", "Email address")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Failure:
    """A submission the batch could not grade at all, so it has no ``GradeResult``."""

    student_id: str
    reason: str
    stage: str | None = None  # e.g. "load", "grade"; None when unknown


def student_status(result: GradeResult) -> str:
    """``task error`` beats ``pending review`` (manual or not-checked points) beats ``complete``."""
    if any(task.status == "error" for task in result.tasks.values()):
        return "task error"
    return "pending review" if result.pending_manual > 0 or result.not_checked > 0 else "complete"


def _item_scores(result: GradeResult, item_ids: Sequence[str]) -> dict[str, float | None]:
    # A manual item still waiting for a TA, or one this grading did not check, has no
    # score yet: its cell stays empty.
    scored = {i.id: i.score for i in result.items if i.status not in ("manual", "not_checked")}
    return {item_id: scored.get(item_id) for item_id in item_ids}


def _row(result: GradeResult, item_ids: Sequence[str]) -> dict[str, object]:
    return {
        "student_id": result.student_id,
        "name": result.student_name or "",
        **_item_scores(result, item_ids),
        "total": result.total,
        "max_total": result.max_total,
        "pending_manual": result.pending_manual,
        "status": student_status(result),
    }


def _failed_row(failure: Failure, rubric: Rubric) -> dict[str, object]:
    return {"student_id": failure.student_id, "name": "", "max_total": rubric.max_total, "status": FAILED}


def gradebook(
    results: Sequence[GradeResult], rubric: Rubric, failures: Sequence[Failure] = ()
) -> pd.DataFrame:
    """One row per student, sorted by id: identity, one score column per rubric item, totals.

    Columns: ``student_id``, ``name``, each item id (empty while a manual item is
    pending or when the item is missing), ``total``, ``max_total``, ``pending_manual``
    and ``status``. ``failures`` become rows with status ``failed`` and no scores.
    """
    item_ids = [item.id for item in rubric.items]  # the rubric keeps them apart from IDENTITY and TOTALS
    rows = [_row(r, item_ids) for r in results] + [_failed_row(f, rubric) for f in failures]
    numbers = [*item_ids, "total", "max_total", "pending_manual"]
    df = pd.DataFrame(rows, columns=[*IDENTITY, *item_ids, *TOTALS])
    df[numbers] = df[numbers].astype(float)
    df = df.sort_values("student_id", kind="stable", ignore_index=True)
    df.attrs.update(
        rubric_id=rubric.id,
        rubric_title=rubric.title,
        item_titles={item.id: item.title for item in rubric.items},
    )
    return df


def _number(value: float | None) -> str:
    """``15.0`` -> ``"15"``, ``12.5`` -> ``"12.5"``, missing -> empty cell."""
    if value is None or math.isnan(value):
        return ""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _safe_text(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _to_csv(df: pd.DataFrame, path: Path, encoding: str = "utf-8") -> Path:
    cells = df.copy()
    for column in cells.columns:
        numeric = pd.api.types.is_numeric_dtype(cells[column])
        cells[column] = [(_number if numeric else _safe_text)(v) for v in cells[column]]
    write_atomic(path, cells.to_csv(index=False, lineterminator="\n").encode(encoding))
    return path


def canvas_frame(df: pd.DataFrame, assignment: str, canvas_assignment_id: str | None = None) -> pd.DataFrame:
    """The gradebook as a Canvas gradebook import: identity columns, then one assignment.

    The assignment column is titled ``"<assignment> (<Canvas assignment id>)"``; the id
    (the number at the end of the assignment's URL) makes Canvas update that assignment,
    without it Canvas matches the column by name or offers to create a new assignment.
    The second row gives the points possible, as Canvas's own export does.

    What the TA fills in before importing: ``SIS User ID`` holds the grader's student id
    (the submission folder name); if the course's SIS ids differ, fill in ``ID`` (the Canvas
    user id, from a Canvas gradebook export) or ``SIS Login ID`` instead. ``Section`` is
    left empty, which Canvas accepts. Students whose grading failed have an empty score,
    which Canvas leaves unchanged. Totals include no pending manual points.
    """
    title = f"{assignment} ({canvas_assignment_id})" if canvas_assignment_id else assignment
    points = {column: "" for column in CANVAS_IDENTITY} | {"Student": CANVAS_POINTS_ROW}
    points[title] = _number(df["max_total"].max()) if len(df) else ""
    rows = [points] + [
        {
            "Student": name or student_id,
            "ID": "",
            "SIS User ID": student_id,
            "SIS Login ID": "",
            "Section": "",
            title: _number(total),
        }
        for student_id, name, total in zip(df["student_id"], df["name"], df["total"], strict=True)
    ]
    return pd.DataFrame(rows, columns=[*CANVAS_IDENTITY, title], dtype=object)


def moodle_frame(df: pd.DataFrame, assignment: str) -> pd.DataFrame:
    """The gradebook as a Moodle "Import grades: CSV file": identifiers, then grade items.

    In Moodle's import form the TA maps ``ID number`` to the user field "ID number" (or
    fills in ``Email address`` and maps that), then maps the ``assignment`` column (the
    total) to the course's grade item, and the per-item columns to grade items or
    "Ignore". Empty cells (pending or failed) are not imported.
    """
    titles: dict[str, str] = df.attrs.get("item_titles", {})
    items = [c for c in df.columns if c not in (*IDENTITY, *TOTALS)]
    headers = {item: f"{item}: {titles[item]}" if item in titles else item for item in items}
    out = pd.DataFrame({"ID number": df["student_id"], "Email address": ""}, dtype=object)
    out[assignment] = df["total"].map(_number)
    for item in items:
        out[headers[item]] = df[item].map(_number)
    return out


def write_gradebooks(
    df: pd.DataFrame,
    out_dir: Path,
    *,
    assignment: str | None = None,
    canvas_assignment_id: str | None = None,
) -> dict[str, Path]:
    """Write ``gradebook.csv``, ``canvas.csv`` and ``moodle.csv`` into ``out_dir``.

    ``assignment`` names the LMS column (default: the rubric title the frame was built
    with). ``gradebook.csv`` starts with a byte-order mark so spreadsheet programs read
    non-ASCII names correctly; the LMS files are plain UTF-8. Returns the paths by kind.
    """
    name = assignment or df.attrs.get("rubric_title") or "Assignment"
    return {
        "gradebook": _to_csv(df, out_dir / "gradebook.csv", encoding="utf-8-sig"),
        "canvas": _to_csv(canvas_frame(df, name, canvas_assignment_id), out_dir / "canvas.csv"),
        "moodle": _to_csv(moodle_frame(df, name), out_dir / "moodle.csv"),
    }
