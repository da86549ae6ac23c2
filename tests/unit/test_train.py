"""grader/train.py: augmentations checked numerically, schedules against torch's own, the split,
repeatability, resuming (after an exception and after SIGKILL), the channels_last probe and the
time budget. Training runs a tiny CNN on 30 real CIFAR-10 training images per class.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grader.augment import Normalizer, augment, cutout, flip, random_crop, split_train_val, to_device
from grader.data import CIFAR10_CLASSES
from grader.layout import probe_layout
from grader.train import Recipe, TrainResult, infer, lr_factor, train
from tests.unit.test_data import CIFAR_JPEG, decode, first_files

REPO = Path(__file__).resolve().parents[2]
PER_CLASS = 30
CPU = torch.device("cpu")
Data = tuple[np.ndarray, np.ndarray]  # (N, 32, 32, 3) uint8 images, (N,) int64 labels
QUICK = {"epochs": 3, "batch_size": 32, "val_size": 50, "lr": 0.02, "warmup_epochs": 0.5}


# --- fixtures and models --------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar() -> Data:
    """PER_CLASS real training images per class: (300, 32, 32, 3) uint8 and int64 labels."""
    if not CIFAR_JPEG.is_file():
        pytest.skip(f"{CIFAR_JPEG} is not available")
    raw = gzip.decompress(CIFAR_JPEG.read_bytes())
    images, labels = [], []
    for label, cls in enumerate(CIFAR10_CLASSES):
        images += [decode(payload) for _, payload in first_files(raw, f"train/{cls}/", PER_CLASS)]
        labels += [label] * PER_CLASS
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def tiny_net() -> nn.Sequential:
    """Flattens with nn.Flatten (reshape), so it runs channels_last as it is."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4),
        nn.Flatten(), nn.Linear(8 * 8 * 8, 10),
    )  # fmt: skip


class ViewNet(nn.Module):
    """The students' habit: ``x.view(x.size(0), -1)`` on the last feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.features = tiny_net()[:4]
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.fc(x.view(x.size(0), -1))


class ViewMLP(nn.Module):
    """Views its input at once: no module before the view to hand back NCHW."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(3 * 32 * 32, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.view(x.size(0), -1))


def fit(
    data: Data,
    make: Callable[[], nn.Module] = tiny_net,
    checkpoint_dir: Path | None = None,
    log: Callable[[str], object] = lambda line: None,
    channels_last: bool | None = None,
    **recipe: object,
) -> tuple[nn.Module, TrainResult]:
    """A freshly initialised model trained on ``data``, with QUICK overridden by ``recipe``."""
    images, labels = data
    r = Recipe.from_dict({**QUICK, **recipe})
    tr, va = split_train_val(labels, r)
    torch.manual_seed(0)
    model = make()
    result = train(
        model, images[tr], labels[tr], images[va], labels[va], r, CPU, checkpoint_dir, log, channels_last
    )
    return model, result


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def numbers(result: TrainResult) -> list[tuple]:
    """Every recorded figure but the seconds."""
    return [(h.epoch, h.train_loss, h.train_acc, h.val_loss, h.val_acc, h.lr) for h in result.history]


