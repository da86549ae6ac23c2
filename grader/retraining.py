"""Retraining: which runs a rubric asks for, running them in the sandbox, cached baselines.

Every run trains a model from fresh weights under one validated recipe in a training job (the
training split with its labels goes in; no test image does), then measures the trained
weights with an evaluation job like any submitted weights (grader/measure.py). Identical
recipes on one task train once.

Checkpoints let a killed run resume, and they belong to one submission only: the folder is
named by the student, the submission's content hash, the task, the recipe, the data and the
grader's version, and is locked while a run uses it. After every training job the host notes
each file the job left there with its SHA-256 in a record the sandbox never sees; before the
next attempt anything else in the folder is removed, so a job resumes only from files the
host itself recorded for this same submission and recipe.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

from grader import data as datasets
from grader.config import REFERENCE_DIR, Settings
from grader.files import UntrustedFileError, open_untrusted, sha256, write_atomic
from grader.jobs import Failure, TaskRun, TrainingInputs, failure, run_task
from grader.measure import TestSet, measure
from grader.protocol import FINAL_WEIGHTS, Progress, Recipe, encode, from_plain, to_plain
from grader.results import NOT_THE_STUDENTS, TaskResult, TrainingRun
from grader.rubric import CurvesItem, ExperimentItem, Preprocess, RetrainItem, Rubric, ScalingItem
from grader.sandbox import Backend
from grader.sandbox.leftovers import work_dir
from grader.submission import TaskEntry

ATTEMPTS = 2  # a training job the grader or the machine failed runs once more
# How a run can end that a later attempt at the same submission resumes from its checkpoints.
RESUMABLE = {"timeout", *NOT_THE_STUDENTS}


@dataclass
class Context:
    """What every run of one grading shares."""

    backend: Backend
    rubric: Rubric
    settings: Settings
    test: TestSet
    train: datasets.CachedSplit
    owner: str = "reference"  # whose runs these are: "<student id>:<submission sha256>"
    advance: Callable[[Progress], None] | None = None  # how far a job has got, while it runs


def plan(
    rubric: Rubric,
    task_id: str,
    student_recipe: dict[str, Any] | None,
    overrides: dict[str, Any] | None = None,
) -> tuple[dict[str, Recipe], list[str]]:
    """The recipes to train for ``task_id``, by run label, and warnings about the student's recipe.

    ``overrides`` (Settings.recipe_overrides) are applied last, to every run.
    """
    base = rubric.training.recipe
    runs: dict[str, Recipe] = {}
    warnings: list[str] = []
    for item in rubric.items:
        if isinstance(item, RetrainItem | CurvesItem) and item.task == task_id:
            recipe, warning = _retrain_recipe(rubric, item, student_recipe)
            runs.setdefault("retrain", recipe)
            warnings += [warning] if warning else []
        elif isinstance(item, ExperimentItem) and item.task == task_id:
            runs |= {
                f"experiment:{name}": base.with_changes(changes) for name, changes in item.variants.items()
            }
        elif isinstance(item, ScalingItem) and task_id in item.tasks:
            runs |= {f"scaling:{f:g}": base.with_changes({"train_fraction": f}) for f in item.fractions}
    return {label: recipe.with_changes(overrides or {}) for label, recipe in runs.items()}, warnings


def _retrain_recipe(
    rubric: Rubric, item: RetrainItem | CurvesItem, asked: dict[str, Any] | None
) -> tuple[Recipe, str | None]:
    recipe = rubric.training.recipe.with_changes(getattr(item, "changes", {}))
    if not asked or not getattr(item, "use_student_recipe", True):
        return recipe, None
    try:
        return rubric.training.student.apply(recipe, asked), None
    except ValueError as err:
        return (
            recipe,
            f"submission.yaml: tasks.{item.task}.recipe was not used ({err}); the rubric's recipe was",
        )


def retrain_task(
    task: TaskResult, entry: TaskEntry, root: Path, recipes: dict[str, Recipe], ctx: Context
) -> None:
    """Fill ``task.training``; a model that never built gets each run's reason instead."""
    if not task.forward_ok:
        reason = f"not retrained: task {task.id} stopped at stage {task.error_stage}"
        task.training = {label: TrainingRun(label, to_plain(r), error=reason) for label, r in recipes.items()}
        return
    done: dict[str, TrainingRun] = {}
    for label, recipe in recipes.items():
        key = encode(recipe).decode()
        if key not in done:
            done[key] = run_one(entry, root, recipe, ctx)
        task.training[label] = replace(done[key], label=label)


