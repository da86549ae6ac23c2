"""Every submission of a batch is graded in a worker process that the watchdog bounds.

A worker that runs past its time bound, or whose resident memory passes its memory bound, is
stopped (SIGTERM, so it stops its own sandbox jobs, then SIGKILL) and its row says why; the
batch and its class outputs always finish. Both executors run their workers through
``supervise``: the local one on this machine, Ray inside its task.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from grader.config import Settings
from grader.measure import ATTEMPTS
from grader.retraining import plan
from grader.rubric import Rubric

_POLL_S = 0.5
_GRACE_S = 15.0  # between SIGTERM and SIGKILL: time to remove its containers and folders
_MARGIN_S = 600.0  # data, reports, sandbox start-ups


@dataclass(frozen=True)
class Bounds:
    seconds: float
    memory_bytes: int


def bounds(rubric: Rubric, settings: Settings) -> Bounds:
    """The longest one submission may take: every job at its deadline, each tried twice."""
    evaluations = len(rubric.tasks)
    runs = 0 if settings.skip_training else sum(len(plan(rubric, t, None)[0]) for t in rubric.tasks)
    runs += 0 if settings.skip_training else len(rubric.training.baselines)
    train_s = (rubric.training.recipe.budget_s or settings.train_timeout_s) + settings.task_timeout_s
    seconds = ATTEMPTS * (evaluations + runs) * settings.task_timeout_s + ATTEMPTS * runs * train_s
    return Bounds(seconds + _MARGIN_S, settings.worker_memory_bytes)


@dataclass(frozen=True)
class Ended:
    returncode: int | None
    stopped: str | None  # why the watchdog stopped the worker, in words for the row


def supervise(argv: list[str], log: Path, limit: Bounds) -> Ended:
    """Run ``argv`` (a worker) with its output in ``log``, stopping it at either bound."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            stopped = _watch(proc, limit)
        finally:  # the driver was interrupted: the worker goes too
            if proc.poll() is None:
                stop(proc)
    return Ended(proc.returncode, stopped)


def _watch(proc: subprocess.Popen[bytes], limit: Bounds) -> str | None:
    deadline = time.monotonic() + limit.seconds
    while proc.poll() is None:
        if time.monotonic() > deadline:
            stop(proc)
            return f"the grading took longer than its bound of {limit.seconds / 60:.0f} min and was stopped"
        rss = resident_bytes(proc.pid)
        if rss > limit.memory_bytes:
            stop(proc)
            return (
                f"the grading process used {rss / 2**30:.1f} GiB of memory, over its bound of "
                f"{limit.memory_bytes / 2**30:.1f} GiB, and was stopped"
            )
        time.sleep(_POLL_S)
    return None


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the worker's process group, then SIGKILL after a grace period."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def resident_bytes(pid: int) -> int:
    """The resident memory of process ``pid`` (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def worker_argv(spec: Path) -> list[str]:
    return [sys.executable, "-m", "grader.batch.worker", str(spec)]
