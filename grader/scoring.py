"""Rubric items scored from measured results: pure functions, no torch, no I/O.

Each item type has one function ``(item, task) -> ItemResult``. A task that stopped
before the item's evidence existed scores 0 with status ``error``; the item's message names
the task and the stage it stopped at, and the task's own error is told once, with the task.
An item whose evidence the grading left out on purpose (retraining skipped, a claim
against accuracy measured on a subset) scores 0 with status ``not_checked``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from grader.results import ItemResult, ItemStatus, TaskResult, TrainingRun
from grader.rubric import (
    ArchitectureItem,
    ClaimItem,
    CurvesItem,
    ExperimentItem,
    FlopsLimitItem,
    ManualItem,
    ModelValidItem,
    ParamsLimitItem,
    RetrainItem,
    Rubric,
    ScalingItem,
    TestAccuracyItem,
)


@dataclass
class Evidence:
    """Everything measured for one submission that an item may look at beyond its own task."""

    tasks: dict[str, TaskResult]
    baselines: dict[str, TrainingRun] = field(default_factory=dict)
    # Why retraining was left out (shown in its items' messages); None when it ran.
    training_skipped: str | None = None


def score_all(
    rubric: Rubric,
    tasks: dict[str, TaskResult],
    baselines: dict[str, TrainingRun] | None = None,
    training_skipped: str | None = None,
) -> list[ItemResult]:
    evidence = Evidence(tasks, baselines or {}, training_skipped)
    return [score_item(item, tasks.get(item.task or ""), evidence) for item in rubric.items]


def score_item(item: Any, task: TaskResult | None, evidence: Evidence | None = None) -> ItemResult:
    if isinstance(item, ManualItem):
        return _result(
            item, 0.0, "manual", "pending TA review" + (f": {item.guidance}" if item.guidance else "")
        )
    assert task is not None  # the rubric validator ties every scored item to a task
    if isinstance(item, TRAINING_ITEMS):
        return score_training(item, task, evidence or Evidence({task.id: task}))
    scorer, needs = _SCORERS[type(item)]
    if not needs(task):
        return _result(item, 0.0, "error", no_evidence(task))
    return scorer(item, task)


def no_evidence(task: TaskResult) -> str:
    """Why an item of ``task`` has nothing to score: ``"no evidence: task task1 stopped at stage
    import"``. The task's error itself is kept once, in ``TaskResult.error``."""
    if task.error is None:
        return "no evidence: the measurement this item needs was not produced"
    return f"no evidence: task {task.id} stopped at stage {task.error_stage or 'unknown'}"


def _result(item: Any, fraction: float, status: ItemStatus, message: str) -> ItemResult:
    score = round(item.points * fraction, 2)
    return ItemResult(item.id, item.task, item.title, item.type, score, item.points, status, message)


def _all_or_nothing(item: Any, ok: bool, message: str) -> ItemResult:
    return _result(item, 1.0 if ok else 0.0, "pass" if ok else "fail", message)


def model_valid(item: ModelValidItem, task: TaskResult) -> ItemResult:
    return _all_or_nothing(item, True, f"builds and maps a (1, 3, 32, 32) batch to {task.output_shape}")


def params_limit(item: ParamsLimitItem, task: TaskResult) -> ItemResult:
    params = task.params or 0
    if params <= item.max_params:
        return _all_or_nothing(item, True, f"{params:,} parameters, within the limit of {item.max_params:,}")
    over = params - item.max_params
    return _all_or_nothing(
        item, False, f"{params:,} parameters, over the limit of {item.max_params:,} by {over:,}"
    )


def flops_limit(item: FlopsLimitItem, task: TaskResult) -> ItemResult:
    if item.counter not in task.macs:
        why = task.macs_failed.get(item.counter, f"the {item.counter} counter could not count this model")
        return _result(item, 0.0, "error", f"{why}; a TA checks this limit by hand")
    macs = task.macs[item.counter]
    verdict = "within" if macs <= item.max_macs else "over"
    return _all_or_nothing(
        item,
        macs <= item.max_macs,
        f"{macs:,} MACs ({item.counter}), {verdict} the limit of {item.max_macs:,}",
    )


