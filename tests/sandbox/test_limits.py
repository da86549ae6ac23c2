"""Each resource limit of the bubblewrap backend, run for real: what it stops and what it lets through.

The numbers are exact where the kernel makes them so (processes, bytes); the CPU share
is a ratio with a wide margin, because the machine running the tests is shared.
"""

from __future__ import annotations

import sys

import pytest

from grader.sandbox import BwrapBackend, Job, Mount
from tests.conftest import job_limits
from tests.sandbox.conftest import leftovers, processes_with

MiB = 2**20

TOUCH_MEMORY = """
import sys
chunks = []
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 10**6):
    chunks.append(b"x" * 2**25)  # 32 MiB, written, so resident
print(len(chunks))
"""


def test_memory_within_the_limit_runs(run_script) -> None:
    ran = run_script(TOUCH_MEMORY.replace("10**6", "8"), memory_bytes=512 * MiB)  # 256 MiB resident
    assert ran.outcome.returncode == 0, ran.outcome.log_tail
    assert ran.outcome.stdout_tail.strip() == "8"
    assert not ran.outcome.oom_killed
    assert ran.enforced["memory"] == "0.5 GiB, no swap (cgroup v1)"


def test_memory_beyond_the_limit_is_an_oom_kill_in_plain_words(run_script) -> None:
    ran = run_script(TOUCH_MEMORY, memory_bytes=512 * MiB)
    outcome = ran.outcome
    assert outcome.returncode == -9 and outcome.oom_killed and not outcome.timed_out
    assert outcome.memory_limit_bytes == 512 * MiB
    assert outcome.resource_problem() is not None
    assert outcome.resource_problem().startswith("ran out of memory (limit 0.5 GiB)")
    assert leftovers() == []


FORK_UNTIL_REFUSED = """
import os, time
children = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(600)  # argv of the children: see the marker below
            os._exit(0)
        children += 1
except OSError as err:
    print(children, err.errno)
"""


def test_process_limit_stops_a_fork_bomb(run_script) -> None:
    marker = "fork-bomb-3c1d"
    ran = run_script(FORK_UNTIL_REFUSED + f"# {marker}", pids=32)
    assert ran.outcome.returncode == 0, ran.outcome.log_tail
    # 32 processes: bwrap, its PID 1 in the sandbox and the script itself, then 29 children.
    assert ran.outcome.stdout_tail.split() == ["29", "11"]  # 11: EAGAIN
    assert ran.enforced["processes"] == "32 (cgroup v1)"
    assert processes_with(marker) == []


SPIN_TWO_PROCESSES = """
import os, time
def spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
start = time.monotonic()
pid = os.fork()
spin(2.0)
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
t = os.times()
print((t.user + t.system + t.children_user + t.children_system) / (time.monotonic() - start))
"""


@pytest.mark.slow
def test_cpu_share_bounds_the_cores_used(run_script) -> None:
    ran = run_script(SPIN_TWO_PROCESSES, cpus=0.5)
    assert ran.outcome.returncode == 0, ran.outcome.log_tail
    cores_used = float(ran.outcome.stdout_tail)
    # Two spinning processes would use up to 2 cores; the quota allows half of one.
    assert cores_used < 0.75
    assert ran.enforced["cpu"] == "0.5 cores (cgroup v1)"


FILL_OUT = """
import os
written = 0
try:
    while True:
        with open(f"/out/fill{written}", "wb") as f:
            f.write(b"x" * 2**20)
        written += 1
except OSError as err:
    print(written, err.errno)
os.remove("/out/fill3")  # room for what follows
os.mkdir("/out/sub")
with open("/out/sub/kept.txt", "w") as f:
    f.write("kept")
os.symlink("/etc/passwd", "/out/link")
os.mkfifo("/out/pipe")
"""


def test_output_directory_is_capped_and_only_regular_files_come_back(run_script) -> None:
    ran = run_script(FILL_OUT, output_bytes=4 * MiB)
    assert ran.outcome.returncode == 0, ran.outcome.log_tail
    assert ran.outcome.stdout_tail.split() == ["4", "28"]  # 28: ENOSPC after 4 files of 1 MiB
    on_host = {p.relative_to(ran.out).as_posix(): p for p in ran.out.rglob("*")}
    assert sorted(on_host) == ["fill0", "fill1", "fill2", "fill4", "sub", "sub/kept.txt"]
    assert sum(p.stat().st_size for p in on_host.values() if p.is_file()) == 3 * MiB + len("kept")
    assert ran.enforced["output directory"] == "4 MiB (tmpfs)"
    assert leftovers() == []


def test_a_file_larger_than_the_file_limit_is_cut(run_script) -> None:
    ran = run_script("open('/out/big', 'wb').write(b'x' * (3 * 2**20))", output_bytes=64 * MiB)
    assert ran.outcome.returncode == 1 and "File too large" in ran.outcome.stderr_tail
    assert (ran.out / "big").stat().st_size == MiB  # RLIMIT_FSIZE of the job: 1 MiB


