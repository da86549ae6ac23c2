"""Finding the grader's own cgroup per controller, from the text the kernel gives.

The v1 cases are this CI host's layout (and a container's); the v2 case reads
``cgroup.controllers``, so it gets a folder standing in for the hierarchy.
"""

from __future__ import annotations

from pathlib import Path

from grader.sandbox.cgroups import Place, locate

HYBRID_MOUNTS = """\
30 25 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 25 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 25 0:33 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
38 25 0:35 / {unified} rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = """\
8:pids:/
4:memory:/process_api/26d5
1:cpu:/
0::/
"""


def test_hybrid_host_takes_memory_pids_cpu_from_v1(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("hugetlb\n")  # v2 holds none of the three
    found = locate(HYBRID_MOUNTS.format(unified=tmp_path), HYBRID_CGROUP)
    assert found == {
        "memory": Place(1, Path("/sys/fs/cgroup/memory/process_api/26d5")),
        "pids": Place(1, Path("/sys/fs/cgroup/pids")),
        "cpu": Place(1, Path("/sys/fs/cgroup/cpu")),
    }


def test_comounted_controllers_and_a_container_mount_root() -> None:
    mounts = (
        "41 30 0:40 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
        "42 30 0:41 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n"
    )
    cgroup = "3:cpu,cpuacct:/docker/abc\n2:memory:/docker/abc/job\n"
    assert locate(mounts, cgroup) == {
        "cpu": Place(1, Path("/sys/fs/cgroup/cpu,cpuacct")),
        "memory": Place(1, Path("/sys/fs/cgroup/memory/job")),
    }


def test_pure_v2_host_takes_all_three_from_the_unified_hierarchy(tmp_path: Path) -> None:
    own = tmp_path / "user.slice" / "session-3.scope"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    mounts = f"25 22 0:23 / {tmp_path} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    assert locate(mounts, "0::/user.slice/session-3.scope\n") == {
        "memory": Place(2, own),
        "pids": Place(2, own),
        "cpu": Place(2, own),
    }


def test_no_cgroup_mounts_finds_nothing() -> None:
    assert locate("22 1 0:21 / /proc rw - proc proc rw\n", "0::/\n") == {}
