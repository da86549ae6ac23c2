"""Other input normalizations, tried where a task measures far below its claim.

A model trained on inputs normalized one way and evaluated under another scores near chance,
and the grade then reads as if the weights were wrong. Students normalize in a handful of ways
(``ToTensor`` alone, 0.5 per channel, CIFAR-10's or ImageNet's statistics), and a manifest
that forgets to say which is a common mistake. Where a task's measured accuracy falls more than
the claim gap below its claim, its weights are evaluated once more on a subset of the test
images under each usual normalization (one sandbox job, not counted again); where one scores
far better, the TA is alerted with the line that would fix the manifest. The grade itself stays
as measured: whether to regrade is the TA's call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from grader.config import Settings
from grader.jobs import failure, run_task
from grader.measure import TestSet
from grader.results import TaskResult
from grader.rubric import Preprocess, Rubric
from grader.sandbox import Backend
from grader.sandbox.leftovers import work_dir
from grader.submission import TaskEntry

USUAL = {
    "ToTensor alone": Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
    "0.5 per channel": Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    # ImageNet's (mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225) lie within 0.04 of these,
    # close enough for a model trained under either to score alike under both.
    "CIFAR-10's statistics": Preprocess(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
}
IMAGES = 1000  # spread evenly over the graded test images
GAIN_POINTS = 15.0  # how much better another normalization must score to be named
_SAME = 0.05  # statistics this close to the task's own are the same normalization


def wanted(task: TaskResult, settings: Settings) -> bool:
    """Whether ``task`` was evaluated and measured more than the claim gap below its claim."""
    claimed, ev = task.claimed_test_accuracy, task.evaluation
    return (
        task.status == "ok"
        and claimed is not None
        and ev is not None
        and claimed - ev.top1 > settings.claim_gap_points
    )


def alert(
    task: TaskResult,
    entry: TaskEntry,
    root: Path,
    backend: Backend,
    rubric: Rubric,
    settings: Settings,
    test: TestSet,
) -> str | None:
    """For a task that is ``wanted``: the alert naming the usual normalization under which its
    weights score far better; None where none does."""
    ev, claimed = task.evaluation, task.claimed_test_accuracy
    assert ev is not None and claimed is not None, "alert() is for wanted tasks"
    others = {name: p for name, p in USUAL.items() if not _same(p, entry.preprocess)}
    step = max(1, len(test.labels) // IMAGES)
    chosen = np.arange(0, len(test.labels), step)[:IMAGES]
    with work_dir("normalizations") as work:
        images = work / "images.npy"
        np.save(images, test.split.images()[chosen])
        run, _ = run_task(
            backend, entry, root, rubric, settings, work / "job", images=images,
            normalizations=tuple(others.values()),
        )  # fmt: skip
    if failure(run) is not None or run.logits is None or len(run.logits) != len(others) * len(chosen):
        return None
    labels = test.labels[chosen]
    scores = {
        name: 100.0 * float(np.mean(part.argmax(axis=1) == labels))
        for name, part in zip(others, np.split(run.logits, len(others)), strict=True)
    }
    best = max(scores, key=lambda name: scores[name])
    if scores[best] < ev.top1 + GAIN_POINTS:
        return None
    fix = USUAL[best]
    return (
        f"{task.id}: measured {ev.top1:.2f}% (claimed {claimed:.2f}%) with inputs normalized by mean "
        f"{_triple(entry.preprocess.mean)}, std {_triple(entry.preprocess.std)}; normalized with "
        f"{best} instead, the same weights score {scores[best]:.2f}% on {len(chosen):,} of the test "
        f"images: if the model was trained so, set preprocess: {{mean: [{_triple(fix.mean)[1:-1]}], "
        f"std: [{_triple(fix.std)[1:-1]}]}} under tasks.{task.id} in submission.yaml and grade again"
    )


def _same(a: Preprocess, b: Preprocess) -> bool:
    return all(abs(x - y) <= _SAME for x, y in zip((*a.mean, *a.std), (*b.mean, *b.std), strict=True))


def _triple(values: tuple[float, float, float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"
