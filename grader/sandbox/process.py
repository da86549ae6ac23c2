"""Starting a job's process on this machine: rlimits, its own cgroup, a deadline, capped logs.

The bubblewrap and unsandboxed backends run their command through ``run_process``; the Docker
backend keeps its logs the same way (``keep_log``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from grader.protocol import PROGRESS_MARK, Limits
from grader.sandbox import cgroups
from grader.sandbox.base import Job, Outcome
from grader.sandbox.logs import CappedStream

_TAIL_BYTES = 16_384
_PR_SET_PDEATHSIG = 1


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
    out = CappedStream(proc.stdout, job.limits.log_bytes // 2, job.progress, PROGRESS_MARK.encode())
    err = CappedStream(proc.stderr, job.limits.log_bytes - job.limits.log_bytes // 2)
    timed_out = False
    try:
        proc.wait(timeout=job.timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:  # an interrupted grader (Ctrl-C, SIGTERM) takes its job with it
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
        # The job dies with the grader, whatever kills the grader (this is kept across exec).
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if group is not None:
            group.join()
        resource.setrlimit(resource.RLIMIT_AS, (limits.address_space_bytes,) * 2)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files,) * 2)

    return apply