def run_one(entry: TaskEntry, root: Path, recipe: Recipe, ctx: Context) -> TrainingRun:
    """Train ``entry``'s model under ``recipe`` (resuming from this submission's own checkpoints),
    then measure the trained weights on the test set."""
    result = TrainingRun("", to_plain(recipe))
    with _checkpoints(ctx, _key(ctx, entry, recipe)) as folder:
        stopped = _train(entry, root, recipe, ctx, folder, result)
        if stopped is None:
            stopped = _measure(entry, root, recipe, ctx, folder.path / FINAL_WEIGHTS, result)
        if stopped is not None:
            result.error, result.error_stage = stopped.message, stopped.stage
        if stopped is None or stopped.stage not in RESUMABLE:
            folder.forget()  # finished, or ended in a way another attempt would end the same
    return result


def _train(
    entry: TaskEntry, root: Path, recipe: Recipe, ctx: Context, folder: _Checkpoints, result: TrainingRun
) -> Failure | None:
    budget = recipe.budget_s or ctx.settings.train_timeout_s
    # The engine stops after the epoch that uses up the budget and still leaves its weights,
    # so a slow model ends with a result (stopped early) rather than being killed at the deadline.
    inputs = TrainingInputs(
        replace(recipe, budget_s=budget),
        ctx.train.images_path,
        ctx.train.labels_path,
        folder.path,
        timeout_s=budget + ctx.settings.task_timeout_s,
    )
    for _ in range(ATTEMPTS):
        folder.keep_recorded()
        with work_dir("train") as work:
            run = _training_job(ctx, entry, root, work, inputs, folder.recording(ctx.advance))
        folder.record()
        stopped = failure(run)
        if stopped is None or stopped.stage not in NOT_THE_STUDENTS:
            break
    result.seconds = round(run.outcome.seconds, 2)
    report = run.report.training if run.report is not None else None
    if report is not None:
        result.history = list(report.history)
        result.stopped_early = report.stopped_early
        result.images_per_second = round(report.images_per_second, 1)
        result.resumed_from_epoch = report.resumed_from_epoch
    return stopped


def _measure(
    entry: TaskEntry, root: Path, recipe: Recipe, ctx: Context, weights: Path, result: TrainingRun
) -> Failure | None:
    """The trained weights, measured as submitted ones are, with the recipe's normalization."""
    mean, std = (recipe.mean, recipe.std) if recipe.normalize else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    trained = replace(entry, preprocess=Preprocess(mean=mean, std=std), weights=FINAL_WEIGHTS)
    measured = measure(ctx.backend, trained, root, ctx.rubric, ctx.settings, ctx.test, weights, ctx.advance)
    if measured.evaluation is not None:
        result.test_accuracy, result.probe = measured.evaluation.top1, measured.evaluation.probe
    return measured.failure


TIMED_STEPS = 4  # training steps timed to estimate a model's speed (after one to warm up)


