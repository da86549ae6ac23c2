"""grader/inside/training.py: what a failed retraining says."""

from __future__ import annotations

import pytest
import torch

from grader.inside import training
from grader.inside.channel import StageFailure
from tests.inside.conftest import CPU


def test_running_out_of_memory_says_so_and_names_the_batch_size() -> None:
    with pytest.raises(StageFailure) as failure, training._students_training(128, CPU):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert failure.value.stage == "training"
    assert failure.value.message.startswith("training ran out of cpu memory at the recipe's batch size 128: ")


def test_anything_else_the_model_raises_is_quoted() -> None:
    with pytest.raises(StageFailure) as failure, training._students_training(128, CPU):
        raise ValueError("bad shape")
    assert (failure.value.stage, failure.value.message) == (
        "training",
        "training raised ValueError: bad shape",
    )
