"""Submissions per hour for a class of small CNNs, local and Ray, 1 and 2 jobs (prints a table).

    .venv/bin/python benchmarks/batch_throughput.py [--students 8] [--data-dir PATH] [--sandbox bwrap]

One run grades the same class four times, each into a fresh output folder: executor
local or ray, --jobs 1 or 2, in that order. Per submission it also prints the overhead
outside model compute: the submission's wall time minus the time the harness spent
building, counting, loading and evaluating the model inside the sandbox (so: worker
start, sandbox start, torch import, host-side metrics, report rendering).
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

from grader.batch import BatchOptions, Row, run_all
from grader.config import REPO_ROOT, Settings
from grader.report.stored import load_stored
from grader.rubric import find_rubric

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
SAMPLE = REPO_ROOT / "tests" / "files" / "submissions" / "B000000001"
CONFIGS = (("local", 1), ("local", 2), ("ray", 1), ("ray", 2))


class _Quiet:
    def planned(self, to_grade: int, skipped: int) -> None:
        pass

    def finished(self, row: Row) -> None:
        if row.status == "failed":
            print(f"  failed {row.student_id}: {row.reason}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=8)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sandbox", default="bwrap")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        klass = _class(Path(tmp) / "class", args.students)
        lines = []
        for executor, jobs in CONFIGS:
            out = Path(tmp) / f"out-{executor}-{jobs}"
            settings = Settings(data_dir=args.data_dir, out_dir=out, sandbox=args.sandbox)
            options = BatchOptions(klass, find_rubric("cifar10-cnn"), settings, jobs, executor)
            started = time.monotonic()
            result = run_all(options, _Quiet())
            wall = time.monotonic() - started
            lines.append((executor, jobs, wall, result.rows, _overheads(out, result.rows)))
    _print(lines, args.students)


def _class(root: Path, students: int) -> Path:
    sys.path.insert(0, str(SAMPLE))
    import model  # the project's test CNN (5,370 parameters)

    for n in range(students):
        folder = root / f"B5{n:08d}"
        shutil.copytree(SAMPLE, folder)
        torch.manual_seed(n)
        (folder / "weights").mkdir()
        torch.save(model.Net().state_dict(), folder / "weights" / "model.pt")
    return root


def _overheads(out: Path, rows: list[Row]) -> list[float]:
    results, _ = load_stored(out)
    overheads = []
    for row in rows:
        result = results.get(row.student_id)
        if result is None:
            continue
        compute = sum(_model_seconds(t.stage_seconds) for t in result.tasks.values())
        overheads.append(row.wall_seconds - compute)
    return overheads


def _model_seconds(stages: dict[str, float]) -> float:
    """From the harness's start (torch imported) to the end of inference."""
    return stages.get("inference", 0.0) - stages.get("start", 0.0)


def _print(lines: list[tuple[str, int, float, list[Row], list[float]]], students: int) -> None:
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}; class of {students} small CNNs")
    print(
        f"{'executor':<9}{'jobs':>5}{'wall (s)':>10}{'subs/hour':>11}{'per sub (s)':>13}{'overhead (s)':>14}"
    )
    for executor, jobs, wall, rows, overheads in lines:
        per_sub = statistics.mean(r.wall_seconds for r in rows) if rows else float("nan")
        overhead = statistics.mean(overheads) if overheads else float("nan")
        rate = len(rows) / wall * 3600
        print(f"{executor:<9}{jobs:>5}{wall:>10.1f}{rate:>11.0f}{per_sub:>13.1f}{overhead:>14.1f}")


if __name__ == "__main__":
    main()
