"""One control group per job: resident memory without swap, processes, CPU share.

Each job gets a fresh group *below the grader's own* in every hierarchy that carries a
controller it needs, so whatever limits the grader itself runs under still bound the job.
A controller is taken from cgroup v2 when the unified hierarchy has it, else from the v1
hierarchy it is mounted on (hybrid hosts have memory, pids and cpu on v1). On v2 a group
that holds processes cannot hand controllers to children, so when the grader's own group
cannot, jobs go below the nearest ancestor that already does (``grader-jobs/``). The child
process joins between fork and exec, before any student code runs; at the end every
process left in the group is killed and the group removed. Whatever cannot be set up is
reported as not enforced, and the job runs without it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from grader.protocol import Limits

CONTROLLERS = ("memory", "pids", "cpu")
LABELS = {"memory": "memory", "pids": "processes", "cpu": "cpu"}
_CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Place:
    """Where the grader's own group of one controller lives on this host."""

    version: int  # 1 or 2
    own: Path  # host path of the grader's group in that hierarchy


def locate(mountinfo: str, proc_cgroup: str) -> dict[str, Place]:
    """Controller -> the grader's group, from /proc/self/mountinfo and /proc/self/cgroup."""
    own_v1, own_v2 = _own_paths(proc_cgroup)
    found: dict[str, Place] = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, kind = left.split(), right.split()
        if len(fields) < 5 or len(kind) < 3:
            continue
        root, mount_point, fstype, options = fields[3], Path(fields[4]), kind[0], kind[2].split(",")
        if fstype == "cgroup2" and own_v2 is not None:
            own = _below(mount_point, root, own_v2)
            for name in _v2_controllers(own):
                found.setdefault(name, Place(2, own))
        elif fstype == "cgroup":
            for name in CONTROLLERS:
                if name in options and name in own_v1:
                    found.setdefault(name, Place(1, _below(mount_point, root, own_v1[name])))
    return found


def _own_paths(proc_cgroup: str) -> tuple[dict[str, str], str | None]:
    v1: dict[str, str] = {}
    v2 = None
    for line in proc_cgroup.splitlines():
        _, names, path = line.split(":", 2)
        if names == "":
            v2 = path
        for name in names.split(","):
            v1[name] = path
    return v1, v2


def _below(mount_point: Path, mount_root: str, path: str) -> Path:
    """The host path of cgroup ``path`` on a hierarchy mounted from ``mount_root``."""
    relative = path[len(mount_root) :] if path.startswith(mount_root) else path
    return mount_point / relative.lstrip("/")


def _v2_controllers(own: Path) -> list[str]:
    try:
        available = (own / "cgroup.controllers").read_text().split()
    except OSError:
        return []
    return [name for name in CONTROLLERS if name in available]


@dataclass
class JobCgroup:
    """The groups one job runs in (one per hierarchy); joined by the child before exec."""

    dirs: list[Path]
    memory_dir: Path | None
    memory_version: int

    def join(self) -> None:
        """Move the calling process in; runs in the child between fork and exec."""
        for folder in self.dirs:
            with open(folder / "cgroup.procs", "w") as f:
                f.write("0")

    def processes(self) -> set[int]:
        pids: set[int] = set()
        for folder in self.dirs:
            try:
                pids.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
            except OSError:
                continue
        return pids

    def kill_all(self, deadline_s: float = 10.0) -> None:
        """SIGKILL until the groups are empty; a process forking meanwhile is caught next round."""
        for folder in self.dirs:
            _write_if_present(folder / "cgroup.kill", "1")  # v2: the kernel kills them all at once
        stop = time.monotonic() + deadline_s
        while (pids := self.processes()) and time.monotonic() < stop:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer stopped a process of this group at its limit."""
        if self.memory_dir is None:
            return False
        name = "memory.events" if self.memory_version == 2 else "memory.oom_control"
        try:
            lines = (self.memory_dir / name).read_text().splitlines()
        except OSError:
            return False
        counts = dict(line.split() for line in lines if len(line.split()) == 2)
        return int(counts.get("oom_kill", "0")) > 0

    def remove(self) -> None:
        for folder in self.dirs:
            for _ in range(50):  # the last processes may still be exiting
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def create(limits: Limits) -> tuple[JobCgroup | None, dict[str, str]]:
    """A fresh group for one job with ``limits`` set, and what is (not) in force, by label."""
    try:
        places = locate(Path("/proc/self/mountinfo").read_text(), Path("/proc/self/cgroup").read_text())
    except OSError as err:
        places, reason = {}, f"cannot read this process's cgroups ({err.strerror})"
    else:
        reason = "no cgroup hierarchy with this controller is mounted"
    name = f"grader-{os.getpid()}-{secrets.token_hex(4)}"
    group = JobCgroup([], None, 0)
    in_force: dict[str, str] = {}
    made: dict[Path, Path] = {}  # the grader's group -> the job's group in it
    for controller in CONTROLLERS:
        label = LABELS[controller]
        place = places.get(controller)
        if place is None:
            in_force[label] = f"NOT enforced: {reason}"
            continue
        try:
            folder = made.get(place.own) or _make(place, name, made)
            in_force[label] = _SETTERS[controller](folder, place.version, limits)
        except OSError as err:
            in_force[label] = f"NOT enforced: cgroup v{place.version} {controller} ({err.strerror})"
            continue
        if controller == "memory":
            group.memory_dir, group.memory_version = folder, place.version
    group.dirs = list(made.values())
    return (group if group.dirs else None), in_force


def job_parents() -> list[Path]:
    """The groups job groups are made in, in every hierarchy: where a dead grader's are left."""
    try:
        places = locate(Path("/proc/self/mountinfo").read_text(), Path("/proc/self/cgroup").read_text())
    except OSError:
        return []
    parents = {place.own for place in places.values()}
    parents |= {ancestor / "grader-jobs" for own in list(parents) for ancestor in own.parents}
    return sorted(p for p in parents if p.is_dir())


