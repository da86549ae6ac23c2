"""Shared by the tests of the code that runs in the sandbox: real CIFAR-10 images, tiny models,
and ``fit``, a short training run of the engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from grader.data import CIFAR10_CLASSES
from grader.inside.augment import split_train_val
from grader.inside.engine import train
from grader.protocol import Recipe, TrainingReport, from_plain
from tests.test_data import CIFAR_JPEG, decode, first_files

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
    images, labels = [], []
    for label, cls in enumerate(CIFAR10_CLASSES):
        images += [decode(payload) for _, payload in first_files(f"train/{cls}/", PER_CLASS)]
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
) -> tuple[nn.Module, TrainingReport]:
    """A freshly initialised model trained on ``data``, with QUICK overridden by ``recipe``."""
    images, labels = data
    r = from_plain(Recipe, {**QUICK, **recipe})
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


def numbers(result: TrainingReport) -> list[tuple]:
    """Every recorded figure but the seconds."""
    return [(h.epoch, h.train_loss, h.train_acc, h.val_loss, h.val_acc, h.lr) for h in result.history]


def synthetic(n: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, 3, 32, 32) uint8 noise."""
    return torch.randint(
        0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )
