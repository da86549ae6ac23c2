"""grader/inside/engine.py: schedules against torch's own, repeatability, resuming (after an exception and
after SIGKILL) and the time budget. Training runs a tiny CNN on 30 real CIFAR-10 training images per class."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grader.inside.augment import Normalizer, split_train_val
from grader.inside.engine import lr_factor
from grader.inside.inference import infer
from grader.protocol import Recipe, from_plain, to_plain
from tests.inside.conftest import CPU, QUICK, REPO, Data, fit, numbers, same_weights


def torch_lrs(make: Callable[[torch.optim.Optimizer], object], steps: int, per_epoch: int) -> list[float]:
    """The lr of each step under one of torch's schedulers stepped once per ``per_epoch`` steps."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make(opt)
    lrs = []
    for step in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if (step + 1) % per_epoch == 0:
            scheduler.step()  # type: ignore[attr-defined]
    return lrs


@pytest.mark.parametrize(
    ("recipe", "scheduler", "per_epoch"),
    [
        ({"schedule": "step", "step_size": 3}, lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.1), 5),
        (
            {"schedule": "multistep", "milestones": [2, 5]},
            lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 5], 0.1),
            5,
        ),
        ({"schedule": "cosine"}, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 40), 1),
    ],
)
def test_schedules_match_torchs_schedulers(recipe: dict, scheduler: Callable, per_epoch: int) -> None:
    r = from_plain(Recipe, {**recipe, "epochs": 8})
    steps = 40
    mine = [lr_factor(s, r, steps_per_epoch=5) for s in range(steps)]
    assert mine == pytest.approx(torch_lrs(scheduler, steps, per_epoch), abs=1e-12)


def test_warmup_is_linear_then_hands_over_to_the_schedule() -> None:
    r = Recipe(schedule="cosine", warmup_epochs=2, epochs=10)
    factors = [lr_factor(s, r, steps_per_epoch=10) for s in range(100)]
    assert factors[:20] == pytest.approx([(s + 1) / 20 for s in range(20)])
    assert factors[20] == 1.0
    assert factors[60] == pytest.approx(0.5 * (1 + math.cos(math.pi * 40 / 80)))


def test_one_cycle_rises_from_a_25th_to_the_peak_at_30_percent_then_anneals() -> None:
    r = Recipe(schedule="onecycle", epochs=10)
    factors = [lr_factor(s, r, steps_per_epoch=100) for s in range(1000)]
    assert factors[0] == pytest.approx(1 / 25)
    assert int(np.argmax(factors)) == 300 and factors[300] == pytest.approx(1.0)
    assert factors[-1] < 1e-4
    steps = np.diff(factors)
    assert (steps[:300] > 0).all() and (steps[300:] < 0).all()


# --- training -------------------------------------------------------------------------------


def test_training_is_repeatable_bit_for_bit(cifar: Data) -> None:
    a, ra = fit(cifar, cutout=8, label_smoothing=0.1)
    b, rb = fit(cifar, cutout=8, label_smoothing=0.1)
    assert same_weights(a, b) and numbers(ra) == numbers(rb)
    c, _ = fit(cifar, cutout=8, label_smoothing=0.1, seed=1)
    assert not same_weights(a, c)


def test_training_learns_on_real_images(cifar: Data) -> None:
    _, result = fit(cifar, epochs=6, lr=0.05)
    losses = [h.train_loss for h in result.history]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.1
    assert result.history[-1].val_acc is not None and result.history[-1].val_acc > 10  # better than chance
    assert len(result.history) == 6 and result.stopped_early is None and result.images_per_second > 0


def test_lr_recorded_is_that_of_each_epochs_last_step(cifar: Data) -> None:
    _, result = fit(cifar, epochs=2)
    r = from_plain(Recipe, {**QUICK, "epochs": 2})
    steps = (len(cifar[1]) - r.val_size) // r.batch_size
    assert [h.lr for h in result.history] == pytest.approx(
        [r.lr * lr_factor(steps - 1, r, steps), r.lr * lr_factor(2 * steps - 1, r, steps)]
    )


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_optimizers_train(cifar: Data, optimizer: str) -> None:
    _, result = fit(cifar, epochs=1, optimizer=optimizer, lr=1e-3, schedule="onecycle")
    assert math.isfinite(result.history[0].train_loss)


# --- resuming -------------------------------------------------------------------------------


class Interrupted(Exception):
    pass


def interrupt_after(epoch: int) -> Callable[[str], None]:
    def log(line: str) -> None:
        if line.startswith(f"epoch {epoch}/"):
            raise Interrupted(line)

    return log


