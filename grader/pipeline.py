"""grade(submission, rubric, settings) -> Graded: every stage, failures recorded.

Stages: submission → data → for each task: sandboxed evaluation (grader/measure.py) →
retraining (grader/retraining.py) → scoring. A task's failure is written into its
``TaskResult`` and scored as such; only the grader's own problems (no data, no sandbox, bad
rubric) raise. A failure that is the grader's or the machine's, not the student's, is tried
once more, then marked so that the report asks for a regrade and ``run-all`` grades it again.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np

from grader import data as datasets
from grader import renormalize, retraining
from grader.config import Settings
from grader.evaluate import outputs_note
from grader.jobs import job_gpu
from grader.measure import TestSet, measure, prepare
from grader.protocol import HarnessReport, Progress
from grader.results import GradeResult, TaskResult, TrainingRun
from grader.rubric import FlopsLimitItem, ParamsLimitItem, Rubric
from grader.sandbox import Backend, UnsandboxedBackend, pick_backend
from grader.sandbox.leftovers import work_dir
from grader.sandbox.unsafe import WARNING as UNSANDBOXED_WARNING
from grader.scoring import TRAINING_ITEMS, score_all
from grader.submission import Checkout, TaskEntry, load_submission

Stage = Callable[[str], None]  # a line saying what the grading does now
Advance = Callable[[Progress], None]  # how far a sandbox job has got within its stage


@dataclass
class Graded:
    result: GradeResult
    test_images: np.ndarray  # (N, 32, 32, 3) uint8, for the report's misclassified grid
    submission: Path  # the folder graded, resolved, for the report's appendix of the code


@dataclass
class _Grading:
    """What every stage of one grading shares."""

    rubric: Rubric
    settings: Settings
    backend: Backend
    test: TestSet
    source: Path  # where CIFAR-10 is read from
    root: Path  # the submission
    owner: str  # who the retraining checkpoints belong to: the student and the submission
    progress: Stage
    advance: Advance | None = None
    versions: dict[str, str] = field(default_factory=dict)  # what the sandbox reported


def grade(
    submission_dir: Path,
    rubric: Rubric,
    settings: Settings,
    progress: Stage = lambda _stage: None,
    advance: Advance | None = None,
    checkout: Checkout | None = None,
) -> Graded:
    """Grade the submission in ``submission_dir``; a CI ``checkout`` takes its student id from
    the manifest or the repository before the folder name (see ``submission.Checkout``)."""
    progress("reading submission")
    sub = load_submission(submission_dir, settings, checkout)
    progress("loading CIFAR-10 test split")
    source = datasets.resolve_source(settings.data_dir)
    split = datasets.load_split(source, "test", settings.cache_dir)
    backend = pick_backend(settings.sandbox, settings.docker_image, settings.docker_runtime)
    with work_dir("grading") as folder:
        test = prepare(split, settings, folder)
        owner = f"{sub.student_id}:{sub.sha256}"
        run = _Grading(rubric, settings, backend, test, source, sub.root, owner, progress, advance)
        entries = sub.tasks(rubric)
        tasks: dict[str, TaskResult] = {}
        enforced: dict[str, str] = {}
        normalization_alerts = []
        for entry in entries.values():
            progress(f"{entry.id}: build, count and evaluate in the {backend.name} sandbox")
            tasks[entry.id], enforced = _grade_task(entry, run)
            tasks[entry.id].limits = _limits(rubric, entry.id)
            if renormalize.wanted(tasks[entry.id], settings):
                progress(f"{entry.id}: far below its claim; evaluating under the usual input normalizations")
                found = renormalize.alert(tasks[entry.id], entry, sub.root, backend, rubric, settings, test)
                normalization_alerts += [found] if found else []
        warnings = [*_sandbox_warnings(backend), *sub.warnings, *sub.rubric_warnings(rubric)]
        baselines, not_started = _retrain(run, entries, tasks, warnings)
    progress("scoring")
    result = GradeResult(
        student_id=sub.student_id,
        student_name=sub.name,
        rubric=rubric.id,
        rubric_title=rubric.title,
        submission_sha256=sub.sha256,
        grader_version=version("grader"),
        versions=_versions(run),
        gpu=gpu.describe() if (gpu := job_gpu(settings)) else None,
        graded_at=datetime.now(UTC).isoformat(timespec="seconds"),
        device=_devices(tasks, settings),
        sandbox={"backend": backend.name, "limits": enforced},
        tasks=tasks,
        warnings=warnings,
        class_names=list(split.classes),
        baselines=baselines,
    )
    warnings += (
        _shortcut_warnings(rubric, settings, test)
        + _probe_warnings(result)
        + _output_warnings(result)
        + _loading_warnings(result)
    )
    result.alerts = claim_alerts(result, settings.claim_gap_points) + normalization_alerts
    skipped = settings.skip_training_reason if settings.skip_training else not_started
    result.items = score_all(rubric, tasks, baselines, skipped)
    return Graded(result, split.images(), sub.root)


def _versions(run: _Grading) -> dict[str, str]:
    """What graded this submission: the grader, the host's Python, the sandbox's Python and
    packages (as its jobs reported them) and the sandbox image."""
    image = run.backend.image_id or f"none: the {run.backend.name} sandbox runs the host's environment"
    return {
        "grader": version("grader"),
        "host python": platform.python_version(),
        **dict(sorted(run.versions.items())),
        "sandbox image": image,
    }


def _shortcut_warnings(rubric: Rubric, settings: Settings, test: TestSet) -> list[str]:
    """What this grading left out on purpose, for the report's warnings box."""
    notes = []
    if test.per_class is not None:
        notes.append(
            f"accuracy was measured on {len(test.labels):,} test images only: the first "
            f"{test.per_class} of each class, in test-split order"
        )
    if settings.skip_training and any(isinstance(i, TRAINING_ITEMS) for i in rubric.items):
        notes.append(settings.skip_training_reason)
    return notes


