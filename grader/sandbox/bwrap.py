"""bubblewrap backend: fresh namespaces for each job, nothing visible but its mounts.

The job's uid 1000 is, outside its user namespace, the uid that started the grader (root
on CI). It holds no capability, but the kernel still treats it as that uid where it
checks the uid alone: /proc/sys files and root-only /proc files. So /proc/sys is bound
read-only and root-only /proc files are covered, on top of what bubblewrap does. The
root, /dev and everything bound from the host are read-only; /tmp, /dev/shm and the
output directory are size-capped. bwrap is started with nothing in its environment but
PATH, because the job can read the environment of its PID 1, which is bwrap.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grader.gpus import CONTROL_DEVICES
from grader.sandbox import outdir
from grader.sandbox.base import Job, Mount, Outcome
from grader.sandbox.process import run_process

# Merged-/usr Debian: the system's libraries and tools all live under /usr.
_SYSTEM_RO = ["/usr", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives"]
_USR_LINKS = {"/lib": "usr/lib", "/lib64": "usr/lib64", "/bin": "usr/bin", "/sbin": "usr/sbin"}
_SANDBOX_UID = 1000
# Readable by root only, so readable by the job: kernel memory layout, timers of host processes.
_PROC_HIDDEN = [
    "/proc/kmsg", "/proc/slabinfo", "/proc/kpagecount", "/proc/kpageflags", "/proc/kpagecgroup",
    "/proc/timer_list", "/proc/vmallocinfo", "/proc/pagetypeinfo", "/proc/mtrr", "/proc/kcore",
    "/proc/sched_debug", "/proc/keys", "/proc/sysrq-trigger",
]  # fmt: skip
_HOST_ENV = {"PATH": "/usr/bin:/bin"}
_UNDECIDED = "set when the job runs"


class BwrapBackend:
    name = "bwrap"
    image_id: str | None = None

    def __init__(self) -> None:
        self._last: tuple[Job, dict[str, str]] | None = None

    def run(self, job: Job) -> Outcome:
        """The first writable mount (the output folder) gets a size-capped tmpfs; any
        other writable mount (a training job's checkpoints) is bound as it is."""
        writable = [m for m in job.mounts if m.writable]
        if not writable:
            outcome = run_process(self.command(job), job, env=_HOST_ENV)
            return self._remember(job, outcome, {})
        with outdir.capped(writable[0], job.limits.output_bytes) as (staged, cap):
            mounts = [staged if m is writable[0] else m for m in job.mounts]
            outcome = run_process(self.command(job, mounts), job, env=_HOST_ENV)
        caps = {"output directory": cap}
        for mount in writable[1:]:
            caps[f"{mount.inside} size"] = "NOT enforced: bound as it is; each file ≤ the largest-file limit"
        return self._remember(job, outcome, caps)

    def _remember(self, job: Job, outcome: Outcome, caps: dict[str, str]) -> Outcome:
        outcome.in_force.update(caps)
        self._last = (job, dict(outcome.in_force))
        return outcome

    def command(self, job: Job, mounts: list[Mount] | None = None) -> list[str]:
        """The bwrap command line; ``mounts`` replaces the job's (the backend's tmpfs output)."""
        argv = ["bwrap", *_isolation(job)]
        argv += _system_binds()
        for mount in job.mounts if mounts is None else mounts:
            argv += ["--bind" if mount.writable else "--ro-bind", str(mount.host), mount.inside]
        if job.gpu is not None:  # its own device node only, and the driver's control nodes
            for device in (job.gpu.device, *CONTROL_DEVICES, "/dev/nvidia-caps"):
                argv += ["--dev-bind-try", device, device]
        argv += _environment(job)
        # Last: once every mount point exists, / and /dev become read-only.
        argv += ["--remount-ro", "/dev", "--remount-ro", "/"]
        return [*argv, "--chdir", job.workdir, "--", *job.argv]

    def enforced(self, job: Job) -> dict[str, str]:
        ran = self._last[1] if self._last is not None and self._last[0] is job else {}
        writable = ", ".join(["/tmp", "/dev/shm", *(m.inside for m in job.mounts if m.writable)])
        return {
            "network": "none (own network namespace)",
            "filesystem": f"read-only root and binds; writable: {writable}",
            "user": f"uid {_SANDBOX_UID} in a user namespace, all capabilities dropped, no nested namespaces",
            "kernel settings": "/proc/sys read-only; root-only /proc files hidden",
            "time": f"{job.timeout_s:.0f} s",
            "memory": ran.get("memory", _UNDECIDED),
            "processes": ran.get("processes", _UNDECIDED),
            "cpu": ran.get("cpu", _UNDECIDED),
            "output directory": ran.get("output directory", _UNDECIDED),
            **{k: v for k, v in ran.items() if k.endswith(" size")},
            "log kept": f"{job.limits.log_bytes / 2**20:.0f} MiB (first and last lines)",
            **job.limits.as_dict(),
        }


def _isolation(job: Job) -> list[str]:
    size = str(job.limits.tmpfs_bytes)
    argv = [
        "--unshare-all", "--unshare-user", "--disable-userns",
        "--uid", str(_SANDBOX_UID), "--gid", str(_SANDBOX_UID),
        "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv",
        "--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys",
        "--dev", "/dev", "--size", size, "--tmpfs", "/dev/shm",
        "--size", size, "--tmpfs", "/tmp",
    ]  # fmt: skip
    for path in _PROC_HIDDEN:
        if Path(path).exists():
            argv += ["--ro-bind", "/dev/null", path]
    return argv


def _system_binds() -> list[str]:
    argv = []
    for path in _SYSTEM_RO + _python_dirs():
        if Path(path).exists():
            argv += ["--ro-bind", path, path]
    for link, target in _USR_LINKS.items():
        if Path(link).is_symlink():
            argv += ["--symlink", target, link]
    return argv


def _environment(job: Job) -> list[str]:
    env = {
        "HOME": "/tmp",
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        **job.env,
    }
    argv = []
    for key, value in env.items():
        argv += ["--setenv", key, value]
    return argv


def _python_dirs() -> list[str]:
    """The interpreter and the environment it imports torch from."""
    return sorted({sys.base_prefix, sys.prefix, str(Path(sys.executable).resolve().parent.parent)})
