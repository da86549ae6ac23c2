"""The student's model files for the report's appendix, as highlighted, sanitized HTML.

A TA scores the written items next to the code, so the report ends with each task's model
file. A ``.py`` file is highlighted by pygments; a notebook is shown as nbconvert's HTML of its
code cells only, never its outputs, markdown or raw cells, whose HTML and images are the
student's. Files are read with ``read_untrusted`` (bounded), only inside the submission, and
whatever HTML comes out passes an allowlist of tags and attributes before it reaches the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import bleach
import nbformat
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from grader import notebook
from grader.files import UntrustedFileError, read_untrusted
from grader.results import GradeResult

MAX_SOURCE_BYTES = 256 * 2**10  # code beyond this is named in the appendix, not shown
# What pygments and nbconvert's code cells are made of; anything else is dropped.
ALLOWED_TAGS = frozenset({"div", "span", "pre"})
ALLOWED_ATTRIBUTES = {"*": ["class"]}
NOT_AT_HAND = (
    "the submission as graded was not at hand when this report was drawn (its folder is gone "
    "or has changed since), so its source is not shown"
)


@dataclass(frozen=True)
class Listing:
    """One model file: its HTML, or why it is not shown."""

    file: str  # relative to the submission
    tasks: list[str] = field(default_factory=list)
    html: str | None = None  # sanitized; safe to put on the page as it is
    note: str | None = None


def listings(result: GradeResult, submission: Path | None) -> list[Listing]:
    """Each task's model file once, in task order; ``submission`` None: none is at hand."""
    files: dict[str, list[str]] = {}
    for task in result.tasks.values():
        if task.model:
            files.setdefault(task.model.rsplit(":", 1)[0], []).append(task.id)
    return [_listing(file, tasks, submission) for file, tasks in files.items()]


def code_css() -> str:
    """The highlighting colours, for the report's stylesheet."""
    return str(HtmlFormatter(style="default").get_style_defs(".highlight"))


def _listing(file: str, tasks: list[str], root: Path | None) -> Listing:
    if root is None:
        return Listing(file, tasks, note=NOT_AT_HAND)
    try:
        _inside(root, file)
        html = _notebook_html(root, file) if file.endswith(notebook.SUFFIX) else _python_html(root / file)
    except FileNotFoundError:
        return Listing(file, tasks, note=f"{file} is not in the submission")
    except (OSError, ValueError) as err:  # UntrustedFileError, NotebookError, a path outside
        return Listing(file, tasks, note=f"{file} is not shown: {err}")
    return Listing(file, tasks, html=sanitize(html))


def _inside(root: Path, relative: str) -> None:
    """Refuse a path that leaves the submission, literally or through a linked folder."""
    path = Path(relative)
    if path.is_absolute() or ".." in path.parts or not (root / path).resolve().is_relative_to(root.resolve()):
        raise ValueError("the path leaves the submission folder")


def _python_html(path: Path) -> str:
    text = read_untrusted(path, MAX_SOURCE_BYTES).decode("utf-8", errors="replace")
    return str(highlight(text, PythonLexer(), HtmlFormatter(linenos="inline")))


def _notebook_html(root: Path, name: str) -> str:
    """nbconvert's HTML of a notebook rebuilt from its code cells' source alone: no outputs,
    attachments or metadata of the student's; each prompt is the cell's place in the notebook."""
    from nbconvert import HTMLExporter  # slow to import; only reports with a notebook need it

    book = notebook.read(root, name)
    cells = [(number, notebook.cell_source(cell)) for number, cell in book.code_cells()]
    size = sum(len(source.encode("utf-8")) for _, source in cells)
    if size > MAX_SOURCE_BYTES:
        raise UntrustedFileError(
            f"its code cells hold {size:,} bytes, over the {MAX_SOURCE_BYTES:,}-byte limit"
        )
    rebuilt = nbformat.v4.new_notebook(metadata={"language_info": {"name": "python"}})
    rebuilt.cells = [nbformat.v4.new_code_cell(source, execution_count=number) for number, source in cells]
    exporter = HTMLExporter(
        template_name="basic",
        exclude_output=True,
        exclude_markdown=True,
        exclude_raw=True,
        exclude_unknown=True,
    )
    body, _ = exporter.from_notebook_node(rebuilt)
    return str(body)


def sanitize(html: str) -> str:
    """Only ``ALLOWED_TAGS`` with a ``class``; every other tag and attribute is removed, and
    text stays escaped."""
    return str(bleach.clean(html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, strip=True))
