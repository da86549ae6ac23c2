"""HTML from ``templates/report.html``, then PDF with weasyprint.

Student-provided strings (names, error messages, module names, logs) reach the
page, so the jinja environment escapes everything it prints; the student's code comes
sanitized (grader/report/sources.py). weasyprint fetches what the HTML links to, so it is
given ``FolderFetcher``: the report's own folder, and nothing else, can be read.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import jinja2
import numpy as np
import weasyprint  # needs libharfbuzz-subset0 (scripts/setup.sh installs it)
from markupsafe import Markup
from weasyprint.urls import URLFetcher, URLFetcherResponse

from grader.config import TEMPLATES_DIR
from grader.evaluate import outputs_note
from grader.files import read_untrusted, write_atomic
from grader.report.figures import task_figures
from grader.report.sources import Listing, code_css, listings
from grader.report.training_figures import scaling_plot, training_figures
from grader.results import GradeResult, Summary, TaskResult

LOG_TAIL_LINES = 60
MAX_FETCHED_BYTES = 64 * 2**20  # one figure of the report
SUMMARY_RULE = "-" * 64  # torchsummary's table width
SUMMARY_DOUBLE_RULE = "=" * 64


def thousands(value: float | None) -> str:
    """``11173962`` -> ``"11,173,962"``; non-integral floats keep 2 decimals."""
    if value is None:
        return "—"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


def percent(value: float | None) -> str:
    """``80.756`` (already in percent) -> ``"80.76%"``."""
    return "—" if value is None else f"{value:.2f}%"


def score(value: float | None) -> str:
    """Points without noise: ``12.5`` -> ``"12.5"``, ``15.0`` -> ``"15"``."""
    if value is None:
        return "—"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def shape(value: Sequence[int] | None) -> str:
    """``[-1, 32, 32, 32]``, the way torchsummary prints an output shape."""
    return "—" if value is None else "[" + ", ".join(str(d) for d in value) + "]"


def log_tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines, with a note saying how many were cut."""
    kept = text.rstrip("\n").splitlines()
    if len(kept) <= lines:
        return "\n".join(kept)
    return f"[… {len(kept) - lines} earlier lines omitted]\n" + "\n".join(kept[-lines:])


def torchsummary(summary: Summary) -> str:
    """The per-layer table in torchsummary's familiar plain-text layout."""
    row = "{:>20}  {:>25} {:>15}"
    lines = [SUMMARY_RULE, row.format("Layer (type)", "Output Shape", "Param #")]
    lines.append(SUMMARY_DOUBLE_RULE)
    lines += [row.format(r.name, shape(r.output_shape), f"{r.params:,}") for r in summary.rows]
    lines += [
        SUMMARY_DOUBLE_RULE,
        f"Total params: {summary.total_params:,}",
        f"Trainable params: {summary.trainable_params:,}",
        f"Non-trainable params: {summary.total_params - summary.trainable_params:,}",
        SUMMARY_RULE,
        f"Input size (MB): {summary.input_mb:.2f}",
        f"Forward/backward pass size (MB): {summary.forward_backward_mb:.2f}",
        f"Params size (MB): {summary.params_mb:.2f}",
        f"Estimated Total Size (MB): {summary.total_mb:.2f}",
        SUMMARY_RULE,
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class Measure:
    """One size measurement of a model, next to the rubric's limit if it sets one."""

    label: str
    value: str
    limit: float | None
    within: bool | None  # None when there is no limit to compare against
    scored: bool = False


def _measure(label: str, value: str, amount: int, limit: float | None, scored: bool) -> Measure:
    within = None if limit is None else amount <= limit
    return Measure(label, value, limit, within, scored)


def measures(task: TaskResult) -> list[Measure]:
    """Parameters and MACs per counter, each with its limit from ``task.limits``."""
    rows = []
    if task.params is not None:
        value = f"{task.params:,} total, {thousands(task.trainable_params)} trainable"
        rows.append(_measure("Parameters", value, task.params, task.limits.get("params"), True))
    for counter, macs in task.macs.items():
        limit = task.limits.get(f"macs:{counter}")
        scored = counter == task.macs_counter
        rows.append(_measure("MACs", f"{counter}: {macs:,} MACs", macs, limit, scored))
    return rows


def recipe_summary(recipe: dict[str, Any]) -> str:
    """One line a TA can compare across runs: optimizer, schedule, epochs, augmentation, data."""
    augment = [
        name
        for name, on in (
            ("crop", recipe.get("crop_padding")),
            ("flip", recipe.get("flip")),
            ("cutout", recipe.get("cutout")),
        )
        if on
    ]
    parts = [
        f"{recipe.get('optimizer')} lr {recipe.get('lr'):g}",
        str(recipe.get("schedule")),
        f"{recipe.get('epochs')} ep",
        "+".join(augment) or "no augmentation",
        "normalized" if recipe.get("normalize") else "not normalized",
    ]
    if recipe.get("train_fraction", 1) != 1:
        parts.append(f"{recipe['train_fraction']:g} of the data")
    return ", ".join(parts)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt field fails loudly, not blank
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        thousands=thousands,
        percent=percent,
        score=score,
        shape=shape,
        log_tail=log_tail,
        torchsummary=torchsummary,
        recipe=recipe_summary,
    )
    env.globals.update(measures=measures, outputs_note=outputs_note)
    return env


