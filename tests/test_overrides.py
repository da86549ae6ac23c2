"""The overrides file: checked against the rubric, applied over the grader's own scores."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.errors import UsageError
from grader.overrides import apply_overrides, load_overrides
from grader.results import GradeResult
from grader.rubric import Rubric


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_manual_item_is_filled_and_a_scored_one_replaced(
    tmp_path: Path, rubric: Rubric, results: list[GradeResult]
) -> None:
    path = _write(
        tmp_path,
        "overrides.csv",
        'student_id,item,score,comment,by\nS001,report,7,"good, short",ta-lin\nS002,params,15,,\n',
    )
    by_id = {r.student_id: r for r in results}
    s001, s002 = by_id["S001"], by_id["S002"]
    before_total = s002.total
    overrides = load_overrides(path, rubric)
    apply_overrides(s001, overrides)
    apply_overrides(s002, overrides)
    report = next(i for i in s001.items if i.id == "report")
    assert report.score == 7 and report.status == "partial" and report.override is not None
    assert report.message == "set by hand by ta-lin: good, short (a TA's item)"
    params = next(i for i in s002.items if i.id == "params")
    assert params.score == 15 and params.override is not None and params.override.machine_score == 0
    assert params.message == "set by hand by TA (the grader gave 0)"
    assert s002.total == before_total + 15


def test_applying_again_starts_from_the_machine_scores(
    tmp_path: Path, rubric: Rubric, results: list[GradeResult]
) -> None:
    s002 = next(r for r in results if r.student_id == "S002")
    machine = [(i.score, i.status, i.message) for i in s002.items]
    first = load_overrides(_write(tmp_path, "a.yaml", "- {student_id: S002, item: acc, score: 50}\n"), rubric)
    apply_overrides(s002, first)
    apply_overrides(s002, first)  # twice: still one override, same score
    assert next(i for i in s002.items if i.id == "acc").score == 50
    apply_overrides(s002, [])  # the row removed from the file: back to the grader's scores
    assert [(i.score, i.status, i.message) for i in s002.items] == machine
    assert all(i.override is None for i in s002.items)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("student_id,item,score\nS001,nope,1\n", "overrides.csv:2: item 'nope' is not in the rubric"),
        (
            "student_id,item,score\nS001,report,11\n",
            "overrides.csv:2: score 11 for item report is outside 0–10",
        ),
        ("student_id,item,score\nS001,report,lots\n", "overrides.csv:2: score 'lots' is not a number"),
        ("student_id,item\nS001,report\n", "overrides.csv: header lacks score"),
        (
            "student_id,item,score\nS001,report,1\nS001,report,2\n",
            "overrides.csv:3: S001 item report is already set at overrides.csv:2",
        ),
    ],
)
def test_a_bad_row_is_named_with_its_line(tmp_path: Path, rubric: Rubric, text: str, words: str) -> None:
    with pytest.raises(UsageError) as err:
        load_overrides(_write(tmp_path, "overrides.csv", text), rubric)
    assert words in str(err.value)
