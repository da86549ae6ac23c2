"""The bubblewrap backend, run for real: what a job can and cannot reach."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from grader.sandbox import BwrapBackend, Job, Mount
from tests.conftest import job_limits

PROBE = Path(__file__).parent / "probe.py"


def make_job(tmp_path: Path, argv: list[str], timeout_s: float = 60.0) -> Job:
    submission = tmp_path / "submission"
    submission.mkdir(exist_ok=True)
    (submission / "probe.py").write_text(PROBE.read_text())
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return Job(
        argv=argv,
        mounts=[Mount(submission, "/submission"), Mount(out, "/out", writable=True)],
        workdir="/submission",
        timeout_s=timeout_s,
        limits=job_limits(),
        log_dir=tmp_path / "logs",
        env={"SECRET_SHOWN": "no"},
    )


@pytest.fixture()
def listener():  # a server on the host's loopback that the sandbox must not reach
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[bool] = []
    server.settimeout(10)

    def accept() -> None:
        try:
            server.accept()
            accepted.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    server.close()


def test_job_sees_only_its_mounts(tmp_path: Path, listener, monkeypatch: pytest.MonkeyPatch) -> None:
    port, accepted = listener
    labels = tmp_path / "labels.npy"
    labels.write_bytes(b"secret labels")
    monkeypatch.setenv("GRADER_CANARY", "canary-7f3e")
    job = make_job(
        tmp_path,
        [
            sys.executable,
            "/submission/probe.py",
            str(port),
            str(labels),
            str(Path(__file__).resolve().parents[3] / "shared"),
        ],
    )
    outcome = BwrapBackend().run(job)
    assert outcome.returncode == 0, outcome.log_tail
    seen = json.loads(outcome.stdout_tail)
    assert seen["connect"] in ("OSError", "ConnectionRefusedError") and not accepted
    assert seen["dns"] == "gaierror"
    assert seen["read_labels"] == "FileNotFoundError"
    assert seen["read_shared"] == "FileNotFoundError"
    assert seen["read_home"] == "FileNotFoundError"
    assert seen["write_submission"] == "OSError"
    assert seen["write_usr"] == "OSError"
    assert seen["write_out"] == "allowed" and (tmp_path / "out" / "ok.txt").read_text() == "x"
    assert seen["uid"] == 1000
    assert "GRADER_CANARY" not in seen["env"] and "SECRET_SHOWN" in seen["env"]
    assert seen["pid1"] == "bwrap"  # own PID namespace: the host's processes are not visible
    assert "canary-7f3e" not in outcome.log_tail
    assert not (tmp_path / "submission" / "forged.txt").exists()


@pytest.mark.slow
def test_timeout_kills_the_whole_job(tmp_path: Path) -> None:
    script = "import os, time, subprocess\nsubprocess.Popen(['sleep', '30'])\nwhile True: time.sleep(0.1)\n"
    job = make_job(tmp_path, [sys.executable, "-c", script], timeout_s=3)
    outcome = BwrapBackend().run(job)
    assert outcome.timed_out and outcome.returncode is None
    assert 3 <= outcome.seconds < 15
    left = subprocess.run(["pgrep", "-f", "sleep 30"], capture_output=True, text=True).stdout
    assert left.strip() == ""


def test_file_size_limit_stops_a_disk_fill(tmp_path: Path) -> None:
    script = "open('/out/big', 'wb').write(b'x' * (8 * 2**20))"
    outcome = BwrapBackend().run(make_job(tmp_path, [sys.executable, "-c", script]))
    assert outcome.returncode != 0
    assert (tmp_path / "out" / "big").stat().st_size <= 2**20