def architecture(item: ArchitectureItem, task: TaskResult) -> ItemResult:
    problems, facts = [], []
    if item.expected_params is not None:
        params = task.params or 0
        allowed = round(item.expected_params * item.params_tolerance)
        facts.append(f"{params:,} parameters (expected {item.expected_params:,} ± {allowed:,})")
        if abs(params - item.expected_params) > allowed:
            problems.append(f"{params:,} parameters is not within {allowed:,} of {item.expected_params:,}")
    for module, minimum in item.required_modules.items():
        found = task.module_counts.get(module, 0)
        if found < minimum:
            problems.append(f"needs at least {minimum} {module}, found {found}")
    if item.min_residual_adds:
        adds = task.residual_adds or 0
        facts.append(f"{adds} residual additions")
        if adds < item.min_residual_adds:
            problems.append(
                f"needs at least {item.min_residual_adds} residual (skip) additions, found {adds}"
            )
    if problems:
        return _all_or_nothing(item, False, "; ".join(problems))
    return _all_or_nothing(item, True, "; ".join(facts) or "required modules present")


def accuracy_fraction(item: TestAccuracyItem | RetrainItem, accuracy: float) -> float:
    """Piecewise-linear through the thresholds, flat beyond the first and last."""
    return interpolate([(t.accuracy, t.fraction) for t in item.thresholds], accuracy)


