"""The warnings and alerts grade() adds to a result, on hand-made measurements (no sandbox)."""

from __future__ import annotations

import numpy as np

from grader.data import CIFAR10_CLASSES
from grader.evaluate import evaluate, outputs_note
from grader.pipeline import _output_warnings, claim_alerts
from grader.results import Evaluation, GradeResult, TaskResult


def graded(*tasks: TaskResult) -> GradeResult:
    return GradeResult(
        "S1", None, "r", "R", "0" * 64, "0", "2026-01-31T12:00:00+00:00", "cpu", {},
        {task.id: task for task in tasks},
    )  # fmt: skip


def measured(task_id: str, top1: float, claimed: float | None, subset: int | None = None) -> TaskResult:
    evaluation = Evaluation(10_000, top1, 90.0, {}, [], [], subset_per_class=subset)
    return TaskResult(task_id, task_id, evaluation=evaluation, claimed_test_accuracy=claimed)


def test_a_claim_far_from_the_measurement_is_an_alert_without_a_claim_item() -> None:
    result = graded(
        measured("task1", 65.0, 92.0),  # 27 points above
        measured("task2", 80.0, 84.5),  # within 5
        measured("task3", 70.0, None),  # no claim
        measured("task4", 88.0, 81.0, subset=100),  # 7 below, on a subset
        TaskResult("task5", "stopped", claimed_test_accuracy=90.0),  # nothing measured
    )
    assert claim_alerts(result, 5.0) == [
        "task1: the claimed test accuracy 92.00% is 27.00 points above the 65.00% measured on 10,000 "
        "test images, more than 5 points apart: check that the submitted weights are the ones the "
        "claim was measured with",
        "task4: the claimed test accuracy 81.00% is 7.00 points below the 88.00% measured on 10,000 "
        "test images (a subset of the test split), more than 5 points apart: check that the submitted "
        "weights are the ones the claim was measured with",
    ]
    assert [a.split(":")[0] for a in claim_alerts(result, 4.0)] == ["task1", "task2", "task4"]
    assert claim_alerts(result, 30.0) == []


def test_outputs_that_are_not_logits_are_a_warning_naming_the_task() -> None:
    rng = np.random.default_rng(14)
    logits = rng.normal(size=(50, 10))
    log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    ev = evaluate(log_probabilities, rng.integers(0, 10, size=50), CIFAR10_CLASSES, 16)
    result = graded(TaskResult("task1", "T", evaluation=ev), TaskResult("task2", "U"))
    assert _output_warnings(result) == [
        "task1: the model returns log-probabilities (it ends in log_softmax), not the logits the "
        "assignment asks for; accuracy and cross-entropy are unaffected (log-probabilities are logits "
        "shifted by a constant per image), but end the model with its last layer"
    ]
    assert "probabilities (it ends in softmax), not logits" in (outputs_note("probabilities") or "")
    assert outputs_note("logits") is None
