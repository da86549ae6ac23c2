"""Train the weights shipped with the sample submissions in ``submissions/``.

Each sample is student code: its model is imported from the submission's own file, its input
normalization is read from its ``submission.yaml`` and its ``state_dict`` is saved where the
grader will look for it. Training is short, seeded and deterministic; the budgets below are
sized for a 2-core CPU, so accuracies are those of a demo, not of a finished assignment. The
test set is left to the grader, unless --evaluate asks for each sample's accuracy here too.

    python scripts/make_samples.py                         # every sample whose weights are missing
    python scripts/make_samples.py --only B093040051/task1 --force --evaluate
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from grader.config import Settings
from grader.data import load_split, resolve_source
from grader.errors import GraderError, UsageError

REPO_ROOT = Path(__file__).resolve().parent.parent
SUBMISSIONS = REPO_ROOT / "submissions"
SEED = 0
Data = tuple[torch.Tensor, torch.Tensor]  # (N, 3, 32, 32) uint8 images, (N,) int64 labels
Norm = tuple[torch.Tensor, torch.Tensor]  # (1, 3, 1, 1) mean and std


@dataclass(frozen=True)
class Recipe:
    """Adam with a linear warm-up to ``lr`` and a linear decay to zero."""

    epochs: int
    batch_size: int
    lr: float
    train_images: int | None = None  # a seeded random subset of the training split
    warmup: float = 0.2  # fraction of the steps spent warming up


@dataclass(frozen=True)
class Sample:
    student: str
    task: str
    model: str  # "file.py:Callable" inside the submission, built with no arguments
    weights: str
    recipe: Recipe
    data_parallel: bool = False  # save the keys nn.DataParallel writes ("module." prefix)
    copies: tuple[str, ...] = ()  # other submissions that ship the same weights file

    @property
    def name(self) -> str:
        return f"{self.student}/{self.task}"

    @property
    def root(self) -> Path:
        return SUBMISSIONS / self.student

    @property
    def owners(self) -> tuple[str, ...]:
        return tuple(copy.split("/")[0] for copy in self.copies)


SAMPLES = (
    Sample(
        "B093040051", "task1", "model.py:SimpleCNN", "weights/task1.pt",
        Recipe(epochs=1, batch_size=64, lr=2e-3, train_images=40_000),
    ),
    # B093040053 hands in the same resnet.py, so it ships the same weights.
    Sample(
        "B093040051", "task2", "resnet.py:ResNet18", "weights/task2.pt",
        Recipe(epochs=1, batch_size=32, lr=1e-3, train_images=1280),
        copies=("B093040053/weights/task2.pt",),
    ),
    Sample(
        "B093040052", "cnn", "model.py:Net", "weights/model.pt",
        Recipe(epochs=1, batch_size=64, lr=2e-3, train_images=4000),
    ),
    Sample(
        "B093040054", "cnn", "model.py:Net", "weights/model.pt",
        Recipe(epochs=1, batch_size=64, lr=2e-3, train_images=15_000),
        data_parallel=True,
    ),
)  # fmt: skip


@dataclass
class Outcome:
    name: str
    params: int
    accuracy: float | None  # None: not measured here (no --evaluate)
    claimed: float | None
    train_s: float
    eval_s: float
    size: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="CIFAR-10 source as grader.data accepts it (default: as the grader finds it: "
        "$GRADER_DATA_DIR, else `grader config data_dir`)",
    )
    parser.add_argument(
        "--only",
        metavar="NAME",
        help="one student id (all its tasks) or student/task, e.g. B093040051/task2; "
        f"known: {', '.join(s.name for s in SAMPLES)}",
    )
    parser.add_argument("--force", action="store_true", help="retrain even if weights exist")
    parser.add_argument(
        "--evaluate", action="store_true", help="also measure each sample's test accuracy (the grader does)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch (default 1: the weights then do not depend on the core "
        "count, and OpenMP does not stall when other jobs share the CPU)",
    )
    return parser.parse_args(argv)


def select(only: str | None) -> list[Sample]:
    chosen = [s for s in SAMPLES if only is None or only in (s.student, s.name, *s.owners)]
    if not chosen:
        known = ", ".join(s.name for s in SAMPLES)
        raise UsageError(f"--only {only}: no such sample; choose a student id or one of {known}")
    return chosen


def load_cifar(source: Path, splits_wanted: tuple[str, ...]) -> dict[str, Data]:
    """The splits as tensors, held whole in memory."""
    cache_dir = Settings().cache_dir
    splits = {}
    for split in splits_wanted:
        cached = load_split(source, split, cache_dir)
        images = torch.from_numpy(cached.images()).permute(0, 3, 1, 2).contiguous()
        splits[split] = images, torch.from_numpy(cached.labels())
    return splits


def build_model(sample: Sample) -> nn.Module:
    file_name, attr = sample.model.split(":")
    path = sample.root / file_name
    module_name = f"sample_{sample.student}_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, attr)()


def manifest_task(sample: Sample) -> dict:
    manifest = yaml.safe_load((sample.root / "submission.yaml").read_text()) or {}
    return (manifest.get("tasks") or {}).get(sample.task) or {}


def read_normalization(sample: Sample) -> Norm:
    """The manifest's preprocess; without one the input is plain uint8/255."""
    preprocess = manifest_task(sample).get("preprocess") or {}
    mean = torch.tensor(preprocess.get("mean", [0.0, 0.0, 0.0])).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.get("std", [1.0, 1.0, 1.0])).view(1, 3, 1, 1)
    return mean, std


