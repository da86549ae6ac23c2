"""Training and evaluation throughput of grader/inside/engine.py against the loop students write
(prints a table; not a test).

    .venv/bin/python benchmarks/train_throughput.py [--data-dir PATH] [--rounds N] [--threads N]
        [--resnet18-weights PATH] [--explore]

Both sides train the same model (a fresh copy, same seed) with the same recipe: SGD with Nesterov
momentum, the same batch size, random crop (padding 4), horizontal flip and normalization. The
students' side is torchvision's ``DataLoader`` over a Dataset that serves the uint8 images the way
``torchvision.datasets.CIFAR10`` does (PIL image → RandomCrop → RandomHorizontalFlip → ToTensor →
Normalize), ``num_workers=2``, shuffled, NCHW model, float32; its first batch (worker start-up) is
not timed. The engine is ``grader.inside.engine.train`` as grading runs it (bfloat16 autocast
where the CPU has AVX512-BF16 or AMX, in the layout its probe picks), and once held to float32.
Evaluation compares the students' loop (no_grad, float32) with ``grader.inside.inference.infer``,
the grader's one inference path (a bfloat16 pass, then float32 for a calibration set and for every
image whose deciding margin the measured error could flip), on a briefly trained copy of the
model (or, with ``--resnet18-weights``, on given ResNet18 weights over the whole test split),
once keeping top-1 float32's (a rubric with ``top3: false``, eai-lab2's) and once top-1 and
top-3 (the default), and counts the images whose top-1 (and where kept, top-3 set) differs from
the loop's: it must be none. The variants alternate round
by round and the best round counts, since other jobs share the machine; check ``uptime`` and run
it when the machine is quiet.

FLOP convention: thop's MACs of one image × 2 (multiply and add) × 3 for training (the backward
pass costs about twice the forward), × 1 for evaluation; the ceilings are the best of several
2048×2048 ``torch.mm`` on this machine in float32 and in bfloat16 (2·n³ FLOP each). Targets on
this project's 2-core CPU (AMX-BF16): training at ≥ 2.5× the DataLoader loop for the seed-000
CNN and ≥ 2.2× for ResNet18; evaluating ResNet18 at ≥ 4× the loop, with identical predictions.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from grader.config import REPO_ROOT, Settings
from grader.data import load_split
from grader.inside import engine, inference
from grader.inside.augment import Normalizer
from grader.inside.counting import count_macs, count_params
from grader.inside.engine import train
from grader.inside.inference import infer, logits
from grader.inside.layout import fast_dtype
from grader.protocol import Recipe

LOGITS = inspect.signature(logits)
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
CPU = torch.device("cpu")
RECIPE = Recipe(schedule="none", epochs=1, val_size=0)  # SGD, Nesterov, crop 4, flip, normalize


# --- the models, written the way students write them ------------------------------------------


class SeedCNN(nn.Module):
    """The seed-000 CNN: 3 × (conv3x3-BN-ReLU-maxpool) with 32/64/128 channels, Linear(2048, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.conv2, self.bn2 = nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64)
        self.conv3, self.bn3 = nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128)
        self.relu, self.pool = nn.ReLU(), nn.MaxPool2d(2)
        self.fc = nn.Linear(128 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.relu(self.bn1(self.conv1(x))))
        out = self.pool(self.relu(self.bn2(self.conv2(out))))
        out = self.pool(self.relu(self.bn3(self.conv3(out))))
        return self.fc(out.view(out.size(0), -1))


def ResNet18() -> nn.Module:
    """The project's reference ResNet18 for 32×32 images (reference_models/resnet18.py)."""
    path = REPO_ROOT / "reference_models" / "resnet18.py"
    spec = importlib.util.spec_from_file_location("reference_resnet18", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ResNet18()


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], nn.Module]
    params: int  # checked, so the table is about the model it names
    batch_size: int
    train_steps: int  # timed per round and side
    eval_images: int
    eval_batch: int