def render_html(result: GradeResult, figures: dict[str, dict[str, str]], code: Sequence[Listing] = ()) -> str:
    """The report as HTML; ``figures`` maps task id -> kind -> path relative to the page,
    ``code`` is the appendix of the student's model files."""
    template = environment().get_template("report.html")
    failed = [task for task in result.tasks.values() if task.status == "error"]
    return template.render(
        result=result, figures=figures, failed=failed, code=code, code_css=Markup(code_css())
    )


class FolderFetcher(URLFetcher):
    """What weasyprint may read while it draws the PDF: regular files inside ``folder`` (the
    report's own figures). Any other URL (a file elsewhere, http, data, ...) is refused, so
    nothing on the page can pull a file of the machine or a request into the PDF."""

    def __init__(self, folder: Path) -> None:
        super().__init__(allowed_protocols=["file"], allow_redirects=False)
        self.folder = folder.resolve()

    def fetch(self, url: str, headers: Any = None) -> URLFetcherResponse:
        path = self.path(url)
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return URLFetcherResponse(url, read_untrusted(path, MAX_FETCHED_BYTES), {"Content-Type": kind})

    def path(self, url: str) -> Path:
        """The file ``url`` names inside the folder; ValueError for any other URL."""
        parts = urlsplit(url)
        if parts.scheme == "file" and parts.netloc in ("", "localhost"):
            path = Path(url2pathname(unquote(parts.path)))
            if path.is_absolute() and path.resolve().is_relative_to(self.folder):
                return path
        raise ValueError(f"{url[:200]} refused: the report reads only files in {self.folder}")


def _draw_figures(
    result: GradeResult, out_dir: Path, test_images: np.ndarray | None
) -> dict[str, dict[str, str]]:
    fig_dir = out_dir / "figures"
    figures = {}
    for task_id, task in result.tasks.items():
        drawn = task_figures(task, result.class_names, test_images, fig_dir)
        drawn |= training_figures(result, task_id, fig_dir)
        figures[task_id] = {kind: path.relative_to(out_dir).as_posix() for kind, path in drawn.items()}
    scaling = scaling_plot(result, fig_dir / "scaling.png")
    if scaling is not None:
        figures["_result"] = {"scaling": scaling.relative_to(out_dir).as_posix()}
    return figures


def write_report(
    result: GradeResult,
    out_dir: Path,
    test_images: np.ndarray | None = None,
    submission: Path | None = None,
) -> Path:
    """Write ``report.html``, ``report.pdf`` and ``figures/*.png`` into ``out_dir``.

    ``test_images`` is the uint8 CIFAR-10 test split, shape (N, 32, 32, 3), indexed
    by ``Evaluation.misclassified``; without it the misclassified grid is left out.
    ``submission`` is the folder graded, for the appendix of the student's code; without it
    the appendix says the source is not at hand. Returns the path of the PDF.
    """
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    html = render_html(result, _draw_figures(result, out_dir, test_images), listings(result, submission))
    write_atomic(out_dir / "report.html", html.encode("utf-8"))
    # The trailing slash makes relative image paths resolve inside out_dir.
    pdf = weasyprint.HTML(
        string=html, base_url=out_dir.as_uri() + "/", url_fetcher=FolderFetcher(out_dir)
    ).write_pdf()
    assert pdf is not None  # write_pdf returns the bytes when given no target
    pdf_path = out_dir / "report.pdf"
    write_atomic(pdf_path, pdf)
    return pdf_path