def test_resumed_run_matches_an_uninterrupted_one(cifar: Data, tmp_path: Path) -> None:
    recipe = {"cutout": 8, "schedule": "cosine"}
    whole, whole_result = fit(cifar, **recipe)
    with pytest.raises(Interrupted):
        fit(cifar, checkpoint_dir=tmp_path, log=interrupt_after(1), **recipe)
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-0001.pt"]
    resumed, result = fit(cifar, checkpoint_dir=tmp_path, **recipe)
    assert result.resumed_from_epoch == 1
    assert same_weights(whole, resumed) and numbers(result) == numbers(whole_result)
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-0003.pt"]  # only the latest is kept
    again, finished = fit(cifar, checkpoint_dir=tmp_path, **recipe)  # nothing left to do
    assert finished.resumed_from_epoch == 3 and same_weights(again, whole)


def test_resuming_with_another_recipe_is_refused(cifar: Data, tmp_path: Path) -> None:
    fit(cifar, checkpoint_dir=tmp_path, epochs=1)
    with pytest.raises(ValueError, match="different lr, epochs"):
        fit(cifar, checkpoint_dir=tmp_path, epochs=2, lr=0.1)


KILL_SCRIPT = """
import json, sys
from pathlib import Path
import numpy as np, torch
from grader.inside.augment import split_train_val
from grader.inside.engine import train
from grader.protocol import Recipe, from_plain
from tests.inside.conftest import QUICK, tiny_net

torch.set_num_threads(1)
data, ckpt, out = map(Path, sys.argv[1:4])
images, labels = np.load(data / "images.npy"), np.load(data / "labels.npy")
r = from_plain(Recipe, {**QUICK, "epochs": 4, "cutout": 8})
tr, va = split_train_val(labels, r)
torch.manual_seed(0)
model = tiny_net()
result = train(model, images[tr], labels[tr], images[va], labels[va], r, torch.device("cpu"), ckpt, log=print)
torch.save(model.state_dict(), out / "weights.pt")
history = [[h.train_loss, h.val_loss, h.val_acc, h.lr] for h in result.history]
(out / "history.json").write_text(json.dumps(history))
print("resumed from", result.resumed_from_epoch)
"""


def run_script(tmp: Path, name: str) -> subprocess.Popen[str]:
    (tmp / name).mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(tmp), str(tmp / f"{name}-ckpt"), str(tmp / name)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_run_killed_with_sigkill_resumes_to_the_same_result(cifar: Data, tmp_path: Path) -> None:
    np.save(tmp_path / "images.npy", cifar[0])
    np.save(tmp_path / "labels.npy", cifar[1])
    reference = run_script(tmp_path, "whole")
    output = reference.communicate(timeout=300)[0]
    assert reference.returncode == 0, output
    victim = run_script(tmp_path, "killed")
    first = tmp_path / "killed-ckpt" / "epoch-0001.pt"
    deadline = time.monotonic() + 300
    while not first.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed-ckpt" / "epoch-0004.pt").exists()  # it really was cut short
    resumed = run_script(tmp_path, "killed")
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert "resumed from None" not in output
    whole = torch.load(tmp_path / "whole" / "weights.pt")
    again = torch.load(tmp_path / "killed" / "weights.pt")
    assert whole.keys() == again.keys() and all(torch.equal(whole[k], again[k]) for k in whole)
    history = (tmp_path / "whole" / "history.json").read_text()
    assert (tmp_path / "killed" / "history.json").read_text() == history


# --- budget ---------------------------------------------------------------------------------


def test_budget_stops_after_the_epoch_that_crosses_it(cifar: Data, tmp_path: Path) -> None:
    _, result = fit(cifar, checkpoint_dir=tmp_path, epochs=4, budget_s=0.001)
    assert len(result.history) == 1
    assert (
        result.stopped_early is not None
        and "budget of 0.001 s used up after epoch 1 of 4" in result.stopped_early
    )
    _, rest = fit(cifar, checkpoint_dir=tmp_path, epochs=4)  # a new budget resumes the same run
    assert rest.resumed_from_epoch == 1 and len(rest.history) == 4 and rest.stopped_early is None


def test_result_is_plain_data(cifar: Data) -> None:
    _, result = fit(cifar, epochs=1, val_size=0)
    payload = json.loads(json.dumps(to_plain(result)))
    assert payload["history"][0]["val_loss"] is None and payload["history"][0]["epoch"] == 1
    assert set(payload) == {
        "history", "stopped_early", "images_per_second", "channels_last", "nchw_after", "resumed_from_epoch",
    }  # fmt: skip


def test_cross_entropy_reported_is_the_plain_one(cifar: Data) -> None:
    model, result = fit(cifar, epochs=1)
    images, labels = cifar
    _, va = split_train_val(labels, from_plain(Recipe, QUICK))
    logits = infer(model, images[va], Normalizer.of(Recipe(), CPU), CPU)
    assert result.history[0].val_loss == pytest.approx(
        F.cross_entropy(logits, torch.from_numpy(labels[va])).item()
    )
