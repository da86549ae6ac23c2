"""The training engine; it runs inside the sandbox (augment.py: data and augmentation; layout.py:
device and memory layout; inference.py: the validation pass).

The airbench way: the images are put on the device once, as one uint8 tensor, and every batch
is gathered, converted, normalized and augmented there with a few whole-batch tensor ops (no
DataLoader, no PIL, no worker processes). The model runs channels_last where it allows it, under
bf16 autocast on GPUs and on CPUs with AVX512-BF16 or AMX (fp16 on GPUs without bf16; float32
elsewhere). The recipe is ``grader.protocol.Recipe``. Validation accuracy comes from the one
inference function, so it is float32's whatever the precision of the steps.

Schedules are one ``LambdaLR`` stepped after every optimizer step, so the lr is a pure function
of the step (``lr_factor``): linear warmup over ``warmup_epochs``, then cosine or one-cycle over
the remaining steps, or step/multistep decays that change only at epoch boundaries (the same
lrs ``StepLR``/``MultiStepLR`` stepped once per epoch would give). Epochs drop the last partial
batch, so BatchNorm never sees a batch of one.

Repeatability: shuffling and augmentation draw from a generator seeded by (seed, epoch), the
global torch RNG (dropout) is seeded at the start and checkpointed with everything else, and
the CPU runs with deterministic algorithms. An interrupted run resumed from its last
checkpoint therefore ends with the same weights and history, bit for bit, as one that was not.
"""

from __future__ import annotations

import bisect
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from grader.files import write_atomic
from grader.inside import inference
from grader.inside.augment import Normalizer, augment, to_device
from grader.inside.layout import Layout, autocast, deterministic, fast_dtype, memory_format, probe_layout
from grader.protocol import EpochRecord, Recipe, TrainingReport

# channels_last on the CPU too: on a quiet 2-core EPYC it trained the seed-000 CNN (NCHW again before
# its .view) 10-20 % and ResNet18 ~5 % faster than NCHW; benchmarks/train_throughput.py measures both.
CPU_CHANNELS_LAST = True
_CHECKPOINT_FORMAT = 1
_CHECKPOINT_GLOB = "epoch-[0-9][0-9][0-9][0-9].pt"


# --- schedule -------------------------------------------------------------------------------


def lr_factor(step: int, recipe: Recipe, steps_per_epoch: int) -> float:
    """Multiplier of ``recipe.lr`` for optimizer step ``step`` (0-based)."""
    warm = round(recipe.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, recipe.epochs * steps_per_epoch - warm)
    epoch = step // steps_per_epoch
    if recipe.schedule == "step":
        return recipe.gamma ** (epoch // recipe.step_size)
    if recipe.schedule == "multistep":
        return recipe.gamma ** bisect.bisect_right(sorted(recipe.milestones), epoch)
    if recipe.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if recipe.schedule == "onecycle":
        return _one_cycle(progress)
    return 1.0


def _one_cycle(p: float, rise: float = 0.3, start: float = 1 / 25, end: float = 1 / 25e4) -> float:
    """OneCycleLR's lr (cosine up from lr/25 over 30 %, cosine down to lr/25e4); momentum stays."""
    if p < rise:
        return start + (1 - start) * (1 - math.cos(math.pi * p / rise)) / 2
    return end + (1 - end) * (1 + math.cos(math.pi * (p - rise) / (1 - rise))) / 2


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    params, wd = model.parameters(), recipe.weight_decay
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=wd)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=wd)
    nesterov = recipe.nesterov and recipe.momentum > 0  # torch refuses Nesterov without momentum
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=nesterov, weight_decay=wd)


# --- training -----------------------------------------------------------------------------


def _evaluate(run: _Run) -> tuple[float | None, float | None]:
    if len(run.val_y) == 0:
        return None, None
    run.model.eval()
    # Validation reads top-1 and the loss only: no image needs float32 for its top-3.
    logits = inference.exact_logits(run.model, run.val_x, run.norm, 1000, layout=run.layout, ranks=(1,))
    run.model.train()
    labels = run.val_y.cpu()
    loss = F.cross_entropy(logits, labels).item()
    return loss, (logits.argmax(1) == labels).float().mean().item() * 100


@dataclass
class _Run:
    """Everything one training run carries from epoch to epoch."""

    model: nn.Module
    recipe: Recipe
    device: torch.device
    train_x: torch.Tensor  # (N, C, H, W) uint8 on the device
    train_y: torch.Tensor  # (N,) int64 on the device
    val_x: torch.Tensor
    val_y: torch.Tensor
    norm: Normalizer
    layout: Layout
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    history: list[EpochRecord] = field(default_factory=list)
    train_seconds: float = 0.0
    images_seen: int = 0
    on_step: Callable[[int, int], None] | None = None  # (epoch, steps done in it), for progress

    @property
    def dtype(self) -> torch.dtype | None:
        """The reduced precision the steps run in (autocast), None for float32."""
        return fast_dtype(self.device)

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(len(self.train_x), self.recipe)


