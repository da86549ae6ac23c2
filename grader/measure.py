"""Measuring a model on the test set: one evaluation job in the sandbox, metrics on the host.

Submitted weights and retrained models are measured the same way: a job builds the model from
the student's code, loads the weights and writes logits for the unlabeled images of the
grading's probe file (grader/probe.py); the host puts the rows back in order, computes the
metrics with the labels only it holds, and compares the probe's copies with their originals.
A failure that is the grader's or the machine's (``jobs.NOT_THE_STUDENTS``) is tried once more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grader import data as datasets
from grader import probe
from grader.config import Settings
from grader.evaluate import evaluate
from grader.jobs import Failure, TaskRun, failure, run_task
from grader.protocol import Progress
from grader.results import NOT_THE_STUDENTS, Evaluation
from grader.rubric import Rubric
from grader.sandbox import Backend
from grader.sandbox.leftovers import work_dir
from grader.submission import TaskEntry

ATTEMPTS = 2  # a job the grader or the machine failed runs once more


@dataclass(frozen=True)
class TestSet:
    """The test images one grading evaluates on, their labels, and the probe that hides among them."""

    split: datasets.CachedSplit
    labels: np.ndarray
    probe: probe.Probe
    # With Settings.test_subset_per_class: the subset's positions in the whole test split.
    positions: np.ndarray | None = None
    per_class: int | None = None


def prepare(split: datasets.CachedSplit, settings: Settings, folder: Path) -> TestSet:
    """The grading's test set (the whole split, or its first images per class) and its probe,
    whose images file is written to ``folder``."""
    positions, per_class = None, settings.test_subset_per_class
    if per_class is not None:
        split, positions = datasets.first_per_class(split, per_class)
    images = split.images()
    size = min(settings.probe_images, max(probe.MIN_IMAGES, len(images) // 10))
    return TestSet(split, split.labels(), probe.build(images, size, folder), positions, per_class)


@dataclass
class Measured:
    run: TaskRun
    evaluation: Evaluation | None
    failure: Failure | None
    enforced: dict[str, str]  # the sandbox's limits, for the report


def measure(
    backend: Backend,
    entry: TaskEntry,
    root: Path,
    rubric: Rubric,
    settings: Settings,
    test: TestSet,
    weights: Path | None = None,
    advance: Callable[[Progress], None] | None = None,
) -> Measured:
    """The task's model with its submitted weights (or ``weights``) on ``test``; ``advance``
    hears how far the job has got while it runs."""
    for _ in range(ATTEMPTS):
        with work_dir("eval") as work:
            run, enforced = run_task(
                backend, entry, root, rubric, settings, work, images=test.probe.path, weights=weights,
                on_progress=advance,
            )  # fmt: skip
        measured = _metrics(run, enforced, settings, test, rubric.top3)
        if measured.failure is None or measured.failure.stage not in NOT_THE_STUDENTS:
            break
    return measured


def _metrics(
    run: TaskRun, enforced: dict[str, str], settings: Settings, test: TestSet, top3: bool
) -> Measured:
    stopped = failure(run)
    if stopped is not None or run.logits is None:
        return Measured(run, None, stopped, enforced)
    expected = test.probe.test_size + len(test.probe.positions)
    if len(run.logits) != expected:
        problem = Failure("inference", f"{len(run.logits)} rows of logits for {expected} images")
        return Measured(run, None, problem, enforced)
    logits, copies = test.probe.split(run.logits)
    evaluation = evaluate(logits, test.labels, test.split.classes, settings.misclassified_shown, top3)
    evaluation.probe = probe.check(logits, copies, test.labels, test.probe, settings.probe_gap_points)
    if test.positions is not None:  # on a subset, images are named by their index in the whole split
        evaluation.subset_per_class = test.per_class
        evaluation.misclassified = [(int(test.positions[i]), t, p) for i, t, p in evaluation.misclassified]
    return Measured(run, evaluation, None, enforced)
