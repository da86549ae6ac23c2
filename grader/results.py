"""The records handed from stage to stage, and written to ``results.json``.

Everything here is plain data (no torch), so scoring and reporting can run from a
stored ``results.json`` without touching a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Literal, get_args, get_origin, get_type_hints

# "not_checked": the grading that produced this result left the item's evidence out on
# purpose (--skip-training, or grader ci's quick profile); a full grading scores it.
ItemStatus = Literal["pass", "partial", "fail", "error", "manual", "not_checked"]
TaskStatus = Literal["ok", "error"]


@dataclass
class LayerRow:
    """One row of the torchsummary-style table."""

    name: str  # e.g. "Conv2d-1"
    output_shape: list[int]  # batch dimension shown as -1
    params: int


@dataclass
class Summary:
    rows: list[LayerRow]
    total_params: int
    trainable_params: int
    input_mb: float
    forward_backward_mb: float
    params_mb: float
    total_mb: float


@dataclass
class DiagramNode:
    """A top-level block of the model, as drawn in the diagram."""

    name: str
    type: str
    output_shape: list[int]
    params: int


@dataclass
class Evaluation:
    """Metrics computed on the host from the logits the sandbox returned."""

    n_images: int
    top1: float  # percent
    top3: float  # percent
    per_class: dict[str, float]  # class name -> accuracy percent
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    misclassified: list[tuple[int, int, int]]  # (test index, true, predicted)
    nonfinite_rows: int = 0
    # Set when only the first this-many test images of each class were evaluated (grader ci).
    subset_per_class: int | None = None


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_acc: float  # percent
    val_loss: float | None
    val_acc: float | None
    lr: float
    seconds: float


@dataclass
class TrainingRun:
    """One retraining of a model under one recipe, measured by the grader."""

    label: str  # e.g. "retrain", "experiment:+augmentation", "scaling:0.0625"
    recipe: dict[str, Any]
    history: list[EpochRecord] = field(default_factory=list)
    test_accuracy: float | None = None  # percent, computed on the host from the logits
    error: str | None = None
    stopped_early: str | None = None
    images_per_second: float | None = None
    resumed_from_epoch: int | None = None
    seconds: float | None = None


@dataclass
class TaskResult:
    id: str
    title: str
    status: TaskStatus = "ok"
    error: str | None = None
    error_stage: str | None = None
    model: str | None = None  # "file.py:Callable"
    weights: str | None = None
    weights_fingerprint: list[float] | None = None  # summary of tensor values, for similarity
    params: int | None = None
    trainable_params: int | None = None
    macs: dict[str, int] = field(default_factory=dict)  # counter name -> MACs
    macs_counter: str = "thop"
    module_counts: dict[str, int] = field(default_factory=dict)
    residual_adds: int | None = None
    forward_ok: bool = False
    output_shape: list[int] | None = None
    weights_loaded: bool = False
    summary: Summary | None = None
    diagram: list[DiagramNode] = field(default_factory=list)
    evaluation: Evaluation | None = None
    claimed_test_accuracy: float | None = None
    limits: dict[str, float] = field(default_factory=dict)  # "params", "macs:<counter>"
    device: str | None = None  # where the harness ran the model ("cpu", "cuda")
    sandbox_seconds: float | None = None
    # Retrainings of this task's model, by label; experiment results the student reported.
    training: dict[str, TrainingRun] = field(default_factory=dict)
    reported_experiments: dict[str, float] = field(default_factory=dict)
    # Seconds from the harness's start to the end of each stage inside the sandbox.
    stage_seconds: dict[str, float] = field(default_factory=dict)
    log_tail: str = ""

    @property
    def test_accuracy(self) -> float | None:
        return self.evaluation.top1 if self.evaluation else None

    def fail(self, stage: str, message: str) -> None:
        """Record that this task stopped at ``stage``; later stages do not run."""
        self.status = "error"
        self.error_stage = stage
        self.error = message


@dataclass
class HandScore:
    """A score a TA set by hand (overrides file), with what the grader had given."""

    by: str
    comment: str
    machine_score: float
    machine_status: ItemStatus
    machine_message: str


@dataclass
class ItemResult:
    id: str
    task: str | None
    title: str
    type: str
    score: float
    max_score: float
    status: ItemStatus
    message: str
    override: HandScore | None = None


@dataclass
class GradeResult:
    student_id: str
    student_name: str | None
    rubric: str
    rubric_title: str
    submission_sha256: str
    grader_version: str
    graded_at: str  # ISO 8601, UTC
    device: str
    sandbox: dict[str, Any]
    tasks: dict[str, TaskResult]
    items: list[ItemResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    baselines: dict[str, TrainingRun] = field(default_factory=dict)  # task id -> reference model run

    @property
    def total(self) -> float:
        return round(sum(i.score for i in self.items), 2)

    @property
    def max_total(self) -> float:
        return round(sum(i.max_score for i in self.items), 2)

    @property
    def pending_manual(self) -> float:
        return sum(i.max_score for i in self.items if i.status == "manual")

    @property
    def not_checked(self) -> float:
        """Points of the items this grading left out on purpose (a full grading scores them)."""
        return sum(i.max_score for i in self.items if i.status == "not_checked")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["total"] = self.total
        data["max_total"] = self.max_total
        data["pending_manual"] = self.pending_manual
        data["not_checked"] = self.not_checked
        for task_id, task in self.tasks.items():
            data["tasks"][task_id]["test_accuracy"] = task.test_accuracy
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GradeResult:
        """The inverse of ``to_dict``, e.g. for a stored ``results.json``.

        Nested records are rebuilt from the field types; the derived keys (``total``,
        ``max_total``, ``pending_manual``, ``not_checked``, a task's ``test_accuracy``) are ignored.
        """
        result = _from_plain(cls, data)
        assert isinstance(result, GradeResult)
        return result


_DERIVED_KEYS = {"total", "max_total", "pending_manual", "not_checked", "test_accuracy"}


def _from_plain(kind: Any, value: Any) -> Any:
    """``value`` (parsed JSON) as an instance of the annotated type ``kind``."""
    if value is None:
        return None
    if is_dataclass(kind) and isinstance(kind, type):
        hints = get_type_hints(kind)
        names = {f.name for f in fields(kind) if f.init}
        known = {k: v for k, v in value.items() if k not in _DERIVED_KEYS or k in names}
        return kind(**{k: _from_plain(hints[k], v) for k, v in known.items()})
    origin, args = get_origin(kind), get_args(kind)
    if origin is list:
        return [_from_plain(args[0], v) for v in value]
    if origin is tuple:
        return tuple(value)
    if origin is dict:
        return {k: _from_plain(args[1], v) for k, v in value.items()}
    if origin is not None and origin is not Literal and type(None) in args:  # X | None
        (inner,) = [a for a in args if a is not type(None)]
        return _from_plain(inner, value)
    return value
