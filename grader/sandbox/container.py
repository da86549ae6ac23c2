"""Docker backend: one fresh container per job, through the Docker SDK.

The container gets no network, a read-only root filesystem, a size-capped /tmp, all
capabilities dropped, no-new-privileges, a non-root user, memory (no swap), process,
CPU and ulimit caps, an init process that reaps orphans, and only the environment the
job names. The GPU is passed by device request when grading on CUDA. The host enforces
the wall-clock limit: at the deadline the container is killed and removed. The Docker
socket is never mounted into a job.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from grader.errors import SandboxError
from grader.protocol import PROGRESS_MARK
from grader.sandbox import leftovers, outdir
from grader.sandbox.base import Job, Mount, Outcome
from grader.sandbox.logs import CappedBuffer
from grader.sandbox.process import keep_log

DEFAULT_IMAGE = "grader-harness:latest"
# The image's interpreter: the harness and the libraries student code imports live here.
IMAGE_PYTHON = "/opt/venv/bin/python"
CONTAINER_UID = 10001


def docker_client(timeout_s: float = 120.0) -> Any:
    """A client whose daemon answered a ping, or None."""
    if _local_socket_refuses():
        return None
    try:
        import docker

        client = docker.from_env(timeout=int(timeout_s))
        client.ping()
        return client
    except Exception:  # any failure here means "no usable daemon"
        return None


def _local_socket_refuses() -> bool:
    """True when DOCKER_HOST (by default /var/run/docker.sock) is a Unix socket no daemon
    listens on. Checked here because the SDK leaves its socket open when that connect fails."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(host.removeprefix("unix://"))
        except OSError:
            return True
    return False