def interpolate(points: list[tuple[float, float]], x: float) -> float:
    """The polyline through ``points`` (x increasing) at ``x``, constant outside them."""
    if x <= points[0][0]:
        return points[0][1]
    for (x0, f0), (x1, f1) in pairwise(points):
        if x <= x1:
            return f0 + (f1 - f0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def accuracy(item: TestAccuracyItem, task: TaskResult) -> ItemResult:
    assert task.evaluation is not None
    acc = task.evaluation.top1
    fraction = accuracy_fraction(item, acc)
    status: ItemStatus = "pass" if fraction >= 1 else "partial" if fraction > 0 else "fail"
    top = item.thresholds[-1].accuracy
    note = f" on {task.evaluation.n_images:,} test images{subset_note(task)}"
    if task.evaluation.nonfinite_rows:
        note += f" ({task.evaluation.nonfinite_rows:,} gave NaN/Inf logits and count as wrong)"
    return _result(item, fraction, status, f"top-1 accuracy {acc:.2f}%{note}; full points at {top:g}%")


def subset_note(task: TaskResult) -> str:
    """Says how the evaluated images were chosen when they are a subset of the test split."""
    per_class = task.evaluation.subset_per_class if task.evaluation else None
    if per_class is None:
        return ""
    return (
        f" (a subset: the first {per_class} test images of each class, in test-split order; "
        "the full grading uses the whole test split)"
    )


def claimed_text(task: TaskResult) -> str:
    claimed = task.claimed_test_accuracy
    return "nothing" if claimed is None else f"{claimed:.2f}%"


def claim(item: ClaimItem, task: TaskResult) -> ItemResult:
    assert task.evaluation is not None
    measured = task.evaluation.top1
    if task.evaluation.subset_per_class is not None:
        return _result(
            item,
            0.0,
            "not_checked",
            f"not checked on a subset: claimed {claimed_text(task)}, measured {measured:.2f}% on "
            f"{task.evaluation.n_images:,} test images; the full grading compares the claim "
            "with the whole test split",
        )
    claimed = task.claimed_test_accuracy
    if claimed is None:
        notebook = (task.model or "").rsplit(":", 1)[0]
        printed = f", nor a test accuracy printed in {notebook}" if notebook.endswith(".ipynb") else ""
        return _all_or_nothing(
            item, False, f"no claimed_test_accuracy in submission.yaml{printed} (measured {measured:.2f}%)"
        )
    gap = claimed - measured
    ok = abs(gap) <= item.tolerance
    verdict = "within" if ok else "outside"
    return _all_or_nothing(
        item,
        ok,
        f"claimed {claimed:.2f}%, measured {measured:.2f}% "
        f"({gap:+.2f} points, {verdict} the ±{item.tolerance:g} tolerance)",
    )


def _forward_ok(task: TaskResult) -> bool:
    return task.forward_ok


def _has_params(task: TaskResult) -> bool:
    return task.params is not None


def _evaluated(task: TaskResult) -> bool:
    return task.evaluation is not None


_SCORERS: dict[type, tuple[Callable[[Any, TaskResult], ItemResult], Callable[[TaskResult], bool]]] = {
    ModelValidItem: (model_valid, _forward_ok),
    ParamsLimitItem: (params_limit, _has_params),
    FlopsLimitItem: (flops_limit, lambda t: bool(t.macs or t.macs_failed)),
    ArchitectureItem: (architecture, lambda t: t.params is not None and bool(t.module_counts)),
    TestAccuracyItem: (accuracy, _evaluated),
    ClaimItem: (claim, _evaluated),
}


# --- items scored from retraining (the runs are made by pipeline.py) -----------------------

TRAINING_ITEMS = (RetrainItem, CurvesItem, ExperimentItem, ScalingItem)


def score_training(item: Any, task: TaskResult, evidence: Evidence) -> ItemResult:
    if evidence.training_skipped is not None:
        return _result(item, 0.0, "not_checked", f"not checked: {evidence.training_skipped}")
    if task.error is not None and not task.forward_ok and not isinstance(item, ScalingItem):
        return _result(item, 0.0, "error", no_evidence(task))  # a model that never ran is not retrained
    if isinstance(item, RetrainItem):
        return retrain(item, task.training.get("retrain"), evidence.baselines.get(task.id))
    if isinstance(item, CurvesItem):
        return curves(item, task.training.get("retrain"))
    if isinstance(item, ExperimentItem):
        return experiment(item, task)
    return scaling(item, evidence.tasks)


def _run_problem(run: TrainingRun | None) -> str | None:
    if run is None:
        return "the model was not retrained (it did not build in the sandbox)"
    if run.error or run.test_accuracy is None:
        return run.error or "the retraining produced no test accuracy"
    return None


def retrain(item: RetrainItem, run: TrainingRun | None, baseline: TrainingRun | None) -> ItemResult:
    problem = _run_problem(run)
    if problem or run is None or run.test_accuracy is None:
        return _result(item, 0.0, "error", problem or "")
    acc = run.test_accuracy
    parts, notes = [], [f"retrained for {len(run.history)} epochs: test accuracy {acc:.2f}%"]
    if item.thresholds:
        parts.append(accuracy_fraction(item, acc))
    if item.ratio_thresholds:
        base = baseline.test_accuracy if baseline else None
        if not base:
            notes.append("no baseline accuracy to compare with")
            parts.append(0.0)
        else:
            ratio = acc / base
            notes.append(f"{ratio:.2f}× the reference model's {base:.2f}%")
            parts.append(interpolate([(t.ratio, t.fraction) for t in item.ratio_thresholds], ratio))
    if run.stopped_early:
        notes.append(f"stopped early: {run.stopped_early}")
    fraction = sum(parts) / len(parts)
    status: ItemStatus = "pass" if fraction >= 1 else "partial" if fraction > 0 else "fail"
    return _result(item, fraction, status, "; ".join(notes))


def curves(item: CurvesItem, run: TrainingRun | None) -> ItemResult:
    problem = _run_problem(run)
    if problem or run is None:
        return _result(item, 0.0, "error", problem or "")
    epochs = len(run.history)
    finite = all(
        math.isfinite(v)
        for e in run.history
        for v in (e.train_loss, e.train_acc, e.val_loss or 0.0, e.val_acc or 0.0)
    )
    if epochs < item.min_epochs or not finite:
        why = (
            f"{epochs} epoch(s), {item.min_epochs} needed" if finite else "a loss or accuracy became NaN/Inf"
        )
        return _all_or_nothing(item, False, f"the epoch curves cannot be drawn: {why}")
    return _all_or_nothing(
        item, True, f"train/val loss and accuracy over {epochs} epochs, drawn beside the baseline"
    )


def experiment(item: ExperimentItem, task: TaskResult) -> ItemResult:
    runs = {name: task.training.get(f"experiment:{name}") for name in item.variants}
    measured = {n: r.test_accuracy for n, r in runs.items() if r is not None and r.test_accuracy is not None}
    complete = len(measured) / len(item.variants)
    reported = {n: a for n, a in task.reported_experiments.items() if n in item.variants}
    supported = [n for n, a in reported.items() if n in measured and abs(a - measured[n]) <= item.tolerance]
    agreement = len(supported) / len(reported) if reported else 0.0
    fraction = item.completeness_weight * complete + (1 - item.completeness_weight) * agreement
    message = (
        f"{len(measured)} of {len(item.variants)} variants retrained; {len(supported)} of "
        f"{len(reported)} reported results within ±{item.tolerance:g} points of the measurement"
    )
    if not reported:
        message += " (no experiments: reported in submission.yaml)"
    status: ItemStatus = "pass" if fraction >= 1 else "partial" if fraction > 0 else "fail"
    return _result(item, fraction, status, message)


def scaling(item: ScalingItem, tasks: dict[str, TaskResult]) -> ItemResult:
    expected = [(t, f) for t in item.tasks for f in item.fractions]
    done = [
        (t, f) for t, f in expected
        if (run := tasks[t].training.get(f"scaling:{f:g}")) is not None and run.test_accuracy is not None
    ]  # fmt: skip
    fraction = len(done) / len(expected)
    status: ItemStatus = "pass" if fraction >= 1 else "partial" if fraction > 0 else "fail"
    return _result(
        item, fraction, status, f"{len(done)} of {len(expected)} model-size × data-fraction runs measured"
    )
