"""The class report (real matplotlib, weasyprint, poppler) and the index page (real Chromium)."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grader.report import (
    Failure,
    SimilarityFlag,
    gradebook,
    write_class_report,
    write_gradebooks,
    write_index,
)
from grader.report.class_figures import score_histogram
from grader.report.class_report import FIGURES_DIR, item_stats, leaderboard, params_limits
from grader.results import GradeResult
from grader.rubric import Rubric
from tests.conftest import pdf_text, skip_unless_required
from tests.graded import NASTY_NAME, RUBRIC, class_failures, class_results

FLAGS = [
    SimilarityFlag(
        "identical_weights", "cnn", ("S001", "S004"), 1.0, "weights/cnn.pt and weights/cnn.pt: same bytes"
    ),
    SimilarityFlag("similar_code", "tiny", ("S002", "S003"), 0.875, "tiny.py and tiny.py: 88% shared"),
]


def line_with(text: str, needle: str) -> str:
    lines = [line for line in text.splitlines() if needle in line]
    assert lines, f"{needle!r} not found"
    return lines[0]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Render once for the module; returns the output folder and the PDF's text."""
    out_dir = tmp_path_factory.mktemp("class")
    rubric = Rubric.model_validate(RUBRIC)
    paths = write_class_report(class_results(), class_failures(), rubric, out_dir, FLAGS)
    assert paths.html == out_dir.resolve() / "class_report.html"
    assert paths.pdf == out_dir.resolve() / "class_report.pdf"
    return out_dir, pdf_text(paths.pdf)


def test_histogram_counts_include_full_marks_in_the_last_bin() -> None:
    counts, edges = score_histogram([90, 53, 70, 100], 100)
    assert counts == [0, 0, 0, 0, 0, 1, 0, 1, 0, 2]
    assert edges == pytest.approx(list(range(0, 101, 10)))
    assert score_histogram([0, 105, -1], 50, bins=2)[0] == [2, 1]  # out of range: nearest end


def test_item_stats(results: list[GradeResult], rubric: Rubric, failures: list[Failure]) -> None:
    stats = {s.id: s for s in item_stats(gradebook(results, rubric, failures), rubric)}
    assert (stats["params"].mean, stats["params"].minimum, stats["params"].maximum) == (15, 0, 20)
    assert stats["acc"].mean == 42.5 and stats["tiny-acc"].mean == 6.25
    assert (stats["report"].mean, stats["report"].scored, stats["report"].unscored) == (9, 2, 2)
    assert stats["valid"].scored == 4  # the failed submission is not a zero


def test_leaderboard_ranks_ties_together(results: list[GradeResult], rubric: Rubric) -> None:
    board = leaderboard(results, "cnn")
    assert [(r.rank, r.student_id, r.accuracy) for r in board] == [
        (1, "S001", 86.0),
        (1, "S004", 86.0),
        (3, "S003", 80.0),
        (4, "S002", 73.0),
    ]
    assert [r.student_id for r in leaderboard(results, "tiny", top=2)] == ["S004", "S001"]
    assert params_limits(rubric) == {"cnn": 1_000_000}


def test_pdf_summary_and_item_table(report: tuple[Path, str]) -> None:
    _, text = report
    assert "HW3: CIFAR-10 models" in text
    assert "4 students" in line_with(text, "Graded")
    assert line_with(text, "Could not be graded").split()[-1] == "1"
    assert line_with(text, "Waiting for TA review").split()[-1] == "2"
    assert "78.25 / 100" in line_with(text, "Mean total")
    assert "80 / 100" in line_with(text, "Median total")
    assert line_with(text, "Similarity flags").split()[-1] == "2"
    assert line_with(text, "At most 1M parameters").split()[-6:] == ["20", "15", "0", "20", "4", "0"]
    assert line_with(text, "Written report").split()[-6:] == ["10", "9", "8", "10", "2", "2"]
    assert line_with(text, "Tiny test accuracy").split()[-6:] == ["10", "6.25", "0", "10", "4", "0"]


def test_pdf_leaderboards(report: tuple[Path, str]) -> None:
    _, text = report
    cnn = text[text.index("Leaderboard: Small CNN") : text.index("Leaderboard: Tiny model")]
    ranked = [line.split()[:2] for line in cnn.splitlines() if line.strip()[:1].isdigit()]
    assert ranked == [["1", "S001"], ["1", "S004"], ["3", "S003"], ["4", "S002"]]
    assert "1,200,000 over" in line_with(cnn, "S002")
    assert "86.00%" in line_with(cnn, "S004") and "800,000" in line_with(cnn, "S004")


