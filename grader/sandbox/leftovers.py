"""What a grader that died left behind: its containers, job cgroups and work folders.

A grader killed from outside (a TA's Ctrl-C twice, a batch or CI timeout, the OOM killer)
cannot clean up after itself. Everything it starts is therefore marked as its own: Docker
containers carry the grader's host, process id and boot id as labels, and work folders are
named ``grader-<pid>-<kind>-…`` in the temporary folder. ``reap`` removes what belongs to a
grader process that no longer exists; every grading calls it before its first job. A job also
dies on its own: bubblewrap's and the unsandboxed jobs with their grader (PR_SET_PDEATHSIG),
and every job, a container's too, a minute after its deadline (``HarnessJob.deadline_s``: the
harness ends itself).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grader.sandbox import cgroups

log = logging.getLogger("grader.sandbox")
LABEL = "grader.job"
_OWNER = re.compile(r"grader-(\d+)-")
_MNT_DETACH = 2


class Terminated(BaseException):
    """SIGTERM arrived: it unwinds like Ctrl-C, so every running job is stopped and removed."""


def stop_on_sigterm() -> None:
    """Turn SIGTERM (a batch system's or CI's timeout, ``kill``) into ``Terminated``."""

    def terminated(signum: int, frame: object) -> None:
        raise Terminated

    signal.signal(signal.SIGTERM, terminated)


def owner_labels() -> dict[str, str]:
    """Labels that say which grader process started a container."""
    return {
        LABEL: "1",
        "grader.owner.host": socket.gethostname(),
        "grader.owner.pid": str(os.getpid()),
        "grader.owner.boot": boot_id(),
    }


def boot_id() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return ""


@contextlib.contextmanager
def work_dir(kind: str) -> Iterator[Path]:
    """A private temporary folder named for this grader process, removed when done."""
    with tempfile.TemporaryDirectory(prefix=f"grader-{os.getpid()}-{kind}-") as path:
        yield Path(path)


def reap(client: Any = None) -> list[str]:
    """Remove the containers (with a Docker ``client``) and work folders of dead graders.
    Returns what was removed, for the log."""
    removed = _reap_folders(Path(tempfile.gettempdir())) + _reap_cgroups()
    if client is not None:
        removed += _reap_containers(client)
    for what in removed:
        log.warning("removed %s, left by a grader that is no longer running", what)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap_folders(tmp: Path) -> list[str]:
    removed = []
    for entry in tmp.iterdir():
        match = _OWNER.match(entry.name)
        if match is None or _alive(int(match[1])) or not entry.is_dir() or entry.is_symlink():
            continue
        if entry.is_mount():  # a job's output folder is a tmpfs of its own
            ctypes.CDLL(None, use_errno=True).umount2(os.fsencode(entry), _MNT_DETACH)
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(f"work folder {entry}")
    return removed


def _reap_cgroups() -> list[str]:
    """Job groups (``grader-<pid>-…``, cgroups.py) whose grader is gone: emptied and removed."""
    removed = []
    for parent in cgroups.job_parents():
        for group in parent.iterdir():
            match = _OWNER.match(group.name)
            if group.is_dir() and match is not None and not _alive(int(match[1])):
                job = cgroups.JobCgroup([group], None, 0)
                job.kill_all()
                job.remove()
                removed.append(f"job cgroup {group}")
    return removed


def _reap_containers(client: Any) -> list[str]:
    removed = []
    host, boot = socket.gethostname(), boot_id()
    try:
        containers = client.containers.list(all=True, filters={"label": LABEL})
    except Exception:  # the daemon is away: nothing can be reaped now, nor run
        return []
    for container in containers:
        labels = container.labels or {}
        if labels.get("grader.owner.host") != host:
            continue  # another machine's grader, using a shared daemon
        pid = labels.get("grader.owner.pid", "")
        same_boot = labels.get("grader.owner.boot") == boot
        if same_boot and pid.isdigit() and _alive(int(pid)):
            continue
        with contextlib.suppress(Exception):
            container.remove(force=True)
            removed.append(f"container {container.name}")
    return removed
