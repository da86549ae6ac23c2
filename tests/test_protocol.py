"""grader/protocol.py: what crosses the sandbox boundary, encoded and checked the same way both ways."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from grader.protocol import (
    DiagramNode,
    EpochRecord,
    HarnessJob,
    HarnessReport,
    NotebookRef,
    Recipe,
    Summary,
    TrainingJob,
    TrainingReport,
    decode,
    encode,
    from_plain,
    to_plain,
)


def a_job(**changes: object) -> HarnessJob:
    fields = dict(
        submission="/submission", model="model.py:Net", weights="w.pt", images="/data/x.npy",
        out="/out", device="cpu", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=10,
        batch_size=500, max_model_bytes=2**32,
    )  # fmt: skip
    return HarnessJob(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_job_survives_the_trip_into_the_sandbox() -> None:
    notebook = NotebookRef("/notebook/lab.py", ((3, 2, 1), (10, 4, 1)), None)
    training = TrainingJob(Recipe(epochs=3, milestones=(1, 2)), "/data/ti.npy", "/data/tl.npy", "/ckpt")
    for job in (a_job(), a_job(notebook=notebook, training=training)):
        assert decode(HarnessJob, encode(job)) == job


def test_a_report_with_every_part_survives_the_trip_back() -> None:
    report = HarnessReport(
        stages_done=["start", "inference"],
        summary=Summary([], 10, 10, 0.01, 0.1, 0.0, 0.11),
        macs={"thop": 100},
        training=TrainingReport([EpochRecord(1, 2.0, 10.0, None, None, 0.1, 1.5)], None, 99.0, True, None, 1),
    )
    assert decode(HarnessReport, encode(report)) == report


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"forged": 1}, "forged"),  # a key the harness never writes
        ({"params": "many"}, "params"),
        ({"summary": {"rows": [], "total_params": 1}}, "summary.trainable_params"),
        ({"training": {"history": [{"epoch": 1, "extra": 0}]}}, "training.history.0"),
    ],
)
def test_a_report_the_harness_could_not_have_written_is_refused(change: dict, words: str) -> None:
    data = json.dumps({"stages_done": [], **change})
    with pytest.raises(ValidationError) as caught:
        decode(HarnessReport, data)
    assert words in str(caught.value).replace("\n  ", ".")


def test_the_harness_cannot_set_a_field_the_report_lacks() -> None:
    with pytest.raises(AttributeError, match="no field 'paramz'"):
        HarnessReport().update(paramz=3)


def test_a_recipe_is_checked_field_by_field() -> None:
    with pytest.raises(ValidationError, match="epoch\n  Unexpected keyword argument"):
        from_plain(Recipe, {"lr": 0.1, "epoch": 3})
    with pytest.raises(ValidationError, match="optimizer\n  Input should be 'sgd', 'adam' or 'adamw'"):
        from_plain(Recipe, {"optimizer": "rmsprop"})
    with pytest.raises(ValidationError, match="nesterov needs momentum > 0"):
        Recipe().with_changes({"momentum": 0})
    with pytest.raises(ValidationError, match="lr\n  Input should be greater than 0"):
        Recipe().with_changes({"lr": 0})
    r = from_plain(Recipe, {"milestones": [3, 6], "mean": [0.5, 0.5, 0.5], "budget_s": 60})
    assert r.mean == (0.5, 0.5, 0.5) and r.milestones == (3, 6) and from_plain(Recipe, to_plain(r)) == r


def test_a_recipes_identity_leaves_out_only_its_budget() -> None:
    r = Recipe(budget_s=60)
    assert set(r.identity()) == set(to_plain(r)) - {"budget_s"}
    assert r.identity() == Recipe(budget_s=5).identity() != Recipe(lr=0.1).identity()


def test_a_diagram_block_without_residual_adds_has_none() -> None:
    plain = {"name": "fc", "type": "Linear", "output_shape": [-1, 10], "params": 5130}
    assert decode(DiagramNode, json.dumps(plain)).residual_adds == 0
    block = decode(DiagramNode, json.dumps(plain | {"residual_adds": 2}))
    assert block == DiagramNode("fc", "Linear", [-1, 10], 5130, residual_adds=2)
