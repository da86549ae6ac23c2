"""Running small scripts (no torch) in the real bubblewrap sandbox, with chosen limits."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from grader.sandbox import BwrapBackend, Job, Mount, Outcome
from tests.conftest import job_limits


@dataclass
class Ran:
    outcome: Outcome
    enforced: dict[str, str]
    out: Path  # the host output directory, as the grader reads it afterwards
    logs: Path


@pytest.fixture()
def run_script(tmp_path: Path):
    """Run ``script`` with ``python -c`` in a fresh sandbox; /out is the writable mount."""

    def run(script: str, timeout_s: float = 60.0, **limits: int | float) -> Ran:
        out = tmp_path / "out"
        out.mkdir(exist_ok=True)
        job = Job(
            argv=[sys.executable, "-c", script],
            mounts=[Mount(out, "/out", writable=True)],
            workdir="/",
            timeout_s=timeout_s,
            limits=job_limits(**limits),
            log_dir=tmp_path / "logs",
        )
        backend = BwrapBackend()
        outcome = backend.run(job)
        return Ran(outcome, backend.enforced(job), out, tmp_path / "logs")

    return run


def processes_with(marker: str) -> list[str]:
    """Command lines of host processes whose arguments contain ``marker``."""
    found = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


def leftovers() -> list[str]:
    """This process's job cgroups and tmpfs mounts still present (there should be none)."""
    prefix = f"grader-out-{os.getpid()}-"
    mounts = [line for line in Path("/proc/self/mounts").read_text().splitlines() if prefix in line]
    groups = [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/**/grader-{os.getpid()}-*")]
    return mounts + groups
