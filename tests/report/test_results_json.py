"""grader/report/results_json.py: results.json, the record other tools read, field by field."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from grader.report.results_json import write_results_json
from grader.results import GradeResult
from grader.rubric import Rubric
from tests.graded import ci_graded


def test_results_json_matches_the_golden_file(
    cnn_rubric: Rubric, tmp_path: Path, golden: Callable[[str, str], None]
) -> None:
    result = ci_graded(cnn_rubric)
    write_results_json(result, tmp_path / "results.json")
    text = (tmp_path / "results.json").read_text(encoding="utf-8")
    golden("results.json", text)
    assert GradeResult.from_dict(json.loads(text)) == result
