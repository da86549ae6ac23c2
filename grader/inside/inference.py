"""Logits for uint8 images: the one inference function of the grader.

Submitted weights, retrained models and reference baselines are all evaluated here, and the
training engine's validation pass runs the same chunk loop, so every accuracy the grader
reports comes from the same code on the same device.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from grader.inside.augment import Normalizer, to_device
from grader.inside.channel import StageFailure
from grader.inside.layout import Layout, autocast, memory_format, probe_layout


def infer(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    norm: Normalizer,
    device: torch.device,
    batch_size: int = 1000,
    num_classes: int | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Logits (N, classes), float32 on the CPU, in eval mode; the model's mode is restored after.

    ``images`` are uint8, (N, H, W, 3) or (N, 3, H, W). ``channels_last`` runs the model in the
    layout ``probe_layout`` picks and hands it back NCHW. With ``num_classes``, an output of any
    other shape stops the stage "inference" naming the batch.
    """
    data = to_device(images, device)  # (N, C, H, W) uint8
    was_training = model.training
    model.eval()
    layout = probe_layout(model, norm(data[:2]), device) if channels_last else Layout()
    try:
        return logits(model, data, norm, layout.channels_last, batch_size, num_classes)
    finally:
        if channels_last:
            layout.undo(model)
        model.train(was_training)


def logits(
    model: nn.Module,
    data: torch.Tensor,
    norm: Normalizer,
    channels_last: bool,
    batch_size: int,
    num_classes: int | None = None,
) -> torch.Tensor:
    """The model as it is, in large chunks, without autograd's bookkeeping."""
    fmt, chunks = memory_format(channels_last), []
    with torch.inference_mode(), autocast(data.device):
        for start in range(0, len(data), batch_size):
            x = norm(data[start : start + batch_size]).contiguous(memory_format=fmt)  # (B, C, H, W)
            chunks.append(_forward(model, x, start, num_classes).float().cpu())
    return torch.cat(chunks)


def _forward(model: nn.Module, x: torch.Tensor, start: int, num_classes: int | None) -> torch.Tensor:
    try:
        out = model(x)
    except Exception as exc:
        raise StageFailure(
            "inference",
            f"forward on test images {start}–{start + len(x) - 1} raised {type(exc).__name__}: {exc}",
        ) from exc
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or len(out) != len(x):
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise StageFailure(
            "inference", f"forward on a batch of {len(x)} returned {got}, expected [{len(x)}, classes]"
        )
    if num_classes is not None and out.shape[1] != num_classes:
        raise StageFailure(
            "inference",
            f"forward on a batch of {len(x)} returned {list(out.shape)}, expected [{len(x)}, {num_classes}]",
        )
    return out
