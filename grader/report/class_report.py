"""The class report: how a whole batch did, as ``class_report.html`` and ``class_report.pdf``.

It shows the distribution of totals, each rubric item's mean, minimum and maximum, test
accuracy against parameters per task (with the rubric's limit), a leaderboard per task,
the submissions that could not be graded, and the similarity flags for the TA.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import weasyprint

from grader.files import write_atomic
from grader.report.class_figures import Point, accuracy_vs_params_figure, histogram_figure
from grader.report.gradebook import FAILED, Failure, gradebook
from grader.report.render import FolderFetcher, environment
from grader.report.similarity import SimilarityFlag
from grader.results import GradeResult
from grader.rubric import ParamsLimitItem, Rubric

LEADERBOARD_SIZE = 10
FIGURES_DIR = "_class_figures"  # a leading "_" can never be a student id, so no folder clashes


class ReportPaths(NamedTuple):
    html: Path
    pdf: Path


@dataclass(frozen=True)
class ItemStat:
    """One rubric item across the graded students; None where no student has a score."""

    id: str
    title: str
    task: str | None
    points: float
    mean: float | None
    minimum: float | None
    maximum: float | None
    scored: int  # students with a score for this item
    unscored: int  # students without one (a manual item still pending, or the item missing)


@dataclass(frozen=True)
class Ranked:
    rank: int  # equal accuracies share a rank
    student_id: str
    name: str | None
    accuracy: float
    params: int | None


def item_stats(df: pd.DataFrame, rubric: Rubric) -> list[ItemStat]:
    """Mean, minimum and maximum score of each item over the gradebook's graded rows."""
    graded = df[df["status"] != FAILED]
    stats = []
    for item in rubric.items:
        scores = graded[item.id].dropna()
        some = not scores.empty
        stats.append(
            ItemStat(
                item.id,
                item.title,
                item.task,
                item.points,
                float(scores.mean()) if some else None,
                float(scores.min()) if some else None,
                float(scores.max()) if some else None,
                len(scores),
                len(graded) - len(scores),
            )
        )
    return stats


def _accuracy(result: GradeResult, task_id: str) -> float | None:
    task = result.tasks.get(task_id)
    return task.test_accuracy if task is not None else None


def leaderboard(results: Sequence[GradeResult], task_id: str, top: int = LEADERBOARD_SIZE) -> list[Ranked]:
    """The ``top`` students by measured test accuracy on ``task_id``; ties by student id."""
    measured = sorted(
        ((acc, r) for r in results if (acc := _accuracy(r, task_id)) is not None),
        key=lambda pair: (-pair[0], pair[1].student_id),
    )
    return [
        Ranked(
            1 + sum(a > acc for a, _ in measured), r.student_id, r.student_name, acc, r.tasks[task_id].params
        )
        for acc, r in measured[:top]
    ]


def params_limits(rubric: Rubric) -> dict[str, int]:
    """Task id -> the tightest ``max_params`` of the rubric's params_limit items for it."""
    limits: dict[str, int] = {}
    for item in rubric.items:
        if isinstance(item, ParamsLimitItem) and item.task is not None:
            limits[item.task] = min(item.max_params, limits.get(item.task, item.max_params))
    return limits


def accuracy_points(results: Sequence[GradeResult], task_id: str) -> list[Point]:
    """(params, test accuracy) of every student whose model on ``task_id`` has both."""
    points = []
    for r in results:
        task = r.tasks.get(task_id)
        if task is not None and task.params is not None and task.test_accuracy is not None:
            points.append(Point(r.student_id, task.params, task.test_accuracy))
    return points


def _limits(results: Sequence[GradeResult], rubric: Rubric) -> dict[str, float]:
    # The rubric is the authority; a stored result's own limits fill in for older rubrics.
    limits: dict[str, float] = {}
    for r in results:
        for task_id, task in r.tasks.items():
            if "params" in task.limits:
                limits.setdefault(task_id, task.limits["params"])
    return limits | params_limits(rubric)


def _draw(results: Sequence[GradeResult], rubric: Rubric, df: pd.DataFrame, out_dir: Path) -> dict[str, str]:
    fig_dir = out_dir / FIGURES_DIR
    totals = df.loc[df["status"] != FAILED, "total"].tolist()
    drawn = {"histogram": histogram_figure(totals, rubric.max_total, fig_dir / "totals.png")}
    points = {task: accuracy_points(results, task) for task in rubric.tasks}
    titles = {task_id: spec.title for task_id, spec in rubric.tasks.items()}
    scatter = accuracy_vs_params_figure(points, _limits(results, rubric), titles, fig_dir / "accuracy.png")
    if scatter is not None:
        drawn["accuracy"] = scatter
    return {kind: path.relative_to(out_dir).as_posix() for kind, path in drawn.items()}


def _summary(df: pd.DataFrame) -> dict[str, object]:
    totals = df.loc[df["status"] != FAILED, "total"].tolist()
    return {
        "graded": len(totals),
        "failed": int((df["status"] == FAILED).sum()),
        "pending": int((df["pending_manual"] > 0).sum()),
        "task_errors": int((df["status"] == "task error").sum()),
        "mean": statistics.fmean(totals) if totals else None,
        "median": statistics.median(totals) if totals else None,
    }


def render_class_html(
    results: Sequence[GradeResult],
    failures: Sequence[Failure],
    rubric: Rubric,
    flags: Sequence[SimilarityFlag],
    figures: dict[str, str],
) -> str:
    """The class report as HTML; ``figures`` maps kind -> image path relative to the page."""
    df = gradebook(results, rubric, failures)
    boards = {task_id: leaderboard(results, task_id) for task_id in rubric.tasks}
    return (
        environment()
        .get_template("class_report.html")
        .render(
            rubric=rubric,
            summary=_summary(df),
            stats=item_stats(df, rubric),
            boards=boards,
            limits=_limits(results, rubric),
            failures=sorted(failures, key=lambda f: f.student_id),
            flags=flags,
            figures=figures,
        )
    )


def write_class_report(
    results: Sequence[GradeResult],
    failures: Sequence[Failure],
    rubric: Rubric,
    out_dir: Path,
    flags: Sequence[SimilarityFlag] = (),
) -> ReportPaths:
    """Write ``class_report.html``, ``class_report.pdf`` and their figures into ``out_dir``."""
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = _draw(results, rubric, gradebook(results, rubric, failures), out_dir)
    html = render_class_html(results, failures, rubric, flags, figures)
    html_path, pdf_path = out_dir / "class_report.html", out_dir / "class_report.pdf"
    write_atomic(html_path, html.encode("utf-8"))
    fetcher = FolderFetcher(out_dir / FIGURES_DIR)
    pdf = weasyprint.HTML(string=html, base_url=out_dir.as_uri() + "/", url_fetcher=fetcher).write_pdf()
    assert pdf is not None  # write_pdf returns the bytes when given no target
    write_atomic(pdf_path, pdf)
    return ReportPaths(html_path, pdf_path)
