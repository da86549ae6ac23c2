"""Graded results built by hand, for the reports and the batch outputs; their fixtures are
registered in tests/conftest.py.

A small graded class for the batch outputs (gradebook, class report, index).

Four graded students and one submission that could not be graded. The numbers the
tests assert are worked out here once:

  totals     S001 90 (10 manual points pending), S002 53, S003 70 (task error), S004 100
  mean 78.25, median 80; histogram of 10-point bins: one in [50, 60), one in [70, 80),
  two in [90, 100] (the last bin includes full marks)
  items      valid 10/10/10/10, params 20/0/20/20 (mean 15), acc 50/30/40/50 (mean 42.5),
             tiny-acc 10/5/0/10 (mean 6.25), report 8/10 scored and 2 pending (mean 9)
  cnn accuracy: S001 86.0 and S004 86.0 share rank 1, S003 80.0 is 3rd, S002 73.0 4th
"""

from __future__ import annotations

from typing import Any

import pytest

from grader.report import Failure
from grader.results import Evaluation, GradeResult, ItemResult, ItemStatus, TaskResult
from grader.rubric import Rubric, find_rubric, load_rubric
from grader.scoring import score_all

NASTY_NAME = "=HYPERLINK(\"http://x\") <script>alert('owned')</script>"

RUBRIC: dict[str, Any] = {
    "id": "hw-batch",
    "title": "HW3: CIFAR-10 models",
    "tasks": {
        "cnn": {"title": "Small CNN", "model": "model.py:Net", "weights": "weights/cnn.pt"},
        "tiny": {"title": "Tiny model", "model": "tiny.py:Tiny", "weights": "weights/tiny.pt"},
    },
    "items": [
        {"id": "valid", "task": "cnn", "title": "Model builds", "type": "model_valid", "points": 10},
        {
            "id": "params",
            "task": "cnn",
            "title": "At most 1M parameters",
            "type": "params_limit",
            "points": 20,
            "max_params": 1_000_000,
        },
        {
            "id": "acc",
            "task": "cnn",
            "title": "CNN test accuracy",
            "type": "test_accuracy",
            "points": 50,
            "thresholds": [{"accuracy": 60, "fraction": 0}, {"accuracy": 85, "fraction": 1}],
        },
        {
            "id": "tiny-acc",
            "task": "tiny",
            "title": "Tiny test accuracy",
            "type": "test_accuracy",
            "points": 10,
            "thresholds": [{"accuracy": 50, "fraction": 0}, {"accuracy": 60, "fraction": 1}],
        },
        {"id": "report", "title": "Written report", "type": "manual", "points": 10},
    ],
}

ITEM_TASKS = {"valid": "cnn", "params": "cnn", "acc": "cnn", "tiny-acc": "tiny", "report": None}
ITEM_POINTS = {"valid": 10, "params": 20, "acc": 50, "tiny-acc": 10, "report": 10}


def evaluation(top1: float) -> Evaluation:
    return Evaluation(
        n_images=10_000, top1=top1, top3=min(100.0, top1 + 10), per_class={}, confusion=[], misclassified=[]
    )


def task(task_id: str, params: int, accuracy: float | None) -> TaskResult:
    model = "model.py:Net" if task_id == "cnn" else "tiny.py:Tiny"
    result = TaskResult(
        id=task_id,
        title=task_id,
        model=model,
        weights=f"weights/{task_id}.pt",
        params=params,
        forward_ok=True,
        weights_loaded=accuracy is not None,
        evaluation=evaluation(accuracy) if accuracy is not None else None,
        limits={"params": 1_000_000} if task_id == "cnn" else {},
    )
    if accuracy is None:
        result.fail("weights", "weights/tiny.pt holds a whole pickled model; save model.state_dict()")
    return result


def items(scores: dict[str, tuple[float, ItemStatus]]) -> list[ItemResult]:
    return [
        ItemResult(i, ITEM_TASKS[i], i, "auto", got, ITEM_POINTS[i], status, f"note for {i}")
        for i, (got, status) in scores.items()
    ]


def student(
    student_id: str,
    name: str | None,
    scores: dict[str, tuple[float, ItemStatus]],
    cnn: tuple[int, float],
    tiny: tuple[int, float | None],
) -> GradeResult:
    return GradeResult(
        student_id=student_id,
        student_name=name,
        rubric="hw-batch",
        rubric_title="HW3: CIFAR-10 models",
        submission_sha256=student_id * 4,
        grader_version="0.1.0",
        graded_at="2025-11-23T17:30:00Z",
        device="cpu",
        sandbox={"backend": "bwrap"},
        tasks={"cnn": task("cnn", *cnn), "tiny": task("tiny", *tiny)},
        items=items(scores),
    )


