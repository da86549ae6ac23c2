"""The report's figures, drawn with matplotlib's Agg renderer and saved as PNG.

Each figure is one function that takes plain data from ``grader.results`` and a
target path, and returns the path it wrote. Figures are built on ``Figure``
objects rather than pyplot so no global state leaks between reports.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from grader.results import DiagramNode, TaskResult

DPI = 150
GRID_LIMIT = 16
GRID_COLUMNS = 4
UPSCALE = 4  # 32 px CIFAR images become 128 px, sharp at print size
BOX_HEIGHT = 0.52  # inches; with BOX_GAP keeps ~12 nodes within one A4 page
BOX_GAP = 0.30
BOX_MARGIN = 0.3  # inches left and right of a block's box
DIAGRAM_WIDTH = 5.2  # inches, without the room for skip arcs
SKIP_ROOM = 0.9  # inches added on the right when some block has residual additions
SKIP_COLOUR = "#c2410c"
NODE_TEXT = 48  # characters; longer student names are cut with an ellipsis


def _save(fig: Figure, path: Path, tight: bool = True) -> Path:
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight" if tight else None, facecolor="white")
    return path


def class_labels(class_names: Sequence[str], n: int) -> list[str]:
    """Names for ``n`` classes; numbers when the rubric gave no matching list."""
    return list(class_names) if len(class_names) == n else [str(i) for i in range(n)]


def _label(labels: Sequence[str], index: int) -> str:
    return labels[index] if 0 <= index < len(labels) else str(index)


def _shorten(text: str, limit: int = NODE_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def confusion_matrix(confusion: list[list[int]], class_names: Sequence[str], path: Path) -> Path:
    """Heatmap of counts: rows are true classes, columns predicted classes."""
    counts = np.asarray(confusion, dtype=np.int64)  # (true, predicted)
    labels = class_labels(class_names, counts.shape[0])
    fig = Figure(figsize=(6.4, 5.6))
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(counts.shape[1]), labels[: counts.shape[1]], rotation=45, ha="right")
    ax.set_yticks(range(counts.shape[0]), labels)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title("Confusion matrix (test set)")
    if counts.shape[0] <= 20:  # beyond that the numbers no longer fit in the cells
        _annotate_counts(ax, counts)
    return _save(fig, path)


def _annotate_counts(ax: Axes, counts: np.ndarray) -> None:
    threshold = counts.max() / 2 if counts.size else 0
    for (row, col), value in np.ndenumerate(counts):
        colour = "white" if value > threshold else "black"
        ax.text(col, row, str(value), ha="center", va="center", fontsize=7, color=colour)


def per_class_accuracy(per_class: dict[str, float], top1: float, path: Path) -> Path:
    """Bar per class with its accuracy, and the overall top-1 as a dashed line."""
    names = list(per_class)
    values = [per_class[name] for name in names]
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot()
    bars = ax.bar(range(len(names)), values, color="#4c78a8")
    ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=7, padding=2)
    ax.axhline(top1, color="#444444", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylim(0, 108)
    ax.set_ylabel("Accuracy (%)")
    ax.set_title(f"Accuracy per class (dashed line: top-1 {top1:.2f}%)")
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def misclassified_grid(
    misclassified: Sequence[tuple[int, int, int]],
    images: np.ndarray,
    class_names: Sequence[str],
    path: Path,
) -> Path | None:
    """Up to 16 wrongly classified test images; None when none can be shown.

    ``misclassified`` is ``Evaluation.misclassified``: the most confident mistakes, a few per
    true class, grouped by class. ``images`` is the uint8 test split, shape (N, H, W, 3);
    entries whose index falls outside it are skipped rather than failing the whole report.
    """
    shown = [m for m in misclassified if 0 <= m[0] < len(images)][:GRID_LIMIT]
    if not shown:
        return None
    rows = math.ceil(len(shown) / GRID_COLUMNS)
    fig = Figure(figsize=(GRID_COLUMNS * 1.9, rows * 2.0), layout="constrained")
    for k, (index, true, predicted) in enumerate(shown):
        ax = fig.add_subplot(rows, GRID_COLUMNS, k + 1)
        ax.imshow(_upscale(images[index]), interpolation="nearest")
        caption = f"true: {_label(class_names, true)} / pred: {_label(class_names, predicted)}"
        ax.set_title(caption, fontsize=7.5, pad=3, parse_math=False)
        ax.set_xlabel(f"test #{index}", fontsize=6.5, color="#555555")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(grid_title(shown), fontsize=10)
    return _save(fig, path)


def grid_title(shown: Sequence[tuple[int, int, int]]) -> str:
    """``"Most confident mistakes, up to 2 per true class (16 images of 10 classes)"``."""
    per_class = Counter(true for _, true, _ in shown)
    images = f"{len(shown)} image" + ("s" if len(shown) != 1 else "")
    classes = f"{len(per_class)} class" + ("es" if len(per_class) != 1 else "")
    most = max(per_class.values(), default=0)
    return f"Most confident mistakes, up to {most} per true class ({images} of {classes})"


def _upscale(image: np.ndarray) -> np.ndarray:
    # Nearest neighbour: every pixel becomes an UPSCALE x UPSCALE block, so the
    # PDF viewer cannot blur the tiny image when it scales it.
    return np.repeat(np.repeat(image, UPSCALE, axis=0), UPSCALE, axis=1)  # (H*s, W*s, 3)


def model_diagram(nodes: Sequence[DiagramNode], path: Path) -> Path:
    """A vertical chain of boxes, one per top-level block, joined by arrows; a block with
    residual additions inside gets a skip arc beside it, in the room added on the right."""
    step = BOX_HEIGHT + BOX_GAP
    room = SKIP_ROOM if any(node.residual_adds for node in nodes) else 0.0
    width, height = DIAGRAM_WIDTH + room, len(nodes) * step
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)  # y grows downwards so the first block is on top
    ax.axis("off")
    centre = DIAGRAM_WIDTH / 2
    for i, node in enumerate(nodes):
        top = BOX_GAP / 2 + i * step
        _draw_node(ax, node, top)
        if node.residual_adds:
            _draw_skip(ax, node.residual_adds, top)
        if i + 1 < len(nodes):
            ax.annotate(
                "",
                xy=(centre, top + step),
                xytext=(centre, top + BOX_HEIGHT),
                arrowprops={"arrowstyle": "-|>", "color": "#333333", "linewidth": 1.2},
            )
    return _save(fig, path, tight=False)


def _draw_skip(ax: Axes, adds: int, top: float) -> None:
    """A skip arc from the block's input to its output, beside its right edge, with the number
    of residual additions (sums of two equal-shaped feature maps) the block makes."""
    right = DIAGRAM_WIDTH - BOX_MARGIN
    arc = FancyArrowPatch(
        (right, top + 0.06),
        (right, top + BOX_HEIGHT - 0.06),
        connectionstyle="bar,fraction=-0.55",
        arrowstyle="-|>,head_length=3,head_width=2",
        color=SKIP_COLOUR,
        linewidth=1.4,
        shrinkA=0,
        shrinkB=0,
    )
    ax.add_patch(arc)
    label = "skip" if adds == 1 else f"skip ×{adds}"
    ax.text(right + 0.36, top + BOX_HEIGHT / 2, label, ha="left", va="center", fontsize=7, color=SKIP_COLOUR)


def _draw_node(ax: Axes, node: DiagramNode, top: float) -> None:
    box = FancyBboxPatch(
        (BOX_MARGIN, top),
        DIAGRAM_WIDTH - 2 * BOX_MARGIN,
        BOX_HEIGHT,
        boxstyle="round,pad=0,rounding_size=0.08",
        facecolor="#eef3fa",
        edgecolor="#4c78a8",
        linewidth=1.2,
    )
    ax.add_patch(box)
    centre = DIAGRAM_WIDTH / 2
    title = _shorten(f"{node.name}: {node.type}")
    shape = "[" + ", ".join(str(d) for d in node.output_shape) + "]"
    detail = _shorten(f"out {shape}   ·   {node.params:,} params")
    ax.text(
        centre,
        top + BOX_HEIGHT * 0.34,
        title,
        ha="center",
        va="center",
        fontsize=9,
        fontweight="bold",
        parse_math=False,
    )
    ax.text(
        centre,
        top + BOX_HEIGHT * 0.72,
        detail,
        ha="center",
        va="center",
        fontsize=8,
        color="#333333",
        parse_math=False,
    )


def task_figures(
    task: TaskResult,
    class_names: Sequence[str],
    test_images: np.ndarray | None,
    fig_dir: Path,
) -> dict[str, Path]:
    """Draw every figure ``task`` has data for; keys name the figure kind."""
    stem = _safe_stem(task.id)
    figures: dict[str, Path] = {}
    if task.diagram:
        figures["diagram"] = model_diagram(task.diagram, fig_dir / f"{stem}_diagram.png")
    ev = task.evaluation
    if ev is None:
        return figures
    if ev.confusion:
        path = fig_dir / f"{stem}_confusion.png"
        figures["confusion"] = confusion_matrix(ev.confusion, class_names, path)
    if ev.per_class:
        path = fig_dir / f"{stem}_per_class.png"
        figures["per_class"] = per_class_accuracy(ev.per_class, ev.top1, path)
    if test_images is not None and ev.misclassified:
        path = fig_dir / f"{stem}_misclassified.png"
        grid = misclassified_grid(ev.misclassified, test_images, class_names, path)
        if grid is not None:
            figures["misclassified"] = grid
    return figures


def _safe_stem(task_id: str) -> str:
    # Task ids come from the rubric, but a file name must never escape fig_dir.
    return re.sub(r"[^A-Za-z0-9_.-]", "_", task_id).lstrip(".") or "task"