def _loading_warnings(result: GradeResult) -> list[str]:
    """How each model was loaded, where it was not plainly, and the packages it lacked."""
    notes = []
    for task in result.tasks.values():
        notes += [f"{task.id}: {note}" for note in task.notes]
        if task.missing_packages and task.status == "ok":
            names = ", ".join(task.missing_packages)
            notes.append(
                f"{task.id}: the student's code imports {names}, which the grader's sandbox does "
                "not have; the model did without"
            )
    return notes


def _probe_warnings(result: GradeResult) -> list[str]:
    """A model whose accuracy collapses on the secret probe, named for the TA."""
    notes = []
    for task in result.tasks.values():
        checks = [("submitted weights", task.evaluation.probe if task.evaluation else None)]
        checks += [(f"retraining {label}", run.probe) for label, run in task.training.items()]
        for what, check in checks:
            if check is not None and check.flagged:
                notes.append(
                    f"{task.id} ({what}): accuracy falls from {check.top1_original:.1f}% on "
                    f"{check.images:,} test images to {check.top1_perturbed:.1f}% on the same images "
                    "shifted by one pixel, some mirrored, lightly noised; a classifier loses a few "
                    "points, a model that recognises the test set itself loses most: review its code"
                )
    return notes


def claim_alerts(result: GradeResult, gap_points: float) -> list[str]:
    """A claimed test accuracy more than ``gap_points`` from the measured one, per task."""
    alerts = []
    for task in result.tasks.values():
        claimed, ev = task.claimed_test_accuracy, task.evaluation
        if claimed is None or ev is None or abs(claimed - ev.top1) <= gap_points:
            continue
        side = "above" if claimed > ev.top1 else "below"
        subset = " (a subset of the test split)" if ev.subset_per_class is not None else ""
        alerts.append(
            f"{task.id}: the claimed test accuracy {claimed:.2f}% is {abs(claimed - ev.top1):.2f} points "
            f"{side} the {ev.top1:.2f}% measured on {ev.n_images:,} test images{subset}, more than "
            f"{gap_points:g} points apart: check that the submitted weights are the ones the claim "
            "was measured with"
        )
    return alerts


def _output_warnings(result: GradeResult) -> list[str]:
    """A model that returns probabilities or log-probabilities where the contract asks for logits."""
    notes = []
    for task in result.tasks.values():
        note = outputs_note(task.evaluation.outputs) if task.evaluation else None
        if note is not None:
            notes.append(f"{task.id}: {note}")
    return notes


def train_baselines(
    rubric: Rubric, settings: Settings, progress: Stage = lambda _stage: None
) -> dict[str, TrainingRun]:
    """Train (or read from the cache) every reference baseline the rubric names."""
    if not rubric.training.baselines:
        return {}
    source = datasets.resolve_source(settings.data_dir)
    progress("loading CIFAR-10")
    split = datasets.load_split(source, "test", settings.cache_dir)
    train_split = datasets.load_split(source, "train", settings.cache_dir)
    backend = pick_backend(settings.sandbox, settings.docker_image, settings.docker_runtime)
    runs = {}
    with work_dir("baselines") as folder:
        ctx = retraining.Context(backend, rubric, settings, prepare(split, settings, folder), train_split)
        for task_id, ref in rubric.training.baselines.items():
            progress(f"{task_id}: training {ref} in the {backend.name} sandbox")
            runs[task_id] = retraining.baseline(task_id, ref, ctx)
    return runs


