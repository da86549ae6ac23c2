"""The job description every backend accepts, and what it returns."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

_TAIL_BYTES = 16_384


@dataclass(frozen=True)
class Mount:
    host: Path
    inside: str
    writable: bool = False


@dataclass(frozen=True)
class Limits:
    """Resource caps for one job; each backend enforces what its platform allows and says so."""

    address_space_bytes: int  # RLIMIT_AS; bounds runaway allocations, not the working set
    file_size_bytes: int  # RLIMIT_FSIZE: the largest single file the job may write
    memory_bytes: int = 8 * 2**30  # resident memory (cgroup / container), no swap
    pids: int = 256  # processes and threads (cgroup / container)
    cpus: float = 2.0  # CPU time share (cgroup / container)
    output_bytes: int = 128 * 2**20  # the whole output directory
    log_bytes: int = 1 * 2**20  # stdout + stderr kept; the rest is discarded
    open_files: int = 256
    tmpfs_bytes: int = 256 * 2**20

    def as_dict(self) -> dict[str, str]:
        return {
            "address space": f"{self.address_space_bytes / 2**30:.0f} GiB",
            "largest file written": f"{self.file_size_bytes / 2**20:.0f} MiB",
            "open files": str(self.open_files),
            "/tmp size": f"{self.tmpfs_bytes / 2**20:.0f} MiB",
            "core dumps": "off",
        }


@dataclass(frozen=True)
class Job:
    argv: list[str]
    mounts: list[Mount]
    workdir: str
    timeout_s: float
    limits: Limits
    log_dir: Path  # host directory for stdout.log / stderr.log, never mounted
    env: dict[str, str] = field(default_factory=dict)
    gpu: bool = False


@dataclass
class Outcome:
    returncode: int | None
    timed_out: bool
    seconds: float
    stdout_tail: str
    stderr_tail: str

    @property
    def log_tail(self) -> str:
        return (self.stdout_tail + self.stderr_tail).strip()


class Backend(Protocol):
    name: str

    def run(self, job: Job) -> Outcome: ...

    def enforced(self, job: Job) -> dict[str, str]:
        """What this backend actually enforced for ``job``, for the report."""
        ...


def run_process(argv: list[str], job: Job) -> Outcome:
    """Start ``argv`` with the job's rlimits, kill its whole process group at the deadline."""
    job.log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = job.log_dir / "stdout.log", job.log_dir / "stderr.log"
    started = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            preexec_fn=_rlimits(job.limits),
        )
        timed_out = False
        try:
            proc.wait(timeout=job.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return Outcome(
        None if timed_out else proc.returncode,
        timed_out,
        time.monotonic() - started,
        _tail(out_path),
        _tail(err_path),
    )


def _rlimits(limits: Limits) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limits.address_space_bytes,) * 2)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files,) * 2)

    return apply


def _tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - _TAIL_BYTES))
        return f.read().decode("utf-8", errors="replace")