def normalize(images: torch.Tensor, norm: Norm) -> torch.Tensor:
    mean, std = norm
    return (images.float() / 255 - mean) / std


def augment(images: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip, drawn per image, in one indexing."""
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))  # (N, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    cols = torch.arange(w).expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]  # (N, W)
    rows = torch.arange(h) + dy[:, None]  # (N, H)
    return padded[
        torch.arange(n)[:, None, None, None],
        torch.arange(c)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]  # (N, C, H, W)


def lr_factor(step: int, total: int, warmup: float) -> float:
    """Linear warm-up to the peak, then linear decay to zero."""
    peak = max(1, round(total * warmup))
    if step < peak:
        return (step + 1) / peak
    return max(0.0, (total - step) / (total - peak))


def train(
    model: nn.Module,
    data: Data,
    norm: Norm,
    recipe: Recipe,
    gen: torch.Generator,
) -> None:
    images, labels = data
    if recipe.train_images is not None:
        keep = torch.randperm(len(images), generator=gen)[: recipe.train_images]
        images, labels = images[keep], labels[keep]
    steps_per_epoch = math.ceil(len(images) / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, recipe.warmup)
    )
    model.train()
    for epoch in range(recipe.epochs):
        order = torch.randperm(len(images), generator=gen)
        loss_sum, started = 0.0, time.perf_counter()
        for i in range(steps_per_epoch):
            batch = order[i * recipe.batch_size : (i + 1) * recipe.batch_size]
            inputs = normalize(augment(images[batch], gen), norm)
            loss = F.cross_entropy(model(inputs), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item()
        print(
            f"  epoch {epoch + 1}/{recipe.epochs}: loss {loss_sum / steps_per_epoch:.3f} "
            f"({time.perf_counter() - started:.0f} s, {len(images)} images)",
            flush=True,
        )


@torch.no_grad()
def infer(model: nn.Module, images: torch.Tensor, norm: Norm, batch: int = 500) -> torch.Tensor:
    model.eval()
    return torch.cat([model(normalize(chunk, norm)) for chunk in images.split(batch)])


def evaluate(model: nn.Module, data: Data, norm: Norm) -> float:
    images, labels = data
    return (infer(model, images, norm).argmax(1) == labels).float().mean().item() * 100


def save_weights(model: nn.Module, sample: Sample) -> Path:
    path = sample.root / sample.weights
    path.parent.mkdir(parents=True, exist_ok=True)
    # DataParallel needs no GPU to be built; on the CPU it only wraps, so its keys gain "module.".
    owner = nn.DataParallel(model) if sample.data_parallel else model
    torch.save(owner.state_dict(), path)
    for copy in sample.copies:
        target = SUBMISSIONS / copy
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return path


def weights_exist(sample: Sample) -> bool:
    paths = [sample.root / sample.weights, *(SUBMISSIONS / c for c in sample.copies)]
    return all(p.is_file() for p in paths)


def make(sample: Sample, splits: dict[str, Data]) -> Outcome:
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = build_model(sample)
    params = sum(p.numel() for p in model.parameters())
    norm = read_normalization(sample)
    print(f"{sample.name}: {sample.model}, {params:,} parameters", flush=True)
    started = time.perf_counter()
    train(model, splits["train"], norm, sample.recipe, gen)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    accuracy = evaluate(model, splits["test"], norm) if "test" in splits else None
    eval_s = time.perf_counter() - started
    path = save_weights(model, sample)
    measured = "" if accuracy is None else f"test accuracy {accuracy:.2f}% "
    print(f"  {measured}-> {path.relative_to(REPO_ROOT)}", flush=True)
    claimed = manifest_task(sample).get("claimed_test_accuracy")
    size = path.stat().st_size
    return Outcome(sample.name, params, accuracy, claimed, train_s, eval_s, size)


def print_table(outcomes: list[Outcome]) -> None:
    print(f"\n{'sample':<18} {'params':>11} {'test acc':>9} {'claimed':>8} "
          f"{'train':>7} {'eval':>6} {'size':>9}")  # fmt: skip
    for o in outcomes:
        claimed = "-" if o.claimed is None else f"{o.claimed:.2f}"
        accuracy = "-" if o.accuracy is None else f"{o.accuracy:.2f}%"
        print(
            f"{o.name:<18} {o.params:>11,} {accuracy:>9} {claimed:>8} "
            f"{o.train_s:>6.0f}s {o.eval_s:>5.0f}s {o.size / 1e6:>7.2f}MB"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        samples = select(args.only)
        todo = [s for s in samples if args.force or not weights_exist(s)]
        for sample in samples:
            if sample not in todo:
                print(f"{sample.name}: weights exist, skipped (--force retrains)")
        if not todo:
            return 0
        splits = load_cifar(resolve_source(args.data_dir), ("train", "test") if args.evaluate else ("train",))
    except GraderError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    sys.dont_write_bytecode = True  # keep __pycache__ out of the submission folders
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    print_table([make(sample, splits) for sample in todo])
    return 0


if __name__ == "__main__":
    sys.exit(main())
