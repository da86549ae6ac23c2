"""The records handed from stage to stage, and written to ``results.json``.

Everything here is plain data (no torch), so scoring and reporting can run from a
stored ``results.json`` without touching a model. The records measured inside the sandbox
(layer table, diagram, epochs) are ``grader.protocol``'s, used here as they came back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from grader.protocol import Counter, DiagramNode, EpochRecord, LayerRow, Summary, from_plain

# "not_checked": the grading that produced this result left the item's evidence out on
# purpose (--skip-training, or grader ci's quick profile); a full grading scores it.
ItemStatus = Literal["pass", "partial", "fail", "error", "manual", "not_checked"]
TaskStatus = Literal["ok", "error"]
# What a model's outputs are, told from their values (grader/evaluate.py): the contract asks
# for logits; a model ending in softmax returns probabilities, one in log_softmax log-probabilities.
OutputKind = Literal["logits", "probabilities", "log-probabilities"]
# How an item reads where a test passes or fails (JUnit, Gradescope, the CI summary and its
# exit policy): only full points pass; a partial score is a failure whose message says its
# points; an item this grading did not score (TA review, not checked) is skipped.
Outcome = Literal["passed", "failed", "skipped"]
OUTCOMES: dict[str, Outcome] = {
    "pass": "passed", "partial": "failed", "fail": "failed", "error": "failed",
    "manual": "skipped", "not_checked": "skipped",
}  # fmt: skip
# Stages of a failure that is not the student's doing: the grader's own, and the machine's.
# Such a failure is tried once more; if it stays, the report asks for a regrade and run-all
# grades the student again on its next run.
NOT_THE_STUDENTS = {"internal": "the grader", "infrastructure": "the machine"}


@dataclass
class ProbeCheck:
    """The secret probe (grader/probe.py): accuracy on some test images unchanged and slightly
    perturbed. A classifier loses a few points; a model that memorised the test set, most."""

    images: int
    top1_original: float  # percent, on the probed test images as they are
    top1_perturbed: float  # percent, on their perturbed copies
    flagged: bool  # the gap is larger than Settings.probe_gap_points

    @property
    def gap(self) -> float:
        return round(self.top1_original - self.top1_perturbed, 2)


@dataclass
class Evaluation:
    """Metrics computed on the host from the logits the sandbox returned."""

    n_images: int
    top1: float  # percent
    top3: float | None  # percent; None where the rubric shows top-1 only
    per_class: dict[str, float]  # class name -> accuracy percent
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    misclassified: list[tuple[int, int, int]]  # (test index, true, predicted)
    nonfinite_rows: int = 0
    outputs: OutputKind = "logits"
    # Set when only the first this-many test images of each class were evaluated (grader ci).
    subset_per_class: int | None = None
    probe: ProbeCheck | None = None


@dataclass
class TrainingRun:
    """One retraining of a model under one recipe, measured by the grader."""

    label: str  # e.g. "retrain", "experiment:+augmentation", "scaling:0.0625"
    recipe: dict[str, Any]
    history: list[EpochRecord] = field(default_factory=list)
    test_accuracy: float | None = None  # percent, computed on the host from the logits
    probe: ProbeCheck | None = None  # the secret probe, as for submitted weights
    error: str | None = None
    error_stage: str | None = None
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
    macs: dict[Counter, int] = field(default_factory=dict)
    # A counter that could not count the model, and why (its items cannot be scored).
    macs_failed: dict[Counter, str] = field(default_factory=dict)
    macs_counter: str = "thop"
    module_counts: dict[str, int] = field(default_factory=dict)
    residual_adds: int | None = None
    forward_ok: bool = False
    output_shape: list[int] | None = None
    weights_loaded: bool = False
    summary: Summary | None = None
    diagram: list[DiagramNode] = field(default_factory=list)
    diagram_omitted: int = 0  # blocks of the forward pass past the diagram's limit
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
    # How the model was loaded, when not plainly (e.g. from its file's definitions only), and
    # the packages its code imports that the sandbox lacks.
    notes: list[str] = field(default_factory=list)
    missing_packages: list[str] = field(default_factory=list)
    log_tail: str = ""

    @property
    def test_accuracy(self) -> float | None:
        return self.evaluation.top1 if self.evaluation else None

    @property
    def stopped(self) -> str | None:
        """``"task task1 stopped at stage import: <its error>"``; None for a task that ran through."""
        if self.status != "error":
            return None
        stage, error = self.error_stage or "unknown", self.error or "no message"
        return f"task {self.id} stopped at stage {stage}: {error}"

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

    @property
    def outcome(self) -> Outcome:
        return OUTCOMES[self.status]

    @property
    def outcome_message(self) -> str:
        """The message where only pass or fail is shown: a partial score says its points first."""
        if self.status != "partial":
            return self.message
        return f"partial credit: {self.score:g} of {self.max_score:g} points; {self.message}"


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
    # Findings a TA should look at before the score stands (e.g. a claim far from the
    # measurement): shown first and most prominently, on page 1 and on the console.
    alerts: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    baselines: dict[str, TrainingRun] = field(default_factory=dict)  # task id -> reference model run
    # What graded it: the grader, Python and the packages that make the figures, the sandbox image.
    versions: dict[str, str] = field(default_factory=dict)
    gpu: str | None = None  # the one GPU its jobs were handed (grader/gpus.py), on CUDA

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
    def regrade(self) -> list[str]:
        """The failures of this grading that were the grader's or the machine's, not the student's."""
        found = []
        for task in self.tasks.values():
            if task.error_stage in NOT_THE_STUDENTS:
                found.append(f"{task.id}: {task.error}")
            found += [
                f"{task.id} ({label}): {run.error}"
                for label, run in task.training.items()
                if run.error_stage in NOT_THE_STUDENTS
            ]
        found += [
            f"baseline of {task_id}: {run.error}"
            for task_id, run in self.baselines.items()
            if run.error_stage in NOT_THE_STUDENTS
        ]
        return found

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
        data["regrade"] = self.regrade
        for task_id, task in self.tasks.items():
            data["tasks"][task_id]["test_accuracy"] = task.test_accuracy
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GradeResult:
        """The inverse of ``to_dict``, e.g. for a stored ``results.json``; every field is checked
        (``pydantic.ValidationError``) and the derived keys (``total``, ``max_total``,
        ``pending_manual``, ``not_checked``, a task's ``test_accuracy``) are left out."""
        plain = {k: v for k, v in data.items() if k not in _DERIVED_KEYS}
        plain["tasks"] = {
            task_id: {k: v for k, v in task.items() if k != "test_accuracy"}
            for task_id, task in plain.get("tasks", {}).items()
        }
        return from_plain(GradeResult, plain)


_DERIVED_KEYS = {"total", "max_total", "pending_manual", "not_checked", "regrade"}
__all__ = [
    "DiagramNode", "EpochRecord", "Evaluation", "GradeResult", "HandScore", "ItemResult", "ItemStatus",
    "LayerRow", "ProbeCheck", "Summary", "TaskResult", "TaskStatus", "TrainingRun",
]  # fmt: skip
