"""What crosses the sandbox boundary, both ways, as one set of plain dataclasses.

The host writes a ``HarnessJob`` (``encode``) to the job's folder; the harness inside the
sandbox reads it back (``decode``), does the job and writes a ``HarnessReport`` after every
stage. The host reads that report back with ``decode`` too, and since everything the sandbox
writes is untrusted, decoding validates every field and refuses unknown keys. Both sides
import this module, so it imports nothing of the grader's: only the standard library,
``annotated_types`` for the bounds of a field, and pydantic for the codec.

``Recipe`` (how the grader retrains a model) is written here once: rubrics and manifests are
validated into it on the host and the training engine reads it inside.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from annotated_types import Ge, Gt, Le, Lt, MaxLen
from pydantic import TypeAdapter

T = TypeVar("T")
# Unknown keys are an error: a field the other side does not know about is a bug or a forgery.
_STRICT: Any = {"extra": "forbid"}

Optimizer = Literal["sgd", "adam", "adamw"]
Schedule = Literal["none", "step", "multistep", "cosine", "onecycle"]
Counter = Literal["thop", "ptflops"]
COUNTERS: tuple[Counter, ...] = ("thop", "ptflops")  # every model is counted under each
Triple = tuple[float, float, float]
Positive = Annotated[float, Gt(0)]

# What the harness may report is bounded here, so a forged or runaway report is refused before
# the host draws or stores any of it (the harness itself keeps within these, see counting.py).
MAX_MESSAGE = 4000  # an error message, with the student's exception text
MAX_ROWS = 1000  # rows of the layer table
MAX_BLOCKS = 64  # blocks of the model diagram
Name = Annotated[str, MaxLen(200)]  # a module's name or type, a device, a stage
Message = Annotated[str, MaxLen(MAX_MESSAGE)]
Shape = Annotated[list[int], MaxLen(8)]


def encode(value: Any) -> bytes:
    """``value`` (a dataclass of this module, or a container of them) as JSON."""
    return _adapter(type(value)).dump_json(value)


def decode(kind: type[T], data: bytes | str) -> T:
    """JSON as ``kind``, every field checked; raises ``pydantic.ValidationError``."""
    return _adapter(kind).validate_json(data)


def from_plain(kind: type[T], data: Any) -> T:
    """Parsed JSON or YAML (dicts and lists) as ``kind``, every field checked."""
    return _adapter(kind).validate_python(data)


def to_plain(value: Any) -> Any:
    """``value`` as dicts and lists of JSON types."""
    return _adapter(type(value)).dump_python(value, mode="json")


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(kind: Any) -> TypeAdapter[Any]:
    """One adapter per type, built on first use (building one costs milliseconds)."""
    if kind not in _ADAPTERS:
        _ADAPTERS[kind] = TypeAdapter(kind)
    return _ADAPTERS[kind]


# --- how to train ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """One way to train a model: optimizer, lr schedule, epochs, augmentation, data.

    Schedules are a function of the optimizer step (``grader.inside.engine.lr_factor``): linear
    warmup over ``warmup_epochs``, then cosine, one-cycle, or step/multistep decays that change
    at epoch boundaries.
    """

    __pydantic_config__: ClassVar[Any] = _STRICT

    optimizer: Optimizer = "sgd"  # momentum and nesterov are SGD's only
    lr: Annotated[float, Gt(0), Le(10)] = 0.05  # peak lr, reached after warmup
    momentum: Annotated[float, Ge(0), Lt(1)] = 0.9
    nesterov: bool = True
    weight_decay: Annotated[float, Ge(0), Le(1)] = 5e-4  # L2 for sgd/adam, decoupled for adamw
    schedule: Schedule = "cosine"
    step_size: Annotated[int, Ge(1)] = 10  # epochs, for "step"
    milestones: tuple[int, ...] = (50, 75)  # epochs, for "multistep"
    gamma: Annotated[float, Gt(0), Le(1)] = 0.1
    warmup_epochs: Annotated[float, Ge(0)] = 0.0
    epochs: Annotated[int, Ge(1), Le(1000)] = 10
    batch_size: Annotated[int, Ge(1), Le(8192)] = 256
    label_smoothing: Annotated[float, Ge(0), Lt(1)] = 0.0
    crop_padding: Annotated[int, Ge(0), Le(16)] = 4  # as RandomCrop(32, padding=4); 0 = no crop
    flip: bool = True
    cutout: Annotated[int, Ge(0), Le(32)] = 0  # side of the cutout square, 0 = off
    normalize: bool = True
    mean: Triple = (0.4914, 0.4822, 0.4465)
    std: tuple[Positive, Positive, Positive] = (0.2470, 0.2435, 0.2616)
    # A fixed, seeded, class-stratified subset of what the validation split leaves.
    train_fraction: Annotated[float, Gt(0), Le(1)] = 1.0
    val_size: Annotated[int, Ge(0)] = 5000  # carved from the training split (seeded, stratified); 0: none
    seed: int = 0
    # Stop after the epoch during which training time passes this many seconds.
    budget_s: Positive | None = None

    def __post_init__(self) -> None:
        if self.optimizer == "sgd" and self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")

    def with_changes(self, changes: dict[str, Any]) -> Recipe:
        """A copy with ``changes`` applied, validated again (ValidationError names the key)."""
        return from_plain(Recipe, {**to_plain(self), **changes})

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must agree with to be resumed; the budget may change between runs."""
        return {k: v for k, v in to_plain(self).items() if k != "budget_s"}


