"""grader: grades deep-learning assignments (PyTorch, CIFAR-10) in a sandbox and writes reports.

Public API::

    from grader import Settings, grade, load_rubric
    graded = grade(Path("submissions/B093040051"), load_rubric(path), Settings(data_dir=...))
    graded.result.total

Names are imported on first use, so the sandboxed harness (which imports
``grader.inside``) does not load the host-side modules.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["GradeResult", "GraderError", "Settings", "find_rubric", "grade", "load_rubric"]

_WHERE = {
    "GradeResult": "grader.results",
    "GraderError": "grader.errors",
    "Settings": "grader.config",
    "find_rubric": "grader.rubric",
    "grade": "grader.pipeline",
    "load_rubric": "grader.rubric",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'grader' has no attribute {name!r}")
