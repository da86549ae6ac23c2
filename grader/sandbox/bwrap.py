"""bubblewrap backend: fresh namespaces for each job, nothing visible but its mounts."""

from __future__ import annotations

import glob
import sys
from pathlib import Path

from grader.sandbox.base import Job, Outcome, run_process

# Merged-/usr Debian: the system's libraries and tools all live under /usr.
_SYSTEM_RO = ["/usr", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives"]
_USR_LINKS = {"/lib": "usr/lib", "/lib64": "usr/lib64", "/bin": "usr/bin", "/sbin": "usr/sbin"}
_SANDBOX_UID = 1000


class BwrapBackend:
    name = "bwrap"

    def run(self, job: Job) -> Outcome:
        return run_process(self.command(job), job)

    def command(self, job: Job) -> list[str]:
        argv = [
            "bwrap",
            "--unshare-all",
            "--unshare-user",
            "--uid",
            str(_SANDBOX_UID),
            "--gid",
            str(_SANDBOX_UID),
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--clearenv",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",
            str(job.limits.tmpfs_bytes),
            "--tmpfs",
            "/tmp",
        ]
        for path in _SYSTEM_RO + _python_dirs():
            if Path(path).exists():
                argv += ["--ro-bind", path, path]
        for link, target in _USR_LINKS.items():
            if Path(link).is_symlink():
                argv += ["--symlink", target, link]
        for mount in job.mounts:
            argv += ["--bind" if mount.writable else "--ro-bind", str(mount.host), mount.inside]
        if job.gpu:
            for device in sorted(glob.glob("/dev/nvidia*")):
                argv += ["--dev-bind", device, device]
        env = {
            "HOME": "/tmp",
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            **job.env,
        }
        for key, value in env.items():
            argv += ["--setenv", key, value]
        return [*argv, "--chdir", job.workdir, "--", *job.argv]

    def enforced(self, job: Job) -> dict[str, str]:
        return {
            "network": "none (own network namespace)",
            "filesystem": "read-only binds; writable: /tmp (tmpfs) and the job's output directory",
            "user": f"uid {_SANDBOX_UID} in a user namespace, all capabilities dropped",
            "time": f"{job.timeout_s:.0f} s",
            **job.limits.as_dict(),
        }


def _python_dirs() -> list[str]:
    """The interpreter and the environment it imports torch from."""
    return sorted({sys.base_prefix, sys.prefix, str(Path(sys.executable).resolve().parent.parent)})
