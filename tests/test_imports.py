"""The import contracts in pyproject.toml, checked by import-linter itself, and shown to bite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import copy_checkout

LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"], cwd=root, capture_output=True, text=True, env={"PYTHONPATH": str(root)}
    )


def test_the_contracts_hold() -> None:
    done = lint_imports(Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 kept, 0 broken" in done.stdout


def test_each_contract_catches_what_it_forbids(tmp_path: Path) -> None:
    root = copy_checkout(tmp_path)
    shutil.rmtree(root / "tests")
    grader = root / "grader"
    for module, line in [
        ("inside/engine.py", "from grader.rubric import Rubric"),  # inside -> host
        ("jobs.py", "from grader.inside import engine"),  # host -> inside
        ("protocol.py", "from grader import errors"),  # shared -> host
        ("results.py", "from grader import scoring"),  # scoring imports results: a cycle
    ]:
        with open(grader / module, "a") as handle:
            handle.write(f"\n{line}  # noqa\n")
    done = lint_imports(root)
    assert done.returncode == 1
    assert "0 kept, 4 broken" in done.stdout, done.stdout
