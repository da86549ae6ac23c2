"""The training data on the device: splits, and augmentation as whole-batch tensor ops.

Runs inside the sandbox with the training engine (``grader.inside.engine``). Every random draw
is an argument, so tests can fix them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from grader.protocol import Recipe


def split_train_val(labels: np.ndarray, recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) index arrays into ``labels``, class-stratified and fixed by ``recipe.seed``.

    The validation split does not depend on ``train_fraction``, so runs on 1/16, 1/2 and all
    of the rest are validated on the same images.
    """
    labels = np.asarray(labels)
    everything = np.arange(len(labels))
    val = _stratified(labels, everything, recipe.val_size, np.random.default_rng([recipe.seed, 0]))
    rest = np.setdiff1d(everything, val)
    count = round(recipe.train_fraction * len(rest))
    if count < 1:
        raise ValueError(f"train_fraction {recipe.train_fraction} of {len(rest)} images leaves none")
    train = _stratified(labels, rest, count, np.random.default_rng([recipe.seed, 1]))
    return train, val


def _stratified(labels: np.ndarray, pool: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` of ``pool``, each class in proportion to its share (largest remainder), sorted."""
    if not 0 <= count <= len(pool):
        raise ValueError(f"cannot take {count} images out of {len(pool)}")
    if count == 0:
        return np.empty(0, dtype=np.int64)
    classes, sizes = np.unique(labels[pool], return_counts=True)
    quota = sizes * count / len(pool)
    take = np.floor(quota).astype(np.int64)
    take[np.argsort(take - quota, kind="stable")[: count - take.sum()]] += 1
    picked = [rng.permutation(pool[labels[pool] == c])[:k] for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def to_device(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N, 3, H, W) uint8 on ``device``; (N, H, W, 3) input keeps its memory, i.e. channels_last."""
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = images.copy()  # torch refuses to share read-only numpy memory
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 4 or 3 not in (x.shape[1], x.shape[3]):
        raise ValueError(
            f"images: expected uint8 (N, 3, H, W) or (N, H, W, 3), got {x.dtype} {list(x.shape)}"
        )
    if x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)  # (N, C, H, W)
    return x.to(device)


def random_crop(x: torch.Tensor, pad: int, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Each sample's (H, W) window at offset (dy, dx) ∈ [0, 2·pad]² of its zero-padded self."""
    if pad == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p)
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (B, C, 2p+1, 2p+1, H, W), a view
    return windows[torch.arange(b, device=x.device), :, dy, dx]  # (B, C, H, W)


def flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the samples where ``mask`` (B,) is true."""
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)


def cutout(x: torch.Tensor, side: int, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
    """Zero a side×side square centred on (cy, cx), clipped at the border (DeVries & Taylor 2017)."""
    h, w = x.shape[-2:]
    top, left = (cy - side // 2).view(-1, 1, 1, 1), (cx - side // 2).view(-1, 1, 1, 1)
    rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)  # (B, 1, H, W)
    return x.masked_fill(inside, 0.0)


@dataclass
class Normalizer:
    """(x / 255 - mean) / std folded into one multiply-add: x · scale + shift."""

    scale: torch.Tensor  # (1, C, 1, 1)
    shift: torch.Tensor

    @classmethod
    def of(cls, recipe: Recipe, device: torch.device) -> Normalizer:
        if not recipe.normalize:
            return cls.from_stats((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), device)
        return cls.from_stats(recipe.mean, recipe.std, device)

    @classmethod
    def from_stats(
        cls, mean: tuple[float, float, float], std: tuple[float, float, float], device: torch.device
    ) -> Normalizer:
        m, s = torch.tensor(mean, device=device), torch.tensor(std, device=device)
        return cls((1 / (255 * s)).view(1, -1, 1, 1), (-m / s).view(1, -1, 1, 1))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x.float(), self.scale)


def augment(x: torch.Tensor, recipe: Recipe, norm: Normalizer, gen: torch.Generator) -> torch.Tensor:
    """uint8 (B, C, H, W) → augmented float; crop and flip on uint8, cutout after normalizing."""
    b, dev = len(x), x.device
    if recipe.crop_padding:
        span = 2 * recipe.crop_padding + 1
        dy = torch.randint(span, (b,), generator=gen, device=dev)
        dx = torch.randint(span, (b,), generator=gen, device=dev)
        x = random_crop(x, recipe.crop_padding, dy, dx)
    if recipe.flip:
        x = flip(x, torch.rand(b, generator=gen, device=dev) < 0.5)
    out = norm(x)
    if recipe.cutout:
        cy = torch.randint(x.shape[2], (b,), generator=gen, device=dev)
        cx = torch.randint(x.shape[3], (b,), generator=gen, device=dev)
        out = cutout(out, recipe.cutout, cy, cx)
    return out