@dataclass(frozen=True)
class Estimate:
    """How long the planned retrainings would take here, from a few timed steps of each model."""

    seconds: float
    runs: int
    epochs: int  # in all runs together
    images: int  # the most training images of one epoch
    speeds: dict[str, float]  # task id (or "baseline of <task>") -> training images per second
    device: str

    def brief(self, budget_s: float) -> str:
        """The reason a retraining item gives, beside the whole estimate in the warnings."""
        return (
            f"retraining would take about {_duration(self.seconds)} on this {self.device}, past "
            f"--train-budget ({_duration(budget_s)}); the warnings give the estimate"
        )

    def over(self, budget_s: float) -> str | None:
        """Why the retrainings are not started, when they would take more than ``budget_s``."""
        if self.seconds <= budget_s:
            return None
        rates = ", ".join(f"{speed:,.0f} images/s ({what})" for what, speed in self.speeds.items())
        return (
            f"retraining would take about {_duration(self.seconds)} on this {self.device}: {self.runs} "
            f"run(s), {self.epochs} epochs in all, of up to {self.images:,} images, at {rates}; run on "
            "a GPU, raise --train-budget, or --recipe epochs=1 for a look"
        )


def estimate(
    plans: dict[str, dict[str, Recipe]], entries: dict[str, TaskEntry], root: Path, ctx: Context
) -> Estimate | None:
    """Time a few training steps of every model the plans retrain, and of the baselines not
    cached yet (a job each, in the sandbox), and add the runs up; None when no model could be
    timed (their runs then fail quickly anyway)."""
    models = [(task_id, entries[task_id], root, recipes) for task_id, recipes in plans.items()]
    models += [
        (
            f"baseline of {task_id}",
            _reference(task_id, ctx.rubric.training.baselines[task_id], ctx),
            REFERENCE_DIR,
            {"": r},
        )
        for task_id, r in untrained_baselines(ctx).items()
    ]
    seconds, runs, epochs, most = 0.0, 0, 0, 0
    speeds: dict[str, float] = {}
    for what, entry, folder, recipes in models:
        distinct = list({encode(r): r for r in recipes.values()}.values())
        speed = _speed(entry, folder, distinct[0], ctx) if distinct else None
        if speed is None:
            continue
        speeds[what] = speed
        for recipe in distinct:
            images = _images_per_epoch(recipe, ctx.train)
            seconds += recipe.epochs * images / speed
            runs, epochs, most = runs + 1, epochs + recipe.epochs, max(most, images)
    if not speeds:
        return None
    return Estimate(seconds, runs, epochs, most, speeds, _device_name(ctx))


def _speed(entry: TaskEntry, root: Path, recipe: Recipe, ctx: Context) -> float | None:
    """Training images per second of the entry's model under ``recipe``, in a job of its own."""
    with work_dir("timing") as work:
        checkpoints = work / "checkpoints"  # nothing is written there: the job only times steps
        checkpoints.mkdir()
        timeout = ctx.settings.task_timeout_s
        inputs = TrainingInputs(recipe, ctx.train.images_path, ctx.train.labels_path, checkpoints, timeout)
        run = _training_job(ctx, entry, root, work, inputs, ctx.advance, TIMED_STEPS)
    report = run.report.training if run.report is not None else None
    if failure(run) is not None or report is None or report.images_per_second <= 0:
        return None
    return report.images_per_second


def _training_job(
    ctx: Context,
    entry: TaskEntry,
    root: Path,
    work: Path,
    inputs: TrainingInputs,
    on_progress: Callable[[Progress], None] | None,
    time_steps: int = 0,
) -> TaskRun:
    """One training job in the sandbox: a retraining, or with ``time_steps`` only their timing."""
    run, _ = run_task(
        ctx.backend,
        entry,
        root,
        ctx.rubric,
        ctx.settings,
        work,
        training=inputs,
        on_progress=on_progress,
        time_steps=time_steps,
    )
    return run


def _images_per_epoch(recipe: Recipe, train: datasets.CachedSplit) -> int:
    available = len(train.labels()) - recipe.val_size
    return round(recipe.train_fraction * available) // recipe.batch_size * recipe.batch_size


def _device_name(ctx: Context) -> str:
    return "GPU" if ctx.settings.device == "cuda" else "machine"


def _duration(seconds: float) -> str:
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def _key(ctx: Context, entry: TaskEntry, recipe: Recipe) -> str:
    """Names a run's checkpoints: one submission's model, weights-free recipe and data."""
    ident = json.dumps(
        [ctx.owner, entry.id, entry.model, recipe.identity(), ctx.train.images_path.name, version("grader")]
    )
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