# Evaluation sets large enough that the engine's fixed float32 calibration (256 images) weighs
# about as on a real test pass (2.6 % of 10,000 images) rather than dominating.
CASES = (
    Case("seed-000 CNN", SeedCNN, 114_186, batch_size=256, train_steps=8, eval_images=5000, eval_batch=1000),
    Case("ResNet18", ResNet18, 11_173_962, batch_size=64, train_steps=8, eval_images=2000, eval_batch=500),
)


# --- the students' side -----------------------------------------------------------------------


class StudentCIFAR(Dataset):
    """uint8 (N, 32, 32, 3) images served as torchvision.datasets.CIFAR10 serves them."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def _student_transform(augment: bool) -> transforms.Compose:
    steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if augment else []
    return transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(RECIPE.mean, RECIPE.std)])


def loader_train(case: Case, images: np.ndarray, labels: np.ndarray) -> float:
    """Images/s of the DataLoader loop over ``case.train_steps`` batches after the first."""
    n = (case.train_steps + 1) * case.batch_size
    data = StudentCIFAR(images[:n], labels[:n], _student_transform(augment=True))
    loader = DataLoader(data, batch_size=case.batch_size, shuffle=True, num_workers=2)
    torch.manual_seed(0)
    model = case.make().train()
    opt = torch.optim.SGD(
        model.parameters(),
        lr=RECIPE.lr,
        momentum=RECIPE.momentum,
        nesterov=True,
        weight_decay=RECIPE.weight_decay,
    )
    started = 0.0
    for step, (x, y) in enumerate(loader):
        if step == 1:
            started = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return case.train_steps * case.batch_size / (time.perf_counter() - started)


@dataclass
class EvalSet:
    """What one case is evaluated on: the model and the images, with their labels."""

    model: nn.Module
    images: np.ndarray
    labels: np.ndarray
    what: str  # for the table's heading


# The rankings the grader's side keeps float32's: top-1 alone (a rubric with ``top3: false``,
# such as eai-lab2) and top-1 with top-3 (the default).
RANKINGS: dict[str, tuple[int, ...]] = {"top-1": (1,), "top-1,3": (1, 3)}


def top3_sets(out: torch.Tensor) -> torch.Tensor:
    """Each row's three highest classes, in class order: (N, 3)."""
    return out.topk(3, 1).indices.sort(1).values


@dataclass
class Predictions:
    """What each side predicted on the evaluation images (the latest round's): the loop's top-1
    and top-3 sets, and for each of the grader's rankings its own and how many images it
    computed in float32 (its calibration set and every image whose deciding margin the measured
    bfloat16 error could flip)."""

    loop: tuple[torch.Tensor, torch.Tensor] | None = None
    engine: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    again: dict[str, int] = field(default_factory=dict)

    def differing(self, ranking: str) -> int:
        """Images whose prediction differs from the loop's: top-1, and top-3 where kept."""
        assert self.loop is not None
        (loop1, loop3), (ours1, ours3) = self.loop, self.engine[ranking]
        differ = loop1 != ours1
        if 3 in RANKINGS[ranking]:
            differ |= (loop3 != ours3).any(1)
        return int(differ.sum())


def loader_eval(case: Case, target: EvalSet, seen: Predictions) -> float:
    data = StudentCIFAR(target.images, target.labels, _student_transform(augment=False))
    loader = DataLoader(data, batch_size=case.eval_batch, shuffle=False, num_workers=2)
    model = target.model.eval()
    started = time.perf_counter()
    with torch.no_grad():
        out = torch.cat([model(x) for x, _ in loader])
    seconds = time.perf_counter() - started
    seen.loop = out.argmax(1), top3_sets(out)
    return len(target.images) / seconds


# --- the engine ---------------------------------------------------------------------------------