def synthetic(n: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, 3, 32, 32) uint8 noise."""
    return torch.randint(
        0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


# --- augmentation ---------------------------------------------------------------------------


def test_flip_mirrors_exactly_the_masked_samples() -> None:
    x = synthetic(8)
    mask = torch.tensor([True, False, True, True, False, False, True, False])
    out = flip(x, mask)
    for i in range(8):
        expected = x[i, :, :, torch.arange(31, -1, -1)] if mask[i] else x[i]
        assert torch.equal(out[i], expected)
    assert not torch.equal(out[0], x[0])  # noise is never its own mirror image


def test_crop_with_no_padding_is_the_identity() -> None:
    x = synthetic(8)
    offsets = torch.zeros(8, dtype=torch.int64)
    assert torch.equal(random_crop(x, 0, offsets, offsets), x)
    r = Recipe(crop_padding=0, flip=False, normalize=False)
    out = augment(x, r, Normalizer.of(r, CPU), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x.float() / 255)  # · (1/255) may differ from / 255 in the last bit


def test_crop_is_the_padded_image_shifted_by_the_offset() -> None:
    x, pad = synthetic(6), 4
    dy, dx = torch.tensor([0, 8, 4, 0, 8, 3]), torch.tensor([0, 8, 4, 8, 0, 5])
    out = random_crop(x, pad, dy, dx)
    padded = torch.zeros(6, 3, 40, 40, dtype=torch.uint8)
    padded[:, :, pad:-pad, pad:-pad] = x
    for i in range(6):
        assert torch.equal(out[i], padded[i, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32])
    # Offset (0, 0) moves the image 4 px down and right, behind 4 black rows and columns.
    assert torch.equal(out[0, :, 4:, 4:], x[0, :, :28, :28])
    assert out[0, :, :4].sum() == 0 and out[0, :, :, :4].sum() == 0
    assert torch.equal(out[2], x[2])  # offset (4, 4) is the original


def test_cutout_zeroes_a_side_squared_square_per_channel() -> None:
    x, side = torch.ones(4, 3, 32, 32), 8
    cy, cx = torch.tensor([16, 4, 0, 31]), torch.tensor([10, 27, 0, 31])
    out = cutout(x, side, cy, cx)
    zeros = (out == 0).sum(dim=(2, 3))  # (B, C)
    assert zeros[:2].eq(side * side).all()  # squares fully inside the image
    # Clipped at the border: centre 0 keeps rows/columns 0..3, centre 31 keeps 27..31.
    assert torch.equal(zeros[2:], torch.tensor([[4 * 4] * 3, [5 * 5] * 3]))
    expected = torch.ones(3, 32, 32)
    expected[:, 12:20, 6:14] = 0
    assert torch.equal(out[0], expected)


def test_augment_normalizes_and_draws_from_its_generator() -> None:
    x = synthetic(32)
    r = Recipe(cutout=8)
    norm = Normalizer.of(r, CPU)
    a = augment(x, r, norm, torch.Generator().manual_seed(1))
    assert torch.equal(a, augment(x, r, norm, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, augment(x, r, norm, torch.Generator().manual_seed(2)))
    plain = Recipe(crop_padding=0, flip=False)
    mean, std = torch.tensor(plain.mean).view(1, 3, 1, 1), torch.tensor(plain.std).view(1, 3, 1, 1)
    out = augment(x, plain, Normalizer.of(plain, CPU), torch.Generator())
    torch.testing.assert_close(out, (x.float() / 255 - mean) / std)


def test_images_go_to_the_device_as_nchw_from_either_layout() -> None:
    x = synthetic(4)
    nhwc = x.permute(0, 2, 3, 1).numpy().copy()
    assert torch.equal(to_device(nhwc, CPU), x)
    assert torch.equal(to_device(x, CPU), x)
    with pytest.raises(ValueError, match="uint8"):
        to_device(x.float(), CPU)


# --- schedules ------------------------------------------------------------------------------


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
    r = Recipe.from_dict({**recipe, "epochs": 8})
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


# --- recipe and split -----------------------------------------------------------------------


def test_recipe_from_dict_names_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown recipe keys: epoch, lr_max"):
        Recipe.from_dict({"lr": 0.1, "epoch": 3, "lr_max": 1.0})
    with pytest.raises(ValueError, match="optimizer 'rmsprop'"):
        Recipe.from_dict({"optimizer": "rmsprop"})
    r = Recipe.from_dict({"milestones": [3, 6], "mean": [0.5, 0.5, 0.5], "budget_s": 60})
    assert r.mean == (0.5, 0.5, 0.5) and Recipe.from_dict(asdict(r)) == r


def test_split_is_stratified_seeded_and_keeps_val_fixed() -> None:
    labels = np.repeat(np.arange(10), 500)  # 5,000 images, 500 per class
    tr, va = split_train_val(labels, Recipe(val_size=500, train_fraction=1 / 16))
    assert len(va) == 500 and np.bincount(labels[va]).tolist() == [50] * 10
    assert len(tr) == round(4500 / 16) == 281 and set(np.bincount(labels[tr])) <= {28, 29}
    assert not set(tr) & set(va)
    again = split_train_val(labels, Recipe(val_size=500, train_fraction=1 / 16))
    assert np.array_equal(tr, again[0]) and np.array_equal(va, again[1])
    half, va_half = split_train_val(labels, Recipe(val_size=500, train_fraction=0.5))
    assert np.array_equal(va_half, va) and len(half) == 2250
    other, va_other = split_train_val(labels, Recipe(val_size=500, train_fraction=1 / 16, seed=1))
    assert not np.array_equal(va_other, va) and not np.array_equal(other, tr)
    full, _ = split_train_val(labels, Recipe(val_size=500))
    assert np.array_equal(full, np.setdiff1d(np.arange(5000), va))


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
    r = Recipe.from_dict({**QUICK, "epochs": 2})
    steps = (len(cifar[1]) - r.val_size) // r.batch_size
    assert [h.lr for h in result.history] == pytest.approx(
        [r.lr * lr_factor(steps - 1, r, steps), r.lr * lr_factor(2 * steps - 1, r, steps)]
    )


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_optimizers_train(cifar: Data, optimizer: str) -> None:
    _, result = fit(cifar, epochs=1, optimizer=optimizer, lr=1e-3, schedule="onecycle")
    assert math.isfinite(result.history[0].train_loss)


def test_infer_returns_cpu_float_logits_and_restores_the_mode() -> None:
    torch.manual_seed(0)
    model, x, r = tiny_net().train(), synthetic(10), Recipe()
    logits = infer(model, x.permute(0, 2, 3, 1).numpy().copy(), r, CPU, batch_size=4)
    assert logits.shape == (10, 10) and logits.dtype == torch.float32 and model.training
    with torch.no_grad():
        expected = model.eval()(Normalizer.of(r, CPU)(x))
    torch.testing.assert_close(logits, expected)


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
from grader.augment import split_train_val
from grader.train import Recipe, train
from tests.unit.test_train import QUICK, tiny_net

torch.set_num_threads(1)
data, ckpt, out = map(Path, sys.argv[1:4])
images, labels = np.load(data / "images.npy"), np.load(data / "labels.npy")
r = Recipe.from_dict({**QUICK, "epochs": 4, "cutout": 8})
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


# --- layout ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "channels_last", "nchw_after"),
    [(tiny_net, True, None), (ViewNet, True, "features"), (ViewMLP, False, None)],
)
def test_probe_picks_a_layout_the_model_can_train_in(
    cifar: Data,
    make: Callable[[], nn.Module],
    channels_last: bool,
    nchw_after: str | None,
) -> None:
    model, result = fit(cifar, make, channels_last=True, epochs=1)
    assert (result.channels_last, result.nchw_after) == (channels_last, nchw_after)
    assert math.isfinite(result.history[0].train_loss)
    # Handed back as the student wrote it: NCHW weights, no hooks, .view works again.
    assert all(p.is_contiguous() for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())
    assert model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_infer_runs_a_trained_model_in_the_layout_it_trained_in(cifar: Data) -> None:
    model, result = fit(cifar, ViewNet, channels_last=True, epochs=1)
    assert result.nchw_after == "features"
    images = cifar[0][:64]
    fast = infer(model, images, Recipe(), CPU, channels_last=result.channels_last)
    torch.testing.assert_close(fast, infer(model, images, Recipe(), CPU), rtol=1e-4, atol=1e-4)
    assert not any(m._forward_hooks for m in model.modules())
    assert all(p.is_contiguous() for p in model.parameters())


def test_probe_leaves_no_trace(cifar: Data) -> None:
    torch.manual_seed(0)
    model = ViewNet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layout = probe_layout(model, torch.randn(2, 3, 32, 32), CPU)
    assert layout.nchw_after == "features"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    layout.undo(model)
    probed, _ = fit(cifar, ViewMLP, channels_last=True, epochs=1)
    plain, _ = fit(cifar, ViewMLP, channels_last=False, epochs=1)
    assert same_weights(probed, plain)


# --- budget ---------------------------------------------------------------------------------


def test_budget_stops_after_the_epoch_that_crosses_it(cifar: Data, tmp_path: Path) -> None:
    _, result = fit(cifar, checkpoint_dir=tmp_path, epochs=4, budget_s=0.0)
    assert len(result.history) == 1
    assert (
        result.stopped_early is not None
        and "budget of 0 s used up after epoch 1 of 4" in result.stopped_early
    )
    _, rest = fit(cifar, checkpoint_dir=tmp_path, epochs=4)  # a new budget resumes the same run
    assert rest.resumed_from_epoch == 1 and len(rest.history) == 4 and rest.stopped_early is None


def test_result_is_plain_data(cifar: Data) -> None:
    _, result = fit(cifar, epochs=1, val_size=0)
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["history"][0]["val_loss"] is None and payload["history"][0]["epoch"] == 1
    assert set(payload) == {
        "history", "stopped_early", "images_per_second", "channels_last", "nchw_after", "resumed_from_epoch",
    }  # fmt: skip


def test_cross_entropy_reported_is_the_plain_one(cifar: Data) -> None:
    model, result = fit(cifar, epochs=1)
    images, labels = cifar
    _, va = split_train_val(labels, Recipe.from_dict(QUICK))
    logits = infer(model, images[va], Recipe(), CPU)
    assert result.history[0].val_loss == pytest.approx(
        F.cross_entropy(logits, torch.from_numpy(labels[va])).item()
    )
