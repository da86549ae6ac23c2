"""grader/inside/augment.py: augmentations checked numerically, device layout, the seeded split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grader.inside.augment import Normalizer, augment, cutout, flip, random_crop, split_train_val, to_device
from grader.protocol import Recipe
from tests.inside.conftest import CPU, synthetic


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