def test_pdf_failures_and_flags(report: tuple[Path, str]) -> None:
    out_dir, text = report
    failed = line_with(text, "S005")
    assert "load" in failed and "submission.yaml is not valid YAML at line 3" in failed
    weights = line_with(text, "identical weights")
    assert "S001 · S004" in weights and "100.0%" in weights
    assert "87.5%" in line_with(text, "similar code")
    html = (out_dir / "class_report.html").read_text()
    assert NASTY_NAME not in html and "&lt;script&gt;" in html


def test_figures_are_drawn_and_embedded(report: tuple[Path, str]) -> None:
    out_dir, _ = report
    names = sorted(p.name for p in (out_dir / FIGURES_DIR).glob("*.png"))
    assert names == ["accuracy.png", "totals.png"]
    for name in names:
        with Image.open(out_dir / FIGURES_DIR / name) as image:
            pixels = np.asarray(image.convert("L"))
        assert pixels.shape[1] > 500 and pixels.std() > 10, name
    listing = subprocess.run(
        ["pdfimages", "-list", str(out_dir / "class_report.pdf")], capture_output=True, text=True, check=True
    ).stdout
    images = [line.split() for line in listing.splitlines()[2:]]  # after two header lines
    assert [row[2] for row in images].count("image") == 2


def test_report_of_a_class_where_nothing_was_graded(tmp_path: Path, rubric: Rubric) -> None:
    paths = write_class_report([], [Failure("S9", "no submission.yaml")], rubric, tmp_path)
    text = pdf_text(paths.pdf)
    assert "No model has both a parameter count" in text
    assert "No pair of submissions was flagged" in text
    assert "no submission.yaml" in line_with(text, "S9")


class _Rows(HTMLParser):
    """Text of each cell and the links of each row of ``table#students``, plus every link."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[list[str], list[str]]] = []
        self.links: list[str] = []
        self._in_body = False
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append(([], []))
        elif tag == "td" and self._in_body:
            self.rows[-1][0].append("")
            self._in_cell = True
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            self.links.append(href)
            if self._in_body:
                self.rows[-1][1].append(href)

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.rows[-1][0][-1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False
        elif tag == "td":
            self._in_cell = False


def chromium_dom(page: Path, profile: Path) -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        skip_unless_required(
            "chromium is not installed (scripts/setup.sh installs it)", "GRADER_REQUIRE_BROWSER"
        )
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
    ]
    command = [browser, *flags, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout


@pytest.mark.browser
def test_index_in_a_real_browser(
    tmp_path: Path, results: list[GradeResult], failures: list[Failure], rubric: Rubric
) -> None:
    out = tmp_path / "out"
    write_class_report(results, failures, rubric, out, FLAGS)
    write_gradebooks(gradebook(results, rubric, failures), out)
    index = write_index(results, failures, out)
    assert index == out.resolve() / "index.html"
    parser = _Rows()
    parser.feed(chromium_dom(index, tmp_path / "profile"))
    assert parser.links[:5] == [
        "class_report.pdf",
        "class_report.html",
        "gradebook.csv",
        "canvas.csv",
        "moodle.csv",
    ]
    rows = {}
    for raw, links in parser.rows:
        cells = [" ".join(cell.split()) for cell in raw]
        rows[cells[0]] = (cells, links)
    assert sorted(rows) == ["S001", "S002", "S003", "S004", "S005"]
    for student_id in ("S001", "S002", "S003", "S004"):
        assert rows[student_id][1] == [f"{student_id}/report.pdf"]
    assert rows["S001"][0][1:5] == ["Alice Chen", "90 / 100", "10", "pending review"]
    assert rows["S002"][0][2:5] == ["53 / 100", "", "complete"]
    assert rows["S003"][0][1] == NASTY_NAME  # escaped as text, not run
    assert rows["S003"][0][2:5] == ["70 / 100", "10", "task error"]
    assert rows["S004"][0][2] == "100 / 100"
    cells, links = rows["S005"]
    assert links == [] and cells[2] == "—"
    assert cells[4] == "failed: submission.yaml is not valid YAML at line 3 (load)"
    assert "alert" not in "".join(parser.links)


def test_index_links_only_what_exists(tmp_path: Path, results: list[GradeResult]) -> None:
    elsewhere = tmp_path / "class" / "class_report.pdf"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"%PDF")
    out = tmp_path / "out"
    out.mkdir()
    html = write_index(results[:1], [], out, class_report=elsewhere, title="Lab <2>").read_text()
    assert 'href="../class/class_report.pdf"' in html
    assert "class_report.html" not in html and "gradebook.csv" not in html
    assert "<h1>Lab &lt;2&gt;</h1>" in html