def _make(place: Place, name: str, made: dict[Path, Path]) -> Path:
    parent = _v2_parent(place.own) if place.version == 2 else place.own
    folder = parent / name
    folder.mkdir()
    made[place.own] = folder
    return folder


def _v2_parent(own: Path) -> Path:
    """A group whose children get the controllers: the grader's own, else a ``grader-jobs``
    group below the nearest ancestor that hands them down (a v2 group holding processes,
    like a login session's, cannot give controllers to children)."""
    wanted = _v2_controllers(own)
    if _enable(own, wanted):
        return own
    for ancestor in own.parents:
        if not (ancestor / "cgroup.subtree_control").exists():
            break
        if set(wanted) <= set((ancestor / "cgroup.subtree_control").read_text().split()):
            jobs = ancestor / "grader-jobs"
            jobs.mkdir(exist_ok=True)
            if _enable(jobs, wanted):
                return jobs
    raise OSError(errno.EBUSY, "no group that can hand down the controllers", str(own))


def _enable(group: Path, names: list[str]) -> bool:
    control = group / "cgroup.subtree_control"
    try:
        missing = [n for n in names if n not in control.read_text().split()]
        if missing:
            control.write_text(" ".join(f"+{n}" for n in missing))
        return True
    except OSError:
        return False


def _set_memory(folder: Path, version: int, limits: Limits) -> str:
    gib = f"{limits.memory_bytes / 2**30:.1f} GiB"
    if version == 2:
        (folder / "memory.max").write_text(str(limits.memory_bytes))
        return f"{gib}, no swap (cgroup v2)" if _write_if_present(folder / "memory.swap.max", "0") else gib
    (folder / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
    # memsw bounds memory + swap together; equal to the memory limit, it means no swap.
    if _write_if_present(folder / "memory.memsw.limit_in_bytes", str(limits.memory_bytes)):
        return f"{gib}, no swap (cgroup v1)"
    _write_if_present(folder / "memory.swappiness", "0")
    return f"{gib} (cgroup v1; swap not accounted, swappiness 0)"


def _set_pids(folder: Path, version: int, limits: Limits) -> str:
    (folder / "pids.max").write_text(str(limits.pids))
    return f"{limits.pids} (cgroup v{version})"


def _set_cpu(folder: Path, version: int, limits: Limits) -> str:
    quota = max(1000, int(limits.cpus * _CPU_PERIOD_US))
    if version == 2:
        (folder / "cpu.max").write_text(f"{quota} {_CPU_PERIOD_US}")
    else:
        (folder / "cpu.cfs_period_us").write_text(str(_CPU_PERIOD_US))
        (folder / "cpu.cfs_quota_us").write_text(str(quota))
    return f"{limits.cpus:g} cores (cgroup v{version})"


def _write_if_present(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except (FileNotFoundError, PermissionError):
        return False


_SETTERS = {"memory": _set_memory, "pids": _set_pids, "cpu": _set_cpu}
