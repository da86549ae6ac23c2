"""The grader's training and evaluation on one GPU, in under five minutes (prints figures; not a test).

    .venv/bin/python benchmarks/gpu_check.py [--data-dir PATH]      (or: bash benchmarks/gpu_check.sh)

On the machine's first CUDA device, in this process (the sandbox is not what is measured):

1. one epoch of the reference ResNet18 under the eai-lab2 rubric's recipe (45,000 training
   images, batch 128, SGD, crop and flip), through ``grader.inside.engine.train`` as a retraining
   job runs it (bfloat16 autocast, channels_last where the probe picks it): seconds and images/s;
2. the test pass of that trained model through ``grader.inside.inference.infer``, the one
   inference path of the grader, against a plain float32 pass over the same 10,000 images:
   images/s of each, and the number of images whose predicted class differs (must be 0);
3. whether ``torch.compile`` would pay off for retraining: the engine's training step
   (``grader.inside.engine.steps_per_second``, the recipe's batch) on a fresh ResNet18, eager
   against compiled, images/s of each and the seconds each measurement took in all, compiling
   included (``--no-compile`` skips it).

With no CIFAR-10 at hand (``--data-dir``, ``$GRADER_DATA_DIR`` or the grader's config), random
images stand in: the timings hold, and the fidelity check then compares predictions on noise.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch

from grader.config import REFERENCE_DIR, Settings
from grader.data import load_split, resolve_source
from grader.errors import GraderError
from grader.inside.augment import Normalizer, split_train_val
from grader.inside.engine import steps_per_second, train
from grader.inside.inference import infer
from grader.inside.layout import fast_dtype
from grader.rubric import find_rubric, load_rubric


def resnet18() -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("reference_resnet18", REFERENCE_DIR / "resnet18.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ResNet18()


def cifar(data: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    try:
        source = resolve_source(data)
        cache = Settings().cache_dir
        train_split, test_split = load_split(source, "train", cache), load_split(source, "test", cache)
        return (
            train_split.images(),
            train_split.labels(),
            test_split.images(),
            test_split.labels(),
            str(source),
        )
    except GraderError as err:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (60_000, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, 60_000).astype(np.int64)
        return images[:50_000], labels[:50_000], images[50_000:], labels[50_000:], f"random images ({err})"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu to try the script out")
    parser.add_argument(
        "--limit", type=int, default=None, help="only this many train and test images, spread out"
    )
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile comparison")
    parser.add_argument("--steps", type=int, default=50, help="timed steps of each in that comparison")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device is visible: run this on a GPU machine")
    device = torch.device(args.device)
    started = time.monotonic()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; reduced precision {fast_dtype(device)}")
    train_x, train_y, test_x, test_y, source = cifar(args.data_dir)
    if args.limit:  # evenly spaced: the splits decoded from class folders are sorted by class
        train_pick = np.arange(args.limit) * len(train_x) // args.limit
        test_pick = np.arange(args.limit) * len(test_x) // args.limit
        train_x, train_y = train_x[train_pick], train_y[train_pick]
        test_x, test_y = test_x[test_pick], test_y[test_pick]
    print(f"data: {source}")
    recipe = load_rubric(find_rubric("eai-lab2")).training.recipe.with_changes({"epochs": 1})
    torch.manual_seed(0)
    model = resnet18()
    recipe = recipe.with_changes({"val_size": min(recipe.val_size, len(train_y) // 10)})
    fit, val = split_train_val(train_y, recipe)  # as a retraining splits: stratified, seeded
    x, y, val_x, val_y = train_x[fit], train_y[fit], train_x[val], train_y[val]
    report = train(model, x, y, val_x, val_y, recipe, device, None, lambda line: None)
    epoch_s = report.history[-1].seconds if report.history else float("nan")
    print(
        f"ResNet18, one epoch of the eai-lab2 recipe (batch {recipe.batch_size}, {len(fit):,} images): "
        f"{epoch_s:.1f} s, {report.images_per_second:,.0f} images/s, layout "
        f"{'channels_last' if report.channels_last else 'NCHW'}"
    )
    norm = Normalizer.from_stats(recipe.mean, recipe.std, device)
    data = torch.from_numpy(test_x).to(device).permute(0, 3, 1, 2).contiguous()
    infer(model, test_x[:512], norm, device, 500)  # kernels chosen and cached before the timing
    synchronize(device)
    t0 = time.perf_counter()
    fast = infer(model, test_x, norm, device, 500)
    synchronize(device)
    t1 = time.perf_counter()
    with torch.no_grad():  # a student's evaluation loop: float32, NCHW, batches of 500
        model.eval()
        batches = [model(norm(data[i : i + 500]).contiguous()) for i in range(0, len(data), 500)]
        exact = torch.cat(batches).float().cpu()
    synchronize(device)
    t2 = time.perf_counter()
    differing = int((fast.argmax(1) != exact.argmax(1)).sum())
    accuracy = float((exact.argmax(1).numpy() == test_y).mean() * 100)
    print(
        f"test pass of {len(test_x):,} images: infer {len(test_x) / (t1 - t0):,.0f} images/s, plain float32 "
        f"{len(test_x) / (t2 - t1):,.0f} images/s; {differing} predictions differ (target 0); "
        f"accuracy {accuracy:.2f}%"
    )
    if not args.no_compile:  # the engine's own step, as retraining runs it, on a fresh ResNet18 each
        rates, seconds = [], []
        for wrap in (lambda m: m, torch.compile):
            torch.manual_seed(0)
            t0 = time.perf_counter()
            rates.append(
                steps_per_second(wrap(resnet18()), x, y, recipe, device, args.steps).images_per_second
            )
            seconds.append(time.perf_counter() - t0)
        print(
            f"ResNet18 training step, batch {recipe.batch_size}: eager {rates[0]:,.0f} images/s, "
            f"torch.compile {rates[1]:,.0f} images/s ({rates[1] / rates[0]:.2f}x); "
            f"{seconds[1]:.0f} s in all compiled, {seconds[0]:.0f} s eager"
        )
    print(f"{time.monotonic() - started:.0f} s in all")


if __name__ == "__main__":
    main()