class DockerBackend:
    name = "docker"

    def __init__(self, image: str = DEFAULT_IMAGE, runtime: str | None = None, client: Any = None) -> None:
        self.image = image
        self.runtime = runtime  # e.g. "runsc" for gVisor, when the daemon has it
        self.client = client or docker_client()
        if self.client is None:
            raise SandboxError("no Docker daemon answers: start dockerd, or use --sandbox bwrap")
        self._check_image()

    def _check_image(self) -> None:
        import docker.errors

        try:
            # Jobs run from this id, so a rebuild while a class is graded does not mix two images.
            self.image_id: str | None = self.client.images.get(self.image).id
        except docker.errors.ImageNotFound as err:
            raise SandboxError(
                f"Docker image {self.image} not found: build it with scripts/build_image.sh"
            ) from err

    def run(self, job: Job) -> Outcome:
        with contextlib.ExitStack() as stack:
            mounts = [stack.enter_context(_readable(m)) for m in job.mounts]
            writable = next((m for m in mounts if m.writable), None)
            if writable is not None:
                # The output folder sits on a size-capped tmpfs of the host's, like under bubblewrap.
                staged, _cap = stack.enter_context(outdir.capped(writable, job.limits.output_bytes))
                mounts = [staged if m is writable else m for m in mounts]
            return self._run(replace(job, mounts=mounts))

    def _run(self, job: Job) -> Outcome:
        _grant_writes(job)
        started = time.monotonic()
        out = CappedBuffer(job.limits.log_bytes // 2, job.progress, PROGRESS_MARK.encode())
        err = CappedBuffer(job.limits.log_bytes - job.limits.log_bytes // 2)
        try:
            container = self.client.containers.create(**self.create_args(job))
        except Exception as error:  # the daemon refused or did not answer: the machine's failure
            outcome = Outcome(None, False, time.monotonic() - started, "", "")
            outcome.infrastructure = f"Docker could not start the job: {error}"
            return outcome
        lost: str | None = None
        try:
            reader = _attach(container, out, err)  # before start, so no early byte is missed
            container.start()
            code, timed_out, seconds = self._wait(container, job.timeout_s, started)
            container.reload()
            oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
            reader.join(10)
            stdout = keep_log(out.kept(), job.log_dir / "stdout.log")
            stderr = keep_log(err.kept(), job.log_dir / "stderr.log")
        except Exception as error:  # daemon trouble mid-job: the machine's failure
            code, timed_out, seconds, oom = None, False, time.monotonic() - started, False
            stdout, stderr, lost = "", "", f"Docker lost the job: {error}"
        finally:
            _remove(container)
        outcome = _outcome(code, timed_out, seconds, stdout, stderr)
        outcome.infrastructure = lost
        outcome.oom_killed = oom
        outcome.memory_limit_bytes = job.limits.memory_bytes
        outcome.log_bytes_dropped = out.dropped + err.dropped
        return outcome

    def _wait(self, container: Any, timeout_s: float, started: float) -> tuple[int | None, bool, float]:
        """(exit code, timed out, seconds to the exit or the deadline, before any cleanup)."""
        try:
            status = container.wait(timeout=timeout_s)
            return int(status.get("StatusCode", -1)), False, time.monotonic() - started
        except Exception:  # the SDK raises a requests timeout at the deadline
            seconds = time.monotonic() - started
            container.kill()
            return None, True, seconds

    def create_args(self, job: Job) -> dict[str, Any]:
        from docker.types import DeviceRequest, Mount, Ulimit

        limits = job.limits
        args: dict[str, Any] = {
            "image": self.image_id,
            "command": [IMAGE_PYTHON, *job.argv[1:]],
            "user": f"{CONTAINER_UID}:{CONTAINER_UID}",
            "working_dir": job.workdir,
            "environment": {
                "HOME": "/tmp",
                "LANG": "C.UTF-8",
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONUNBUFFERED": "1",
                **job.env,
            },
            "network_mode": "none",
            "read_only": True,
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={limits.tmpfs_bytes}"},
            "mounts": [
                Mount(m.inside, str(m.host), type="bind", read_only=not m.writable) for m in job.mounts
            ],
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "pids_limit": limits.pids,
            "mem_limit": limits.memory_bytes,
            "memswap_limit": limits.memory_bytes,  # equal to mem_limit: no swap
            "nano_cpus": int(limits.cpus * 1e9),
            "ulimits": [
                Ulimit(name="core", soft=0, hard=0),
                Ulimit(name="nofile", soft=limits.open_files, hard=limits.open_files),
                Ulimit(name="fsize", soft=limits.file_size_bytes, hard=limits.file_size_bytes),
            ],
            "init": True,
            "labels": leftovers.owner_labels(),
            # Output is read through attach and capped here; the daemon keeps no copy.
            "log_config": {"type": "none", "config": {}},
            "detach": True,
        }
        if job.gpu is not None:
            args["device_requests"] = [DeviceRequest(device_ids=[job.gpu.uuid], capabilities=[["gpu"]])]
        if self.runtime:
            args["runtime"] = self.runtime
        return args

    def enforced(self, job: Job) -> dict[str, str]:
        limits = job.limits
        return {
            "network": "none (--network none)",
            "filesystem": "read-only root; writable: /tmp (tmpfs) and the job's output directory",
            "user": f"uid {CONTAINER_UID}, all capabilities dropped, no-new-privileges",
            "time": f"{job.timeout_s:.0f} s",
            "memory": f"{limits.memory_bytes / 2**30:.1f} GiB, no swap",
            "processes": str(limits.pids),
            "cpu": f"{limits.cpus:g} cores",
            "largest file written": f"{limits.file_size_bytes / 2**20:.0f} MiB",
            "open files": str(limits.open_files),
            "/tmp size": f"{limits.tmpfs_bytes / 2**20:.0f} MiB",
            "core dumps": "off",
            "runtime": self.runtime or "runc",
        }


def _remove(container: Any) -> None:
    # Already gone, or the daemon is busy: the grader.job label lets an operator find it.
    with contextlib.suppress(Exception):
        container.remove(force=True)


@contextlib.contextmanager
def _readable(mount: Mount) -> Iterator[Mount]:
    """A read-only folder the container's user could not read (files of mode 0600, as
    unpacked from some archives) is mounted as a copy readable by all; links stay links."""
    if mount.writable or not mount.host.is_dir() or _all_readable(mount.host):
        yield mount
        return
    with leftovers.work_dir("readable") as tmp:
        copy = tmp / mount.host.name
        shutil.copytree(mount.host, copy, symlinks=True)
        for path in [copy, *copy.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o644)
        os.chmod(tmp, 0o755)
        yield replace(mount, host=copy)


def _all_readable(root: Path) -> bool:
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.lstat().st_mode
        needed = (stat.S_IROTH | stat.S_IXOTH) if path.is_dir() else stat.S_IROTH
        if mode & needed != needed:
            return False
    return True


def _grant_writes(job: Job) -> None:
    """The container's user must own the job's writable directory, and nothing else."""
    for mount in job.mounts:
        if mount.writable:
            os.chown(mount.host, CONTAINER_UID, CONTAINER_UID)


def _attach(container: Any, out: CappedBuffer, err: CappedBuffer) -> threading.Thread:
    """Read the container's stdout and stderr as it runs, in a thread, into capped buffers."""
    from docker.utils.socket import STDERR, frames_iter

    sock = container.client.api.attach_socket(container.id, {"stdout": 1, "stderr": 1, "stream": 1})

    def drain() -> None:
        try:
            for stream, data in frames_iter(sock, tty=False):
                (err if stream == STDERR else out).take(data)
        except Exception:  # the container was removed under the reader: what was read stays
            pass
        finally:
            # The SDK hands back a file-like wrapper whose close() leaves the socket it
            # wraps open (and forgets it): close the HTTP response, the wrapper and the socket.
            inner, response = getattr(sock, "_sock", None), getattr(sock, "_response", None)
            if response is not None:
                response.close()
            sock.close()
            if inner is not None:
                inner.close()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    return reader


def _outcome(code: int | None, timed_out: bool, seconds: float, out: str, err: str) -> Outcome:
    # With an init process a signal death shows as 128 + n; report it like subprocess does.
    if code is not None and code > 128:
        code = -(code - 128)
    return Outcome(code, timed_out, seconds, out, err)
