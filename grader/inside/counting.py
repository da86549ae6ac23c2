"""What a model is, measured without training it: parameters, MACs, layer table, shape.

Runs inside the sandbox (the harness calls it on the student's model); what it measures
goes back to the host as ``grader.protocol`` records.

MACs are reported per named counter because students quote different tools:
``thop`` (ultralytics-thop; what most lab reports call "FLOPs") and ``ptflops``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import operator
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from grader.protocol import MAX_BLOCKS, MAX_ROWS, DiagramNode, LayerRow, Summary

_MB = 1024.0**2


SKETCH_SIZE = 32


def weights_sketch(model: nn.Module) -> list[float]:
    """A random projection of every floating-point weight, for spotting copied weights.

    Each element gets a sign from a generator seeded by its tensor's name and is added
    into one of SKETCH_SIZE buckets (count-sketch): the same weights give the same
    vector on any machine, lightly perturbed copies a close one, and independently
    trained models vectors as far apart as two random ones.
    """
    sketch = torch.zeros(SKETCH_SIZE, dtype=torch.float64)
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point() or tensor.numel() == 0 or tensor.is_meta:
            continue
        values = tensor.detach().to("cpu", torch.float64).flatten()  # (n,)
        generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        signs = torch.randint(0, 2, values.shape, generator=generator, dtype=torch.int8) * 2 - 1
        buckets = torch.arange(values.numel()) % SKETCH_SIZE
        sketch.index_add_(0, buckets, values * signs)
    return [float(v) for v in sketch]


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable); works on the meta device since only shapes are read."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def count_macs(model: nn.Module, x: torch.Tensor, counter: str) -> int:
    """Multiply-accumulates of one forward pass on ``x`` under ``counter``'s conventions.

    Both libraries attach hooks and bookkeeping to the model, so they work on a copy and the
    student's model stays exactly as built. A model that cannot be copied (it holds a lock, an
    open file, a generator) is counted as it is: both remove their hooks when they finish.
    """
    if counter == "ptflops" and x.is_meta:
        # On meta, addmm decomposes into a torch.mm that ptflops also patches: Linear counts twice.
        raise ValueError("ptflops cannot count on the meta device; use thop")
    try:
        probe = copy.deepcopy(model)
    except Exception:
        probe = model
    with _quiet():
        if counter == "thop":
            from thop import profile

            macs, _ = profile(probe, inputs=(x,), verbose=False)
        elif counter == "ptflops":
            from ptflops import get_model_complexity_info

            macs, _ = get_model_complexity_info(
                probe,
                tuple(x.shape[1:]),
                as_strings=False,
                print_per_layer_stat=False,
                verbose=False,
                backend="pytorch",
            )
        else:
            raise ValueError(f"unknown MAC counter {counter!r}; use thop or ptflops")
    return int(macs)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def module_counts(model: nn.Module) -> dict[str, int]:
    """How many modules of each type the model holds (the root excluded); the 500 commonest."""
    counts = Counter(short(type(m).__name__) for name, m in model.named_modules() if name)
    return dict(sorted(counts.most_common(500)))


def short(name: str, limit: int = 200) -> str:
    """A name the student chose (a class, an attribute), cut to what a report can show."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _summarized(module: nn.Module, root: nn.Module) -> bool:
    # torchsummary's convention: every module but containers and the model itself.
    return module is not root and not isinstance(module, nn.Sequential | nn.ModuleList | nn.ModuleDict)


def _own_params(module: nn.Module) -> int:
    # torchsummary counts a row's own weight and bias only, so a residual block shows 0.
    total = 0
    for attr in ("weight", "bias"):
        tensor = getattr(module, attr, None)
        if isinstance(tensor, torch.Tensor):
            total += tensor.numel()
    return total


def _shape_of(output: Any) -> list[int]:
    if isinstance(output, list | tuple) and output:
        output = output[0]
    if isinstance(output, torch.Tensor):
        return [-1, *output.shape[1:8]]
    return []


class ForwardProbe:
    """One forward pass that records the layer table, the top-level blocks and the
    tensor additions of equal-shaped feature maps (the signature of a skip connection).

    A forward may call a module any number of times: the first MAX_ROWS rows and MAX_BLOCKS
    blocks are kept, the rest counted (``rows_seen``, ``blocks_seen``).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.rows: list[LayerRow] = []
        self.blocks: list[DiagramNode] = []
        self.rows_seen = self.blocks_seen = 0
        self._activations = 0  # output elements of every row, kept or not
        self.residual_adds = 0
        self.output: torch.Tensor | None = None

    def run(self, x: torch.Tensor) -> ForwardProbe:
        handles = [
            m.register_forward_hook(self._row_hook(m))
            for m in self.model.modules()
            if _summarized(m, self.model)
        ]
        handles += [m.register_forward_hook(self._block_hook(name, m)) for name, m in _top_blocks(self.model)]
        try:
            with torch.no_grad(), _AddCounter() as adds:
                self.output = self.model(x)
            self.residual_adds = adds.count
        finally:
            for handle in handles:
                handle.remove()
        return self

    def _row_hook(self, module: nn.Module) -> Callable[..., None]:
        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            self.rows_seen += 1
            shape = _shape_of(out)
            self._activations += abs(_numel(shape))
            if len(self.rows) < MAX_ROWS:
                name = f"{short(type(module).__name__, 180)}-{self.rows_seen}"
                self.rows.append(LayerRow(name, shape, _own_params(module)))

        return hook

    def _block_hook(self, name: str, module: nn.Module) -> Callable[..., None]:
        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            self.blocks_seen += 1
            if len(self.blocks) < MAX_BLOCKS:
                params = sum(p.numel() for p in module.parameters())
                node = DiagramNode(short(name), short(type(module).__name__), _shape_of(out), params)
                self.blocks.append(node)

        return hook

    def summary(self, input_shape: tuple[int, ...]) -> Summary:
        """torchsummary's table and its totals (float32 sizes, batch of one)."""
        total, trainable = count_params(self.model)
        input_mb = _numel(list(input_shape)) * 4 / _MB
        fwd_bwd_mb = 2 * self._activations * 4 / _MB  # activations and their gradients
        params_mb = total * 4 / _MB
        return Summary(
            rows=self.rows,
            total_params=total,
            trainable_params=trainable,
            input_mb=input_mb,
            forward_backward_mb=fwd_bwd_mb,
            params_mb=params_mb,
            total_mb=input_mb + fwd_bwd_mb + params_mb,
            rows_omitted=self.rows_seen - len(self.rows),
        )


def _numel(shape: list[int]) -> int:
    n = 1
    for dim in shape:
        n *= abs(dim)
    return n


def _top_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Children of the model, with one level of Sequential/ModuleList opened up."""
    blocks = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential | nn.ModuleList) and len(child) <= 16:
            blocks += [(f"{name}.{sub}", grand) for sub, grand in child.named_children()]
        else:
            blocks.append((name, child))
    return blocks


class _AddCounter(TorchFunctionMode):
    """Counts ``a + b`` where both are feature maps (≥3-D) of the same shape."""

    _ADDS: ClassVar[frozenset[Any]] = frozenset(
        {
            torch.add,
            torch.Tensor.add,
            torch.Tensor.__add__,
            torch.Tensor.__iadd__,
            torch.Tensor.add_,
            torch.Tensor.__radd__,
            operator.add,
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in self._ADDS and len(args) >= 2 and _feature_maps(args[0], args[1]):
            self.count += 1
        return func(*args, **kwargs)


def _feature_maps(a: Any, b: Any) -> bool:
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dim() >= 3 and a.shape == b.shape
