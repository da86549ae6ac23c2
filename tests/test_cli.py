"""`grader run` as a TA types it: exit codes, one-line errors, the files it writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FILES, load_module

GRADER = str(Path(sys.executable).parent / "grader")


def run_grader(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "GRADER_DATA_DIR"}
    full_env.update(env or {})
    return subprocess.run([GRADER, *args], capture_output=True, text=True, env=full_env, timeout=600)


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    root = tmp_path_factory.mktemp("subs") / "B000000001"
    shutil.copytree(FILES / "submissions" / "B000000001", root)
    torch.manual_seed(0)
    model = load_module(root / "model.py").Net()
    (root / "weights").mkdir()
    torch.save(model.state_dict(), root / "weights" / "model.pt")
    return root


@pytest.mark.slow
def test_run_writes_results_and_a_pdf_with_the_score_table(
    student: Path, small_cifar: Path, tmp_path: Path
) -> None:
    done = run_grader(
        "run", str(student), "--data-dir", str(small_cifar), "--out", str(tmp_path), "--sandbox", "bwrap"
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / "B000000001"
    results = json.loads((out / "results.json").read_text())
    assert results["student_id"] == "B000000001" and results["rubric"] == "cifar10-cnn"
    assert results["max_total"] == 100
    task = results["tasks"]["cnn"]
    assert task["status"] == "ok" and task["error"] is None
    assert task["params"] == 5370 and task["macs"]["thop"] == 259072 and task["macs_counter"] == "thop"
    assert 0 <= task["test_accuracy"] <= 100
    items = {i["id"]: i for i in results["items"]}
    assert set(items) == {"1", "2", "3", "4", "5"}
    assert items["2"]["status"] == "pass" and items["2"]["score"] == 20
    assert items["5"]["status"] == "manual"
    assert results["total"] == pytest.approx(sum(i["score"] for i in results["items"]))
    text = subprocess.run(
        ["pdftotext", "-raw", str(out / "report.pdf"), "-"], capture_output=True, text=True, check=True
    ).stdout
    squashed = "".join(text.split())  # table cells wrap titles across lines
    assert "Atmost1,000,000parameters" in squashed
    assert "ThemodelbuildsandclassifiesaCIFAR-10image" in squashed
    assert f"{results['total']:g}/100" in squashed
    assert "Layer(type)" in squashed and "5,370" in squashed


def test_no_data_is_one_line_naming_the_options(student: Path, tmp_path: Path) -> None:
    done = run_grader("run", str(student), "--out", str(tmp_path))
    assert done.returncode == 4
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and done.stderr.rstrip().endswith(errors[0])
    assert "--data-dir" in errors[0] and "GRADER_DATA_DIR" in errors[0]
    assert not (tmp_path / "B000000001").exists()


def test_invalid_rubric_names_file_and_key(student: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "id: x\ntitle: X\ntasks: {t: {title: T, model: 'm.py:Net', weights: w.pt}}\n"
        "items: [{id: a, task: t, title: A, type: model_valid, points: ten}]\n"
    )
    done = run_grader("run", str(student), "--rubric", str(bad), "--data-dir", str(tmp_path))
    assert done.returncode == 3
    assert "bad.yaml: items[0].points" in done.stderr and "'ten'" in done.stderr


def test_missing_rubric_is_a_usage_error(tmp_path: Path) -> None:
    sub = tmp_path / "B1"
    sub.mkdir()
    done = run_grader("run", str(sub), "--data-dir", str(tmp_path))
    assert done.returncode == 2
    assert "pass --rubric FILE" in done.stderr


def test_unknown_rubric_lists_the_known_ones(student: Path) -> None:
    done = run_grader("run", str(student), "--rubric", "no-such-lab")
    assert done.returncode == 3
    assert "cifar10-cnn" in done.stderr and "eai-lab2" in done.stderr


def test_missing_submission_folder(tmp_path: Path) -> None:
    done = run_grader("run", str(tmp_path / "nobody"), "--rubric", "cifar10-cnn")
    assert done.returncode == 6
    assert "is not a directory" in done.stderr


def test_bad_device_flag(student: Path) -> None:
    done = run_grader("run", str(student), "--device", "tpu")
    assert done.returncode == 2
    assert "--device 'tpu'" in done.stderr


@pytest.mark.slow
def test_unsafe_no_sandbox_stamps_every_report(student: Path, small_cifar: Path, tmp_path: Path) -> None:
    done = run_grader(
        "run", str(student), "--data-dir", str(small_cifar), "--out", str(tmp_path), "--unsafe-no-sandbox"
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "B000000001" / "results.json").read_text())
    assert results["sandbox"]["backend"] == "none"
    assert any("WITHOUT a sandbox" in w for w in results["warnings"])
    assert results["tasks"]["cnn"]["status"] == "ok"
    text = subprocess.run(
        ["pdftotext", str(tmp_path / "B000000001" / "report.pdf"), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "WITHOUT a sandbox" in text


def test_unknown_sandbox_is_a_usage_error(student: Path) -> None:
    done = run_grader("run", str(student), "--sandbox", "chroot")
    assert done.returncode == 2
    assert "--sandbox 'chroot'" in done.stderr and "--unsafe-no-sandbox" in done.stderr
