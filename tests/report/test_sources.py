"""The appendix of the student's code, and what weasyprint may read while it draws a report.

Whatever a student writes in code, notebook cells or outputs reaches the PDF as text or not
at all: never as HTML, and never as a file or URL the PDF renderer fetches.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nbformat
import numpy as np
import pytest
import weasyprint
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output, new_raw_cell
from PIL import Image

from grader.report import write_report
from grader.report.render import FolderFetcher
from grader.report.sources import MAX_SOURCE_BYTES, NOT_AT_HAND, listings, sanitize
from grader.report.stored import as_graded, reapply_overrides
from grader.results import GradeResult, TaskResult
from grader.submission import content_hash
from tests.conftest import pdf_text

PASSWD = 'x = 1  # <img src="file:///etc/passwd"> <script>alert(1)</script>'


def images_in(pdf: Path) -> int:
    listing = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True)
    return len(listing.stdout.splitlines()) - 2  # two header lines


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A picture outside every report folder: a PDF that shows it has read a file it must not."""
    path = tmp_path / "outside.png"
    Image.fromarray(np.full((40, 40, 3), 200, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def submission(tmp_path: Path, outside: Path) -> Path:
    root = tmp_path / "B093040051"
    root.mkdir()
    lure = f'<img src="{outside.as_uri()}">'
    (root / "model.py").write_text(
        f'"""A small CNN. {lure}"""\nimport torch.nn as nn\n\n\nclass Net(nn.Module):\n    {PASSWD}\n',
        encoding="utf-8",
    )
    book = new_notebook()
    output = new_output("display_data", data={"text/html": lure, "text/plain": "OUTPUT SHOWN"})
    book.cells = [
        new_markdown_cell(f"MARKDOWN SHOWN {lure}"),
        new_code_cell("import torch\nclass Tiny(torch.nn.Module):\n    pass", outputs=[output]),
        new_raw_cell(f"RAW SHOWN {lure}"),
        new_code_cell(f"print('{lure}')  # </pre></div><img src='{outside.as_uri()}'>", execution_count=7),
    ]
    book.cells[1].metadata["tags"] = [f'"><img src="{outside.as_uri()}">']
    (root / "lab.ipynb").write_text(nbformat.writes(book), encoding="utf-8")
    return root


def graded(models: dict[str, str]) -> GradeResult:
    tasks = {task_id: TaskResult(task_id, task_id, model=model) for task_id, model in models.items()}
    return GradeResult(
        "B093040051", None, "r", "R", "0" * 64, "0", "2026-01-31T12:00:00+00:00", "cpu", {}, tasks
    )


def test_the_students_code_is_in_the_appendix_as_text_only(
    submission: Path, outside: Path, tmp_path: Path
) -> None:
    result = graded({"cnn": "model.py:Net", "tiny": "lab.ipynb:Tiny", "again": "model.py:Net"})
    pdf = write_report(result, tmp_path / "out", submission=submission)
    text = pdf_text(pdf, None)
    flat = " ".join(text.split())
    assert "Appendix: the student's code" in flat
    assert "model.py (cnn, again)" in flat and "lab.ipynb (tiny)" in flat  # each file once
    assert " ".join(PASSWD.split()) in flat  # shown as written: escaped, never markup
    assert "class Tiny(torch.nn.Module):" in text and "In [4]:" in flat  # the cell's place
    assert "MARKDOWN SHOWN" not in flat and "RAW SHOWN" not in flat and "OUTPUT SHOWN" not in flat
    assert "root:x:0:0" not in text
    assert images_in(pdf) == 0  # the lures stayed text: nothing was fetched
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "<img" not in html and "<script" not in html and outside.as_uri() in html


def test_the_appendix_says_when_the_source_is_not_at_hand(tmp_path: Path) -> None:
    pdf = write_report(graded({"cnn": "model.py:Net"}), tmp_path)
    flat = " ".join(pdf_text(pdf, None).split())
    assert f"model.py (cnn) {NOT_AT_HAND}" in flat


def test_files_that_are_not_shown_say_why(submission: Path, tmp_path: Path) -> None:
    (submission / "big.py").write_bytes(b"#" * (MAX_SOURCE_BYTES + 1))
    (submission / "linked.py").symlink_to(submission / "model.py")
    (tmp_path / "secret.py").write_text("SECRET = 1\n", encoding="utf-8")
    (submission / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    models = {
        "a": "big.py:Net", "b": "linked.py:Net", "c": "../secret.py:Net", "d": "elsewhere/secret.py:Net",
        "e": "absent.py:Net", "f": "/etc/passwd:Net",
    }  # fmt: skip
    shown = {listing.tasks[0]: listing for listing in listings(graded(models), submission)}
    assert all(listing.html is None for listing in shown.values())
    assert "over the 262,144-byte limit" in (shown["a"].note or "")
    assert "symbolic link" in (shown["b"].note or "")
    assert [shown[k].note for k in "cdf"] == [f"{models[k].split(':')[0]} is not shown: the path leaves the "
                                              "submission folder" for k in "cdf"]  # fmt: skip
    assert shown["e"].note == "absent.py is not in the submission"


def test_sanitize_keeps_highlighting_and_drops_everything_else() -> None:
    html = '<div class="highlight"><pre><span class="kn">import</span> x</pre></div>'
    assert sanitize(html) == html
    nasty = '<img src="file:///etc/passwd"><a href="http://x">y</a><span style="x" class="n" id="i">z</span>'
    assert sanitize(nasty) == 'y<span class="n">z</span>'


def test_the_pdf_renderer_reads_only_the_reports_folder(outside: Path, tmp_path: Path) -> None:
    folder = tmp_path / "report"
    (folder / "figures").mkdir(parents=True)
    shutil.copy(outside, folder / "figures" / "inside.png")
    (folder / "figures" / "link.png").symlink_to(outside)
    fetcher = FolderFetcher(folder)
    assert fetcher.fetch((folder / "figures" / "inside.png").as_uri()).read()[:4] == b"\x89PNG"
    for url in (
        "file:///etc/passwd",
        outside.as_uri(),
        (folder / "figures" / ".." / ".." / "outside.png").as_uri(),
        (folder / "figures" / "link.png").as_uri(),
        "file://evil.example/" + str(folder / "figures" / "inside.png"),
        "http://127.0.0.1:9/x.png",
        "data:image/png;base64,iVBORw0KGgo=",
    ):
        with pytest.raises((ValueError, OSError)):
            fetcher.fetch(url)
    # Given raw HTML that asks for a file outside, the PDF has no picture; without the fetcher it would.
    page = f'<img src="{outside.as_uri()}"><img src="figures/inside.png">'
    base = folder.as_uri() + "/"
    guarded = weasyprint.HTML(string=page, base_url=base, url_fetcher=fetcher).write_pdf(folder / "a.pdf")
    unguarded = weasyprint.HTML(string=page, base_url=base).write_pdf(folder / "b.pdf")
    assert guarded is None and unguarded is None
    assert (images_in(folder / "a.pdf"), images_in(folder / "b.pdf")) == (1, 2)


def test_a_redrawn_report_shows_the_code_only_of_the_submission_it_graded(
    submission: Path, tmp_path: Path
) -> None:
    result = graded({"cnn": "model.py:Net"})
    result.submission_sha256 = content_hash(submission)
    assert as_graded(submission, result) == submission.resolve()
    sources = {result.student_id: submission}

    def redrawn() -> str:
        reapply_overrides(tmp_path / "out", {result.student_id: result}, [], None, True, sources)
        return " ".join(pdf_text(tmp_path / "out" / result.student_id / "report.pdf", None).split())

    assert "class Net(nn.Module):" in redrawn()
    (submission / "model.py").write_text("class Net: changed after grading\n", encoding="utf-8")
    assert as_graded(submission, result) is None
    assert f"model.py (cnn) {NOT_AT_HAND}" in redrawn()
    assert as_graded(None, result) is None and as_graded(submission / "gone", result) is None
