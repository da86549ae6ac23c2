"""The wheel pip builds from this checkout (as the GitHub Action installs it) holds every
subpackage and the shipped rubrics, templates and reference models."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from grader.config import REPO_ROOT
from tests.conftest import copy_checkout

SHIPPED = ("rubrics", "templates", "reference_models")


def test_every_subpackage_is_listed() -> None:
    listed = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = {
        ".".join(init.parent.relative_to(REPO_ROOT).parts)
        for init in (REPO_ROOT / "grader").rglob("__init__.py")
    }
    assert found <= set(listed), f"add {sorted(found - set(listed))} to [tool.setuptools] packages"


@pytest.mark.slow
def test_the_wheel_ships_rubrics_templates_and_reference_models(tmp_path: Path) -> None:
    source = copy_checkout(tmp_path / "source")  # a clean tree: no build/ left from an earlier build
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("grader-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in SHIPPED:
        for path in (REPO_ROOT / folder).iterdir():
            if path.is_file():
                assert f"grader/_shipped/{folder}/{path.name}" in names, (
                    f"{folder}/{path.name} is not in the wheel"
                )
