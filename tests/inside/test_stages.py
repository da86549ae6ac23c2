"""``analyze``: what a forward that does not return one tensor of logits is told, in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from grader.inside.channel import Channel, StageFailure
from grader.inside.loading import StudentCode
from grader.inside.stages import analyze
from grader.protocol import HarnessJob


class _Head(nn.Module):
    """A small CNN whose ``forward`` ends as ``ending`` says."""

    def __init__(self, ending: str) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 10)
        self.ending = ending

    def forward(self, x: torch.Tensor) -> object:
        logits = self.fc(self.features(x))
        if self.ending == "dict":
            return {"logits": logits, "features": self.features(x)}
        if self.ending == "tuple":
            return logits, self.features(x)
        if self.ending == "none":
            logits.sum()  # the classic forgotten return
            return None
        return logits


class _NeedsLabels(_Head):
    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> object:  # type: ignore[override]
        logits = self.fc(self.features(x))
        return logits, nn.functional.cross_entropy(logits, labels)


def _analyze(model: nn.Module, tmp_path: Path) -> Channel:
    job = HarnessJob(
        submission=str(tmp_path), model="model.py:Net", weights="model.pt", out=str(tmp_path), device="cpu",
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=10, batch_size=100, max_model_bytes=2**30,
    )  # fmt: skip
    channel = Channel(tmp_path)
    analyze(model.eval(), job, StudentCode(roots=(tmp_path,)), channel, torch.device("cpu"))
    return channel


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            _Head("dict"),
            "forward returned a dict (keys 'logits', 'features'), expected a tensor of logits: return the "
            "logits alone, not a dict holding them",
        ),
        (
            _Head("tuple"),
            "forward returned a tuple of 2, expected a tensor of logits: return the logits alone "
            "(return out, not return out, features)",
        ),
        (
            _Head("none"),
            "forward returned None, expected a tensor of logits: end forward with return and the logits "
            "(return x)",
        ),
    ],
    ids=["dict", "tuple", "none"],
)
def test_a_forward_returning_no_tensor_is_told_how_to_return_the_logits(
    model: nn.Module, message: str, tmp_path: Path
) -> None:
    with pytest.raises(StageFailure) as failed:
        _analyze(model, tmp_path)
    assert (failed.value.stage, failed.value.message) == ("forward", message)


def test_a_forward_wanting_the_labels_is_told_to_give_them_a_default(tmp_path: Path) -> None:
    with pytest.raises(StageFailure) as failed:
        _analyze(_NeedsLabels("logits"), tmp_path)
    assert "missing 1 required positional argument: 'labels'" in failed.value.message
    assert failed.value.message.endswith(
        "; the grader passes the images alone: give forward's other arguments defaults (labels=None)"
    )


def test_a_forward_returning_the_logits_is_counted(tmp_path: Path) -> None:
    channel = _analyze(_Head("logits"), tmp_path)
    assert channel.report.output_shape == [1, 10] and channel.report.stages_done == ["forward", "macs"]
