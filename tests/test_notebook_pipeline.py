"""Grading notebook hand-ins end to end in the real bubblewrap sandbox.

The notebook also installs packages, downloads CIFAR-10, trains, saves and plots: none of
that may run (the sandbox has no network and a read-only submission, so any of it would
fail the import), while its model class is built, loaded with weights and evaluated.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from grader.config import Settings
from grader.pipeline import Graded, grade
from grader.rubric import Rubric, load_rubric
from grader.submission import load_submission
from tests.conftest import FILES, TEST_PER_CLASS, load_module

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rubric() -> Rubric:
    return load_rubric(FILES / "rubrics" / "notebook.yaml")


@pytest.fixture(scope="module")
def submissions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/files/notebooks copied out; the notebook's model gets the zoo's TinyCNN weights."""
    root = tmp_path_factory.mktemp("notebooks")
    shutil.copytree(FILES / "notebooks", root, dirs_exist_ok=True)
    torch.manual_seed(0)
    model = load_module(FILES / "zoo" / "nets.py").TinyCNN()  # the notebook's class, same layers
    (root / "B000000002" / "weights").mkdir()
    torch.save(model.state_dict(), root / "B000000002" / "weights" / "task1.pt")
    return root


def _grade(folder: Path, rubric: Rubric, cache: Path, small_cifar: Path) -> Graded:
    settings = Settings(data_dir=small_cifar, task_timeout_s=60.0, cache_dir=cache, sandbox="bwrap")
    return grade(folder, rubric, settings)


@pytest.fixture(scope="module")
def graded(
    submissions: Path, rubric: Rubric, small_cifar: Path, tmp_path_factory: pytest.TempPathFactory
) -> Graded:
    return _grade(submissions / "B000000002", rubric, tmp_path_factory.mktemp("cache"), small_cifar)


def test_the_notebooks_model_is_built_loaded_and_evaluated(graded: Graded) -> None:
    task1, task2 = graded.result.tasks["task1"], graded.result.tasks["task2"]
    for task in (task1, task2):
        assert task.status == "ok", task.error
        assert task.forward_ok and task.weights_loaded
        assert task.evaluation is not None and task.evaluation.n_images == 10 * TEST_PER_CLASS
        # Conv 3→8 (3×3) + BN(8) + Linear(8·8·8 → 10), the sizes set by the notebook's constants.
        assert task.params == (8 * 3 * 9 + 8) + 16 + (512 * 10 + 10)
    assert (task1.model, task2.model) == ("lab.ipynb:TinyCNN", "lab.ipynb:build")
    assert task1.evaluation.top1 == task2.evaluation.top1  # type: ignore[union-attr]
    assert task1.evaluation.confusion == task2.evaluation.confusion  # type: ignore[union-attr]


def test_the_claims_are_read_from_the_saved_outputs(graded: Graded) -> None:
    task1, task2 = graded.result.tasks["task1"], graded.result.tasks["task2"]
    # "Test accuracy: 99.00%" names no task, and two tasks share the notebook: not taken.
    assert (task1.claimed_test_accuracy, task2.claimed_test_accuracy) == (12.5, 11.0)
    items = {item.id: item for item in graded.result.items}
    assert "claimed 12.50%" in items["claim1"].message
    assert "claimed 11.00%" in items["claim2"].message
    assert (
        "task1: claimed test accuracy 12.5% read from lab.ipynb, cell 8: 'Task 1 Test Accuracy: 12.50%'"
        in graded.result.warnings
    )


def test_the_student_is_told_which_notebook_was_used(graded: Graded) -> None:
    assert any(
        w.startswith("task1: model.py is not in the submission, so the model is taken from lab.ipynb")
        for w in graded.result.warnings
    )


def test_only_definitions_reach_the_sandbox(submissions: Path, rubric: Rubric) -> None:
    module = load_submission(submissions / "B000000002").tasks(rubric)["task1"].notebook
    assert module is not None
    for never_run in ("pip install", "download=True", "optimizer.step()", "torch.save", "plt.", "device ="):
        assert never_run not in module.source
    assert "class TinyCNN(nn.Module):" in module.source and "NUM_CLASSES = 10" in module.source


def test_an_import_error_names_the_notebook_cell(
    submissions: Path, rubric: Rubric, small_cifar: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    graded = _grade(submissions / "B000000003", rubric, tmp_path_factory.mktemp("cache"), small_cifar)
    task1, task2 = graded.result.tasks["task1"], graded.result.tasks["task2"]
    assert (task1.status, task1.error_stage) == ("error", "import")
    # `device = torch.device(...)` is not run, so the class body that reads it fails.
    assert task1.error == (
        "broken.ipynb failed to import: NameError: name 'device' is not defined (cell 3, line 4)"
    )
    assert (task2.status, task2.error_stage) == ("error", "import")
    assert task2.error == "lab.ipynb not found in the submission (found: broken.ipynb)"
