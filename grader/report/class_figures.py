"""Figures of the class report: the distribution of totals, accuracy against model size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from grader.report.figures import _save

HISTOGRAM_BINS = 10
WITHIN, OVER, LIMIT = "#4c78a8", "#d62728", "#a01912"


@dataclass(frozen=True)
class Point:
    """One student's model on one task."""

    student_id: str
    params: int
    accuracy: float  # test top-1, percent


def score_histogram(
    totals: Sequence[float], max_total: float, bins: int = HISTOGRAM_BINS
) -> tuple[list[int], list[float]]:
    """Counts of totals in ``bins`` equal bins over [0, max_total], and the bin edges.

    The last bin includes its right edge, so full marks are counted; totals outside the
    range (bonus points) are counted in the nearest end bin.
    """
    top = max_total if max_total > 0 else 1.0
    edges = np.linspace(0.0, top, bins + 1)
    counts, _ = np.histogram(np.clip(np.asarray(totals, dtype=np.float64), 0.0, top), bins=edges)
    return counts.tolist(), edges.tolist()


def histogram_figure(totals: Sequence[float], max_total: float, path: Path) -> Path:
    """Bars of ``score_histogram``, each labelled with its count."""
    counts, edges = score_histogram(totals, max_total)
    fig = Figure(figsize=(6.4, 3.2))
    ax = fig.add_subplot()
    widths = np.diff(edges)
    bars = ax.bar(edges[:-1], counts, width=widths, align="edge", color=WITHIN, edgecolor="white")
    ax.bar_label(bars, labels=[str(c) if c else "" for c in counts], fontsize=7, padding=2)
    ax.set_xlim(0, edges[-1])
    ax.set_xlabel(f"total points (of {max_total:g})")
    ax.set_ylabel("students")
    ax.set_ylim(0, max(counts, default=0) * 1.15 + 1)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Distribution of totals ({len(totals)} graded)", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def _scatter(ax: Axes, points: Sequence[Point], limit: float | None, title: str) -> None:
    over = [limit is not None and p.params > limit for p in points]
    colours = [OVER if o else WITHIN for o in over]
    ax.scatter([p.params for p in points], [p.accuracy for p in points], c=colours, s=18, alpha=0.85)
    if limit is not None:
        ax.axvline(limit, color=LIMIT, linestyle="--", linewidth=1.2, label=f"limit {limit:,.0f} params")
        ax.legend(fontsize=7, loc="best")  # "best" keeps the legend off the points
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9, parse_math=False)
    ax.grid(alpha=0.3)


def accuracy_vs_params_figure(
    points: Mapping[str, Sequence[Point]],
    limits: Mapping[str, float],
    titles: Mapping[str, str],
    path: Path,
) -> Path | None:
    """One scatter per task that has points; the task's parameter limit as a dashed line."""
    tasks = [task for task, pts in points.items() if pts]
    if not tasks:
        return None
    fig = Figure(figsize=(6.4, 3.4 * len(tasks)), layout="constrained")
    for ax, task in zip(np.atleast_1d(fig.subplots(len(tasks), 1)), tasks, strict=True):
        _scatter(ax, points[task], limits.get(task), f"{titles.get(task, task)} ({task})")
    return _save(fig, path)
