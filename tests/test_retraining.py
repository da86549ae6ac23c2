"""Retraining through the whole product on a small real slice of CIFAR-10, on the CPU.

The eai-lab2 rubric as shipped, with every run cut to one short epoch by recipe overrides:
both models are retrained in the sandbox, the reference baselines too, and the report gets
the curves next to the baseline's and the experiment table.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grader.config import REPO_ROOT, Settings
from grader.pipeline import Graded, grade
from grader.protocol import Progress
from grader.report import write_report
from grader.results import NOT_THE_STUDENTS, GradeResult
from grader.retraining import TIMED_STEPS
from grader.rubric import find_rubric, load_rubric
from tests.conftest import FILES, load_module, pdf_text

pytestmark = pytest.mark.slow
QUICK = {"epochs": 2, "batch_size": 50, "val_size": 50, "train_fraction": 0.2}


@pytest.fixture(scope="module")
def lab_submission(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample B093040051, with ResNet18 weights made here (they are too large to commit)."""
    import torch

    root = tmp_path_factory.mktemp("subs") / "B093040051"
    shutil.copytree(REPO_ROOT / "submissions" / "B093040051", root, ignore=shutil.ignore_patterns("task2.pt"))
    torch.manual_seed(0)
    torch.save(load_module(root / "resnet.py").ResNet18().state_dict(), root / "weights" / "task2.pt")
    return root