def class_results() -> list[GradeResult]:
    return [
        student(
            "S004",
            "Dan",
            {
                "valid": (10, "pass"),
                "params": (20, "pass"),
                "acc": (50, "pass"),
                "tiny-acc": (10, "pass"),
                "report": (10, "pass"),
            },
            (800_000, 86.0),
            (40_000, 62.5),
        ),
        student(
            "S001",
            "Alice Chen",
            {
                "valid": (10, "pass"),
                "params": (20, "pass"),
                "acc": (50, "pass"),
                "tiny-acc": (10, "pass"),
                "report": (0, "manual"),
            },
            (900_000, 86.0),
            (50_000, 60.0),
        ),
        student(
            "S002",
            None,
            {
                "valid": (10, "pass"),
                "params": (0, "fail"),
                "acc": (30, "partial"),
                "tiny-acc": (5, "partial"),
                "report": (8, "partial"),
            },
            (1_200_000, 73.0),
            (60_000, 55.0),
        ),
        student(
            "S003",
            NASTY_NAME,
            {
                "valid": (10, "pass"),
                "params": (20, "pass"),
                "acc": (40, "partial"),
                "tiny-acc": (0, "error"),
                "report": (0, "manual"),
            },
            (500_000, 80.0),
            (70_000, None),
        ),
    ]


def class_failures() -> list[Failure]:
    return [Failure("S005", "submission.yaml is not valid YAML at line 3", "load")]


@pytest.fixture
def rubric() -> Rubric:
    return Rubric.model_validate(RUBRIC)


@pytest.fixture
def results() -> list[GradeResult]:
    return class_results()


@pytest.fixture
def failures() -> list[Failure]:
    return class_failures()


# --- one submission graded under rubrics/cifar10-cnn.yaml, for the CI outputs ----------------
# The CI outputs of one graded submission: JUnit XML, Gradescope JSON, Markdown summary.
#
# The result is scored by the real scoring code from hand-made measurements under
# rubrics/cifar10-cnn.yaml, so the numbers are known:
#
#   item 1 model_valid    10/10 pass
#   item 2 params_limit   20/20 pass (5,370 of 1,000,000)
#   item 3 test_accuracy  25/50 partial (72.5% on the subset; 60% → 0, 85% → full)
#   item 4 claim          0/10 not_checked (accuracy measured on a subset)
#   item 5 manual         0/10 manual
#   total 55/100, 10 points not checked, 10 pending

# Gradescope's autograder results format: the keys it reads at the top and per test.
GRADESCOPE_TOP = {
    "score", "execution_time", "output", "output_format", "test_output_format", "test_name_format",
    "visibility", "stdout_visibility", "extra_data", "tests", "leaderboard",
}  # fmt: skip
GRADESCOPE_TEST = {
    "score", "max_score", "status", "name", "name_format", "number", "output", "output_format",
    "tags", "visibility", "extra_data",
}  # fmt: skip
GRADESCOPE_VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}


@pytest.fixture(scope="session")
def cnn_rubric() -> Rubric:
    return load_rubric(find_rubric("cifar10-cnn"))


def ci_graded(
    rubric: Rubric, params: int = 5370, accuracy: float = 72.5, error: str | None = None
) -> GradeResult:
    task = TaskResult(
        "cnn",
        "CIFAR-10 CNN",
        model="model.py:Net",
        weights="weights/model.pt",
        params=params,
        trainable_params=params,
        macs={"thop": 259_072, "ptflops": 283_658},
        module_counts={"Conv2d": 1},
        forward_ok=True,
        weights_loaded=True,
        claimed_test_accuracy=85.0,
        limits={"params": 1_000_000},
        evaluation=Evaluation(1000, accuracy, 90.0, {}, [], [], subset_per_class=100),
    )
    if error:
        task.fail("weights", error)
        task.evaluation = None
    result = GradeResult(
        "B000000001", "Test Student", rubric.id, rubric.title, "0" * 64, "0.1.0",
        "2026-01-31T12:00:00+00:00", "cpu", {"backend": "bwrap"}, {"cnn": task},
    )  # fmt: skip
    result.versions = {
        "grader": "0.1.0", "host python": "3.11.7", "numpy": "2.4.6", "ptflops": "0.7.5", "python": "3.11.2",
        "torch": "2.14.1", "torchvision": "0.29.1", "ultralytics-thop": "2.2.3",
        "sandbox image": "sha256:" + "ab" * 32,
    }  # fmt: skip
    result.items = score_all(rubric, result.tasks)
    return result
