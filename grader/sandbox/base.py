"""The job description every backend accepts, and what it returns."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from grader.sandbox import cgroups
from grader.sandbox.logs import CappedStream

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

    def run(self, job: Job) -> Outcome: ...

    def enforced(self, job: Job) -> dict[str, str]:
        """What this backend actually enforced for ``job``, for the report."""
        ...


def run_process(argv: list[str], job: Job, env: dict[str, str] | None = None) -> Outcome:
    """Run ``argv`` under the job's rlimits and, where possible, its own cgroup.

    When it exits, or at the deadline, every process of the job is killed: its process
    group, and with a cgroup every process in it (daemons that left the process group too).
    ``env`` replaces the grader's environment for the started process (None: inherit).
    """
    group, in_force = cgroups.create(job.limits)
    try:
        return _run(argv, job, env, group, in_force)
    finally:
        if group is not None:
            group.remove()


def _run(
    argv: list[str],
    job: Job,
    env: dict[str, str] | None,
    group: cgroups.JobCgroup | None,
    in_force: dict[str, str],
) -> Outcome:
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_child_setup(job.limits, group),
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out = CappedStream(proc.stdout, job.limits.log_bytes // 2)
    err = CappedStream(proc.stderr, job.limits.log_bytes - job.limits.log_bytes // 2)
    timed_out = False
    try:
        proc.wait(timeout=job.timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    seconds = time.monotonic() - started  # until the job ended or its deadline, not the cleanup
    _end(proc, group)
    stdout, stderr = (
        keep_log(out.finish(), job.log_dir / "stdout.log"),
        keep_log(err.finish(), job.log_dir / "stderr.log"),
    )
    oom = group is not None and group.oom_killed()
    return Outcome(
        None if timed_out else _signal_code(proc.returncode),
        timed_out,
        seconds,
        stdout,
        stderr,
        oom_killed=oom,
        memory_limit_bytes=job.limits.memory_bytes if _in_force(in_force, "memory") else None,
        log_bytes_dropped=out.dropped + err.dropped,
        in_force=in_force,
    )


def _end(proc: subprocess.Popen[bytes], group: cgroups.JobCgroup | None) -> None:
    """Kill whatever of the job still runs; SIGKILL, because a job may ignore SIGTERM."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    if group is not None:
        group.kill_all()
    proc.wait()


def _signal_code(code: int) -> int:
    """bwrap and init processes exit 128 + n when their child died of signal n: report -n."""
    return -(code - 128) if 128 < code <= 128 + 64 else code


def _in_force(in_force: dict[str, str], label: str) -> bool:
    return label in in_force and not in_force[label].startswith("NOT")


def keep_log(data: bytes, path: Path) -> str:
    """Store a job's kept output in its log folder; return the tail shown in messages."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data[-_TAIL_BYTES:].decode("utf-8", errors="replace")


def _child_setup(limits: Limits, group: cgroups.JobCgroup | None) -> Callable[[], None]:
    """Runs in the child between fork and exec: into the cgroup first, then the rlimits."""

    def apply() -> None:
        if group is not None:
            group.join()
        resource.setrlimit(resource.RLIMIT_AS, (limits.address_space_bytes,) * 2)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files,) * 2)

    return apply
