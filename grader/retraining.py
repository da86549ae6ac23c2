"""Retraining: which runs a rubric asks for, running them in the sandbox, cached baselines.

Every run trains a model from fresh weights under one validated recipe, inside the same
sandbox as the evaluation (training labels go in, test labels never do) and is scored from
test logits on the host. Identical recipes on one task train once. A run's checkpoints live
on the host under the cache folder until it finishes, so a killed run resumes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from grader import data as datasets
from grader.config import REFERENCE_DIR, Settings
from grader.evaluate import evaluate
from grader.files import write_atomic
from grader.jobs import TaskRun, TrainingInputs, failure, run_task
from grader.protocol import Recipe, encode, from_plain, to_plain
from grader.results import TaskResult, TrainingRun
from grader.rubric import CurvesItem, ExperimentItem, RetrainItem, Rubric, ScalingItem
from grader.sandbox import Backend
from grader.submission import TaskEntry


@dataclass
class Context:
    """What every run of one grading shares."""

    backend: Backend
    rubric: Rubric
    settings: Settings
    test: datasets.CachedSplit
    test_labels: np.ndarray
    train: datasets.CachedSplit


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
        reason = f"not retrained: the model did not build and run ({task.error})"
        task.training = {label: TrainingRun(label, to_plain(r), error=reason) for label, r in recipes.items()}
        return
    done: dict[str, TrainingRun] = {}
    for label, recipe in recipes.items():
        key = encode(recipe).decode()
        if key not in done:
            done[key] = run_one(entry, root, recipe, ctx, _key(ctx, entry, recipe, task.id))
        task.training[label] = replace(done[key], label=label)


def run_one(entry: TaskEntry, root: Path, recipe: Recipe, ctx: Context, key: str) -> TrainingRun:
    checkpoints = ctx.settings.cache_dir / "checkpoints" / key
    checkpoints.mkdir(parents=True, exist_ok=True)
    budget = recipe.budget_s or ctx.settings.train_timeout_s
    # The engine stops after the epoch that uses up the budget and still evaluates, so a
    # slow model ends with a result (stopped early) rather than being killed at the deadline.
    inputs = TrainingInputs(
        replace(recipe, budget_s=budget),
        ctx.train.images_path,
        ctx.train.labels_path,
        checkpoints,
        timeout_s=budget + ctx.settings.task_timeout_s,
    )
    with tempfile.TemporaryDirectory(prefix="grader-train-") as work:
        run, _ = run_task(
            ctx.backend, entry, root, ctx.test.images_path, ctx.rubric, ctx.settings, Path(work), inputs
        )
    result = _absorb(TrainingRun("", to_plain(recipe)), run, ctx)
    if result.error is None:
        shutil.rmtree(checkpoints, ignore_errors=True)  # finished: nothing left to resume
    return result


def _absorb(result: TrainingRun, run: TaskRun, ctx: Context) -> TrainingRun:
    report = run.report
    result.seconds = round(run.outcome.seconds, 2)
    if report is not None and report.training is not None:
        result.history = list(report.training.history)
        result.stopped_early = report.training.stopped_early
        result.images_per_second = round(report.training.images_per_second, 1)
        result.resumed_from_epoch = report.training.resumed_from_epoch
    stopped = failure(run)
    if stopped is not None:
        result.error, result.error_stage = stopped.message, stopped.stage
    elif run.logits is not None:
        result.test_accuracy = evaluate(run.logits, ctx.test_labels, ctx.test.classes, 0).top1
    return result


def _key(ctx: Context, entry: TaskEntry, recipe: Recipe, *extra: str) -> str:
    """Names a run's checkpoints: same code, weights-free recipe and data → same folder."""
    ident = json.dumps([entry.model, to_plain(recipe), ctx.train.images_path.name, version("grader"), *extra])
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def baseline(task_id: str, ref: str, ctx: Context) -> TrainingRun:
    """The reference model's run under the rubric's recipe; trained once, then read from the cache."""
    recipe = ctx.rubric.training.recipe.with_changes(ctx.settings.recipe_overrides)
    model_file = REFERENCE_DIR / ref.split(":", 1)[0]
    ident = json.dumps(
        [
            ref,
            model_file.read_text(),
            to_plain(recipe),
            ctx.train.images_path.name,
            version("grader"),
        ]
    )
    cache = ctx.settings.cache_dir / "baselines" / f"{hashlib.sha256(ident.encode()).hexdigest()[:24]}.json"
    if cache.is_file():
        return from_plain(TrainingRun, json.loads(cache.read_text()))
    entry = TaskEntry(task_id, ref, weights="", preprocess=ctx.rubric.preprocess)
    result = run_one(entry, REFERENCE_DIR, recipe, ctx, cache.stem)
    result.label = f"baseline:{ref}"
    if result.error is None:
        write_atomic(cache, encode(result))
    return result
