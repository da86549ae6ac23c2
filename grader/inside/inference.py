"""Logits for uint8 images: the one inference function of the grader.

Submitted weights, retrained models and reference baselines are all evaluated here, and the
training engine's validation pass runs it too, so every accuracy the grader reports comes from
the same code on the same device.

Fast and exact at once. Where the device computes in reduced precision (bf16 on CPUs with
AVX512-BF16 or AMX and on most GPUs, fp16 on GPUs without bf16), every image first goes
through the model in that precision, channels_last where the model allows it. A ranking can
only differ from float32's where two logits are closer than the reduced precision moved them
apart: for one image, by at most the spread of its logits' errors (the largest minus the
smallest). That spread is measured on a calibration sample run both ways, and every image whose
k-th/(k+1)-th margin, for each top-k the caller reads (``ranks``: top-1 and top-3 unless told),
is within ``SAFETY`` times the largest spread seen is computed again in float32 (plain NCHW, as
a student's own evaluation loop runs). Each image computed again is measured too: where one of
them shows a larger spread than the calibration did, the bound grows and the images it now
reaches are computed again, until no image left in reduced precision is within it. The top-k
predictions for each k in ``ranks``, hence every accuracy read from them, are those of float32.
Each rank costs its own share: on the ResNet18 trained to 83% (below), 2.1% of the test images
have a top-1 margin within the final bound and 9.3% a top-3 margin.

Why twice the largest spread seen: a sample's largest error underestimates the population's. On
the 10,000 test images of four trained models (the sample submissions' two CNNs and ResNet18,
a ResNet18 trained to 83%), the fast pass as it runs (batch norms folded, the first convolution
in float32: below), a random draw of 256 images had a largest spread 1.1–1.7× below the
population's (median of 1,000 draws) and up to 2.7× below it for the ResNet18 whose errors have
the longest tail; 2,048 images, up to 1.8×. With the images computed again added to the
sample, the final bound stood 1.7–2.0× above the population's largest spread and 2.0–3.9× above
the largest change of any deciding margin, and not one prediction changed. Keeping top-1 only,
fewer images are computed again and the bound grows less: it stood 1.3–2.0× above the largest
spread and 2.0–3.1× above the largest change of a top-1 margin, and over 300 random orders of
each model's images (so other calibration samples) never under 1.59× that change.

The fast pass runs on a copy of the model whose batch norms are folded into the convolutions
before them (``folded``), where that can be done safely; float32 runs on the model itself. On
the ResNet18 trained to 83%, the bf16 pass over the 10,000 test images ran 1.3× as fast; the
largest error spread grew from 0.082 to 0.114 logits (the folded bias is rounded to bf16), so
the share computed again went from 16.4% to 17.2%.

The fast pass runs every ``nn.Linear`` outside autocast, in its weights' own precision (float32
unless the student chose another). Classifier heads are where the logits are made, and a bf16
output is rounded to 8 bits of mantissa, a large part of the measured error. Over the 10,000
test images, a float32 head cut the share of images computed twice from 40% to 20% for one
sample CNN, 30% to 29% for the other and 47% to 41% for the sample's ResNet18, for a layer that
is a sliver of a CIFAR model's arithmetic.

So does every convolution that reads no more channels than the image has: the first layer, whose
error every later layer carries forward, at a fraction of a percent of the arithmetic (ResNet18's
stem: 0.3%). On the 10,000 test images with batch norms folded, it cut the largest error spread
of the ResNet18 trained to 83% from 0.114 to 0.073 logits and the share computed twice from
17.2% to 13.4%; for the sample's ResNet18 from 45% to 34%, and for its two CNNs from 31% to 17%
and from 25% to 15%. Any other single convolution of that ResNet18 in float32 as well moved its
largest spread by at most a quarter, most by under a tenth, each for a larger share of the work.

On the CPU the model sees at most ``CPU_CHUNK`` images at a time, whatever the batch size asked
for: a small chunk's activations stay in the cache. Measured on this project's 2-core machines,
chunks of 32 ran ResNet18 1.2× (bf16) to 1.5× (float32) faster than chunks of 500, and the
sample CNN 1.2× to 1.8× faster than chunks of 1,000; chunks of 64 ran the bf16 pass 1.2× faster
again for both (medians of 6–8 interleaved rounds; 128 was slower) and float32 as fast as 32
did. In eval mode a chunk's size moves logits only in their last bits (kernels are picked by
batch size), as a student's own batch size does, except in a model whose batch norm keeps no
running statistics: it normalizes each batch by that batch's own, so such a model gets the batch
size asked for. Where a chunk runs out of memory (a GPU, whose size the grader picked), the
rest of the pass goes on in chunks half as large, down to one image.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.fx
from torch import nn
from torch.fx.experimental.optimization import fuse

from grader.inside.augment import Normalizer, to_device
from grader.inside.channel import StageFailure
from grader.inside.layout import Layout, autocast, device_hint, fast_dtype, memory_format, probe_layout

Progress = Callable[[int, int], None]  # (images done, images in all)
CALIBRATION = 256  # images computed both ways to measure the fast pass's error, evenly spaced
CPU_CHUNK = 64  # images per forward on the CPU (see the module's docstring)
FOLD_BYTES = 2**30  # the largest model whose fast pass runs on a folded copy (see ``folded``)
SAFETY = 2.0  # margins within this many times the largest spread seen are computed again in float32
RANKS = (1, 3)  # the top-k predictions kept float32's unless the caller names others


def infer(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    norm: Normalizer,
    device: torch.device,
    batch_size: int = 1000,
    num_classes: int | None = None,
    progress: Progress | None = None,
    ranks: tuple[int, ...] = RANKS,
) -> torch.Tensor:
    """Logits (N, classes), float32 on the CPU, in eval mode; the model's mode is restored after.

    ``images`` are uint8, (N, H, W, 3) or (N, 3, H, W). With ``num_classes``, an output of any
    other shape stops the stage "inference" naming the batch. The model is handed back NCHW.
    Each image's top-k predictions for k in ``ranks`` are float32's.
    """
    data = to_device(images, device)  # (N, C, H, W) uint8
    was_training = model.training
    model.eval()
    try:
        return exact_logits(model, data, norm, batch_size, num_classes, progress, ranks=ranks)
    finally:
        model.train(was_training)


def exact_logits(
    model: nn.Module,
    data: torch.Tensor,
    norm: Normalizer,
    batch_size: int,
    num_classes: int | None = None,
    progress: Progress | None = None,
    layout: Layout | None = None,
    ranks: tuple[int, ...] = RANKS,
) -> torch.Tensor:
    """The model in eval mode on ``data`` (uint8 on its device): float32's top-k predictions for
    each k in ``ranks``, computed in reduced precision wherever that cannot change them (see the
    module's docstring).

    ``layout``: the memory format the model is in already (the training engine's); without it,
    the fast pass runs in the layout ``probe_layout`` picks and the model is handed back NCHW.
    A folded copy (see ``folded``) gets a layout of its own from ``probe_layout`` either way.
    """
    dtype = fast_dtype(data.device)
    calibrate = min(CALIBRATION, len(data))
    if dtype is None or calibrate == len(data):
        return logits(model, data, norm, layout or Layout(), batch_size, num_classes, None, progress)
    # The long pass first, so that its progress tells the speed of the whole stage.
    fast = _fast_logits(model, data, norm, layout, batch_size, num_classes, dtype, progress)
    # Spread over the data: a test split decoded from class folders comes sorted by class.
    sample = torch.arange(calibrate) * len(data) // calibrate  # (calibrate,) distinct rows
    out, done, rows = fast.clone(), torch.zeros(len(data), dtype=torch.bool), sample
    while len(rows):
        out[rows] = logits(model, data[rows.to(data.device)], norm, Layout(), batch_size, num_classes)
        done[rows] = True
        bound = SAFETY * _largest_spread(fast[done], out[done])
        rows = torch.nonzero(_uncertain(fast, bound, ranks) & ~done).flatten()
    return out


def _fast_logits(
    model: nn.Module,
    data: torch.Tensor,
    norm: Normalizer,
    layout: Layout | None,
    batch_size: int,
    num_classes: int | None,
    dtype: torch.dtype,
    progress: Progress | None,
) -> torch.Tensor:
    """The fast pass, on a copy of the model with its batch norms folded where one can be made
    (see ``folded``), else on the model itself: what a student's model raises is what the
    student's own model raises, not the copy."""
    copy = folded(model)
    if copy is not None:
        try:
            return _in_layout(copy, None, data, norm, batch_size, num_classes, dtype, progress)
        except Exception as exc:  # the copy's own failure, whatever it is: a line in the job's log
            print(f"inference: the folded copy raised {type(exc).__name__}: {exc}; running the model itself")
    return _in_layout(model, layout, data, norm, batch_size, num_classes, dtype, progress)


def _in_layout(
    model: nn.Module,
    layout: Layout | None,
    data: torch.Tensor,
    norm: Normalizer,
    batch_size: int,
    num_classes: int | None,
    dtype: torch.dtype,
    progress: Progress | None,
) -> torch.Tensor:
    fast_layout = layout or probe_layout(model, norm(data[:2]), data.device, dtype)
    try:
        return logits(model, data, norm, fast_layout, batch_size, num_classes, dtype, progress)
    finally:
        if layout is None:
            fast_layout.undo(model)


def folded(model: nn.Module) -> nn.Module | None:
    """A copy of the model in eval mode with every batch norm that follows a convolution (or a
    linear layer) folded into that layer's weights and bias, or None where there is none or it
    cannot be made safely.

    Traced with ``torch.fx``: a model that does not trace (data-dependent branches, say), one that
    calls a convolution or batch norm module at two places, and one larger than ``FOLD_BYTES``
    gets None. A fold happens only where the layer's output goes to the batch norm alone.
    Whatever the copy computes is measured like any fast pass, against float32 on the model
    itself."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if model.training or not any(m.track_running_stats for m in norms):
        return None
    if sum(p.numel() * p.element_size() for p in model.parameters()) > FOLD_BYTES:
        return None
    try:
        traced = torch.fx.symbolic_trace(model)
        calls = Counter(node.target for node in traced.graph.nodes if node.op == "call_module")
        if any(count > 1 for target, count in calls.items() if _foldable(traced.get_submodule(str(target)))):
            return None
        return _Traced(fuse(traced, no_trace=True))  # a deep copy: the model is left as it was
    except Exception:
        return None


class _Traced(nn.Module):
    """A traced module, called through its generated ``forward``: a traced module's own call
    prints each exception's traceback to stderr, and the layout probe expects some."""

    def __init__(self, traced: nn.Module) -> None:
        super().__init__()
        self.traced = traced

    def forward(self, x: torch.Tensor) -> Any:
        return self.traced.forward(x)


def _foldable(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm))


def _largest_spread(fast: torch.Tensor, exact: torch.Tensor) -> float:
    """The largest spread of one image's logit errors (largest minus smallest), over the images
    both passes computed finite logits for; infinite where there is none, so that every image is
    computed again."""
    finite = torch.isfinite(fast).all(1) & torch.isfinite(exact).all(1)
    if not finite.any():
        return float("inf")
    error = fast[finite] - exact[finite]  # (n, classes)
    return float((error.amax(1) - error.amin(1)).max())


def _uncertain(out: torch.Tensor, bound: float, ranks: tuple[int, ...]) -> torch.Tensor:
    """Rows whose top-k a float32 pass could make another set, for some k in ``ranks``: not
    finite, or the k-th logit within ``bound`` of the (k+1)-th."""
    redo = ~torch.isfinite(out).all(1)
    deciding = [k for k in ranks if k < out.shape[1]]  # a top-k of every class is always right
    if not deciding:
        return redo
    ranked = out.topk(max(deciding) + 1, dim=1).values  # (N, k + 1), descending
    for k in deciding:
        redo |= ranked[:, k - 1] - ranked[:, k] <= bound
    return redo


def logits(
    model: nn.Module,
    data: torch.Tensor,
    norm: Normalizer,
    layout: Layout,
    batch_size: int,
    num_classes: int | None = None,
    dtype: torch.dtype | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """The model as it is, in chunks (see the module's docstring), without autograd's bookkeeping,
    in ``dtype`` (autocast; None: float32) and the memory format of ``layout``.

    ``no_grad``, not ``inference_mode``: under inference mode autocast keeps no cache of the
    weights it casts, so every chunk cast every weight again (28 casts per ResNet18 forward
    instead of 6). Without them the bf16 pass ran 1.03× as fast on a quiet 2-core machine of
    this project's kind and 1.18× while another job shared it."""
    fmt, chunks, start = memory_format(layout.channels_last), [], 0
    by_batch = _normalizes_by_batch(model)
    if data.device.type == "cpu" and not by_batch:
        batch_size = min(batch_size, CPU_CHUNK)
    with (
        torch.no_grad(),
        autocast(data.device, dtype),
        _ends_outside_autocast(model, data.shape[1], dtype),
    ):
        while start < len(data):
            x = norm(data[start : start + batch_size]).contiguous(memory_format=fmt)  # (B, C, H, W)
            try:
                out = _forward(model, x, start, num_classes)
            except StageFailure as failure:
                if by_batch or batch_size == 1 or not isinstance(failure.__cause__, torch.OutOfMemoryError):
                    raise
                batch_size = _halved(batch_size, data.device)
                continue
            chunks.append(out.float().cpu())
            start += len(x)
            if progress is not None:
                progress(start, len(data))
    return torch.cat(chunks)


def _halved(batch_size: int, device: torch.device) -> int:
    """Out of memory at ``batch_size`` images: the grader picked that size, not the student, so
    the pass goes on in chunks half as large (down to one image; a model that normalizes by the
    batch keeps the size asked for). Logits move only in their last bits, as with any chunk size."""
    smaller = batch_size // 2
    print(
        f"inference: out of {device.type} memory at {batch_size} images per forward; going on with {smaller}"
    )
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return smaller


@contextlib.contextmanager
def _ends_outside_autocast(model: nn.Module, channels: int, fast: torch.dtype | None) -> Iterator[None]:
    """Under autocast to ``fast``, every ``nn.Linear`` of the model and every convolution that
    reads no more channels than the image has (``channels``) computes in its weights' own
    precision, float32 unless the student chose another (see the module's docstring); each one's
    own ``forward`` is put back after."""
    patched = []
    if fast is not None:
        for module in model.modules():
            forward = _outside_autocast(module, channels, fast)
            if forward is not None and "forward" not in vars(module):
                module.forward = forward
                patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


def _outside_autocast(module: nn.Module, channels: int, fast: torch.dtype) -> Callable[..., Any] | None:
    """The forward of a layer that keeps its weights' precision under autocast, or None for any
    other layer. A linear layer hands its output on in that precision; a convolution as narrow at
    its input as the image hands it on in ``fast``, as autocast would have: what costs precision
    is that layer's own rounding. Handed on in float32, its output kept a ResNet18's first stage
    in float32 up to the next downsampling (casts and float32 additions) for no gain: a largest
    error spread of 0.0625 logits against 0.0618 over 2,000 test images."""
    if isinstance(module, nn.Linear):
        return partial(_without_autocast, module.forward, module.weight.dtype, None)
    if isinstance(module, nn.modules.conv._ConvNd) and module.in_channels <= channels:
        return partial(_without_autocast, module.forward, module.weight.dtype, fast)
    return None


def _without_autocast(
    forward: Callable[..., Any], dtype: torch.dtype, handed_on: torch.dtype | None, *args: Any, **kwargs: Any
) -> Any:
    device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
    with torch.autocast(device, enabled=False):
        out = forward(*(_cast(a, dtype) for a in args), **{k: _cast(v, dtype) for k, v in kwargs.items()})
    return out if handed_on is None else _cast(out, handed_on)


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    return value


def _normalizes_by_batch(model: nn.Module) -> bool:
    """Whether some batch norm of the model uses each batch's statistics in eval mode."""
    return any(
        isinstance(module, nn.modules.batchnorm._BatchNorm) and not module.track_running_stats
        for module in model.modules()
    )


def _forward(model: nn.Module, x: torch.Tensor, start: int, num_classes: int | None) -> torch.Tensor:
    try:
        out = model(x)
    except Exception as exc:
        raise StageFailure(
            "inference",
            f"forward on test images {start}–{start + len(x) - 1} raised {type(exc).__name__}: {exc}"
            f"{device_hint(exc, x.device)}",
        ) from exc
    if isinstance(out, torch.Tensor) and out.dim() == 1 and len(x) == 1 and num_classes in (None, len(out)):
        out = out.unsqueeze(0)  # a squeeze() in forward, told at the forward stage (stages.SQUEEZED)
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
