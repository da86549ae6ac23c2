"""Scores set by hand: the TA's overrides file, checked against the rubric and applied.

The file is CSV (header ``student_id,item,score,comment,by``) or YAML (a list of maps with
those keys). An override fills a ``manual`` item or replaces what the grader gave; the
grader's own score is kept beside it, so applying the file again, or a newer version of
it, always starts from the machine's scores and an override survives a regrade::

    student_id,item,score,comment,by
    B093040051,3,8,"clear discussion of the residual block",ta-lin
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from grader import yamlfile
from grader.errors import UsageError
from grader.results import GradeResult, HandScore, ItemResult, ItemStatus
from grader.rubric import Rubric

FIELDS = ("student_id", "item", "score", "comment", "by")


@dataclass(frozen=True)
class Override:
    student_id: str
    item: str
    score: float
    comment: str
    by: str
    where: str  # "overrides.csv:3", for messages


def load_overrides(path: Path, rubric: Rubric) -> list[Override]:
    """Read and check every row; the first bad one raises naming file:row and the fix."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(
            f"overrides file {path} cannot be read ({err}); give a UTF-8 CSV or YAML file"
        ) from None
    rows = _yaml_rows(path, text) if path.suffix in (".yaml", ".yml") else _csv_rows(path, text)
    points = {item.id: item.points for item in rubric.items}
    found = [_parse(row, f"{path.name}:{line}", points) for line, row in rows]
    seen: dict[tuple[str, str], str] = {}
    for o in found:
        if (o.student_id, o.item) in seen:
            raise UsageError(
                f"{o.where}: {o.student_id} item {o.item} is already set at {seen[o.student_id, o.item]}; "
                "keep one row per student and item"
            )
        seen[o.student_id, o.item] = o.where
    return found


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict[str, object]]]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [f for f in FIELDS[:3] if f not in (reader.fieldnames or [])]
    if missing:
        raise UsageError(f"{path.name}: header lacks {', '.join(missing)}; the header is {','.join(FIELDS)}")
    return [(reader.line_num, dict(row)) for row in reader]


def _yaml_rows(path: Path, text: str) -> list[tuple[int, dict[str, object]]]:
    try:
        data = yamlfile.load(text) or []
    except yamlfile.YamlError as err:
        raise UsageError(f"{path.name} is not valid YAML ({err}); fix it or use CSV") from None
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise UsageError(f"{path.name}: expected a list of maps with keys {', '.join(FIELDS)}")
    return [(n, row) for n, row in enumerate(data, start=1)]


def _parse(row: dict[str, object], where: str, points: dict[str, float]) -> Override:
    student, item = str(row.get("student_id") or "").strip(), str(row.get("item") or "").strip()
    if not student or not item:
        raise UsageError(f"{where}: student_id and item are required")
    if item not in points:
        raise UsageError(f"{where}: item {item!r} is not in the rubric ({', '.join(points)})")
    try:
        score = float(str(row.get("score")).strip())
    except ValueError:
        raise UsageError(f"{where}: score {row.get('score')!r} is not a number") from None
    if not 0 <= score <= points[item]:
        raise UsageError(f"{where}: score {score:g} for item {item} is outside 0–{points[item]:g}")
    comment, by = str(row.get("comment") or "").strip(), str(row.get("by") or "").strip()
    return Override(student, item, score, comment, by or "TA", where)


def apply_overrides(result: GradeResult, overrides: list[Override]) -> None:
    """Reset every item to the grader's score, then apply this student's overrides."""
    for item in result.items:
        _restore(item)
    mine = {o.item: o for o in overrides if o.student_id == result.student_id}
    for item in result.items:
        if item.id in mine:
            _set(item, mine[item.id])


def _restore(item: ItemResult) -> None:
    hand = item.override
    if hand is not None:
        item.score, item.status, item.message = hand.machine_score, hand.machine_status, hand.machine_message
        item.override = None


def _set(item: ItemResult, o: Override) -> None:
    item.override = HandScore(o.by, o.comment, item.score, item.status, item.message)
    item.score = o.score
    item.status = _status(o.score, item.max_score)
    note = f": {o.comment}" if o.comment else ""
    before = item.override
    was = "a TA's item" if before.machine_status == "manual" else f"the grader gave {before.machine_score:g}"
    item.message = f"set by hand by {o.by}{note} ({was})"


def _status(score: float, max_score: float) -> ItemStatus:
    if score >= max_score:
        return "pass"
    return "partial" if score > 0 else "fail"