@pytest.fixture(scope="module")
def graded(lab_submission: Path, train_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> Graded:
    settings = Settings(
        data_dir=train_cifar,
        cache_dir=tmp_path_factory.mktemp("cache"),
        sandbox="bwrap",
        recipe_overrides=QUICK,
    )
    return grade(lab_submission, load_rubric(find_rubric("eai-lab2")), settings)


def test_both_models_and_baselines_are_retrained(graded: Graded) -> None:
    result = graded.result
    for task_id in ("task1", "task2"):
        evaluation = result.tasks[task_id].evaluation
        assert evaluation is not None and evaluation.top3 is None  # the lab shows top-1 only
        run = result.tasks[task_id].training["retrain"]
        assert run.error is None, run.error
        assert len(run.history) == 2 and run.recipe["epochs"] == 2
        assert 0 <= run.test_accuracy <= 100
        baseline = result.baselines[task_id]
        assert baseline.error is None and baseline.test_accuracy is not None
    # The student's declared recipe is honoured where the rubric allows it (optimizer, lr).
    task2 = result.tasks["task2"].training["retrain"].recipe
    assert task2["optimizer"] == "adam" and task2["lr"] == 0.001


def test_experiment_table_is_filled(graded: Graded) -> None:
    task = graded.result.tasks["task2"]
    names = [
        "baseline",
        "no-normalization",
        "no-augmentation",
        "neither",
        "lr-0.1",
        "lr-0.01",
        "lr-0.001",
        "step-decay",
        "constant",
    ]
    for name in names:
        run = task.training[f"experiment:{name}"]
        assert run.error is None and run.test_accuracy is not None, (name, run.error)
    assert task.training["experiment:no-normalization"].recipe["normalize"] is False
    assert task.training["experiment:lr-0.01"].recipe["lr"] == 0.01
    items = {i.id: i for i in graded.result.items}
    for item_id in ("7a", "7b", "7c"):
        assert "variants retrained" in items[item_id].message
        assert items[item_id].score >= items[item_id].max_score * 0.5  # every variant was measured
    assert items["2d"].status == "pass" and items["5d"].status == "pass"


def test_report_draws_curves_beside_the_baseline(graded: Graded, tmp_path: Path) -> None:
    pdf = write_report(graded.result, tmp_path, graded.test_images)
    assert (tmp_path / "figures" / "task1_curves.png").stat().st_size > 10_000
    assert (tmp_path / "figures" / "task2_experiments.png").stat().st_size > 10_000
    # Reading order with spaces dropped: table cells wrap long run names across lines.
    text = pdf_text(pdf, "-raw")
    squashed = "".join(text.split())
    assert "Retrainingbythegrader" in squashed
    assert "Top-1accuracy" in squashed and "Top-3" not in squashed
    assert "experiment:no-augmentation" in squashed and "90.67%" in squashed  # reported beside measured


def test_a_retraining_past_the_budget_is_timed_in_a_few_steps_and_not_started(
    lab_submission: Path, train_cifar: Path, tmp_path: Path
) -> None:
    """The rubric's whole recipes (tens of epochs per run) against a one-minute budget: each
    model is timed for a few steps only, the sum is over, and its items are left not checked."""
    heard: list[Progress] = []
    settings = Settings(
        data_dir=train_cifar,
        cache_dir=tmp_path / "cache",
        sandbox="bwrap",
        recipe_overrides={"val_size": 50},
        train_budget_s=60.0,
    )
    rubric = load_rubric(find_rubric("eai-lab2"))
    result = grade(lab_submission, rubric, settings, advance=heard.append).result
    (message,) = [w for w in result.warnings if w.startswith("retraining would take about")]
    assert "images/s (task1)" in message and "images/s (task2)" in message
    assert "baseline of task1" in message and "baseline of task2" in message
    trained = [p for p in heard if p.stage != "inference"]
    assert trained and all(p.stage == "timing" and p.total == TIMED_STEPS for p in trained)
    assert all(not task.training for task in result.tasks.values()) and not result.baselines
    unchecked = [i.message for i in result.items if i.status == "not_checked"]
    assert unchecked and all(
        m.endswith("past --train-budget (60 s); the warnings give the estimate") for m in unchecked
    )


def test_killed_retraining_resumes_to_the_same_numbers(train_cifar: Path, tmp_path: Path) -> None:
    import torch

    root = tmp_path / "B000000001"
    shutil.copytree(FILES / "submissions" / "B000000001", root)
    _slow_down_training(root / "model.py")
    torch.manual_seed(0)
    (root / "weights").mkdir()
    torch.save(load_module(root / "model.py").Net().state_dict(), root / "weights" / "model.pt")
    rubric = FILES / "rubrics" / "retrain.yaml"
    uninterrupted = _grade_in_process(root, rubric, train_cifar, tmp_path / "cache-a")
    cache = tmp_path / "cache-b"
    _kill_after_first_checkpoint(root, rubric, train_cifar, cache)
    resumed = _grade_in_process(root, rubric, train_cifar, cache)
    a, b = uninterrupted.tasks["cnn"].training["retrain"], resumed.tasks["cnn"].training["retrain"]
    assert b.resumed_from_epoch is not None and b.resumed_from_epoch >= 1
    assert [(e.train_loss, e.val_loss, e.val_acc) for e in a.history] == [
        (e.train_loss, e.val_loss, e.val_acc) for e in b.history
    ]
    assert a.test_accuracy == b.test_accuracy


def _slow_down_training(model_py: Path) -> None:
    """Each training step sleeps 50 ms, so an epoch lasts over half a second on any machine and
    the kill lands between the first checkpoint and the end of the run. Numbers are unchanged."""
    source = model_py.read_text()
    head = "    def forward(self, x):\n"
    sleep = "        if self.training:\n            time.sleep(0.05)\n"
    source = "import time\n" + source.replace(head, head + sleep)
    assert "time.sleep" in source
    model_py.write_text(source)


def _grade_in_process(root: Path, rubric: Path, data: Path, cache: Path) -> GradeResult:
    settings = Settings(data_dir=data, cache_dir=cache, sandbox="bwrap")
    return grade(root, load_rubric(rubric), settings).result


def _recorded_epochs(cache: Path) -> list[str]:
    names = []
    for record in (cache / "checkpoints").glob("*.record.json"):
        with contextlib.suppress(OSError, ValueError):
            names += [name for name in json.loads(record.read_text()) if name.startswith("epoch-")]
    return names


def _kill_after_first_checkpoint(root: Path, rubric: Path, data: Path, cache: Path) -> None:
    script = (
        "import sys; from pathlib import Path\n"
        "from grader import Settings, grade, load_rubric\n"
        f"grade(Path({str(root)!r}), load_rubric(Path({str(rubric)!r})), "
        f"Settings(data_dir=Path({str(data)!r}), cache_dir=Path({str(cache)!r}), sandbox='bwrap'))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.monotonic() + 600
    # Only checkpoints the host has recorded count (not one it has yet to hash, nor the
    # temporary file one is written to).
    while not _recorded_epochs(cache) and time.monotonic() < deadline:
        assert proc.poll() is None, "the grading ended before writing a checkpoint"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # no cleanup: as if the machine went down
    proc.wait()
    assert list((cache / "checkpoints").glob("*/epoch-*.pt")), "no checkpoint survived the kill"


TAMPER = """
from pathlib import Path

CHECKPOINTS = Path("/checkpoints")
if CHECKPOINTS.is_dir():  # a training job: leave a forged epoch for whoever resumes here next
    for name in ("epoch-0001.pt", "epoch-0002.pt", "final.pt"):
        (CHECKPOINTS / name).write_bytes(b"forged by another student")
    raise SystemExit("tampered")
"""
ONE_RUN = """
id: retrain-one
title: "One retraining"
preprocess: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}
tasks:
  cnn: {title: "tiny CNN", model: "model.py:Net", weights: weights/model.pt}
training:
  recipe: {epochs: 2, batch_size: 50, lr: 0.05, val_size: 100, schedule: cosine, seed: 0}
items:
  - {id: valid, task: cnn, title: "builds", type: model_valid, points: 1}
  - {id: retrain, task: cnn, title: "Retrained", type: retrain, points: 4,
     thresholds: [{accuracy: 0, fraction: 0}, {accuracy: 100, fraction: 1}]}
"""


def test_a_student_tampering_with_checkpoints_changes_nobody_elses_retraining(
    train_cifar: Path, tmp_path: Path
) -> None:
    """Two students with the same default file names, graded side by side (--jobs 2), one of
    them forging checkpoints in its training job: the other's retraining is what it is alone."""
    import torch

    klass = tmp_path / "class"
    for sid, extra in (("E000000001", ""), ("E000000002", TAMPER)):
        root = klass / sid
        shutil.copytree(FILES / "submissions" / "B000000001", root)
        (root / "model.py").write_text((root / "model.py").read_text() + extra)
        (root / "weights").mkdir()
        torch.manual_seed(0)
        net = load_module(FILES / "submissions" / "B000000001" / "model.py").Net()
        torch.save(net.state_dict(), root / "weights" / "model.pt")
    rubric = tmp_path / "one-run.yaml"
    rubric.write_text(ONE_RUN)
    cache = tmp_path / "cache"  # one cache for every run, as on a course's grading machine

    def run_all(out: Path, *only: str) -> dict[str, dict]:
        extra = [arg for sid in only for arg in ("--only", sid)]
        done = subprocess.run(
            [
                str(Path(sys.executable).parent / "grader"), "run-all", str(klass), "--rubric", str(rubric),
                "--out", str(out), "--data-dir", str(train_cifar), "--sandbox", "bwrap", "--jobs", "2",
                *extra,
            ],
            capture_output=True, text=True, timeout=1200, env={**os.environ, "GRADER_CACHE_DIR": str(cache)},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/results.json")}

    together = run_all(tmp_path / "together")
    tampered = together["E000000002"]["tasks"]["cnn"]["training"]["retrain"]
    assert tampered["error"] is not None and tampered["error_stage"] not in NOT_THE_STUDENTS, tampered
    alone = run_all(tmp_path / "alone", "E000000001")
    for results in (together, alone):
        run = results["E000000001"]["tasks"]["cnn"]["training"]["retrain"]
        assert run["error"] is None and run["resumed_from_epoch"] is None
    mine, theirs = (r["E000000001"]["tasks"]["cnn"]["training"]["retrain"] for r in (together, alone))
    assert [(e["train_loss"], e["val_acc"]) for e in mine["history"]] == [
        (e["train_loss"], e["val_acc"]) for e in theirs["history"]
    ]
    assert mine["test_accuracy"] == theirs["test_accuracy"]
    assert not list((cache / "checkpoints").glob("*/epoch-*")), "finished runs leave no checkpoint"
