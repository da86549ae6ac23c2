"""A secret probe of the test images: catches a model that memorised the public test set.

CIFAR-10's test images and labels are public. A model can ship them and recognise each test
image by its pixels, scoring 100% on the test set and on the grader's own retraining while
classifying nothing. So every grading draws, from a secret seed, a probe of test images each
shifted by one pixel, maybe mirrored and lightly noised: changes a real classifier barely
notices (they are what training augmentation does), but after which no test image matches
its stored pixels. The copies are shuffled in among the test images, so a job cannot tell
them apart, and the host compares the accuracy on the copies with the accuracy on the same
images unchanged. A gap of more than ``Settings.probe_gap_points`` is flagged to the TA.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grader.files import write_atomic
from grader.results import ProbeCheck

MIN_IMAGES = 100  # below this the gap says little


@dataclass(frozen=True)
class Probe:
    """The images every evaluation job of one grading sees, and how to read its logits back."""

    path: Path  # (N + K, 32, 32, 3) uint8: the N test images and K perturbed copies, shuffled
    order: np.ndarray  # image i of concat(test, copies) is row order[i] of the file
    positions: np.ndarray  # (K,) the test images the copies were made from
    test_size: int  # N

    def split(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the file's logits → (the N test images', the K copies') logits, in order."""
        restored = logits[self.order]
        return restored[: self.test_size], restored[self.test_size :]


def build(images: np.ndarray, size: int, folder: Path) -> Probe:
    """Draw the probe for one grading: ``size`` of ``images`` (N, 32, 32, 3), perturbed, shuffled
    in, written to ``folder``. The seed is secret and never leaves this process."""
    rng = np.random.default_rng(secrets.randbits(128))
    n = len(images)
    k = min(size, n) if n >= MIN_IMAGES else 0
    positions = np.sort(rng.choice(n, size=k, replace=False))
    copies = perturb(images[positions], rng)
    order = rng.permutation(n + k)
    everything = np.concatenate([images, copies])  # (N + K, 32, 32, 3)
    shuffled = np.empty_like(everything)
    shuffled[order] = everything
    path = folder / "images.npy"
    write_atomic(path, lambda handle: np.save(handle, shuffled, allow_pickle=False), sync=False)
    return Probe(path, order, positions, n)


def perturb(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image shifted by one pixel in a random direction (edges repeated), mirrored half of
    the time, and every value moved by at most 2 of 255."""
    out = np.empty_like(images)
    for i, image in enumerate(images):  # (32, 32, 3)
        dy, dx = _shift(rng)
        padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
        shifted = padded[1 + dy : 1 + dy + image.shape[0], 1 + dx : 1 + dx + image.shape[1]]
        out[i] = shifted[:, ::-1] if rng.random() < 0.5 else shifted
    noise = rng.integers(-2, 3, size=out.shape)
    return np.clip(out.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def _shift(rng: np.random.Generator) -> tuple[int, int]:
    while True:
        dy, dx = (int(v) for v in rng.integers(-1, 2, size=2))
        if (dy, dx) != (0, 0):
            return dy, dx


def check(
    test_logits: np.ndarray, copy_logits: np.ndarray, labels: np.ndarray, probe: Probe, gap_points: float
) -> ProbeCheck | None:
    """Accuracy on the probed test images unchanged and perturbed; flagged past ``gap_points``."""
    if len(probe.positions) == 0:
        return None
    truth = labels[probe.positions]
    original = _top1(test_logits[probe.positions], truth)
    perturbed = _top1(copy_logits, truth)
    return ProbeCheck(len(truth), original, perturbed, original - perturbed > gap_points)


def _top1(logits: np.ndarray, labels: np.ndarray) -> float:
    finite = np.isfinite(logits).all(axis=1)
    pred = np.where(finite, np.where(finite[:, None], logits, 0).argmax(axis=1), -1)
    return round(100.0 * float((pred == labels).mean()), 2)
