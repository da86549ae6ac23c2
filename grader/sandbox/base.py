"""The interface of every backend: the job it accepts, what it returns, and the protocol.

The job's resource caps are ``grader.protocol.Limits``; how a backend starts a process under
them is ``process.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from grader.gpus import Gpu
from grader.protocol import Limits

__all__ = ["Backend", "Job", "Limits", "Mount", "Outcome"]


@dataclass(frozen=True)
class Mount:
    host: Path
    inside: str
    writable: bool = False


@dataclass(frozen=True)
class Job:
    argv: list[str]
    mounts: list[Mount]
    workdir: str
    timeout_s: float
    limits: Limits
    log_dir: Path  # host directory for stdout.log / stderr.log, never mounted
    env: dict[str, str] = field(default_factory=dict)
    gpu: Gpu | None = None  # the one GPU the job gets (grader/gpus.py), or none
    # Called with each line of the job's stdout that starts with PROGRESS_MARK (the rest of
    # it), while the job runs.
    progress: Callable[[bytes], None] | None = field(default=None, compare=False)


@dataclass
class Outcome:
    returncode: int | None  # negative: killed by that signal
    timed_out: bool
    seconds: float
    stdout_tail: str
    stderr_tail: str
    # The kernel's OOM killer stopped a process of the job at the job's memory limit.
    oom_killed: bool = False
    # The resident-memory limit that was in force (None where none could be set).
    memory_limit_bytes: int | None = None
    # stdout + stderr bytes beyond Limits.log_bytes, counted and not kept.
    log_bytes_dropped: int = 0
    # Limits this run set up itself (memory, processes, cpu, output directory), by label;
    # a value starting with "NOT enforced" says why that one was not in force.
    in_force: dict[str, str] = field(default_factory=dict)
    # The machine failed the job (the Docker daemon refused or lost it), not the job itself.
    infrastructure: str | None = None

    @property
    def log_tail(self) -> str:
        return (self.stdout_tail + self.stderr_tail).strip()

    def resource_problem(self) -> str | None:
        """Why a resource limit stopped the job, in words for the student; None if none did."""
        if not self.oom_killed:
            return None
        limit = f" (limit {self.memory_limit_bytes / 2**30:.1f} GiB)" if self.memory_limit_bytes else ""
        return (
            f"ran out of memory{limit}: the kernel stopped the job; "
            "look for tensors kept across batches or a model far larger than the task needs"
        )


class Backend(Protocol):
    name: str
    # The image jobs run from (Docker's image id), or None where jobs run the host's Python.
    image_id: str | None

    def run(self, job: Job) -> Outcome: ...

    def enforced(self, job: Job) -> dict[str, str]:
        """What this backend actually enforced for ``job``, for the report."""
        ...
