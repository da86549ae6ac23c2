"""grader/probe.py: the secret probe hides among the test images and is read back in order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from grader import probe


def test_rows_come_back_to_their_images_and_the_copies_to_theirs(tmp_path: Path) -> None:
    n = 500
    images = np.zeros((n, 32, 32, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(n) % 256  # each image says who it is in two pixels
    images[:, 0, 0, 1] = np.arange(n) // 256
    drawn = probe.build(images, 100, tmp_path)
    stored = np.load(drawn.path)
    assert stored.shape == (n + 100, 32, 32, 3)
    assert not np.array_equal(stored[:n], images)  # shuffled, copies among the originals
    # A "model" whose logits are its input's id: the rows read back must be the images in order.
    ids = stored[:, 0, 0, 0].astype(np.int64) + 256 * stored[:, 0, 0, 1].astype(np.int64)
    test_logits, copy_logits = drawn.split(ids[:, None].astype(np.float32))
    assert test_logits[:, 0].tolist() == list(range(n))
    assert len(copy_logits) == 100 and len(set(drawn.positions.tolist())) == 100


def test_copies_differ_from_their_originals_by_a_pixel_shift_a_flip_and_little_noise(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(200, 32, 32, 3), dtype=np.uint8)
    drawn = probe.build(images, 100, tmp_path)
    stored = np.load(drawn.path)
    copies = stored[drawn.order[200:]]
    for original, copy in zip(images[drawn.positions], copies, strict=True):
        assert not np.array_equal(original, copy)
        best = min(
            np.abs(np.roll(view, (dy, dx), axis=(0, 1))[2:-2, 2:-2].astype(int) - copy[2:-2, 2:-2]).max()
            for view in (original, original[:, ::-1])
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        )
        assert best <= 2  # a one-pixel shift of the image or its mirror, within the noise


def test_the_gap_is_flagged_past_its_bound() -> None:
    labels = np.arange(200) % 10
    onehot = np.eye(10, dtype=np.float32)
    drawn = probe.Probe(Path("unused"), np.arange(300), np.arange(100), 200)
    right = onehot[labels]
    wrong = onehot[(labels[:100] + 1) % 10]
    flagged = probe.check(right, wrong, labels, drawn, gap_points=15)
    assert flagged is not None and (flagged.top1_original, flagged.top1_perturbed, flagged.flagged) == (
        100,
        0,
        True,
    )
    fine = probe.check(right, onehot[labels[:100]], labels, drawn, gap_points=15)
    assert fine is not None and not fine.flagged and fine.gap == 0


def test_too_few_images_make_no_probe(tmp_path: Path) -> None:
    drawn = probe.build(np.zeros((50, 32, 32, 3), dtype=np.uint8), 100, tmp_path)
    assert len(drawn.positions) == 0
    assert probe.check(np.zeros((50, 10)), np.zeros((0, 10)), np.zeros(50, int), drawn, 15) is None
