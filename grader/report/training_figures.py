"""Figures of the retraining runs: epoch curves beside the baseline, experiments, scaling."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from grader.report.figures import _save
from grader.results import GradeResult, TaskResult, TrainingRun

_SERIES = (("train_loss", "val_loss", "loss"), ("train_acc", "val_acc", "accuracy (%)"))


def epoch_curves(run: TrainingRun, baseline: TrainingRun | None, path: Path) -> Path:
    """Loss and accuracy per epoch, train (solid) and validation (dashed), student vs baseline."""
    fig = Figure(figsize=(9, 3.4))
    for ax, (train_key, val_key, label) in zip(fig.subplots(1, 2), _SERIES, strict=True):
        for name, source, color in (("student", run, "tab:blue"), ("baseline", baseline, "tab:gray")):
            if source is None or not source.history:
                continue
            epochs = [e.epoch for e in source.history]
            ax.plot(
                epochs, [getattr(e, train_key) for e in source.history], color=color, label=f"{name} train"
            )
            vals = [getattr(e, val_key) for e in source.history]
            if all(v is not None for v in vals):
                ax.plot(epochs, vals, color=color, linestyle="--", label=f"{name} val")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Epoch curves (retrained by the grader)", fontsize=10)
    return _save(fig, path)


def experiment_bars(task: TaskResult, path: Path) -> Path:
    """Measured (and reported, where given) test accuracy of each experiment variant."""
    runs = {k.removeprefix("experiment:"): r for k, r in task.training.items() if k.startswith("experiment:")}
    names = list(runs)
    fig = Figure(figsize=(8, 0.5 * len(names) + 1.2))
    ax = fig.subplots()
    ys = range(len(names))
    ax.barh(
        [y + 0.2 for y in ys],
        [runs[n].test_accuracy or 0 for n in names],
        height=0.4,
        color="tab:blue",
        label="measured",
    )
    reported = [task.reported_experiments.get(n) for n in names]
    if any(r is not None for r in reported):
        ax.barh(
            [y - 0.2 for y in ys],
            [r or 0 for r in reported],
            height=0.4,
            color="tab:orange",
            label="reported",
        )
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy (%)")
    ax.legend(fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def scaling_plot(result: GradeResult, path: Path) -> Path | None:
    """Test accuracy against the fraction of training data, one line per model (task)."""
    lines = {}
    for task_id, task in result.tasks.items():
        points = sorted(
            (r.recipe["train_fraction"], r.test_accuracy)
            for k, r in task.training.items()
            if k.startswith("scaling:") and r.test_accuracy is not None
        )
        if points:
            lines[task_id] = points
    if not lines:
        return None
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    for task_id, points in lines.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=task_id)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("fraction of the training set")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Dataset size vs accuracy", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def training_figures(result: GradeResult, task_id: str, fig_dir: Path) -> dict[str, Path]:
    task = result.tasks[task_id]
    drawn: dict[str, Path] = {}
    main = task.training.get("retrain")
    if main is not None and main.history:
        drawn["curves"] = epoch_curves(main, result.baselines.get(task_id), fig_dir / f"{task_id}_curves.png")
    if any(k.startswith("experiment:") for k in task.training):
        drawn["experiments"] = experiment_bars(task, fig_dir / f"{task_id}_experiments.png")
    return drawn