def _epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """Independent streams per (seed, epoch), so a resumed epoch replays the same draws."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
    return gen


def _train_epoch(run: _Run, epoch: int, steps: int | None = None) -> tuple[float, float, float]:
    """One pass over the shuffled training set (or its first ``steps`` batches); returns
    (loss, accuracy %, last lr)."""
    r, model = run.recipe, run.model
    steps = run.steps_per_epoch if steps is None else min(steps, run.steps_per_epoch)
    gen = _epoch_generator(r.seed, epoch, run.device)
    order = torch.randperm(len(run.train_x), generator=gen, device=run.device)
    fmt, size = memory_format(run.layout.channels_last), min(r.batch_size, len(run.train_x))
    loss_sum = torch.zeros((), device=run.device)
    correct = torch.zeros((), dtype=torch.int64, device=run.device)
    lr = 0.0
    model.train()
    for step in range(steps):
        idx = order[step * size : (step + 1) * size]
        x = augment(run.train_x[idx], r, run.norm, gen).contiguous(memory_format=fmt)  # (B, C, H, W)
        y = run.train_y[idx]
        with autocast(run.device, run.dtype):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=r.label_smoothing)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        lr = run.optimizer.param_groups[0]["lr"]
        run.scheduler.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        if run.on_step is not None:
            run.on_step(epoch, step + 1)
    seen = steps * size
    run.images_seen += seen
    return loss_sum.item() / seen, correct.item() / seen * 100, lr


def _save_checkpoint(run: _Run, directory: Path, data_key: int) -> None:
    """Written to a temporary file and renamed, so a kill never leaves a half checkpoint."""
    epoch = len(run.history)
    state = {
        "format": _CHECKPOINT_FORMAT,
        "epoch": epoch,
        "recipe": run.recipe.identity(),
        "data": data_key,
        "layout": [run.layout.channels_last, run.layout.nchw_after],
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "history": [asdict(h) for h in run.history],
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if run.device.type == "cuda" else [],
    }
    path = directory / f"epoch-{epoch:04d}.pt"
    write_atomic(path, lambda handle: torch.save(state, handle))
    for old in directory.glob(_CHECKPOINT_GLOB):
        if old != path:
            old.unlink()


def _load_checkpoint(directory: Path | None, device: torch.device) -> dict[str, Any] | None:
    paths = sorted(directory.glob(_CHECKPOINT_GLOB)) if directory is not None else []
    if not paths:
        return None
    try:
        state: dict[str, Any] = torch.load(paths[-1], map_location=device, weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"checkpoint {paths[-1].name} cannot be read ({type(exc).__name__}), so this run cannot "
            "resume from it: code other than the trainer wrote to the checkpoint folder"
        ) from exc
    return state


def _resume(run: _Run, state: dict[str, Any], data_key: int) -> None:
    """Restore a checkpoint; one of another recipe or dataset would silently mix two runs."""
    differs = [k for k, v in run.recipe.identity().items() if state["recipe"].get(k) != v]
    if state["data"] != data_key:
        differs.append("training/validation data")
    if differs:
        raise ValueError(
            f"the checkpoint directory holds a run with a different {', '.join(differs)}; "
            "resume with the same recipe and data, or use an empty directory"
        )
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.history = [EpochRecord(**h) for h in state["history"]]
    torch.set_rng_state(state["rng_cpu"].cpu())
    if run.device.type == "cuda" and state["rng_cuda"]:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])


def _data_key(*tensors: torch.Tensor) -> int:
    """Sizes and labels of the data a checkpoint was trained on."""
    key = 0
    for t in tensors:
        key = zlib.crc32(str(list(t.shape)).encode(), key)
        if t.dtype == torch.int64:
            key = zlib.crc32(t.cpu().numpy().tobytes(), key)
    return key


def _budget_spent(run: _Run) -> str | None:
    budget, spent = run.recipe.budget_s, sum(h.seconds for h in run.history)
    if budget is None or spent <= budget or len(run.history) >= run.recipe.epochs:
        return None
    return (
        f"time budget of {budget:g} s used up after epoch {len(run.history)} of "
        f"{run.recipe.epochs} ({spent:.1f} s)"
    )


def _prepare(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    recipe: Recipe,
    device: torch.device,
    channels_last: bool | None,
    resumed: dict[str, Any] | None,
) -> _Run:
    """Model on the device in its memory format, optimizer and schedule, global RNG seeded."""
    model.to(device)
    norm = Normalizer.of(recipe, device)
    want = channels_last if channels_last is not None else device.type == "cuda" or CPU_CHANNELS_LAST
    if resumed is not None:
        layout = Layout(*resumed["layout"])  # the layout picks the kernels, hence the numbers
        layout.apply(model)
    elif want:
        layout = probe_layout(model.train(), norm(data[0][:2]), device, fast_dtype(device))
    else:
        layout = Layout(channels_last=False)
    torch.manual_seed(recipe.seed)
    optimizer = _optimizer(model, recipe)
    steps = steps_per_epoch(len(data[0]), recipe)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, recipe, steps))
    return _Run(model, recipe, device, *data, norm, layout, optimizer, scheduler)


def steps_per_epoch(n: int, recipe: Recipe) -> int:
    """Optimizer steps of one epoch over ``n`` training images (the last partial batch is dropped)."""
    return max(1, n // recipe.batch_size)


def train(
    model: nn.Module,
    train_x: np.ndarray | torch.Tensor,
    train_y: np.ndarray | torch.Tensor,
    val_x: np.ndarray | torch.Tensor,
    val_y: np.ndarray | torch.Tensor,
    recipe: Recipe,
    device: torch.device,
    checkpoint_dir: Path | None,
    log: Callable[[str], Any] = print,
    channels_last: bool | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainingReport:
    """Train ``model`` in place, resuming from the latest checkpoint in ``checkpoint_dir``.

    ``channels_last``: None tries it on CUDA (and on the CPU if ``CPU_CHANNELS_LAST``), True
    tries it anywhere, False never (see ``probe_layout``). The model is handed back NCHW.
    ``on_step(epoch, step)`` is called after every optimizer step.
    """
    data = (
        to_device(train_x, device),
        torch.as_tensor(train_y, dtype=torch.int64).to(device),
        to_device(val_x, device),
        torch.as_tensor(val_y, dtype=torch.int64).to(device),
    )
    data_key = _data_key(*data)
    with deterministic(device):
        state = _load_checkpoint(checkpoint_dir, device)
        run = _prepare(model, data, recipe, device, channels_last, state)
        run.on_step = on_step
        try:
            if state is not None:
                _resume(run, state, data_key)
            stopped = _epochs(run, checkpoint_dir, data_key, log)
        finally:
            run.layout.undo(model)
    seconds = run.train_seconds
    return TrainingReport(
        history=run.history,
        stopped_early=stopped,
        images_per_second=run.images_seen / seconds if seconds else 0.0,
        channels_last=run.layout.channels_last,
        nchw_after=run.layout.nchw_after,
        resumed_from_epoch=None if state is None else int(state["epoch"]),
    )


def steps_per_second(
    model: nn.Module,
    train_x: np.ndarray | torch.Tensor,
    train_y: np.ndarray | torch.Tensor,
    recipe: Recipe,
    device: torch.device,
    steps: int = 4,
) -> TrainingReport:
    """How fast this model trains under ``recipe`` here: ``steps`` timed steps after one to warm
    up, as a report with no history whose ``images_per_second`` says it (for the host's estimate
    of how long a retraining would take). The model's weights change."""
    empty = torch.empty(0, dtype=torch.uint8, device=device)
    data = (
        to_device(train_x, device),
        torch.as_tensor(train_y, dtype=torch.int64).to(device),
        empty.view(0, 3, 32, 32),
        torch.empty(0, dtype=torch.int64, device=device),
    )
    with deterministic(device):
        run = _prepare(model, data, recipe, device, None, None)
        try:
            _train_epoch(run, 1, steps=1)
            run.images_seen = 0
            started = time.perf_counter()
            _train_epoch(run, 2, steps=steps)
            seconds = time.perf_counter() - started
        finally:
            run.layout.undo(model)
    return TrainingReport(
        [], None, run.images_seen / seconds, run.layout.channels_last, run.layout.nchw_after, None
    )


