"""``GradeResult.from_dict`` rebuilds what ``to_dict`` wrote, through real JSON."""

from __future__ import annotations

import json
from pathlib import Path

from grader.report import write_results_json
from grader.results import (
    DiagramNode,
    EpochRecord,
    Evaluation,
    GradeResult,
    LayerRow,
    Summary,
    TaskResult,
    TrainingRun,
)
from tests.graded import class_results

RECIPE = {"optimizer": "sgd", "lr": 0.05, "schedule": "cosine", "epochs": 2, "flip": True}


def run(label: str, accuracy: float | None) -> TrainingRun:
    history = [
        EpochRecord(1, 1.62, 41.5, 1.40, 49.0, 0.05, 12.5),
        EpochRecord(2, 1.21, 56.25, None, None, 0.0, 12.25),
    ]
    return TrainingRun(label, dict(RECIPE), history, accuracy, images_per_second=3900.5, seconds=25.0)


def realistic() -> GradeResult:
    """A result with every nested record filled in, as the pipeline produces."""
    result = class_results()[1]  # S001: pending manual points, two tasks
    cnn = result.tasks["cnn"]
    cnn.summary = Summary([LayerRow("Conv2d-1", [-1, 32, 32, 32], 896)], 896, 896, 0.01, 0.5, 0.003, 0.52)
    cnn.diagram = [DiagramNode("conv1", "Conv2d", [-1, 32, 32, 32], 896)]
    cnn.evaluation = Evaluation(
        n_images=4,
        top1=75.0,
        top3=100.0,
        per_class={"cat": 50.0, "dog": 100.0},
        confusion=[[1, 1], [0, 2]],
        misclassified=[(3, 0, 1)],
        nonfinite_rows=1,
    )
    cnn.macs = {"thop": 1_000, "ptflops": 1_010}
    cnn.weights_fingerprint = [0.5, -0.25]
    cnn.training = {"retrain": run("retrain", 61.5), "experiment:+flip": run("experiment:+flip", None)}
    cnn.reported_experiments = {"+flip": 60.0}
    cnn.stage_seconds = {"build": 0.4, "evaluate": 3.2}
    result.baselines = {"cnn": run("baseline:simple_cnn.py:SimpleCNN", 70.0)}
    result.warnings = ["notebook.ipynb was not executed"]
    result.class_names = ["cat", "dog"]
    return result


def test_round_trip_through_results_json(tmp_path: Path) -> None:
    original = realistic()
    path = tmp_path / "results.json"
    write_results_json(original, path)
    data = json.loads(path.read_text())
    assert data["total"] == 90 and data["tasks"]["cnn"]["test_accuracy"] == 75.0  # derived keys are there
    restored = GradeResult.from_dict(data)
    assert restored == original
    assert restored.to_dict() == original.to_dict()


def test_nested_records_are_rebuilt_as_their_types() -> None:
    restored = GradeResult.from_dict(json.loads(json.dumps(realistic().to_dict())))
    cnn = restored.tasks["cnn"]
    assert isinstance(cnn, TaskResult) and isinstance(cnn.summary, Summary)
    assert isinstance(cnn.summary.rows[0], LayerRow) and isinstance(cnn.diagram[0], DiagramNode)
    assert isinstance(cnn.evaluation, Evaluation) and cnn.evaluation.misclassified == [(3, 0, 1)]
    assert isinstance(cnn.evaluation.misclassified[0], tuple)
    retrain = cnn.training["retrain"]
    assert isinstance(retrain, TrainingRun) and isinstance(retrain.history[1], EpochRecord)
    assert retrain.history[1].val_loss is None and retrain.recipe == RECIPE
    assert isinstance(restored.baselines["cnn"], TrainingRun)
    assert cnn.test_accuracy == 75.0 and restored.tasks["tiny"].test_accuracy == 60.0
    assert (restored.total, restored.max_total, restored.pending_manual) == (90, 100, 10)
    assert [i.status for i in restored.items] == ["pass", "pass", "pass", "pass", "manual"]


def test_a_failed_task_round_trips() -> None:
    failed = class_results()[3]  # S003: its tiny task stopped at the weights stage
    restored = GradeResult.from_dict(failed.to_dict())
    tiny = restored.tasks["tiny"]
    assert (tiny.status, tiny.error_stage, tiny.evaluation) == ("error", "weights", None)
    assert restored == failed