def _retrain(
    run: _Grading, entries: dict[str, TaskEntry], tasks: dict[str, TaskResult], warnings: list[str]
) -> tuple[dict[str, TrainingRun], str | None]:
    """The retrainings the rubric asks for and the reference baselines beside them; or, when
    they would take longer than Settings.train_budget_s here, none and the estimate why not."""
    rubric, settings = run.rubric, run.settings
    plans = {}
    for task_id, entry in entries.items():
        plans[task_id], notes = retraining.plan(rubric, task_id, entry.recipe, settings.recipe_overrides)
        warnings += notes
        tasks[task_id].reported_experiments = dict(entry.reported_experiments)
    if settings.skip_training or (not any(plans.values()) and not rubric.training.baselines):
        return {}, None
    run.progress("loading CIFAR-10 train split")
    train_split = datasets.load_split(run.source, "train", settings.cache_dir)
    ctx = retraining.Context(run.backend, rubric, settings, run.test, train_split, run.owner, run.advance)
    trained = {
        task_id: recipes for task_id, recipes in plans.items() if recipes and tasks[task_id].forward_ok
    }
    run.progress("timing a few training steps of each model, to estimate the retraining")
    cost = retraining.estimate(trained, entries, run.root, ctx)
    too_long = cost.over(settings.train_budget_s) if cost is not None else None
    if cost is not None and too_long is not None:
        run.progress(too_long)
        warnings.append(too_long)
        return {}, cost.brief(settings.train_budget_s)
    for task_id, recipes in plans.items():
        if recipes:
            run.progress(f"{task_id}: retraining ({len(recipes)} run(s)) in the {run.backend.name} sandbox")
            retraining.retrain_task(tasks[task_id], entries[task_id], run.root, recipes, ctx)
    baselines = {}
    for task_id, ref in rubric.training.baselines.items():
        run.progress(f"{task_id}: reference baseline {ref} (cached after its first run)")
        baselines[task_id] = retraining.baseline(task_id, ref, ctx)
    return baselines, None


def _grade_task(entry: TaskEntry, run: _Grading) -> tuple[TaskResult, dict[str, str]]:
    task = TaskResult(
        entry.id,
        run.rubric.tasks[entry.id].title,
        model=entry.model or None,
        weights=entry.weights or None,
        claimed_test_accuracy=entry.claimed_test_accuracy,
    )
    if entry.error:
        task.fail("manifest", entry.error)
        return task, {}
    measured = measure(run.backend, entry, run.root, run.rubric, run.settings, run.test, advance=run.advance)
    task.sandbox_seconds = round(measured.run.outcome.seconds, 2)
    if measured.run.report is not None:
        _copy_measurements(task, measured.run.report)
        run.versions.update(measured.run.report.versions)
    task.evaluation = measured.evaluation
    if measured.failure is not None:
        task.fail(measured.failure.stage, measured.failure.message)
        task.log_tail = measured.run.outcome.log_tail[-4000:]
    return task, measured.enforced


def _copy_measurements(task: TaskResult, report: HarnessReport) -> None:
    task.params, task.trainable_params = report.params, report.trainable_params
    task.macs, task.macs_failed = dict(report.macs), dict(report.macs_failed)
    task.module_counts = dict(report.module_counts)
    task.residual_adds = report.residual_adds
    task.forward_ok, task.weights_loaded = report.forward_ok, report.weights_loaded
    task.weights_fingerprint = report.weights_fingerprint
    task.output_shape = report.output_shape
    task.stage_seconds = dict(report.stage_seconds)
    task.device = report.device
    task.summary = report.summary
    task.diagram, task.diagram_omitted = list(report.diagram), report.diagram_omitted
    task.notes, task.missing_packages = list(report.notes), list(report.missing_packages)
    if report.absent_packages:
        names = ", ".join(report.absent_packages)
        task.notes.append(
            f"the rubric's packages {names} are not in the grader's sandbox: set it up with the rubric "
            "(bash scripts/setup.sh --rubric FILE, with --docker for the image)"
        )


def _sandbox_warnings(backend: Backend) -> list[str]:
    return [UNSANDBOXED_WARNING] if backend.name == UnsandboxedBackend.name else []


def _devices(tasks: dict[str, TaskResult], settings: Settings) -> str:
    """The devices the models actually ran on; the setting itself if none ran."""
    used = sorted({t.device for t in tasks.values() if t.device})
    return ", ".join(used) or settings.device


def _limits(rubric: Rubric, task_id: str) -> dict[str, float]:
    limits: dict[str, float] = {}
    for item in rubric.items:
        if item.task != task_id:
            continue
        if isinstance(item, ParamsLimitItem):
            limits["params"] = item.max_params
        elif isinstance(item, FlopsLimitItem):
            limits[f"macs:{item.counter}"] = item.max_macs
    return limits