FLOOD = """
import sys
for block in range(64):  # 2**18 lines of 64 bytes: 16 MiB in all, written 4096 lines at a time
    lines = range(block * 4096, (block + 1) * 4096)
    sys.stdout.write("".join(f"line {i:07d} " + "x" * 50 + "\\n" for i in lines))
print("traceback at the end", file=sys.stderr)
"""
FLOOD_BYTES = 16 * MiB  # sixteen times the log's cap


def test_a_log_flood_keeps_head_and_tail_and_the_job_finishes(run_script) -> None:
    ran = run_script(FLOOD, log_bytes=MiB)
    outcome = ran.outcome
    assert outcome.returncode == 0  # never stopped for printing
    stdout = (ran.logs / "stdout.log").read_text()
    kept = MiB // 2
    assert outcome.log_bytes_dropped == FLOOD_BYTES - kept
    assert stdout.startswith("line 0000000 ")
    assert f"[... {FLOOD_BYTES - kept:,} bytes of output not kept ...]" in stdout
    assert stdout.endswith(f"line {2**18 - 1:07d} " + "x" * 50 + "\n")
    assert len(stdout) == kept + len(f"\n[... {FLOOD_BYTES - kept:,} bytes of output not kept ...]\n")
    assert outcome.stderr_tail == "traceback at the end\n"


OUTLIVE = """
import os, signal, subprocess, sys, time
marker = sys.argv[1]
# A child that ignores SIGTERM.
deaf = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
subprocess.Popen([sys.executable, "-c", deaf, marker])
# A daemon: double fork and a new session, then exec so the marker is in its argv.
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", marker])
    os._exit(0)
time.sleep(0.5)
print("leaving")
"""


@pytest.mark.parametrize("timeout_s", [60.0, 1.0], ids=["job-exits", "job-times-out"])
def test_no_process_of_the_job_outlives_it(run_script, timeout_s: float) -> None:
    marker = f"outlive-7a0e-{int(timeout_s)}"
    stays = 'print("leaving", flush=True)\ntime.sleep(600)'  # killed once all its processes started
    script = OUTLIVE if timeout_s > 1 else OUTLIVE.replace('print("leaving")', stays)
    ran = run_script(script.replace("sys.argv[1]", repr(marker)), timeout_s=timeout_s)
    if timeout_s == 1.0:
        assert ran.outcome.timed_out and ran.outcome.returncode is None
        assert ran.outcome.stdout_tail == "leaving\n"
    else:
        assert ran.outcome.returncode == 0 and ran.outcome.stdout_tail == "leaving\n"
    assert processes_with(marker) == []
    assert leftovers() == []


LINKS_AND_DEPTH = """
import os
with open("/out/one", "wb") as f:
    f.write(b"x" * 2**20)
for n in range(1000):  # hard links take no room on the tmpfs: 1 GiB if copied out in full
    os.link("/out/one", f"/out/link{n:04d}")
path = "/out"
for level in range(50):
    path += "/d"
    os.mkdir(path)
"""


def test_hard_links_and_deep_folders_do_not_multiply_on_the_host(run_script) -> None:
    ran = run_script(LINKS_AND_DEPTH, output_bytes=4 * MiB)
    assert ran.outcome.returncode == 0, ran.outcome.log_tail
    files = [p for p in ran.out.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) == 4 * MiB  # the cap: 4 of the 1,001 names
    deepest = max(len(p.relative_to(ran.out).parts) for p in ran.out.rglob("*"))
    assert deepest == 8


def test_a_second_writable_mount_is_bound_as_it_is_and_said_to_be_uncapped(tmp_path) -> None:
    out, checkpoints = tmp_path / "out", tmp_path / "checkpoints"
    out.mkdir()
    checkpoints.mkdir()
    (checkpoints / "epoch1.pt").write_text("from an earlier attempt")
    script = "open('/out/a', 'w').write('a'); open('/ckpt/epoch2.pt', 'w').write('b')"
    job = Job(
        [sys.executable, "-c", script],
        [Mount(out, "/out", writable=True), Mount(checkpoints, "/ckpt", writable=True)],
        "/",
        60,
        job_limits(),
        tmp_path / "logs",
    )
    backend = BwrapBackend()
    assert backend.run(job).returncode == 0
    assert (out / "a").read_text() == "a"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch1.pt", "epoch2.pt"]
    enforced = backend.enforced(job)
    assert enforced["output directory"] == "64 MiB (tmpfs)"
    assert enforced["/ckpt size"].startswith("NOT enforced")
    assert enforced["filesystem"].endswith("writable: /tmp, /dev/shm, /out, /ckpt")