@dataclass
class _Checkpoints:
    """A run's checkpoint folder and the host's record of what it holds (never mounted)."""

    path: Path
    record_path: Path
    max_bytes: int

    def recorded(self) -> dict[str, str]:
        try:
            data = json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def keep_recorded(self) -> None:
        """Remove whatever the host did not record: a job resumes from recorded files only."""
        recorded = self.recorded()
        for entry in list(os.scandir(self.path)):
            digest = self._digest(Path(entry.path))
            if digest is None or recorded.get(entry.name) != digest:
                _remove(Path(entry.path))

    def record(self) -> None:
        """Note every regular file a job left, with its hash (up to the checkpoint size limit)."""
        found = {}
        for entry in os.scandir(self.path):
            digest = self._digest(Path(entry.path))
            if digest is not None:
                found[entry.name] = digest
        write_atomic(self.record_path, json.dumps(found, sort_keys=True).encode())

    def recording(self, advance: Callable[[Progress], None] | None) -> Callable[[Progress], None]:
        """``advance``, recording the folder each time a training job starts an epoch: the
        epoch before it left its checkpoint, which a run after a crash of the host resumes from."""
        epochs = [0]

        def on_progress(progress: Progress) -> None:
            if progress.stage == "training" and progress.epoch != epochs[0]:
                epochs[0] = progress.epoch
                self.record()
            if advance is not None:
                advance(progress)

        return on_progress

    def forget(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.record_path.unlink(missing_ok=True)

    def _digest(self, path: Path) -> str | None:
        try:
            with open_untrusted(path, self.max_bytes) as handle:
                return sha256(handle)
        except (UntrustedFileError, FileNotFoundError):
            return None


@contextlib.contextmanager
def _checkpoints(ctx: Context, key: str) -> Iterator[_Checkpoints]:
    """The run's folder under the cache, held under a lock for as long as the run lasts."""
    base = ctx.settings.cache_dir / "checkpoints"
    folder = _Checkpoints(base / key, base / f"{key}.record.json", ctx.settings.max_checkpoint_bytes)
    folder.path.mkdir(parents=True, exist_ok=True)
    with open(base / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield folder


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def baseline(task_id: str, ref: str, ctx: Context) -> TrainingRun:
    """The reference model's run under the rubric's recipe; trained once, then read from the cache."""
    recipe, cache = _baseline(ref, ctx)
    if cache.is_file():
        return from_plain(TrainingRun, json.loads(cache.read_text()))
    result = run_one(_reference(task_id, ref, ctx), REFERENCE_DIR, recipe, replace(ctx, owner="reference"))
    result.label = f"baseline:{ref}"
    if result.error is None:
        write_atomic(cache, encode(result))
    return result


def untrained_baselines(ctx: Context) -> dict[str, Recipe]:
    """The rubric's baselines not in the cache yet, by task id, with their recipes."""
    found = {}
    for task_id, ref in ctx.rubric.training.baselines.items():
        recipe, cache = _baseline(ref, ctx)
        if not cache.is_file():
            found[task_id] = recipe
    return found


def _baseline(ref: str, ctx: Context) -> tuple[Recipe, Path]:
    """A baseline's recipe, and where its run is cached (by model code, recipe, data, version)."""
    recipe = ctx.rubric.training.recipe.with_changes(ctx.settings.recipe_overrides)
    model_file = REFERENCE_DIR / ref.split(":", 1)[0]
    ident = json.dumps(
        [ref, model_file.read_text(), recipe.identity(), ctx.train.images_path.name, version("grader")]
    )
    return (
        recipe,
        ctx.settings.cache_dir / "baselines" / f"{hashlib.sha256(ident.encode()).hexdigest()[:24]}.json",
    )


def _reference(task_id: str, ref: str, ctx: Context) -> TaskEntry:
    return TaskEntry(task_id, ref, weights="", preprocess=ctx.rubric.preprocess)
