"""Per-job cost of each sandbox backend next to running unsandboxed (prints a table; not a test).

    .venv/bin/python benchmarks/sandbox_overhead.py [--repeats 3] [--data-dir PATH]

For each backend, in one run and interleaved so machine noise spreads evenly:
  * start-up: from the host handing over the job to the harness's first line of Python
    (the harness stamps the wall clock before importing anything heavy);
  * whole job: grading one small CNN task (build, count, load weights, 10,000-image
    evaluation), host clock around the backend.
Backends that cannot run here (no daemon, no image) are listed as skipped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from grader import data as datasets
from grader.config import REPO_ROOT, Settings
from grader.errors import SandboxError
from grader.jobs import run_task
from grader.rubric import find_rubric, load_rubric
from grader.sandbox import Backend, pick_backend
from grader.submission import load_submission

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
BACKENDS = ("none", "bwrap", "docker")
SAMPLE = REPO_ROOT / "tests" / "files" / "submissions" / "B000000001"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=args.data_dir, cache_dir=Path(tmp) / "cache")
        images = datasets.load_split(datasets.resolve_source(args.data_dir), "test", settings.cache_dir)
        submission = _sample(Path(tmp))
        backends = _backends()
        figures: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in backends}
        for _ in range(args.repeats):
            for name, backend in backends.items():
                startup, whole = _one_job(backend, submission, images.images_path, settings, Path(tmp))
                figures[name][0].append(startup)
                figures[name][1].append(whole)
    _print(figures, args.repeats)


def _sample(tmp: Path) -> Path:
    root = tmp / "B000000001"
    shutil.copytree(SAMPLE, root)
    sys.path.insert(0, str(root))
    import model  # the project's own test model

    torch.manual_seed(0)
    (root / "weights").mkdir()
    torch.save(model.Net().state_dict(), root / "weights" / "model.pt")
    return root


def _backends() -> dict[str, Backend]:
    found: dict[str, Backend] = {}
    for name in BACKENDS:
        try:
            found[name] = pick_backend(name)
        except SandboxError as err:
            print(f"skipped {name}: {err}")
    return found


def _one_job(
    backend: Backend, root: Path, images: Path, settings: Settings, tmp: Path
) -> tuple[float, float]:
    rubric = load_rubric(find_rubric("cifar10-cnn"))
    entry = load_submission(root).tasks(rubric)["cnn"]
    work = Path(tempfile.mkdtemp(dir=tmp))
    started = time.time()
    run, _ = run_task(backend, entry, root, images, rubric, settings, work)
    whole = time.time() - started
    if run.report is None or run.report.started_at is None or run.logits is None:
        raise SystemExit(f"{backend.name}: the job failed: {run.problem or run.outcome.log_tail}")
    return run.report.started_at - started, whole


def _print(figures: dict[str, tuple[list[float], list[float]]], repeats: int) -> None:
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}; median of {repeats} interleaved runs")
    base = figures.get("none")
    print(f"{'backend':<8} {'start-up (s)':>13} {'whole job (s)':>14} {'vs none':>8}")
    for name, (startup, whole) in figures.items():
        ratio = statistics.median(whole) / statistics.median(base[1]) if base else float("nan")
        print(f"{name:<8} {statistics.median(startup):13.2f} {statistics.median(whole):14.2f} {ratio:7.2f}x")


if __name__ == "__main__":
    main()
