"""Wall time of grading one submission, stage by stage (prints a table; not a test).

    .venv/bin/python benchmarks/grade_one.py [SUBMISSION] [--rubric NAME] [--data-dir PATH]

Runs the same code as ``grader run``: the submission, the CIFAR-10 test split (cold
decode, then the cached copy), each task in the sandbox (with the harness's own stage
times), scoring, results.json and the PDF. Target for a small CNN on a 2-core CPU:
under 60 s in all, including the 10,000-image evaluation and the PDF.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from itertools import pairwise
from pathlib import Path

from grader import data as datasets
from grader.config import REPO_ROOT, Settings
from grader.pipeline import grade
from grader.report import write_report, write_results_json
from grader.rubric import find_rubric, load_rubric

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("submission", type=Path, nargs="?", default=REPO_ROOT / "submissions" / "B093040054")
    parser.add_argument("--rubric", default="cifar10-cnn")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=args.data_dir, cache_dir=Path(tmp) / "cache", out_dir=Path(tmp))
        rows.append(("decode CIFAR-10 test split (cold cache)", _time(lambda: _decode(settings))))
        total_started = time.monotonic()
        marks: list[tuple[str, float]] = []
        graded = grade(
            args.submission,
            load_rubric(find_rubric(args.rubric)),
            settings,
            progress=lambda stage: marks.append((stage, time.monotonic())),
        )
        marks.append(("end", time.monotonic()))
        rows += [(stage, end - start) for (stage, start), (_, end) in pairwise(marks)]
        for task in graded.result.tasks.values():
            rows += _harness_rows(task.id, task.stage_seconds, task.sandbox_seconds or 0.0)
        out = Path(tmp) / graded.result.student_id
        out.mkdir()
        rows.append(("results.json", _time(lambda: write_results_json(graded.result, out / "results.json"))))
        rows.append(
            (
                "report.pdf (figures, HTML, weasyprint)",
                _time(lambda: write_report(graded.result, out, graded.test_images)),
            )
        )
        rows.append(("TOTAL grader run (warm data cache)", time.monotonic() - total_started))
    _print(rows, graded.result.student_id, graded.result.tasks)


def _decode(settings: Settings) -> None:
    datasets.load_split(datasets.resolve_source(settings.data_dir), "test", settings.cache_dir)


def _time(fn) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def _harness_rows(task_id: str, stages: dict[str, float], sandbox_s: float) -> list[tuple[str, float]]:
    rows, previous = [], 0.0
    for stage, at in stages.items():
        label = "python + torch start" if stage == "start" else stage
        rows.append((f"  {task_id} in sandbox: {label}", at - previous))
        previous = at
    rows.append((f"  {task_id} in sandbox: sandbox setup and exit", sandbox_s - previous))
    return rows


def _print(rows: list[tuple[str, float]], student: str, tasks: dict) -> None:  # type: ignore[type-arg]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for t in tasks.values():
        images = t.evaluation.n_images if t.evaluation else 0
        print(f"{student} {t.id}: {t.params or 0:,} params, top-1 {t.test_accuracy}% on {images:,} images")
    width = max(len(name) for name, _ in rows)
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:7.2f} s")


if __name__ == "__main__":
    main()