@contextlib.contextmanager
def float32_only() -> Iterator[None]:
    """The engine as it runs on a CPU without bfloat16."""
    with mock.patch.object(engine, "fast_dtype", lambda device: None):
        yield


def engine_train(
    case: Case, images: np.ndarray, labels: np.ndarray, float32: bool = False, steps: int | None = None
) -> tuple[float, str]:
    """Images/s of one engine epoch of ``steps`` batches, and the layout it trained in."""
    n = (steps or case.train_steps) * case.batch_size
    recipe = RECIPE.with_changes({"batch_size": case.batch_size})
    torch.manual_seed(0)
    with float32_only() if float32 else contextlib.nullcontext():
        result = train(
            case.make(), images[:n], labels[:n], images[:0], labels[:0], recipe, CPU, None, lambda line: None
        )
    return result.images_per_second, _layout_name(result.channels_last, result.nchw_after)


_TRAINED: dict[str, nn.Module] = {}
TRAINING_STEPS = 30  # enough for predictions with real margins between classes


def trained(case: Case, images: np.ndarray, labels: np.ndarray) -> nn.Module:
    """The model after a short training by the engine, made once per case."""
    if case.name not in _TRAINED:
        torch.manual_seed(0)
        model = case.make()
        n = TRAINING_STEPS * case.batch_size
        recipe = RECIPE.with_changes({"batch_size": case.batch_size})
        train(model, images[-n:], labels[-n:], images[:0], labels[:0], recipe, CPU, None, lambda line: None)
        _TRAINED[case.name] = model
    return _TRAINED[case.name]


def engine_eval(case: Case, target: EvalSet, seen: Predictions, ranking: str) -> float:
    norm = Normalizer.of(RECIPE, CPU)
    again: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
        call = LOGITS.bind(*args, **kwargs).arguments
        if call.get("dtype") is None:
            again.append(len(call["data"]))
        return logits(*args, **kwargs)

    started = time.perf_counter()
    with mock.patch.object(inference, "logits", counted):
        out = infer(target.model, target.images, norm, CPU, case.eval_batch, ranks=RANKINGS[ranking])
    seconds = time.perf_counter() - started
    seen.engine[ranking], seen.again[ranking] = (out.argmax(1), top3_sets(out)), sum(again)
    return len(target.images) / seconds


def eval_set(case: Case, images: np.ndarray, labels: np.ndarray, weights: Path | None, test: Path) -> EvalSet:
    """The briefly trained copy on the first training images, or ``weights`` on the test split."""
    if weights is None:
        n = case.eval_images
        what = f"{n:,} training images, the model after {TRAINING_STEPS} training steps"
        return EvalSet(trained(case, images, labels), images[:n], labels[:n], what)
    model = case.make()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    split = load_split(test, "test", Settings().cache_dir)
    test_labels = split.labels()
    return EvalSet(
        model, split.images(), test_labels, f"the {len(test_labels):,} test images, {weights.name}"
    )


def _layout_name(channels_last: bool, nchw_after: str | None) -> str:
    if not channels_last:
        return "NCHW"
    return "channels_last" + (f", NCHW after {nchw_after}" if nchw_after else "")


# --- measuring ----------------------------------------------------------------------------------


