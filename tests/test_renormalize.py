"""A task graded far below its claim under the wrong input normalization: the sample's trained
CNN, declared with another normalization than it was trained with, graded in bubblewrap."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from grader.config import Settings
from grader.pipeline import Graded, grade
from grader.renormalize import USUAL
from grader.rubric import Rubric, load_rubric
from tests.conftest import FILES, TEST_PER_CLASS

pytestmark = pytest.mark.slow
SAMPLE = Path(__file__).resolve().parents[1] / "submissions" / "B093040051"
TRAINED_WITH = USUAL["CIFAR-10's statistics"]  # as the sample's manifest says


@pytest.fixture(scope="module")
def rubric() -> Rubric:
    return load_rubric(FILES / "rubrics" / "realworld.yaml")


def _graded(tmp_path: Path, small_cifar: Path, rubric: Rubric, preprocess: dict, claim: float) -> Graded:
    folder = tmp_path / "B093040099"
    (folder / "weights").mkdir(parents=True)
    shutil.copy(SAMPLE / "model.py", folder / "model.py")
    shutil.copy(SAMPLE / "weights" / "task1.pt", folder / "weights" / "model.pt")
    task = {"model": "model.py:SimpleCNN", "preprocess": preprocess, "claimed_test_accuracy": claim}
    (folder / "submission.yaml").write_text(yaml.safe_dump({"tasks": {"task1": task}}))
    settings = Settings(
        data_dir=small_cifar, cache_dir=tmp_path / "cache", sandbox="bwrap", task_timeout_s=60
    )
    return grade(folder, rubric, settings)


def test_weights_declared_with_another_normalization_get_the_manifests_fix(
    tmp_path: Path, small_cifar: Path, rubric: Rubric
) -> None:
    graded = _graded(tmp_path, small_cifar, rubric, {"mean": [0.5] * 3, "std": [0.5] * 3}, 65.32)
    measured = graded.result.tasks["task1"].evaluation.top1
    assert measured < 50  # the sample's CNN scores about 65% as it was trained
    (alert,) = [a for a in graded.result.alerts if "normalized with" in a]
    assert alert.startswith(
        f"task1: measured {measured:.2f}% (claimed 65.32%) with inputs normalized by mean "
    )
    assert "normalized with CIFAR-10's statistics instead, the same weights score " in alert
    assert f"on {10 * TEST_PER_CLASS:,} of the test images" in alert
    assert alert.endswith(
        "set preprocess: {mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.2435, 0.2616]} under tasks.task1 "
        "in submission.yaml and grade again"
    )
    assert float(alert.split("score ")[1].split("%")[0]) > measured + 15
    accuracy = next(item for item in graded.result.items if item.id == "acc")
    assert f"top-1 accuracy {measured:.2f}%" in accuracy.message  # graded as measured: the TA decides


def test_weights_declared_as_they_were_trained_get_no_such_alert(
    tmp_path: Path, small_cifar: Path, rubric: Rubric
) -> None:
    declared = {"mean": list(TRAINED_WITH.mean), "std": list(TRAINED_WITH.std)}
    graded = _graded(tmp_path, small_cifar, rubric, declared, 95.0)
    assert graded.result.tasks["task1"].evaluation.top1 > 50
    assert len(graded.result.alerts) == 1 and "claimed test accuracy 95.00%" in graded.result.alerts[0]
