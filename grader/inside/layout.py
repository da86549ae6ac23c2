"""How a model runs on a device: which device, autocast, deterministic kernels, memory layout.

channels_last is faster for convolutions, but students' ``x.view(x.size(0), -1)`` raises on
channels_last activations; ``probe_layout`` finds the layout a model accepts. Runs inside
the sandbox with the training engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from grader.inside.channel import StageFailure


def pick_device(requested: str) -> torch.device:
    """``auto`` is CUDA when torch sees a GPU in the sandbox, else the CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise StageFailure("start", "--device cuda was asked for but no GPU is visible in the sandbox")
    return torch.device(requested)


_NO_CUDA = ("Found no NVIDIA driver", "No CUDA GPUs are available", "Torch not compiled with CUDA")


def device_hint(exc: BaseException, device: torch.device) -> str:
    """For a model that moved something to CUDA itself while the job runs on the CPU."""
    if device.type != "cpu" or not any(words in str(exc) for words in _NO_CUDA):
        return ""
    return (
        "; the model's code puts tensors on CUDA itself (.cuda() or device='cuda') while this grading "
        "runs on the CPU: create them on the input's device (device=x.device) or register them as "
        "buffers, which move with the model"
    )


def build_device_hint(exc: BaseException) -> str:
    """For a model that moves itself to CUDA while it is built (``self.cuda()``,
    ``.to("cuda")`` in ``__init__``) on a machine without a GPU."""
    if torch.cuda.is_available() or not any(words in str(exc) for words in _NO_CUDA):
        return ""
    return (
        "; the model moves itself to CUDA when it is built (.cuda() or .to('cuda') in __init__) while "
        "this grading runs on the CPU: leave that to the code that uses the model "
        "(model = Net().to(device)), as the grader moves it to its own device"
    )


def fast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision this device computes fast in: bf16 on a GPU that has it and on a
    CPU with AVX512-BF16 or AMX (oneDNN's bf16 kernels), fp16 on an older GPU; None elsewhere."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and _cpu_has_bf16():
        return torch.bfloat16
    return None


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and torch.cpu._is_avx512_bf16_supported()
    except (AttributeError, RuntimeError):
        return False


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """Autocast to ``dtype`` on ``device``; None: plain float32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels on the CPU (a warning, not an error, for ops that have none)."""
    if device.type != "cpu":
        yield
        return
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch._C._get_mkldnn_deterministic(),
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch._C._set_mkldnn_deterministic(True)  # oneDNN's own switch; the global one leaves it
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch._C._set_mkldnn_deterministic(before[2])


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


@dataclass
class Layout:
    """The memory format a model trains in, and where it has to go back to NCHW."""

    channels_last: bool = False
    nchw_after: str | None = None  # the module whose outputs are made NCHW, for a later .view
    _hook: RemovableHandle | None = field(default=None, repr=False, compare=False)

    def apply(self, model: nn.Module) -> None:
        model.to(memory_format=memory_format(self.channels_last))
        if self.nchw_after is not None and self._hook is None:
            self._hook = model.get_submodule(self.nchw_after).register_forward_hook(_to_nchw)

    def undo(self, model: nn.Module) -> None:
        """Back to the plain NCHW model the student wrote."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        model.to(memory_format=torch.contiguous_format)


def _to_nchw(module: nn.Module, inputs: Any, output: Any) -> Any:
    return output.contiguous() if isinstance(output, torch.Tensor) else output


def probe_layout(
    model: nn.Module, sample: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None
) -> Layout:
    """channels_last if a forward in the model's current mode allows it, else NCHW; left applied.

    Students' ``x.view(x.size(0), -1)`` raises on channels_last activations: the probe then makes
    the output of the last module that produced a 4-D tensor NCHW again and tries once more, so
    the convolutions still run channels_last. Batch-norm updates of the probe are undone.
    """
    saved = {name: b.clone() for name, b in model.named_buffers()}
    try:
        return _probe(model, sample.contiguous(memory_format=torch.channels_last), device, dtype)
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(saved[name])


def _probe(model: nn.Module, x: torch.Tensor, device: torch.device, dtype: torch.dtype | None) -> Layout:
    Layout(channels_last=True).apply(model)
    ok, last = _forward(model, x, device, dtype)
    if ok:
        return Layout(channels_last=True)
    if last is not None:
        hooked = Layout(channels_last=True, nchw_after=last)
        hooked.apply(model)
        if _forward(model, x, device, dtype)[0]:
            return hooked
        hooked.undo(model)
    model.to(memory_format=torch.contiguous_format)
    return Layout(channels_last=False)


def _forward(
    model: nn.Module, x: torch.Tensor, device: torch.device, dtype: torch.dtype | None
) -> tuple[bool, str | None]:
    """Whether a forward succeeds, and the last module before the end or the error with a 4-D output."""
    names = {module: name for name, module in model.named_modules() if name}
    last: list[str] = []

    def note(module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            last.append(names[module])

    handles = [module.register_forward_hook(note) for module in names]
    try:
        with torch.no_grad(), autocast(device, dtype):
            model(x)
        return True, None
    except RuntimeError:
        return False, last[-1] if last else None
    finally:
        for handle in handles:
            handle.remove()
