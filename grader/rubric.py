"""Rubric files: YAML validated into typed items; every error names ``file: key``.

A rubric declares the assignment's tasks (with optional default entry points a submission
may override in ``submission.yaml``) and the items that score them. Item types:

  model_valid    the model builds and maps a (1, 3, 32, 32) batch to (1, num_classes)
  params_limit   total parameters at most ``max_params``
  flops_limit    MACs under a named counter (``thop`` or ``ptflops``) at most ``max_macs``
  architecture   parameter count near ``expected_params`` and/or required module types
  test_accuracy  piecewise-linear map from measured top-1 accuracy to a fraction of points
  claim          the student's claimed accuracy within ``tolerance`` points of the measured one
  manual         scored later by a TA; shown as pending
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from grader import yamlfile
from grader.config import REFERENCE_DIR, RUBRICS_DIR
from grader.errors import RubricError
from grader.protocol import Counter, Recipe

# The gradebook's columns besides the items' own (grader/report/gradebook.py): no item may take one.
GRADEBOOK_IDENTITY = ("student_id", "name")
GRADEBOOK_TOTALS = ("total", "max_total", "pending_manual", "status")
RESERVED_IDS = frozenset(GRADEBOOK_IDENTITY + GRADEBOOK_TOTALS)


# A pip requirement of the plain kind: a name, extras, an exact version (no URLs, no options).
_REQUIREMENT = r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?(==[A-Za-z0-9.+!_-]+)?$"
Requirement = Annotated[str, StringConstraints(pattern=_REQUIREMENT)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Preprocess(_Strict):
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @field_validator("std")
    @classmethod
    def _positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) <= 0:
            raise ValueError("every std value must be > 0")
        return value


EntryPoint = Annotated[str, StringConstraints(pattern=r"^[^:]+\.(py|ipynb):[A-Za-z_][A-Za-z0-9_]*$")]


class TaskSpec(_Strict):
    """A task; ``model`` and ``weights`` are defaults for submissions whose manifest names none."""

    title: str
    model: EntryPoint | None = None
    weights: str | None = None


class _Item(_Strict):
    id: str
    title: str
    points: float = Field(ge=0)
    task: str | None = None


class ModelValidItem(_Item):
    type: Literal["model_valid"]


class ParamsLimitItem(_Item):
    type: Literal["params_limit"]
    max_params: int = Field(gt=0)


class FlopsLimitItem(_Item):
    type: Literal["flops_limit"]
    max_macs: int = Field(gt=0)
    counter: Counter = "thop"


class ArchitectureItem(_Item):
    type: Literal["architecture"]
    expected_params: int | None = Field(default=None, gt=0)
    params_tolerance: float = Field(default=0.0, ge=0, description="fraction of expected_params")
    required_modules: dict[str, int] = Field(default_factory=dict, description="type -> minimum count")
    min_residual_adds: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _checks_something(self) -> ArchitectureItem:
        if self.expected_params is None and not self.required_modules and not self.min_residual_adds:
            raise ValueError("give expected_params, required_modules or min_residual_adds")
        return self


class Threshold(_Strict):
    accuracy: float = Field(ge=0, le=100)
    fraction: float = Field(ge=0, le=1)


class TestAccuracyItem(_Item):
    __test__: ClassVar[bool] = False  # a rubric item, not a pytest class
    type: Literal["test_accuracy"]
    thresholds: list[Threshold] = Field(min_length=1)

    @field_validator("thresholds")
    @classmethod
    def _increasing(cls, value: list[Threshold]) -> list[Threshold]:
        accs = [t.accuracy for t in value]
        if accs != sorted(accs) or len(set(accs)) != len(accs):
            raise ValueError("accuracies must be strictly increasing")
        return value


class ClaimItem(_Item):
    type: Literal["claim"]
    tolerance: float = Field(default=1.0, ge=0, description="percentage points")


class RatioThreshold(_Strict):
    ratio: float = Field(ge=0, le=2)  # student accuracy / baseline accuracy
    fraction: float = Field(ge=0, le=1)


class RetrainItem(_Item):
    """Retrain the task's model under the rubric's recipe (plus the student's allowed changes)."""

    type: Literal["retrain"]
    changes: dict[str, Any] = Field(default_factory=dict, description="recipe fields for this item")
    use_student_recipe: bool = True
    thresholds: list[Threshold] = Field(default_factory=list)
    ratio_thresholds: list[RatioThreshold] = Field(default_factory=list)

    @model_validator(mode="after")
    def _scored_somehow(self) -> RetrainItem:
        if not self.thresholds and not self.ratio_thresholds:
            raise ValueError("give thresholds (accuracy) and/or ratio_thresholds (to the baseline)")
        return self


class CurvesItem(_Item):
    """The four epoch curves of the task's retraining, drawn next to the baseline's."""

    type: Literal["curves"]
    min_epochs: int = Field(default=2, ge=1)


class ExperimentItem(_Item):
    """A grid of recipe variants retrained on the student's model (e.g. the lab's ablations)."""

    type: Literal["experiment"]
    variants: dict[str, dict[str, Any]] = Field(min_length=1)
    baseline: str
    tolerance: float = Field(default=3.0, ge=0, description="percentage points")
    completeness_weight: float = Field(default=0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _baseline_is_a_variant(self) -> ExperimentItem:
        if self.baseline not in self.variants:
            raise ValueError(f"baseline {self.baseline!r} is not one of the variants")
        return self


class ScalingItem(_Item):
    """Model sizes × training-data fractions → the dataset-size vs accuracy plot."""

    type: Literal["scaling"]
    tasks: list[str] = Field(min_length=1, description="the model sizes, as task ids")
    fractions: list[float] = Field(min_length=2)

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0 < f <= 1 for f in value) or value != sorted(set(value)):
            raise ValueError("fractions must be increasing, each in (0, 1]")
        return value


class StudentBounds(_Strict):
    """What a student's declared recipe may change, and how far."""

    allowed: list[str] = Field(
        default_factory=lambda: [
            "optimizer",
            "lr",
            "momentum",
            "nesterov",
            "weight_decay",
            "schedule",
            "step_size",
            "milestones",
            "gamma",
            "warmup_epochs",
            "label_smoothing",
            "crop_padding",
            "flip",
            "cutout",
            "normalize",
            "mean",
            "std",
            "batch_size",
        ]
    )
    max_epochs: int = Field(default=30, ge=1)

    def apply(self, base: Recipe, asked: dict[str, Any]) -> Recipe:
        """``base`` with the student's changes; refused keys raise ValueError naming them."""
        refused = sorted(set(asked) - set(self.allowed) - {"epochs"})
        if refused:
            raise ValueError(f"the rubric does not let a submission set {', '.join(refused)}")
        try:
            recipe = base.with_changes(asked)
        except ValidationError as err:
            raise ValueError(_first_error(err)) from None
        if recipe.epochs > self.max_epochs:
            raise ValueError(f"epochs {recipe.epochs} is over the rubric's limit of {self.max_epochs}")
        return recipe


class Training(_Strict):
    """How the grader retrains: the base recipe, what students may change, the baselines."""

    recipe: Recipe = Recipe()
    student: StudentBounds = StudentBounds()
    baselines: dict[str, str] = Field(
        default_factory=dict, description="task id -> reference model, e.g. resnet18.py:ResNet18"
    )


class ManualItem(_Item):
    type: Literal["manual"]
    guidance: str = ""


Item = Annotated[
    ModelValidItem
    | ParamsLimitItem
    | FlopsLimitItem
    | ArchitectureItem
    | TestAccuracyItem
    | ClaimItem
    | RetrainItem
    | CurvesItem
    | ExperimentItem
    | ScalingItem
    | ManualItem,
    Field(discriminator="type"),
]


class Rubric(_Strict):
    id: str
    title: str
    num_classes: int = Field(default=10, gt=1)
    preprocess: Preprocess = Preprocess()
    # Whether reports show top-3 accuracy beside top-1. Every accuracy shown is float32's exactly,
    # so each one shown costs the float32 recompute of the images near its boundary (the third
    # and fourth classes lie close together: several times as many images as for top-1).
    top3: bool = True
    # Packages the course's sandbox carries for student models beyond the harness's own, as
    # pip requirements ("timm==1.0.9"); installed when the sandbox is set up, never while grading.
    packages: list[Requirement] = Field(default_factory=list)
    tasks: dict[str, TaskSpec] = Field(min_length=1)
    training: Training = Training()
    items: list[Item] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> Rubric:
        seen: set[str] = set()
        for index, item in enumerate(self.items):
            if item.id in seen:
                raise ValueError(f"items[{index}].id: duplicate id {item.id!r}")
            if item.id in RESERVED_IDS:
                raise ValueError(
                    f"items[{index}].id: {item.id!r} is a column of the gradebook "
                    f"({', '.join(sorted(RESERVED_IDS))}); give the item another id"
                )
            seen.add(item.id)
            if item.type != "manual" and item.task not in self.tasks:
                known = ", ".join(self.tasks)
                raise ValueError(f"items[{index}].task: {item.task!r} is not a task ({known})")
            for task in getattr(item, "tasks", []):
                if task not in self.tasks:
                    raise ValueError(f"items[{index}].tasks: {task!r} is not a task")
        for task, ref in self.training.baselines.items():
            if task not in self.tasks:
                raise ValueError(f"training.baselines: {task!r} is not a task")
            _check_reference(task, ref)
        self._check_recipes()
        return self

    def _check_recipes(self) -> None:
        """Every recipe change must make a valid recipe; a variant name means one recipe per task."""
        variants: dict[tuple[str | None, str], dict[str, Any]] = {}
        for index, item in enumerate(self.items):
            changes = {"changes": getattr(item, "changes", {})}
            changes |= {f"variants.{n}": c for n, c in getattr(item, "variants", {}).items()}
            for key, change in changes.items():
                try:
                    self.training.recipe.with_changes(change)
                except ValidationError as err:
                    raise ValueError(f"items[{index}].{key}: {_first_error(err)}") from None
            for name, change in getattr(item, "variants", {}).items():
                if variants.setdefault((item.task, name), change) != change:
                    raise ValueError(
                        f"items[{index}].variants.{name}: another item of task {item.task} "
                        "names a different recipe the same way; rename one"
                    )

    @property
    def max_total(self) -> float:
        return sum(item.points for item in self.items)


def _check_reference(task: str, ref: str) -> None:
    """A baseline names ``file.py:Callable`` of ``reference_models/``."""
    file, sep, name = ref.partition(":")
    known = ", ".join(sorted(p.name for p in REFERENCE_DIR.glob("*.py")))
    if not sep or not name.isidentifier() or not file.endswith(".py"):
        raise ValueError(f"training.baselines.{task}: {ref!r} is not file.py:Callable (files: {known})")
    if "/" in file or not (REFERENCE_DIR / file).is_file():
        raise ValueError(f"training.baselines.{task}: {file} is not in reference_models/ ({known})")


def find_rubric(name_or_path: str, *, shipped_only: bool = False) -> Path:
    """A path as given, else ``rubrics/<name>.yaml``.

    ``shipped_only``: a name in ``rubrics/`` only, never a path. For a name a student wrote
    (the manifest's ``assignment:``), which must not pick a rubric file of the student's own.
    """
    known = ", ".join(sorted(p.stem for p in RUBRICS_DIR.glob("*.yaml")))
    path = Path(name_or_path)
    if not shipped_only and path.is_file():
        return path
    stem = name_or_path.removesuffix(".yaml")
    named = RUBRICS_DIR / f"{stem}.yaml"
    if stem.replace("-", "").replace("_", "").replace(".", "").isalnum() and named.is_file():
        return named
    if shipped_only:
        raise RubricError(
            f"assignment {name_or_path!r} of the manifest is not a rubric in rubrics/ ({known}); "
            "pass --rubric FILE"
        )
    raise RubricError(f"rubric {name_or_path!r} not found: give a YAML file or one of: {known}")


def load_rubric(path: Path) -> Rubric:
    try:
        data = yamlfile.load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise RubricError(f"{path}: cannot read ({err})") from err
    except yamlfile.YamlError as err:
        raise RubricError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(data, dict):
        raise RubricError(f"{path}: expected a mapping with id, title, tasks and items")
    try:
        return Rubric.model_validate(data)
    except ValidationError as err:
        raise RubricError(f"{path}: {_first_error(err)}") from err


def _first_error(err: ValidationError) -> str:
    """One line: the key path as a person writes it, then what was expected.

    A misspelt key shows up twice (unknown key + missing key); the unknown one names the typo.
    """
    errors = sorted(err.errors(), key=lambda e: e["type"] not in _UNKNOWN_KEY)
    first = errors[0]
    loc = [part for part in first["loc"] if not _is_union_tag(part)]
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    message = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    if first["type"] in _UNKNOWN_KEY:
        message = "unknown key" + _missing_beside(errors, first["loc"]) + " (see docs/rubrics.md)"
    elif first["type"] == "int_from_float":
        message = f"{got!r} is not a whole number"
    quiet = ("missing", "int_from_float", *_UNKNOWN_KEY)  # nothing given, or the message shows it
    suffix = f" (got {got!r})" if first["type"] not in quiet and _short(got) else ""
    more = f"; {len(errors) - 1} more problem(s)" if len(errors) > 1 else ""
    if not key and message.startswith("items["):  # cross-item checks already name their key
        return f"{message}{suffix}{more}"
    return f"{key or 'top level'}: {message}{suffix}{more}"


# pydantic's error types for a key the model does not have (models; dataclasses such as Recipe).
_UNKNOWN_KEY = ("extra_forbidden", "unexpected_keyword_argument")


def _missing_beside(errors: list[Any], loc: tuple[Any, ...]) -> str:
    """For a typo: the required keys missing next to it, which are what was meant."""
    missing = [e["loc"][-1] for e in errors if e["type"] == "missing" and e["loc"][:-1] == loc[:-1]]
    return f"; expected {', '.join(map(str, missing))}" if missing else ""


def _is_union_tag(part: object) -> bool:
    tags = {
        "model_valid",
        "params_limit",
        "flops_limit",
        "architecture",
        "test_accuracy",
        "claim",
        "retrain",
        "curves",
        "experiment",
        "scaling",
        "manual",
    }
    return isinstance(part, str) and part in tags


def _short(value: object) -> bool:
    return isinstance(value, str | int | float) and len(repr(value)) < 60
