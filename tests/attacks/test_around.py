"""Attacks around the sandbox: what the host reads of a submission, graded as a class by run-all.

Beside two honest students who hand in the same default file names, the class holds folders
that attack the host's reading of a submission rather than the sandbox: a FIFO and a device
file (hashing them would block forever), a 3 GiB sparse file (read whole, it would fill the
host's memory), a manifest of nested YAML aliases, a notebook whose saved output is built to
make a backtracking regex run for hours, and a folder whose name ends in a newline. Each is
refused in one line naming the file, or graded within its bounds; every other student is
graded, and no grading process passes 1.5 GiB resident. Run with each sandbox backend.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from tests.conftest import FILES, load_module, require_docker_or_skip
from tests.test_yamlfile import ALIAS_BOMB

pytestmark = pytest.mark.slow
GRADER = str(Path(sys.executable).parent / "grader")
NET = FILES / "submissions" / "B000000001" / "model.py"
HONEST = ["C000000001", "C000000002"]
ONE_LINE = "a submission holds regular files, folders and links only: remove it"
# student -> (row status, words of the reason) for those refused before grading
REFUSED = {
    "C000000003": "pipe.fifo is a FIFO (named pipe), not a file; " + ONE_LINE,
    "C000000004": "null.dev is a character device, not a file; " + ONE_LINE,
    "C000000005": "C000000005 holds 3,072 MiB of files, over the grader's limit of 1,024 MiB",
}
YAML_BOMB, REGEX_BOMB, NEWLINE_TWIN = "C000000006", "C000000007", "C000000001\n"
BACKENDS = ["bwrap", pytest.param("docker", marks=pytest.mark.docker)]


def _honest(folder: Path, seed: int) -> None:
    import torch

    folder.mkdir(parents=True)
    (folder / "model.py").write_text(NET.read_text())
    (folder / "weights").mkdir()
    torch.manual_seed(seed)
    torch.save(load_module(folder / "model.py").Net().state_dict(), folder / "weights" / "model.pt")


@pytest.fixture(scope="module")
def klass(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("around")
    for seed, sid in enumerate([*HONEST, *REFUSED, YAML_BOMB, REGEX_BOMB]):
        _honest(root / sid, seed)
    os.mkfifo(root / "C000000003" / "pipe.fifo")  # nobody ever writes to it
    os.mknod(root / "C000000004" / "null.dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    with open(root / "C000000005" / "zeros.bin", "wb") as sparse:
        sparse.truncate(3 * 2**30)  # 3 GiB that take no room on disk
    (root / YAML_BOMB / "submission.yaml").write_text(ALIAS_BOMB)
    _regex_bomb(root / REGEX_BOMB)
    _honest(root / NEWLINE_TWIN, 9)
    return root


def _regex_bomb(folder: Path) -> None:
    """The model in a notebook whose saved output lines are built against backtracking regexes."""
    (folder / "model.py").unlink()
    lines = [
        "test acc" + " " * 20_000 + "x",
        "accuracy " + "test " * 10_000 + "images",
        "Test Accuracy: " + "9" * 50_000,
        "1/" * 20_000,
    ]
    cells = [
        nbformat.v4.new_code_cell(NET.read_text()),
        nbformat.v4.new_code_cell(
            "print('...')", outputs=[nbformat.v4.new_output("stream", name="stdout", text="\n".join(lines))]
        ),
    ]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), folder / "lab.ipynb")


@pytest.fixture(scope="module", params=BACKENDS)
def graded(request: pytest.FixtureRequest, klass: Path, small_cifar: Path, tmp_path_factory) -> dict:
    if request.param == "docker":
        require_docker_or_skip()
    out = tmp_path_factory.mktemp(f"around-{request.param}")
    env = {k: v for k, v in os.environ.items() if k != "GRADER_DATA_DIR"}
    env["GRADER_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    started = time.monotonic()
    done = subprocess.run(
        [
            GRADER, "run-all", str(klass), "--rubric", "cifar10-cnn", "--out", str(out), "--jobs", "2",
            "--data-dir", str(small_cifar), "--sandbox", request.param, "--timeout", "60",
        ],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    seconds = time.monotonic() - started
    rows = {row["student_id"]: row for row in json.loads((out / "batch.json").read_text())["rows"]}
    return {"done": done, "rows": rows, "out": out, "seconds": seconds}


def test_the_honest_students_are_graded(graded: dict) -> None:
    assert graded["done"].returncode == 0, graded["done"].stderr
    for sid in HONEST:
        row = graded["rows"][sid]
        assert row["status"] == "graded" and row["total"] > 0, row


@pytest.mark.parametrize("sid", list(REFUSED))
def test_special_and_oversize_files_are_refused_unread_in_one_line(graded: dict, sid: str) -> None:
    row = graded["rows"][sid]
    assert row["status"] == "failed" and row["reason"].startswith(REFUSED[sid]), row
    assert "\n" not in row["reason"]


def test_a_yaml_alias_bomb_is_one_manifest_error(graded: dict) -> None:
    row = graded["rows"][YAML_BOMB]
    assert row["status"] == "graded", row
    results = json.loads((graded["out"] / YAML_BOMB / "results.json").read_text())
    error = results["tasks"]["cnn"]["error"]
    assert results["tasks"]["cnn"]["error_stage"] == "manifest"
    assert "anchors and aliases (&name, *name) are not accepted" in error and len(error) < 300


def test_a_regex_bomb_in_saved_outputs_is_read_in_linear_time(graded: dict) -> None:
    row = graded["rows"][REGEX_BOMB]
    assert row["status"] == "graded" and row["wall_seconds"] < 120, row


def test_a_folder_name_ending_in_a_newline_is_no_student(graded: dict) -> None:
    ids = [sid for sid in graded["rows"] if sid.startswith("C000000001")]
    assert sorted(ids) == ["C000000001", "C000000001\\n"]  # the newline shown, not kept
    row = graded["rows"]["C000000001\\n"]
    assert row["status"] == "failed" and "is not a usable student id" in row["reason"]
    for name in ("gradebook.csv", "canvas.csv", "moodle.csv"):
        lines = (graded["out"] / name).read_text(encoding="utf-8-sig").splitlines()
        assert sum(",C000000001," in f",{line}" for line in lines) == 1, name


def test_no_grading_process_passes_its_memory_bound(graded: dict) -> None:
    peaks = {
        sid: row["peak_memory_bytes"] for sid, row in graded["rows"].items() if row["status"] == "graded"
    }
    assert peaks and all(0 < peak < 1.5 * 2**30 for peak in peaks.values()), peaks
    assert all("was stopped" not in row["reason"] for row in graded["rows"].values())
