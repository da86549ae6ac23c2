"""The Docker backend against a real daemon and the project's image (scripts/build_image.sh;
GRADER_TEST_IMAGE names another build of it).

Skipped where no daemon answers, except in CI (GRADER_REQUIRE_DOCKER=1), where that fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from grader.config import Settings
from grader.gpus import Gpu
from grader.pipeline import grade
from grader.rubric import find_rubric, load_rubric
from grader.sandbox import DockerBackend, Job, Mount
from grader.sandbox.container import docker_client
from tests.conftest import FILES, HARNESS_IMAGE, job_limits, load_module, require_docker_or_skip

PROBE = Path(__file__).parent / "probe.py"


pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def backend() -> DockerBackend:
    require_docker_or_skip(HARNESS_IMAGE)
    return DockerBackend(image=HARNESS_IMAGE, client=docker_client())


def make_job(tmp_path: Path, argv: list[str], timeout_s: float = 60.0, memory: int = 2 * 2**30) -> Job:
    submission = tmp_path / "submission"
    submission.mkdir(exist_ok=True)
    (submission / "probe.py").write_text(PROBE.read_text())
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    limits = job_limits(
        address_space_bytes=16 * 2**30, memory_bytes=memory, pids=64, cpus=1.0, log_bytes=64 * 1024
    )
    return Job(
        argv=argv,
        mounts=[Mount(submission, "/submission"), Mount(out, "/out", writable=True)],
        workdir="/submission",
        timeout_s=timeout_s,
        limits=limits,
        log_dir=tmp_path / "logs",
        env={"SECRET_SHOWN": "no"},
    )


def containers_left(backend: DockerBackend) -> list[object]:
    """This process's containers (other graders on the machine have their own)."""
    return backend.client.containers.list(all=True, filters={"label": f"grader.owner.pid={os.getpid()}"})


