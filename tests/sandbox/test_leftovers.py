"""A grader stopped from outside leaves no job, container, cgroup or work folder behind.

`grader run` grades a submission whose import crawls the filesystem without end. Once its job
runs, the grader is terminated (SIGTERM: it stops its job itself) or killed (SIGKILL: nothing
runs; its bubblewrap job dies with it, a container goes on until its job's own deadline, and the
next grader to start removes what is left). Run with each sandbox backend.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from grader.sandbox import cgroups, leftovers
from grader.sandbox.container import docker_client
from tests.conftest import require_docker_or_skip

pytestmark = pytest.mark.slow
GRADER = str(Path(sys.executable).parent / "grader")
CRAWL = (
    "import os\n"
    "while True:  # module-level code that never ends\n"
    "    for _ in os.walk('/usr'):\n"
    "        pass\n"
)
BACKENDS = ["bwrap", pytest.param("docker", marks=pytest.mark.docker)]


def _wait_for(check: Callable[[], bool], seconds: float = 60.0) -> bool:
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        if check():
            return True
        time.sleep(0.2)
    return False


def _descendants(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found] + [d for p in found for d in _descendants(int(p))]


def _containers(owner: int) -> list[object]:
    client = docker_client()
    label = f"grader.owner.pid={owner}"
    return client.containers.list(all=True, filters={"label": label}) if client else []


def _work_folders(owner: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"grader-{owner}-*"))


def _job_cgroups(owner: int) -> list[Path]:
    return [g for parent in cgroups.job_parents() for g in parent.glob(f"grader-{owner}-*")]


@pytest.fixture
def crawler(tmp_path: Path) -> Path:
    folder = tmp_path / "subs" / "D000000001"
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(CRAWL)
    return folder


def _start(
    crawler: Path, backend: str, small_cifar: Path, tmp_path: Path
) -> tuple[subprocess.Popen[str], list[int]]:
    """`grader run` on the crawler, once its job is running: the grader and the job's processes."""
    env = {k: v for k, v in os.environ.items() if k != "GRADER_DATA_DIR"} | {
        "GRADER_CACHE_DIR": str(tmp_path)
    }
    grader = subprocess.Popen(
        [
            GRADER, "run", str(crawler), "--rubric", "cifar10-cnn", "--data-dir", str(small_cifar),
            "--sandbox", backend, "--timeout", "900", "--out", str(tmp_path / "out"),
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    if backend == "docker":
        assert _wait_for(lambda: any(c.status == "running" for c in _reload(_containers(grader.pid))))
        return grader, []
    assert _wait_for(lambda: any(_is_harness(p) for p in _descendants(grader.pid)))
    return grader, _descendants(grader.pid)


def _reload(containers: list[object]) -> list[object]:
    """The containers that still exist, with their current state."""
    import docker.errors

    found = []
    for container in containers:
        try:
            container.reload()  # type: ignore[attr-defined]
        except docker.errors.NotFound:
            continue
        found.append(container)
    return found


def _is_harness(pid: int) -> bool:
    try:
        return b"grader.inside" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _gone(pids: list[int]) -> bool:
    return not [p for p in pids if Path(f"/proc/{p}").exists() and _state(p) != "Z"]


def _state(pid: int) -> str:
    try:
        return re.split(r"\) ", Path(f"/proc/{pid}/stat").read_text(), maxsplit=1)[1][0]
    except (OSError, IndexError):
        return "Z"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_terminated_grader_stops_its_job_and_cleans_up(
    backend: str, crawler: Path, small_cifar: Path, tmp_path: Path
) -> None:
    if backend == "docker":
        require_docker_or_skip()
    grader, job = _start(crawler, backend, small_cifar, tmp_path)
    grader.send_signal(signal.SIGTERM)
    _, stderr = grader.communicate(timeout=60)
    assert grader.returncode == 143, stderr
    assert "terminated: the running jobs were stopped" in stderr
    assert _wait_for(lambda: _gone(job), 10)
    assert (
        _containers(grader.pid) == [] and _work_folders(grader.pid) == [] and _job_cgroups(grader.pid) == []
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_killed_graders_leftovers_are_removed_by_the_next_grader(
    backend: str, crawler: Path, small_cifar: Path, tmp_path: Path
) -> None:
    if backend == "docker":
        require_docker_or_skip()
    grader, job = _start(crawler, backend, small_cifar, tmp_path)
    grader.kill()
    grader.communicate()
    assert _wait_for(lambda: _gone(job), 10)  # a bubblewrap job dies with its grader
    if backend == "docker":  # a container runs on until its own deadline, or the next grader
        assert [c.status for c in _reload(_containers(grader.pid))] == ["running"]
    assert _work_folders(grader.pid)  # nothing could remove them yet
    removed = leftovers.reap(docker_client())
    assert any(str(grader.pid) in line for line in removed)
    assert (
        _containers(grader.pid) == [] and _work_folders(grader.pid) == [] and _job_cgroups(grader.pid) == []
    )