def _epochs(run: _Run, checkpoint_dir: Path | None, data_key: int, log: Callable[[str], Any]) -> str | None:
    """Run the remaining epochs; the reason for stopping before the last one, if any."""
    while len(run.history) < run.recipe.epochs:
        stopped = _budget_spent(run)
        if stopped:
            log(stopped)
            return stopped
        epoch = len(run.history) + 1
        started = time.perf_counter()
        train_loss, train_acc, lr = _train_epoch(run, epoch)
        run.train_seconds += time.perf_counter() - started
        val_loss, val_acc = _evaluate(run)
        stats = EpochRecord(
            epoch, train_loss, train_acc, val_loss, val_acc, lr, time.perf_counter() - started
        )
        run.history.append(stats)
        if checkpoint_dir is not None:
            _save_checkpoint(run, checkpoint_dir, data_key)
        log(_describe(stats, run.recipe.epochs))
    return None


def _describe(s: EpochRecord, epochs: int) -> str:
    val = "" if s.val_loss is None else f"  val loss {s.val_loss:.4f} acc {s.val_acc:.2f}%"
    return (
        f"epoch {s.epoch}/{epochs}  train loss {s.train_loss:.4f} acc {s.train_acc:.2f}%{val}"
        f"  lr {s.lr:.4g}  {s.seconds:.1f} s"
    )
