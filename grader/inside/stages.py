"""Evaluating submitted weights, stage by stage: import, build, forward and count, weights, infer."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from grader.inside import counting
from grader.inside.augment import Normalizer
from grader.inside.channel import Channel, StageFailure
from grader.inside.inference import infer
from grader.inside.layout import device_hint, pick_device
from grader.inside.loading import StudentCode, build, import_factory
from grader.inside.weights import load_state_dict
from grader.protocol import HarnessJob, Progress


def evaluate(job: HarnessJob, code: StudentCode, channel: Channel) -> None:
    device = pick_device(job.device)
    channel.started(str(device))
    factory = import_factory(job, code)
    channel.done("import")
    model = build_counted(factory, job, code, channel)
    model = model.to(device)
    analyze(model, job, code, channel, device)
    submission = Path(job.submission)
    note = load_state_dict(model, Path(job.weights_path or submission / job.weights), job.weights, submission)
    if note:
        code.notes.append(note)
    channel.done("weights", weights_loaded=True, weights_fingerprint=counting.weights_sketch(model))
    if not repeatable(model, job.input_shape, device):
        code.notes.append(NOT_REPEATABLE)
    if job.images is None:
        raise StageFailure("internal", "the job names no images to evaluate")
    images = np.load(job.images, allow_pickle=False)  # (N, H, W, C) uint8
    stats = job.normalizations or ((job.mean, job.std),)
    parts = []
    for done_before, (mean, std) in enumerate(stats):

        def tested(done: int, total: int, before: int = done_before * len(images)) -> None:
            channel.progress(Progress("inference", before + done, len(stats) * total))

        norm = Normalizer.from_stats(mean, std, device)
        parts.append(infer(model, images, norm, device, job.batch_size, job.num_classes, tested, job.ranks))
    logits = torch.cat(parts)
    channel.save_logits(npy_bytes(logits.numpy()))
    channel.done("inference", logits_shape=list(logits.shape))


NOT_REPEATABLE = (
    "the model's outputs change from one pass to the next over the same images in eval mode, so its "
    "accuracy changes from run to run: randomness in forward, such as F.dropout(x, p) without "
    "training=self.training (nn.Dropout, or that argument, turns dropout off for evaluation)"
)


SQUEEZED = (
    "forward drops the batch dimension of a single image (x.squeeze() gives [classes], not "
    "[1, classes]); as a batch of several images gives one row per image, the grader puts the "
    "dimension back for a batch of one: use x.flatten(1) instead"
)


def _squeezed(model: nn.Module, out: torch.Tensor, job: HarnessJob, device: torch.device) -> bool:
    """Whether ``out``, the output for one image, is one row of logits without its batch
    dimension, while two images give two rows: a ``squeeze()`` at the end of forward."""
    if out.dim() != 1 or out.shape[0] != job.num_classes:
        return False
    try:
        two = model(torch.zeros(2, *job.input_shape, device=device))
    except Exception:
        return False
    return isinstance(two, torch.Tensor) and list(two.shape) == [2, job.num_classes]


def repeatable(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> bool:
    """Whether two eval-mode passes over the same few images give the same outputs (within
    what a GPU's kernel choices can change); a student's forward may raise: that shows later."""
    x = torch.randn(8, *input_shape, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        with torch.no_grad():
            first, second = model(x), model(x)
    except Exception:
        return True
    if not isinstance(first, torch.Tensor) or not isinstance(second, torch.Tensor):
        return True
    return first.shape == second.shape and torch.allclose(first, second, rtol=1e-3, atol=1e-4, equal_nan=True)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def build_counted(factory: Any, job: HarnessJob, code: StudentCode, channel: Channel) -> nn.Module:
    """Count on the meta device first, so a model too large for memory is never allocated."""
    meta = build(factory, job.model, code, job.input_shape, job.num_classes, meta=True)
    if meta is not None:
        total, trainable = counting.count_params(meta)
        if total * 4 > job.max_model_bytes:
            _report_oversized(meta, total, trainable, job, channel)
    torch.manual_seed(0)
    model = build(factory, job.model, code, job.input_shape, job.num_classes)
    assert model is not None
    model.eval()
    total, trainable = counting.count_params(model)
    channel.done("build", params=total, trainable_params=trainable)
    return model


def _report_oversized(meta: nn.Module, total: int, trainable: int, job: HarnessJob, channel: Channel) -> None:
    macs = {}
    x = torch.zeros(1, *job.input_shape, device="meta")
    for counter in job.counters:
        try:
            macs[counter] = counting.count_macs(meta, x, counter)
        except Exception:
            continue
    channel.done("build", params=total, trainable_params=trainable, macs=macs)
    gib = total * 4 / 2**30
    limit = job.max_model_bytes / 2**30
    raise StageFailure(
        "build",
        f"the model has {total:,} parameters ({gib:.1f} GiB in float32), more than "
        f"the {limit:.1f} GiB the grader allows; it was counted without being built",
    )


def _forward_arguments_hint(exc: Exception) -> str:
    """For a ``forward`` that wants more than the images (the labels, to return the loss too)."""
    if not isinstance(exc, TypeError) or "forward() missing" not in str(exc):
        return ""
    return "; the grader passes the images alone: give forward's other arguments defaults (labels=None)"


def _not_logits(out: object) -> str:
    """What ``forward`` returned instead of a tensor, and how to return the logits."""
    if out is None:
        return "None, expected a tensor of logits: end forward with return and the logits (return x)"
    if isinstance(out, Mapping):
        keys = ", ".join(repr(key)[:40] for key in list(out)[:4])
        return (
            f"a {type(out).__name__} (keys {keys}), expected a tensor of logits: return the logits "
            "alone, not a dict holding them"
        )
    if isinstance(out, tuple | list):
        return (
            f"a {type(out).__name__} of {len(out)}, expected a tensor of logits: return the logits alone "
            "(return out, not return out, features)"
        )
    return f"{type(out).__name__}, expected a tensor of logits: return the logits as one tensor"


def analyze(
    model: nn.Module, job: HarnessJob, code: StudentCode, channel: Channel, device: torch.device
) -> None:
    """The forward on one image of zeros and the counts, on ``device``, where the model is
    evaluated: code that puts its own tensors on the GPU runs here as it will there. A failing
    forward is told with the line of the student's code it failed in."""
    shape = job.input_shape
    x = torch.zeros(1, *shape, device=device)
    try:
        probe = counting.ForwardProbe(model).run(x)
    except Exception as exc:
        raise StageFailure(
            "forward",
            f"forward on a (1, {', '.join(map(str, shape))}) batch raised {code.where(exc, named=True)}"
            f"{device_hint(exc, device)}{_forward_arguments_hint(exc)}",
        ) from exc
    out = probe.output
    if not isinstance(out, torch.Tensor):
        raise StageFailure("forward", f"forward returned {_not_logits(out)}")
    if _squeezed(model, out, job, device):
        out = out.unsqueeze(0)
        code.notes.append(SQUEEZED)
    channel.done(
        "forward",
        output_shape=list(out.shape),
        residual_adds=probe.residual_adds,
        module_counts=counting.module_counts(model),
        summary=probe.summary(shape),
        diagram=probe.blocks,
        diagram_omitted=probe.blocks_seen - len(probe.blocks),
    )
    expected = [1, job.num_classes]
    if list(out.shape) != expected:
        raise StageFailure(
            "forward",
            f"forward on one image returned shape {list(out.shape)}, "
            f"expected {expected} (one logit per class)",
        )
    macs, failed = {}, {}
    for counter in job.counters:
        try:
            macs[counter] = counting.count_macs(model, x, counter)
        except Exception as exc:  # one counter's failure is that counter's, not the task's
            failed[counter] = f"{counter} could not count this model: {type(exc).__name__}: {exc}"
    channel.done("macs", macs=macs, macs_failed=failed, forward_ok=True)