# --- the job going in -----------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Resource caps of one job; each backend enforces what its platform allows and says so.

    Every value comes from ``grader.config.Settings``; there are no defaults here.
    """

    address_space_bytes: int  # RLIMIT_AS; bounds runaway allocations, not the working set
    file_size_bytes: int  # RLIMIT_FSIZE: the largest single file the job may write
    memory_bytes: int  # resident memory (cgroup / container), no swap
    pids: int  # processes and threads (cgroup / container)
    cpus: float  # CPU time share (cgroup / container)
    output_bytes: int  # the whole output directory
    log_bytes: int  # stdout + stderr kept; the rest is discarded
    open_files: int
    tmpfs_bytes: int

    def as_dict(self) -> dict[str, str]:
        return {
            "address space": f"{self.address_space_bytes / 2**30:.0f} GiB",
            "largest file written": f"{self.file_size_bytes / 2**20:.0f} MiB",
            "open files": str(self.open_files),
            "/tmp size": f"{self.tmpfs_bytes / 2**20:.0f} MiB",
            "core dumps": "off",
        }


@dataclass(frozen=True)
class NotebookRef:
    """The module the host built from a notebook, and where its lines come from."""

    module: str  # path of the built module, as the job sees it
    # (module line, cell, cell line): the first line of each kept block of cells.
    origins: tuple[tuple[int, int, int], ...] = ()
    problem: str | None = None  # the notebook could not be read; the import stage says why


@dataclass(frozen=True)
class TrainingJob:
    """What a retraining adds: the recipe, the labeled training split and a checkpoint folder.

    A training job never sees the test images: it leaves the trained weights in the checkpoint
    folder as ``FINAL_WEIGHTS``, and an evaluation job like any other measures them.
    """

    recipe: Recipe
    train_images: str
    train_labels: str  # training labels may enter the sandbox; test labels never do
    checkpoints: str  # kept on the host between attempts, so a killed job resumes
    # Above 0: only time this many training steps, for the host's estimate of a run's length.
    time_steps: int = 0


FINAL_WEIGHTS = "final.pt"  # the state_dict a finished training job leaves in its checkpoint folder


@dataclass(frozen=True)
class HarnessJob:
    """One task of one submission for ``python -m grader.inside``: with ``images``, build the
    model, count it, load ``weights_path`` and write logits for the images; with ``training``,
    retrain the model from fresh weights. Paths are as the job sees them."""

    __pydantic_config__: ClassVar[Any] = _STRICT

    submission: str
    model: str  # "file.py:Callable" or "file.ipynb:Callable", relative to the submission
    weights: str  # the weights file as the student names it, for messages
    out: str  # the job's only writable folder
    device: Literal["auto", "cpu", "cuda"]
    mean: Triple
    std: Triple
    num_classes: int
    batch_size: int
    max_model_bytes: int
    images: str | None = None  # (N, 32, 32, 3) uint8 images to evaluate, unlabeled
    # Where given, the images are evaluated once under each (mean, std) in turn instead of under
    # the job's own: N rows of logits each, in this order.
    normalizations: tuple[tuple[Triple, Triple], ...] = ()
    # The top-k predictions the host reads from those logits (its accuracies): the fast pass
    # computes in float32 again every image whose k-th place it could have ranked differently.
    ranks: tuple[Annotated[int, Ge(1)], ...] = (1, 3)
    weights_path: str | None = None  # where the weights are read (default: weights, in the submission)
    input_shape: tuple[int, int, int] = (3, 32, 32)
    counters: tuple[Counter, ...] = COUNTERS
    notebook: NotebookRef | None = None
    # A .py model file's definitions only, built by the host: imported when the file's own
    # module-level code fails or runs past import_budget_s.
    definitions: NotebookRef | None = None
    import_budget_s: float | None = None
    # Packages the rubric says the sandbox carries, as pip requirements (checked, and reported
    # if absent or at another version).
    packages: tuple[Name, ...] = ()
    training: TrainingJob | None = None
    # Seconds after which the job ends itself, should its grader be gone and no longer end it.
    deadline_s: float | None = None


# --- the report coming back -----------------------------------------------------------------

# A line of the job's stdout that starts with this says how far a long stage has got (a
# ``Progress`` as JSON). The host reads such lines as the job runs, for progress bars and for
# what a job that ran out of time was doing; anything may print one, so it is never trusted.
PROGRESS_MARK = "\x1egrader-progress "


@dataclass(frozen=True)
class Progress:
    __pydantic_config__: ClassVar[Any] = _STRICT

    stage: Literal["inference", "training", "timing"]
    done: int  # images (inference) or optimizer steps (training, timing) so far
    total: int
    epoch: int = 0  # training: the epoch under way, 1-based
    epochs: int = 0


@dataclass
class LayerRow:
    """One row of the torchsummary-style table."""

    __pydantic_config__: ClassVar[Any] = _STRICT

    name: Name  # e.g. "Conv2d-1"
    output_shape: Shape  # batch dimension shown as -1
    params: int


@dataclass
class Summary:
    __pydantic_config__: ClassVar[Any] = _STRICT

    rows: Annotated[list[LayerRow], MaxLen(MAX_ROWS)]
    total_params: int
    trainable_params: int
    input_mb: float
    forward_backward_mb: float
    params_mb: float
    total_mb: float
    rows_omitted: int = 0  # rows past MAX_ROWS, counted and not kept


@dataclass
class DiagramNode:
    """A top-level block of the model, as drawn in the diagram."""

    __pydantic_config__: ClassVar[Any] = _STRICT

    name: Name
    type: Name
    output_shape: Shape
    params: int
    residual_adds: int = 0


@dataclass
class EpochRecord:
    __pydantic_config__: ClassVar[Any] = _STRICT

    epoch: int  # 1-based
    train_loss: float  # on the augmented batches, in train mode
    train_acc: float  # percent
    val_loss: float | None  # None without a validation set
    val_acc: float | None
    lr: float  # at the epoch's last step
    seconds: float  # training and validation


@dataclass
class TrainingReport:
    """How a retraining went, as the engine measured it."""

    __pydantic_config__: ClassVar[Any] = _STRICT

    history: Annotated[list[EpochRecord], MaxLen(1000)]
    stopped_early: Message | None
    images_per_second: float  # training steps of this run only
    channels_last: bool
    nchw_after: Name | None  # the module after which activations go back to NCHW
    resumed_from_epoch: int | None


@dataclass
class HarnessReport:
    """Everything the harness says, rewritten after each stage so a later crash keeps it."""

    __pydantic_config__: ClassVar[Any] = _STRICT

    stages_done: Annotated[list[Name], MaxLen(32)] = field(default_factory=list)
    error: Message | None = None
    error_stage: Name | None = None
    device: Name | None = None
    # What the sandbox graded with: Python and the packages that make the figures, by name.
    versions: Annotated[dict[Name, Name], MaxLen(16)] = field(default_factory=dict)
    params: int | None = None
    trainable_params: int | None = None
    output_shape: Shape | None = None
    residual_adds: int | None = None
    module_counts: Annotated[dict[Name, int], MaxLen(500)] = field(default_factory=dict)
    summary: Summary | None = None
    diagram: Annotated[list[DiagramNode], MaxLen(MAX_BLOCKS)] = field(default_factory=list)
    diagram_omitted: int = 0  # blocks past MAX_BLOCKS, counted and not kept
    macs: dict[Counter, int] = field(default_factory=dict)
    # A counter that could not count the model, and why; the other counters and stages go on.
    macs_failed: dict[Counter, Message] = field(default_factory=dict)
    forward_ok: bool = False
    weights_loaded: bool = False
    weights_fingerprint: Annotated[list[float], MaxLen(64)] | None = None
    logits_shape: Shape | None = None
    harness_seconds: float | None = None
    stage_seconds: Annotated[dict[Name, float], MaxLen(32)] = field(default_factory=dict)
    started_at: float | None = None  # wall clock, so the host can measure the sandbox's start-up
    training: TrainingReport | None = None
    # What the TA should know about how the model was loaded (e.g. from its definitions only).
    notes: Annotated[list[Message], MaxLen(16)] = field(default_factory=list)
    # Packages the student's code imported that the sandbox lacks (given stand-ins), and the
    # rubric's packages the sandbox lacks.
    missing_packages: Annotated[list[Name], MaxLen(64)] = field(default_factory=list)
    absent_packages: Annotated[list[Name], MaxLen(64)] = field(default_factory=list)

    def update(self, **fields: Any) -> None:
        """Set measured fields by name; a name the report does not have is a bug."""
        for name, value in fields.items():
            if name not in _REPORT_FIELDS:
                raise AttributeError(f"HarnessReport has no field {name!r}")
            setattr(self, name, value)


_REPORT_FIELDS = frozenset(f.name for f in dataclasses.fields(HarnessReport))
