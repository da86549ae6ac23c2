"""What a job cannot reach or change although its uid is, outside its namespace, root.

Run for real in bubblewrap. The kernel checks /proc/sys writes and root-only /proc files
by uid alone, so without the backend's read-only /proc/sys a job could rewrite host
sysctls (core_pattern runs a program as host root on the next crash).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.sandbox.conftest import leftovers

MiB = 2**20

TRY = """
import json, os, subprocess

def attempt(fn):
    try:
        fn()
        return "allowed"
    except Exception as exc:
        return type(exc).__name__ + (f" {exc.errno}" if isinstance(exc, OSError) else "")

def write(path, text):
    with open(path, "w") as f:
        f.write(text)

def read(path):
    with open(path, "rb") as f:
        return f.read()

def fill(folder):
    n = 0
    try:
        while True:
            write(f"{folder}/fill{n}", "x" * 2**20)
            n += 1
    except OSError as err:
        return [n, err.errno]

ROOT_ONLY = ("/proc/timer_list", "/proc/slabinfo", "/proc/kmsg")
same = {p: read(p).decode() for p in ("/proc/sys/vm/swappiness", "/proc/sys/kernel/core_pattern")}
print(json.dumps({
    # Writing back the current value: harmless should the write go through.
    "sysctl": {p: attempt(lambda p=p: write(p, v)) for p, v in same.items()},
    "root_only": {p: attempt(lambda p=p: read(p)) for p in ROOT_ONLY},
    "pid1_environ": read("/proc/1/environ").decode(errors="replace"),
    "write_root": attempt(lambda: write("/evil", "x")),
    "write_dev": attempt(lambda: write("/dev/evil", "x")),
    "tmp": fill("/tmp"),
    "shm": fill("/dev/shm"),
    "nested_userns": subprocess.run(["unshare", "--user", "true"], capture_output=True).returncode,
}))
"""


@pytest.fixture()
def seen(run_script, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("GRADER_ISOLATION_CANARY", "canary-5be1")
    ran = run_script(TRY, tmpfs_bytes=4 * MiB)
    assert ran.outcome.returncode == 0, ran.outcome.log_tail
    return json.loads(ran.outcome.stdout_tail)


def test_kernel_settings_are_read_only(seen: dict) -> None:
    before = Path("/proc/sys/vm/swappiness").read_text()
    assert seen["sysctl"] == {
        "/proc/sys/vm/swappiness": "OSError 30",  # EROFS
        "/proc/sys/kernel/core_pattern": "OSError 30",
    }
    assert Path("/proc/sys/vm/swappiness").read_text() == before


def test_root_only_proc_files_are_hidden(seen: dict) -> None:
    assert all(result.startswith("PermissionError") for result in seen["root_only"].values()), seen


def test_pid1_holds_none_of_the_graders_environment(seen: dict) -> None:
    assert "canary-5be1" not in seen["pid1_environ"]
    assert seen["pid1_environ"] == "PATH=/usr/bin:/bin\0"


def test_root_and_dev_are_read_only_and_tmpfs_are_capped(seen: dict) -> None:
    assert seen["write_root"] == "OSError 30" and seen["write_dev"] == "OSError 30"
    assert seen["tmp"] == [4, 28]  # ENOSPC after 4 files of 1 MiB in a 4 MiB /tmp
    assert seen["shm"] == [4, 28]


def test_no_nested_user_namespaces(seen: dict) -> None:
    assert seen["nested_userns"] != 0


KILL_ALL = """
import os, signal
for pid in (-1, BYSTANDER):
    try:
        os.kill(pid, signal.SIGKILL)
        print("sent")
    except OSError as err:
        print(type(err).__name__)
"""


def test_kill_everything_reaches_only_the_job(run_script) -> None:
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        script = KILL_ALL.replace("BYSTANDER", str(bystander.pid))
        ran = run_script(script)
        # Nothing else to signal in the job's PID namespace; the host's pid means nothing there.
        assert ran.outcome.stdout_tail.split() == ["ProcessLookupError", "ProcessLookupError"]
        assert bystander.poll() is None  # a root process of the host, same uid as the job's
    finally:
        bystander.kill()
        bystander.wait()


WITHOUT_CGROUPS = """
import json, sys
from pathlib import Path
from grader.sandbox import BwrapBackend, Job, Mount
from tests.conftest import job_limits
out, full = Path(sys.argv[1]), Path(sys.argv[2])
for name, folder in (("empty", out), ("not_empty", full)):
    job = Job([sys.executable, "-c", "print('ran')"], [Mount(folder, "/out", writable=True)], "/", 60,
              job_limits(), folder.parent / f"logs-{name}")
    backend = BwrapBackend()
    outcome = backend.run(job)
    print(json.dumps({"name": name, "stdout": outcome.stdout_tail, "enforced": backend.enforced(job),
                      "memory_limit": outcome.memory_limit_bytes}))
"""


@pytest.mark.slow
def test_without_writable_cgroups_the_job_runs_and_says_what_was_not_enforced(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "earlier.txt").write_text("x")
    # A private mount namespace whose cgroup hierarchies are read-only: cgroups unusable.
    readonly = "for m in $(findmnt -rn -t cgroup,cgroup2 -o TARGET); do mount -o remount,bind,ro $m; done"
    command = f'{readonly} && exec "$0" -c "$1" "$2" "$3"'
    args = [sys.executable, textwrap.dedent(WITHOUT_CGROUPS), str(tmp_path / "out"), str(tmp_path / "full")]
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", command, *args],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert done.returncode == 0, done.stderr
    runs = {r["name"]: r for r in map(json.loads, done.stdout.splitlines())}
    for run in runs.values():
        assert run["stdout"] == "ran\n"
        assert run["memory_limit"] is None
        for label in ("memory", "processes", "cpu"):
            assert (
                run["enforced"][label]
                == f"NOT enforced: cgroup v1 {_controller(label)} (Read-only file system)"
            )
    assert runs["empty"]["enforced"]["output directory"] == "64 MiB (tmpfs)"
    assert runs["not_empty"]["enforced"]["output directory"].startswith(
        f"NOT enforced: {tmp_path / 'full'} is not empty"
    )
    assert leftovers() == []


def _controller(label: str) -> str:
    return {"memory": "memory", "processes": "pids", "cpu": "cpu"}[label]