def test_container_sees_only_its_mounts(
    backend: DockerBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    labels = tmp_path / "labels.npy"
    labels.write_bytes(b"secret labels")
    monkeypatch.setenv("GRADER_CANARY", "canary-91ab")
    job = make_job(
        tmp_path,
        [
            sys.executable,
            "/submission/probe.py",
            str(server.getsockname()[1]),
            str(labels),
            str(Path(__file__).resolve().parents[3] / "shared"),
        ],
    )
    outcome = backend.run(job)
    server.close()
    assert outcome.returncode == 0, outcome.log_tail
    seen = json.loads(outcome.stdout_tail)
    assert seen["connect"] in ("OSError", "ConnectionRefusedError")
    assert seen["dns"] == "gaierror"
    assert seen["read_labels"] == "FileNotFoundError"
    assert seen["read_shared"] == "FileNotFoundError"
    assert seen["write_submission"] == "OSError"
    assert seen["write_usr"] == "OSError"  # read-only root filesystem
    assert seen["write_out"] == "allowed" and (tmp_path / "out" / "ok.txt").read_text() == "x"
    assert seen["uid"] == 10001
    assert "GRADER_CANARY" not in seen["env"] and "SECRET_SHOWN" in seen["env"]
    assert "canary-91ab" not in outcome.log_tail
    assert not containers_left(backend)


def test_deadline_kills_and_removes_the_container(backend: DockerBackend, tmp_path: Path) -> None:
    job = make_job(tmp_path, [sys.executable, "-c", "while True: pass"], timeout_s=3)
    outcome = backend.run(job)
    assert outcome.timed_out and outcome.returncode is None
    assert outcome.seconds < 30
    assert not containers_left(backend)


def test_memory_bomb_is_killed_by_the_memory_limit(backend: DockerBackend, tmp_path: Path) -> None:
    script = "b = []\nwhile True: b.append(bytearray(64 * 2**20))"
    outcome = backend.run(make_job(tmp_path, [sys.executable, "-c", script], memory=256 * 2**20))
    assert not outcome.timed_out
    assert outcome.returncode == -9
    assert outcome.oom_killed
    assert "ran out of memory (limit 0.2 GiB)" in (outcome.resource_problem() or "")


def test_limits_reach_the_container_spec(backend: DockerBackend, tmp_path: Path) -> None:
    job = make_job(tmp_path, [sys.executable, "-c", "pass"])
    args = backend.create_args(job)
    assert args["network_mode"] == "none" and args["read_only"] is True
    assert args["cap_drop"] == ["ALL"] and "no-new-privileges" in args["security_opt"]
    assert args["mem_limit"] == args["memswap_limit"] == 2 * 2**30
    assert args["pids_limit"] == 64 and args["nano_cpus"] == 10**9 and args["init"] is True
    assert "device_requests" not in args
    assert not any("docker.sock" in str(m) for m in args["mounts"])
    gpu_job = Job(**{**job.__dict__, "gpu": Gpu(2, "GPU-2222", minor=2)})
    (request,) = backend.create_args(gpu_job)["device_requests"]
    assert request["Capabilities"] == [["gpu"]] and request["DeviceIDs"] == ["GPU-2222"]
    assert request["Count"] == 0  # that GPU alone, not "all"


def test_grading_in_docker_matches_bubblewrap(
    backend: DockerBackend, small_cifar: Path, tmp_path: Path
) -> None:
    import torch

    root = tmp_path / "B000000001"
    shutil.copytree(FILES / "submissions" / "B000000001", root)
    torch.manual_seed(0)
    (root / "weights").mkdir()
    torch.save(load_module(root / "model.py").Net().state_dict(), root / "weights" / "model.pt")
    # Private modes, as some archives unpack: the container's user must still read the files.
    for path in [root, *root.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    rubric = load_rubric(find_rubric("cifar10-cnn"))
    results = {}
    for name in ("docker", "bwrap"):
        settings = Settings(
            data_dir=small_cifar, sandbox=name, cache_dir=tmp_path / "cache", docker_image=HARNESS_IMAGE
        )
        results[name] = grade(root, rubric, settings).result
    assert results["docker"].sandbox["backend"] == "docker"
    image = docker_client().images.get(HARNESS_IMAGE)
    assert results["docker"].versions["sandbox image"] == image.id
    # The image holds the lock's versions, as the host does (tests/sandbox/test_image.py).
    for name in ("torch", "torchvision", "ultralytics-thop", "ptflops"):
        assert results["docker"].versions[name] == results["bwrap"].versions[name], name
    assert results["docker"].tasks["cnn"].status == "ok", results["docker"].tasks["cnn"].error
    # The same numbers but the probe's, which every grading draws anew in secret.
    docker, bwrap = (replace(results[b].tasks["cnn"].evaluation, probe=None) for b in ("docker", "bwrap"))
    assert docker == bwrap
    assert results["docker"].tasks["cnn"].macs == results["bwrap"].tasks["cnn"].macs
    assert [i.score for i in results["docker"].items] == [i.score for i in results["bwrap"].items]
    assert (root / "model.py").stat().st_mode & 0o777 == 0o600  # the submission itself is untouched


def test_output_folder_is_capped(backend: DockerBackend, tmp_path: Path) -> None:
    script = (
        "import errno\n"
        "for i in range(8):\n"
        "    try:\n"
        "        open(f'/out/f{i}', 'wb').write(b'x' * (2**20 - 4096))\n"
        "    except OSError as e:\n"
        "        print('stopped', i, errno.errorcode[e.errno]); break\n"
    )
    job = make_job(tmp_path, [sys.executable, "-c", script])
    job = Job(
        **{**job.__dict__, "limits": job_limits(address_space_bytes=16 * 2**30, output_bytes=3 * 2**20)}
    )
    outcome = backend.run(job)
    assert "ENOSPC" in outcome.stdout_tail, outcome.log_tail
    kept = sum(f.stat().st_size for f in (tmp_path / "out").iterdir())
    assert kept <= 3 * 2**20