def matmul_flops(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


@dataclass
class Ceiling:
    """Matmul FLOP/s of this machine in float32 and bfloat16: measured before every round, the
    best one counts."""

    flops: float = 0.0
    bf16: float = 0.0

    def measure(self) -> None:
        self.flops = max(self.flops, matmul_flops())
        self.bf16 = max(self.bf16, matmul_flops(torch.bfloat16))


def best_of(rounds: int, variants: Mapping[str, Callable[[], float]], ceiling: Ceiling) -> dict[str, float]:
    """Each variant once per round, alternating, so load from other jobs hits them alike."""
    best = dict.fromkeys(variants, 0.0)
    for _ in range(rounds):
        ceiling.measure()
        for name, run in variants.items():
            best[name] = max(best[name], run())
    return best


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return (
        f"{cpu}; {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average {_load()} (1/5/15 min)"
    )


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def load_train_split(source: Path) -> tuple[np.ndarray, np.ndarray]:
    cached = load_split(source, "train", Settings().cache_dir)
    images, labels = cached.images(), cached.labels()
    order = np.random.default_rng(0).permutation(len(labels))  # classes are stored in runs
    return images[order], labels[order]


def _engine_ips(case: Case, images: np.ndarray, labels: np.ndarray, float32: bool = False) -> float:
    return engine_train(case, images, labels, float32)[0]


# --- the tables ---------------------------------------------------------------------------------


def measure_training(
    case: Case, images: np.ndarray, labels: np.ndarray, rounds: int, ceiling: Ceiling
) -> tuple[dict[str, float], str]:
    _, layout = engine_train(case, images, labels, steps=1)  # warms oneDNN's kernel caches
    engine_train(case, images, labels, float32=True, steps=1)
    variants = {
        "loop": partial(loader_train, case, images, labels),
        "fp32": partial(_engine_ips, case, images, labels, True),
        "engine": partial(_engine_ips, case, images, labels),
    }
    return best_of(rounds, variants, ceiling), layout


def measure_eval(
    case: Case, target: EvalSet, rounds: int, ceiling: Ceiling
) -> tuple[dict[str, float], Predictions]:
    seen = Predictions()
    variants: dict[str, Callable[[], float]] = {"loop": partial(loader_eval, case, target, seen)}
    for ranking in RANKINGS:
        variants[ranking] = partial(engine_eval, case, target, seen, ranking)
    return best_of(rounds, variants, ceiling), seen


def _shares(flops: float, ceiling: Ceiling) -> str:
    return f"{flops / 1e9:>8.1f} {flops / ceiling.bf16:>8.1%} {flops / ceiling.flops:>8.1%}"


def print_training(
    rows: list[tuple[Case, dict[str, float], str]], macs: dict[str, int], ceiling: Ceiling
) -> None:
    print(
        f"{'model':<13} {'batch':>5} {'DataLoader':>10} {'engine fp32':>12} {'engine':>9} "
        f"{'engine/DL':>9} {'fp32/DL':>8} {'GFLOP/s':>8} {'of bf16':>8} {'of fp32':>8}   layout"
    )
    for case, best, layout in rows:
        loop, fp32, ours = best["loop"], best["fp32"], best["engine"]
        print(
            f"{case.name:<13} {case.batch_size:>5} {loop:>10.1f} {fp32:>12.1f} {ours:>9.1f} "
            f"{ours / loop:>8.2f}x {fp32 / loop:>7.2f}x "
            f"{_shares(ours * 6 * macs[case.name], ceiling)}   {layout}"
        )


def print_eval(
    rows: list[tuple[Case, EvalSet, dict[str, float], Predictions]], macs: dict[str, int], ceiling: Ceiling
) -> None:
    for case, target, _, _ in rows:
        print(f"{case.name}: {target.what}")
    print(
        f"{'model':<13} {'kept':>7} {'images':>6} {'DataLoader':>10} {'infer':>9} {'infer/DL':>9} "
        f"{'GFLOP/s':>8} {'of bf16':>8} {'of fp32':>8} {'differing':>10} {'in fp32':>8} {'accuracy':>9}"
    )
    for case, target, best, seen in rows:
        loop, n = best["loop"], len(target.images)
        for ranking in RANKINGS:
            ours = best[ranking]
            accuracy = float((seen.engine[ranking][0] == torch.as_tensor(target.labels)).float().mean())
            print(
                f"{case.name:<13} {ranking:>7} {n:>6} {loop:>10.1f} {ours:>9.1f} {ours / loop:>8.2f}x "
                f"{_shares(ours * 2 * macs[case.name], ceiling)} {seen.differing(ranking):>10} "
                f"{seen.again[ranking] / n:>8.1%} {accuracy:>9.2%}"
            )


EXPLORED_BATCHES = (128, 256, 512)


def explore(images: np.ndarray, labels: np.ndarray, rounds: int, ceiling: Ceiling) -> list[dict[str, float]]:
    """The seed-000 CNN under 1 and 2 threads and other batch sizes, both sides at each count."""
    case, threads, rows = CASES[0], torch.get_num_threads(), []
    for count in (1, 2):
        torch.set_num_threads(count)
        variants = {"loop": partial(loader_train, case, images, labels)}
        for batch in EXPLORED_BATCHES:
            steps = case.train_steps * case.batch_size // batch
            sized = Case(**{**case.__dict__, "batch_size": batch, "train_steps": steps})
            variants[str(batch)] = partial(_engine_ips, sized, images, labels)
        rows.append({"threads": float(count), **best_of(rounds, variants, ceiling)})
    torch.set_num_threads(threads)
    return rows


def print_explored(rows: list[dict[str, float]]) -> None:
    batch = CASES[0].batch_size
    print(f"{'threads':>7} {f'DL {batch}':>9} " + " ".join(f"{f'engine {b}':>11}" for b in EXPLORED_BATCHES))
    for row in rows:
        engine = " ".join(f"{row[str(b)]:>11.1f}" for b in EXPLORED_BATCHES)
        print(f"{row['threads']:>7.0f} {row['loop']:>9.1f} {engine}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternating rounds per comparison (best counts)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--resnet18-weights",
        type=Path,
        help="evaluate these weights of this script's ResNet18 on the whole test split "
        f"(default: a copy trained for {TRAINING_STEPS} steps, on {CASES[1].eval_images:,} training images)",
    )
    parser.add_argument("--explore", action="store_true", help="also try other thread counts and batch sizes")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started, ceiling = time.monotonic(), Ceiling()
    print(f"machine: {machine()}; reduced precision: {fast_dtype(CPU)}", flush=True)
    images, labels = load_train_split(args.data_dir)
    macs = {case.name: _checked_macs(case) for case in CASES}
    trained = [(case, *measure_training(case, images, labels, args.rounds, ceiling)) for case in CASES]
    weights = {CASES[1].name: args.resnet18_weights}
    evaluated = []
    for case in CASES:
        target = eval_set(case, images, labels, weights.get(case.name), args.data_dir)
        evaluated.append((case, target, *measure_eval(case, target, args.rounds, ceiling)))
    explored = explore(images, labels, args.rounds, ceiling) if args.explore else []
    print(
        f"matmul 2048×2048, best over the run: {ceiling.bf16 / 1e9:.1f} GFLOP/s in bfloat16, "
        f"{ceiling.flops / 1e9:.1f} in float32 (the shares below)"
    )
    print(f"\ntraining, images/s (best of {args.rounds} rounds); GFLOP/s = engine × 6 × thop MACs")
    print_training(trained, macs, ceiling)
    print(
        f"\nevaluation, images/s (best of {args.rounds}); GFLOP/s = infer × 2 × thop MACs; "
        "kept = the rankings kept float32's; differing = images whose top-1 (and where kept, "
        "top-3 set) differs from the loop's"
    )
    print_eval(evaluated, macs, ceiling)
    if explored:
        print(f"\n{CASES[0].name} training at other thread counts and batch sizes, images/s (engine)")
        print_explored(explored)
    print(f"\nload average after: {_load()}; {time.monotonic() - started:.0f} s in all")


def _checked_macs(case: Case) -> int:
    model = case.make()
    params = count_params(model)[0]
    if params != case.params:
        raise SystemExit(f"{case.name} has {params:,} parameters, expected {case.params:,}")
    return count_macs(model, torch.zeros(1, 3, 32, 32), "thop")


if __name__ == "__main__":
    main()
