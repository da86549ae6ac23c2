"""``grader run`` of a submission against the students' own evaluation loop over the same weights
(prints a table; not a test).

    .venv/bin/python benchmarks/grade_vs_loop.py [SUBMISSION] [--data-dir PATH] [--rounds N]

One side is the whole command a TA types, ``grader run SUBMISSION --skip-training``: process
start, the sandbox, counting, the test pass (bf16 where the CPU has it, float32's predictions),
results.json and the PDF. The other is the loop students write to measure their weights: each
task's model built from its file, its state_dict loaded, and torchvision's DataLoader
(``num_workers=2``) over the 10,000 test images served as torchvision's CIFAR10 serves them (PIL
image → ToTensor → Normalize), float32, argmax. Both run as fresh processes, alternating, with
the test split already decoded into the cache; the best round of each counts. The accuracies
must agree to the hundredth. Target: the grader at most 0.8× the loop's time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grader.config import REPO_ROOT, Settings
from grader.data import load_split, resolve_source
from grader.rubric import find_rubric, load_rubric
from grader.submission import load_submission

GRADER = str(Path(sys.executable).parent / "grader")


def students_loop(submission: Path, data: Path | None) -> dict[str, float]:
    """Each task's test accuracy, measured as a student's script measures it."""
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    settings = Settings(data_dir=data)
    split = load_split(resolve_source(data), "test", settings.cache_dir)
    images, labels = split.images(), split.labels()
    sub = load_submission(submission, settings)
    rubric = load_rubric(find_rubric(sub.manifest.assignment or ""))

    class TestSet(Dataset):
        def __init__(self, transform: transforms.Compose) -> None:
            self.transform = transform

        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return self.transform(Image.fromarray(images[i])), int(labels[i])

    measured = {}
    for task_id, entry in sub.tasks(rubric).items():
        file, name = entry.model.rsplit(":", 1)
        spec = importlib.util.spec_from_file_location(f"student_{task_id}", submission / file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(submission))
        spec.loader.exec_module(module)
        model = getattr(module, name)()
        state = torch.load(submission / entry.weights, map_location="cpu", weights_only=True)
        model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
        model.eval()
        stats = entry.preprocess
        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(stats.mean, stats.std)])
        loader = DataLoader(TestSet(transform), batch_size=256, shuffle=False, num_workers=2)
        correct = total = 0
        with torch.no_grad():
            for x, y in loader:
                correct += int((model(x).argmax(1) == y).sum())
                total += len(y)
        measured[task_id] = round(100 * correct / total, 2)
    return measured


def _timed(argv: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("submission", type=Path, nargs="?", default=REPO_ROOT / "submissions" / "B093040051")
    parser.add_argument("--data-dir", type=Path, default=None, help="as the grader finds it by default")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--loop", action="store_true", help=argparse.SUPPRESS)  # one run of the loop side
    args = parser.parse_args()
    if args.loop:
        print(json.dumps(students_loop(args.submission, args.data_dir)))
        return
    data = ["--data-dir", str(args.data_dir)] if args.data_dir else []
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}", flush=True)
    load_split(resolve_source(args.data_dir), "test", Settings().cache_dir)  # both start decoded
    best = {"grader": float("inf"), "loop": float("inf")}
    with tempfile.TemporaryDirectory() as out:
        grade_argv = [GRADER, "run", str(args.submission), "--skip-training", "--out", out, *data]
        loop_argv = [sys.executable, __file__, str(args.submission), "--loop", *data]
        for round_ in range(1, args.rounds + 1):
            graded_s, _ = _timed(grade_argv)
            loop_s, printed = _timed(loop_argv)
            best["grader"], best["loop"] = min(best["grader"], graded_s), min(best["loop"], loop_s)
            print(f"round {round_}: grader run {graded_s:.1f} s, students' loop {loop_s:.1f} s", flush=True)
        results = json.loads(next(Path(out).glob("*/results.json")).read_text())
    loop_accuracy = json.loads(printed)
    graded_accuracy = {t: task["test_accuracy"] for t, task in results["tasks"].items()}
    print(f"\n{'task':<8} {'grader':>8} {'loop':>8}")
    for task_id, accuracy in loop_accuracy.items():
        print(f"{task_id:<8} {graded_accuracy.get(task_id)!s:>8} {accuracy:>8}")
    same = all(graded_accuracy.get(t) == a for t, a in loop_accuracy.items())
    print(
        f"\nbest of {args.rounds}: grader run {best['grader']:.1f} s, loop {best['loop']:.1f} s: "
        f"{best['grader'] / best['loop']:.2f}× the loop's time (target ≤ 0.80×); "
        f"accuracies {'identical' if same else 'DIFFER'}; load average after {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
