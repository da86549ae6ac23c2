"""``results.json``: the machine-readable record of one graded submission."""

from __future__ import annotations

import json
from pathlib import Path

from grader.files import write_atomic
from grader.results import GradeResult


def write_results_json(result: GradeResult, path: Path) -> None:
    """Write ``result.to_dict()`` as indented JSON, replacing ``path`` atomically."""
    text = json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n"
    write_atomic(path, text.encode("utf-8"))
