"""What grader ci's quick profile changes below the CLI: the test subset and not-checked items."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from grader import data as datasets
from grader.results import Evaluation, TaskResult
from grader.rubric import CurvesItem, RetrainItem, Rubric
from grader.scoring import score_all


def cached_split(tmp_path: Path, labels: list[int]) -> datasets.CachedSplit:
    images = np.arange(len(labels), dtype=np.uint8)[:, None, None, None] * np.ones((1, 32, 32, 3), np.uint8)
    split = datasets.CachedSplit(
        tmp_path / "cifar10-abc-images.npy", tmp_path / "cifar10-abc-labels.npy", ("a", "b", "c")
    )
    np.save(split.images_path, images)
    np.save(split.labels_path, np.asarray(labels, dtype=np.int64))
    return split


def test_first_per_class_keeps_test_split_order(tmp_path: Path) -> None:
    split = cached_split(tmp_path, [2, 0, 0, 1, 2, 0, 2, 1, 1, 2])
    subset, positions = datasets.first_per_class(split, 2)
    assert positions.tolist() == [0, 1, 2, 3, 4, 7]  # class 0: 1, 2; class 1: 3, 7; class 2: 0, 4
    assert subset.labels().tolist() == [2, 0, 0, 1, 2, 1]
    assert subset.images()[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 7]  # image i is filled with i
    assert subset.images_path.name == "cifar10-abc-first2-images.npy" and subset.classes == split.classes


def test_first_per_class_takes_all_of_a_small_class_and_reuses_the_cache(tmp_path: Path) -> None:
    split = cached_split(tmp_path, [0, 1, 0, 2, 0])
    subset, positions = datasets.first_per_class(split, 3)
    assert positions.tolist() == [0, 1, 2, 3, 4]
    np.save(subset.labels_path, np.zeros(5, dtype=np.int64))  # a second call reads the cache
    assert datasets.first_per_class(split, 3)[0].labels().tolist() == [0] * 5


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
