"""grader/scoring.py on hand-made results and rubric items."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from grader.results import Evaluation, TaskResult
from grader.rubric import (
    ArchitectureItem,
    ClaimItem,
    CurvesItem,
    FlopsLimitItem,
    ManualItem,
    ModelValidItem,
    ParamsLimitItem,
    RetrainItem,
    Rubric,
    TestAccuracyItem,
    Threshold,
)
from grader.scoring import accuracy_fraction, score_all, score_item

RESNET18_PARAMS = 11_173_962


def accuracy_item(points: float = 4, steps: tuple[tuple[float, float], ...] = ((50, 0), (80, 1))) -> Any:
    thresholds = [Threshold(accuracy=a, fraction=f) for a, f in steps]
    return TestAccuracyItem(
        id="2a", task="t", title="Accuracy", type="test_accuracy", points=points, thresholds=thresholds
    )


def evaluation(top1: float, nonfinite: int = 0) -> Evaluation:
    return Evaluation(10_000, top1, 99.0, {}, [], [], nonfinite_rows=nonfinite)


def task(**fields: Any) -> TaskResult:
    base: dict[str, Any] = {"forward_ok": True, "output_shape": [1, 10]}
    return TaskResult(id="t", title="Task", **(base | fields))


# --- test accuracy -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("acc", "fraction"), [(0, 0.0), (50, 0.0), (65, 0.5), (72.5, 0.75), (80, 1.0), (99.9, 1.0)]
)
def test_two_threshold_interpolation(acc: float, fraction: float) -> None:
    assert accuracy_fraction(accuracy_item(), acc) == pytest.approx(fraction)


def test_interpolation_equals_numpy_interp_on_a_grid() -> None:
    steps = ((40, 0.1), (60, 0.5), (75, 0.6), (90, 1.0))
    item = accuracy_item(steps=steps)
    accs = np.linspace(0, 100, 1001)
    expected = np.interp(accs, [a for a, _ in steps], [f for _, f in steps])
    got = np.array([accuracy_fraction(item, float(a)) for a in accs])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("top1", "score", "status"),
    [(65.0, 2.0, "partial"), (45.0, 0.0, "fail"), (80.0, 4.0, "pass"), (60.0, 1.33, "partial")],
)
def test_accuracy_item_score_and_status(top1: float, score: float, status: str) -> None:
    result = score_item(accuracy_item(), task(evaluation=evaluation(top1)))
    assert (result.score, result.max_score, result.status) == (score, 4, status)
    assert result.message == f"top-1 accuracy {top1:.2f}% on 10,000 test images; full points at 80%"


def test_accuracy_message_mentions_nonfinite_rows() -> None:
    result = score_item(accuracy_item(), task(evaluation=evaluation(70.0, nonfinite=1234)))
    assert "(1,234 gave NaN/Inf logits and count as wrong)" in result.message


# --- limits ------------------------------------------------------------------------


def params_item(limit: int = 1_000_000) -> ParamsLimitItem:
    return ParamsLimitItem(id="2", task="t", title="Size", type="params_limit", points=20, max_params=limit)


def test_params_within_limit() -> None:
    result = score_item(params_item(), task(params=551_722))
    assert (result.score, result.status) == (20, "pass")
    assert result.message == "551,722 parameters, within the limit of 1,000,000"


def test_params_at_the_limit_passes() -> None:
    assert score_item(params_item(551_722), task(params=551_722)).status == "pass"


def test_params_over_limit() -> None:
    result = score_item(params_item(), task(params=RESNET18_PARAMS))
    assert (result.score, result.status) == (0, "fail")
    assert result.message == "11,173,962 parameters, over the limit of 1,000,000 by 10,173,962"


def flops_item(counter: str, limit: int = 50_000_000) -> Any:
    return FlopsLimitItem(
        id="f", task="t", title="MACs", type="flops_limit", points=5, max_macs=limit, counter=counter
    )


def test_flops_limit_names_its_counter() -> None:
    macs = {"thop": 39_356_160, "ptflops": 39_585_674}
    within = score_item(flops_item("thop"), task(macs=macs))
    assert (within.score, within.status) == (5, "pass")
    assert within.message == "39,356,160 MACs (thop), within the limit of 50,000,000"
    over = score_item(flops_item("ptflops", 39_500_000), task(macs=macs))
    assert (over.score, over.status) == (0, "fail")
    assert over.message == "39,585,674 MACs (ptflops), over the limit of 39,500,000"


def test_flops_limit_without_its_counter_is_an_error() -> None:
    result = score_item(flops_item("ptflops"), task(macs={"thop": 1}))
    assert (result.score, result.status) == (0, "error")
    assert "ptflops" in result.message


# --- architecture ------------------------------------------------------------------


def arch_item(**fields: Any) -> ArchitectureItem:
    return ArchitectureItem(id="4", task="t", title="ResNet18", type="architecture", points=5, **fields)


RESNET_MODULES = {"Conv2d": 20, "BatchNorm2d": 20, "BasicBlock": 8}


@pytest.mark.parametrize(
    ("params", "status"),
    [
        (RESNET18_PARAMS + 111_740, "pass"),  # 1% of 11,173,962 is 111,739.62, rounded to 111,740
        (RESNET18_PARAMS - 111_740, "pass"),
        (RESNET18_PARAMS + 111_741, "fail"),
        (RESNET18_PARAMS - 111_741, "fail"),
    ],
)
def test_architecture_tolerance_edges(params: int, status: str) -> None:
    item = arch_item(expected_params=RESNET18_PARAMS, params_tolerance=0.01)
    result = score_item(item, task(params=params, module_counts=RESNET_MODULES))
    assert result.status == status
    assert result.score == (5 if status == "pass" else 0)
    if status == "fail":
        assert f"{params:,} parameters is not within 111,740 of 11,173,962" in result.message


def test_architecture_zero_tolerance_needs_the_exact_count() -> None:
    item = arch_item(expected_params=RESNET18_PARAMS)
    assert score_item(item, task(params=RESNET18_PARAMS, module_counts=RESNET_MODULES)).status == "pass"
    assert score_item(item, task(params=RESNET18_PARAMS + 1, module_counts=RESNET_MODULES)).status == "fail"


def test_architecture_lists_every_problem() -> None:
    item = arch_item(required_modules={"Conv2d": 17, "BatchNorm2d": 17}, min_residual_adds=8)
    result = score_item(
        item, task(params=100, module_counts={"Conv2d": 17, "BatchNorm2d": 3}, residual_adds=0)
    )
    assert result.status == "fail"
    assert result.message == (
        "needs at least 17 BatchNorm2d, found 3; needs at least 8 residual (skip) additions, found 0"
    )


def test_architecture_pass_reports_the_facts() -> None:
    item = arch_item(expected_params=RESNET18_PARAMS, params_tolerance=0.01, min_residual_adds=8)
    result = score_item(item, task(params=RESNET18_PARAMS, module_counts=RESNET_MODULES, residual_adds=8))
    assert (result.score, result.status) == (5, "pass")
    assert result.message == "11,173,962 parameters (expected 11,173,962 ± 111,740); 8 residual additions"


# --- claims ------------------------------------------------------------------------


def claim_item(tolerance: float = 1.0) -> ClaimItem:
    return ClaimItem(id="2b", task="t", title="Claim", type="claim", points=1, tolerance=tolerance)


@pytest.mark.parametrize(
    ("claimed", "status", "gap"),
    [(82.0, "pass", "+1.00"), (80.0, "pass", "-1.00"), (82.5, "fail", "+1.50"), (79.49, "fail", "-1.51")],
)
def test_claim_within_and_outside_tolerance(claimed: float, status: str, gap: str) -> None:
    result = score_item(claim_item(), task(evaluation=evaluation(81.0), claimed_test_accuracy=claimed))
    assert (result.status, result.score) == (status, 1 if status == "pass" else 0)
    verdict = "within" if status == "pass" else "outside"
    assert result.message == (
        f"claimed {claimed:.2f}%, measured 81.00% ({gap} points, {verdict} the ±1 tolerance)"
    )


def test_missing_claim_fails_and_says_where_to_put_it() -> None:
    result = score_item(claim_item(), task(evaluation=evaluation(81.0)))
    assert (result.status, result.score) == ("fail", 0)
    assert result.message == "no claimed_test_accuracy in submission.yaml (measured 81.00%)"


def test_missing_claim_of_a_notebook_task_names_the_notebook() -> None:
    result = score_item(claim_item(), task(evaluation=evaluation(81.0), model="lab2.ipynb:SimpleCNN"))
    assert result.message == (
        "no claimed_test_accuracy in submission.yaml, nor a test accuracy printed in lab2.ipynb "
        "(measured 81.00%)"
    )


# --- manual and failed tasks -------------------------------------------------------


def test_manual_item_is_pending() -> None:
    item = ManualItem(id="2c", task="t", title="Curves", type="manual", points=5, guidance="four curves")
    result = score_item(item, None)
    assert (result.status, result.score, result.max_score) == ("manual", 0, 5)
    assert result.message == "pending TA review: four curves"


WEIGHTS_ERROR = "weights/task1.pt holds a whole pickled model; save model.state_dict() instead"


def test_failed_task_turns_dependent_items_into_errors() -> None:
    t = task(params=114_186, macs={"thop": 10_571_776}, module_counts={"Conv2d": 3})
    t.fail("weights", WEIGHTS_ERROR)
    items = [
        ModelValidItem(id="1", task="t", title="Builds", type="model_valid", points=5),
        params_item(),
        accuracy_item(),
        claim_item(),
    ]
    results = [score_item(item, t) for item in items]
    assert [r.status for r in results] == ["pass", "pass", "error", "error"]
    assert [r.score for r in results] == [5, 20, 0, 0]
    # The task's error is told once, with the task; its items point at it.
    for r in results[2:]:
        assert r.message == "no evidence: task t stopped at stage weights"


def test_task_that_failed_to_build_errors_every_scored_item() -> None:
    t = TaskResult(id="t", title="Task")
    t.fail("build", "Net() raised RuntimeError: shape mismatch")
    items = [
        ModelValidItem(id="1", task="t", title="Builds", type="model_valid", points=5),
        params_item(),
        flops_item("thop"),
        arch_item(expected_params=10),
        accuracy_item(),
        claim_item(),
    ]
    results = [score_item(item, t) for item in items]
    assert {r.status for r in results} == {"error"}
    assert {r.message for r in results} == {"no evidence: task t stopped at stage build"}
    assert sum(r.score for r in results) == 0


def test_items_of_a_task_that_never_built_point_at_it_retraining_included(eai_rubric: Any) -> None:
    task1 = task(evaluation=evaluation(65.0))
    task2 = TaskResult(id="task2", title="ResNet")
    task2.fail("import", "model.py failed to import: ModuleNotFoundError: No module named 'timm'")
    results = {r.id: r for r in score_all(eai_rubric, {"task1": task1, "task2": task2})}
    stopped = {key: (r.status, r.score, r.message) for key, r in results.items() if r.task == "task2"}
    brief = ("error", 0, "no evidence: task task2 stopped at stage import")
    assert stopped == {
        "4": brief, "5a": brief, "5b": brief, "5c": brief, "5d": brief, "7a": brief, "7b": brief,
        "7c": brief, "6": ("manual", 0, results["6"].message),
    }  # fmt: skip
    assert not any("timm" in r.message for r in results.values())


def test_score_all_on_the_eai_rubric(eai_rubric: Any) -> None:
    task1 = task(evaluation=evaluation(65.0), claimed_test_accuracy=65.5)
    task2 = task(
        params=RESNET18_PARAMS,
        module_counts={"Conv2d": 20, "BatchNorm2d": 20},
        residual_adds=8,
        evaluation=evaluation(93.0),
        claimed_test_accuracy=95.0,
    )
    results = {r.id: r for r in score_all(eai_rubric, {"task1": task1, "task2": task2})}
    scores = {key: results[key].score for key in ("1", "2a", "2b", "4", "5a", "5b")}
    assert scores == {"1": 5, "2a": 1.5, "2b": 1, "4": 5, "5a": 3, "5b": 0}
    assert sum(r.max_score for r in results.values()) == 100
    assert sum(r.max_score for r in results.values() if r.status == "manual") == 25  # items 3, 6, 8
    # No retraining happened here: its items say so instead of scoring.
    assert results["2c"].status == "error" and "not retrained" in results["2c"].message
    assert results["7a"].score == 0 and "0 of 2 variants retrained" in results["7a"].message


# --- evidence left out on purpose (--skip-training, grader ci's quick profile) ------------


def test_skipped_training_items_are_not_checked_with_the_reason(eai_rubric: Rubric) -> None:
    tasks = {t: TaskResult(t, t, params=100, forward_ok=True) for t in eai_rubric.tasks}
    items = score_all(eai_rubric, tasks, {}, "not checked in CI (quick profile)")
    training = [
        (r, i)
        for r, i in zip(items, eai_rubric.items, strict=True)
        if isinstance(i, RetrainItem | CurvesItem)
    ]
    assert training
    for result, _ in training:
        assert (result.status, result.score) == ("not_checked", 0)
        assert result.message == "not checked: not checked in CI (quick profile)"


def test_a_claim_is_not_checked_against_a_subset(eai_rubric: Rubric) -> None:
    evaluation = Evaluation(1000, 70.0, 90.0, {}, [], [], subset_per_class=100)
    task = TaskResult("t1", "t1", forward_ok=True, evaluation=evaluation, claimed_test_accuracy=71.0)
    rubric = Rubric.model_validate(
        {
            "id": "r",
            "title": "R",
            "tasks": {"t1": {"title": "T", "model": "m.py:Net", "weights": "w.pt"}},
            "items": [
                {"id": "c", "task": "t1", "title": "Claim", "type": "claim", "points": 5},
                {
                    "id": "a",
                    "task": "t1",
                    "title": "Acc",
                    "type": "test_accuracy",
                    "points": 10,
                    "thresholds": [{"accuracy": 60, "fraction": 0}, {"accuracy": 80, "fraction": 1}],
                },
            ],
        }
    )
    claim, acc = score_all(rubric, {"t1": task})
    assert (claim.status, claim.score) == ("not_checked", 0)
    assert "claimed 71.00%, measured 70.00% on 1,000 test images" in claim.message
    assert (acc.status, acc.score) == ("partial", 5)
    assert acc.message.startswith("top-1 accuracy 70.00% on 1,000 test images (a subset: the first 100")
    task.evaluation.subset_per_class = None  # the whole test split: the claim is checked
    claim, _ = score_all(rubric, {"t1": task})
    assert (claim.status, claim.score) == ("pass", 5)
