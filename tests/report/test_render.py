"""The report stage end to end: real matplotlib, real weasyprint, real poppler.

The PDF is read back with ``pdftotext`` so the assertions are about what a
student would see on the page, not about the HTML we hoped to produce.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grader.report import write_report, write_results_json
from grader.report.figures import (
    BOX_GAP,
    BOX_HEIGHT,
    DIAGRAM_WIDTH,
    DPI,
    SKIP_ROOM,
    grid_title,
    model_diagram,
)
from grader.report.render import log_tail, percent, render_html, score, shape, thousands, torchsummary
from grader.results import (
    DiagramNode,
    Evaluation,
    GradeResult,
    ItemResult,
    ItemStatus,
    LayerRow,
    Summary,
    TaskResult,
)
from grader.rubric import Rubric
from tests.conftest import pdf_text
from tests.graded import ci_graded

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# Correct predictions per class out of 1,000 each; they sum to 8,076 -> 80.76%.
DIAGONAL = [850, 900, 700, 620, 800, 720, 870, 840, 900, 876]
SCRIPT = "<script>alert('owned')</script>"
FAILED_MESSAGE = f"weights/task2.pt holds a whole pickled model {SCRIPT}; save model.state_dict()"
MB = 1024**2

# (name, output shape, params) of a small CNN: three conv-BN-ReLU-pool blocks and
# a linear head. Param counts by hand: conv k*k*cin*cout + cout, BN 2*c,
# linear in*out + out; they add up to 114,186.
CNN_LAYERS = [
    ("Conv2d-1", [-1, 32, 32, 32], 3 * 3 * 3 * 32 + 32),
    ("BatchNorm2d-2", [-1, 32, 32, 32], 2 * 32),
    ("ReLU-3", [-1, 32, 32, 32], 0),
    ("MaxPool2d-4", [-1, 32, 16, 16], 0),
    ("Conv2d-5", [-1, 64, 16, 16], 3 * 3 * 32 * 64 + 64),
    ("BatchNorm2d-6", [-1, 64, 16, 16], 2 * 64),
    ("ReLU-7", [-1, 64, 16, 16], 0),
    ("MaxPool2d-8", [-1, 64, 8, 8], 0),
    ("Conv2d-9", [-1, 128, 8, 8], 3 * 3 * 64 * 128 + 128),
    ("BatchNorm2d-10", [-1, 128, 8, 8], 2 * 128),
    ("ReLU-11", [-1, 128, 8, 8], 0),
    ("MaxPool2d-12", [-1, 128, 4, 4], 0),
    ("Flatten-13", [-1, 2048], 0),
    ("Linear-14", [-1, 10], 2048 * 10 + 10),
]


def cnn_summary() -> Summary:
    rows = [LayerRow(name, out, params) for name, out, params in CNN_LAYERS]
    total = sum(r.params for r in rows)
    input_mb = 3 * 32 * 32 * 4 / MB
    # torchsummary counts every output twice (forward and backward), 4 bytes each.
    fwd_bwd_mb = 2 * 4 * sum(int(np.prod(r.output_shape[1:])) for r in rows) / MB
    params_mb = total * 4 / MB
    return Summary(
        rows=rows,
        total_params=total,
        trainable_params=total,
        input_mb=input_mb,
        forward_backward_mb=fwd_bwd_mb,
        params_mb=params_mb,
        total_mb=input_mb + fwd_bwd_mb + params_mb,
    )


def confusion() -> list[list[int]]:
    matrix = np.zeros((10, 10), dtype=int)
    for i, correct in enumerate(DIAGONAL):
        wrong = 1000 - correct
        matrix[i, i] = correct
        matrix[i, (i + 1) % 10] = wrong - wrong // 3
        matrix[i, (i + 5) % 10] = wrong // 3
    return matrix.tolist()


def ok_task() -> TaskResult:
    diagram = [
        DiagramNode(name.split("-")[0].lower() + name.split("-")[1], name.split("-")[0], out, p)
        for name, out, p in CNN_LAYERS
    ]
    evaluation = Evaluation(
        n_images=10_000,
        top1=80.76,
        top3=95.12,
        per_class={c: d / 10 for c, d in zip(CLASSES, DIAGONAL, strict=True)},
        confusion=confusion(),
        misclassified=[(i, i % 10, (i + 3) % 10) for i in range(20)] + [(999, 0, 1)],
        nonfinite_rows=3,
    )
    return TaskResult(
        id="task1",
        title="Small CNN",
        model="model.py:SmallCNN",
        weights="weights/task1.pt",
        params=114_186,
        trainable_params=114_186,
        macs={"thop": 10_571_776, "ptflops": 10_580_000},
        module_counts={"Conv2d": 3, "BatchNorm2d": 3, "ReLU": 3, "MaxPool2d": 3, "Linear": 1},
        residual_adds=0,
        forward_ok=True,
        output_shape=[-1, 10],
        weights_loaded=True,
        summary=cnn_summary(),
        diagram=diagram,
        evaluation=evaluation,
        claimed_test_accuracy=81.0,
        limits={"params": 150_000, "macs:thop": 10_000_000},
        sandbox_seconds=12.4,
    )


def failed_task() -> TaskResult:
    task = TaskResult(
        id="task2",
        title="ResNet-18",
        model="resnet.py:ResNet18",
        weights="weights/task2.pt",
        params=11_173_962,
        trainable_params=11_173_962,
        macs={"thop": 556_651_520},
        limits={"params": 12_000_000},
        forward_ok=True,
        log_tail="\n".join(f"log line {n:03d}" for n in range(100)),
    )
    task.fail("weights", FAILED_MESSAGE)
    return task


def items() -> list[ItemResult]:
    def item(
        id_: str, task: str | None, title: str, got: float, top: float, status: ItemStatus
    ) -> ItemResult:
        return ItemResult(id_, task, title, "auto", got, top, status, f"note for {id_}")

    return [
        item("t1-forward", "task1", "Forward pass on a batch", 10, 10, "pass"),
        item("t1-params", "task1", "Parameter budget", 12.5, 15, "partial"),
        item("t1-acc", "task1", "Test accuracy at least 80%", 20, 20, "pass"),
        item("t2-weights", "task2", "Weights load into the model", 0, 10, "error"),
        item("t2-acc", "task2", "ResNet test accuracy", 0, 20, "fail"),
        item("writeup", None, "Written analysis", 0, 25, "manual"),
    ]


def make_result() -> GradeResult:
    return GradeResult(
        student_id="B093040051",
        student_name="Lin Mei-Hua",
        rubric="hw2-cifar10",
        rubric_title="HW2: CNNs on CIFAR-10",
        submission_sha256="9f2c" * 16,
        grader_version="0.1.0",
        graded_at="2025-11-23T17:30:00Z",
        device="cpu",
        sandbox={"backend": "bwrap", "limits": {"memory": "4 GiB", "cpu_seconds": 600}},
        tasks={"task1": ok_task(), "task2": failed_task()},
        items=items(),
        warnings=["notebook.ipynb was not executed; graded the .py files only"],
        class_names=CLASSES,
    )


def cifar_like_images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)


def html_text(result: GradeResult, figures: dict[str, dict[str, str]] | None = None) -> str:
    """The words of the report's HTML (figures named, not drawn; no PDF), for checks of what it
    says; the module's ``rendered`` PDF shows that the PDF says what the HTML does."""
    words = re.sub(r"<[^>]+>", " ", render_html(result, figures or {}))
    return " ".join(html.unescape(words).split())


CLAIM_ALERT = (
    "task1: the claimed test accuracy 92.00% is 27.00 points above the 65.00% measured on 10,000 test "
    "images, more than 5 points apart: check that the submitted weights are the ones the claim was "
    "measured with"
)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Render once for the module; returns the output folder and the PDF's text."""
    out_dir = tmp_path_factory.mktemp("report")
    result = make_result()
    result.alerts = [CLAIM_ALERT]
    pdf = write_report(result, out_dir, cifar_like_images())
    assert pdf == out_dir.resolve() / "report.pdf"
    text = pdf_text(pdf)
    return out_dir, text


def line_with(text: str, needle: str) -> str:
    lines = [line for line in text.splitlines() if needle in line]
    assert lines, f"{needle!r} not found in the PDF text"
    return lines[0]


def test_cover_shows_student_total_and_pending(rendered: tuple[Path, str]) -> None:
    _, text = rendered
    assert "B093040051" in text
    assert "Lin Mei-Hua" in text
    assert "HW2: CNNs on CIFAR-10" in text
    assert "42.5 / 100" in text
    assert "25 points pending TA review" in text
    assert "notebook.ipynb was not executed" in text
    assert "9f2c" * 16 in text.replace("\n", "").replace(" ", "")


def test_an_alert_stands_out_on_page_one(rendered: tuple[Path, str]) -> None:
    out_dir, _ = rendered
    page_one = " ".join(pdf_text(out_dir / "report.pdf", None, page=1).split())
    assert f"Look at this first • {CLAIM_ALERT}" in page_one
    assert page_one.index("Look at this first") < page_one.index("Warnings")
    html = (out_dir / "report.html").read_text()
    assert '<div class="box alert-box">' in html


def test_sandbox_limits_are_in_an_appendix_and_page_one_names_the_backend(
    rendered: tuple[Path, str],
) -> None:
    out_dir, _ = rendered
    page_one = pdf_text(out_dir / "report.pdf", page=1)
    assert "bwrap (its limits: see the appendix)" in line_with(page_one, "Sandbox")
    assert "cpu_seconds" not in page_one and "4 GiB" not in page_one
    pages = pdf_text(out_dir / "report.pdf").split("\f")
    last = [p for p in pages if p.strip()][-1]
    assert "Appendix: sandbox limits" in last
    assert re.search(r"memory\s+4 GiB", last) and re.search(r"cpu_seconds\s+600", last)
    assert "ran in the bwrap sandbox under these limits" in " ".join(last.split())


@pytest.mark.parametrize(
    ("title", "points", "status"),
    [
        ("Forward pass on a batch", "10 / 10", "pass"),
        ("Parameter budget", "12.5 / 15", "partial"),
        ("Test accuracy at least 80%", "20 / 20", "pass"),
        ("Weights load into the model", "0 / 10", "error"),
        ("ResNet test accuracy", "0 / 20", "fail"),
        ("Written analysis", "0 / 25", "manual"),
    ],
)
def test_score_table_rows(rendered: tuple[Path, str], title: str, points: str, status: str) -> None:
    row = line_with(rendered[1], title)
    assert points in row
    assert status in row.lower()


def test_score_table_total_row(rendered: tuple[Path, str]) -> None:
    row = line_with(rendered[1], "Total ")
    assert "42.5 / 100" in row


def test_task_sizes_with_limits(rendered: tuple[Path, str]) -> None:
    _, text = rendered
    params = line_with(text, "114,186 total")
    assert "150,000" in params and "within" in params
    thop = line_with(text, "thop: 10,571,776 MACs")
    assert "10,000,000" in thop and "over" in thop
    assert "no limit" in line_with(text, "ptflops: 10,580,000 MACs")
    assert "11,173,962 total" in text


def test_torchsummary_table_in_pdf(rendered: tuple[Path, str]) -> None:
    _, text = rendered
    header = line_with(text, "Layer (type)")
    assert re.search(r"Layer \(type\)\s+Output Shape\s+Param #", header)
    conv = line_with(text, "Conv2d-1 ")
    assert re.search(r"Conv2d-1\s+\[-1, 32, 32, 32\]\s+896$", conv.rstrip())
    assert re.search(r"Linear-14\s+\[-1, 10\]\s+20,490", text)
    assert "Total params: 114,186" in text
    assert "Non-trainable params: 0" in text
    assert "Params size (MB): 0.44" in text
    assert "Forward/backward pass size (MB): 1.44" in text


def test_evaluation_numbers(rendered: tuple[Path, str]) -> None:
    _, text = rendered
    assert "80.76%" in line_with(text, "Top-1 accuracy")
    assert "95.12%" in line_with(text, "Top-3 accuracy")
    assert "81.00%" in line_with(text, "Claimed accuracy")
    assert "10,000" in line_with(text, "Test images")
    assert "3 test images produced non-finite logits" in text


def test_a_rubric_without_top3_shows_top1_only() -> None:
    result = make_result()
    evaluation = result.tasks["task1"].evaluation
    assert evaluation is not None
    assert "Top-3 accuracy 95.12%" in html_text(result)
    evaluation.top3 = None
    text = html_text(result)
    assert "Top-1 accuracy 80.76%" in text and "Top-3" not in text


def test_probabilities_instead_of_logits_are_noted_on_the_task_page() -> None:
    result = make_result()
    assert result.tasks["task1"].evaluation is not None
    result.tasks["task1"].evaluation.outputs = "probabilities"
    flat = html_text(result)
    assert "Model outputs probabilities" in flat
    assert "The model returns probabilities (it ends in softmax), not logits; accuracy is unaffected" in flat


def test_failed_task_is_explained_and_escaped(rendered: tuple[Path, str]) -> None:
    out_dir, text = rendered
    flat = " ".join(text.split())
    assert "This task stopped at stage weights: weights/task2.pt holds a whole pickled" in flat
    assert SCRIPT in flat
    html = (out_dir / "report.html").read_text()
    assert "&lt;script&gt;" in html
    assert "<script" not in html


def test_a_stopped_tasks_error_is_told_once_on_its_page(cnn_rubric: Rubric, tmp_path: Path) -> None:
    error = "weights/model.pt holds a whole pickled model; save model.state_dict() instead"
    pdf = write_report(ci_graded(cnn_rubric, error=error), tmp_path)
    flat = " ".join(pdf_text(pdf, None).split())
    assert flat.count("holds a whole pickled model") == 1
    assert f"This task stopped at stage weights: {error}" in flat
    page_one = " ".join(pdf_text(pdf, None, page=1).split())
    assert page_one.count("no evidence: task cnn stopped at stage weights") == 2  # accuracy and claim


def test_log_tail_is_cut_to_the_last_lines(rendered: tuple[Path, str]) -> None:
    _, text = rendered
    assert "40 earlier lines omitted" in text
    assert "log line 099" in text and "log line 040" in text
    assert "log line 039" not in text


def test_pdf_has_several_pages(rendered: tuple[Path, str]) -> None:
    out_dir, _ = rendered
    info = subprocess.run(
        ["pdfinfo", str(out_dir / "report.pdf")], capture_output=True, text=True, check=True
    ).stdout
    pages = int(re.search(r"^Pages:\s+(\d+)", info, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert pages > 1


def test_figures_are_drawn_and_embedded(rendered: tuple[Path, str]) -> None:
    out_dir, _ = rendered
    names = sorted(p.name for p in (out_dir / "figures").glob("*.png"))
    kinds = ["confusion", "diagram", "misclassified", "per_class"]
    assert names == [f"task1_{kind}.png" for kind in kinds]
    for name in names:
        with Image.open(out_dir / "figures" / name) as image:
            pixels = np.asarray(image.convert("L"))
        assert pixels.shape[1] > 300, name
        assert pixels.std() > 10, f"{name} looks blank"
    listing = subprocess.run(
        ["pdfimages", "-list", str(out_dir / "report.pdf")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert len(listing.splitlines()) - 2 >= len(kinds)  # two header lines


def test_misclassified_grid_says_how_its_images_were_picked(rendered: tuple[Path, str]) -> None:
    flat = " ".join(rendered[1].split())
    assert "Misclassified test images: the model's most confident mistakes, a few per true class" in flat
    shown = [(i, i % 10, (i + 3) % 10) for i in range(16)]
    assert grid_title(shown) == "Most confident mistakes, up to 2 per true class (16 images of 10 classes)"
    assert grid_title([(4, 0, 3)]) == "Most confident mistakes, up to 1 per true class (1 image of 1 class)"


def test_diagram_grows_with_the_model(rendered: tuple[Path, str]) -> None:
    out_dir, _ = rendered
    with Image.open(out_dir / "figures" / "task1_diagram.png") as image:
        width, height = image.size
    # One fixed-height step per block, so a deep model gets a taller image
    # instead of smaller text.
    assert height == pytest.approx(len(CNN_LAYERS) * (BOX_HEIGHT + BOX_GAP) * DPI, abs=2)
    assert width == pytest.approx(5.2 * DPI, abs=2)


def skip_pixels(png: Path, top: float, bottom: float, left: float) -> int:
    """Pixels of the skip arcs' colour in the band [top, bottom) inches, right of ``left``."""
    with Image.open(png) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)  # (H, W, 3)
    band = rgb[round(top * DPI) : round(bottom * DPI), round(left * DPI) :]
    red, green, blue = band[..., 0], band[..., 1], band[..., 2]
    return int(((red > 150) & (green < 110) & (blue < 80)).sum())


def test_diagram_draws_a_skip_arc_beside_each_residual_block(tmp_path: Path) -> None:
    nodes = [
        DiagramNode("conv1", "Conv2d", [-1, 64, 32, 32], 1728),
        DiagramNode("layer1", "Sequential", [-1, 64, 32, 32], 147_968, residual_adds=2),
        DiagramNode("layer2", "Sequential", [-1, 128, 16, 16], 525_568, residual_adds=2),
        DiagramNode("pool", "AdaptiveAvgPool2d", [-1, 128, 1, 1], 0),
        DiagramNode("fc", "Linear", [-1, 10], 1290),
    ]
    png = model_diagram(nodes, tmp_path / "resnet.png")
    with Image.open(png) as image:
        assert image.size[0] == pytest.approx((DIAGRAM_WIDTH + SKIP_ROOM) * DPI, abs=2)
    step, right = BOX_HEIGHT + BOX_GAP, DIAGRAM_WIDTH - 0.3 - 0.05  # the arrowheads touch the box
    arcs = [skip_pixels(png, i * step, (i + 1) * step, right) for i in range(len(nodes))]
    assert [count > 50 for count in arcs] == [False, True, True, False, False], arcs
    assert skip_pixels(png, 0, len(nodes) * step, 0) == sum(arcs)  # nothing else in that colour
    plain = model_diagram([DiagramNode(n.name, n.type, n.output_shape, n.params) for n in nodes], png)
    assert skip_pixels(plain, 0, len(nodes) * step, 0) == 0


def test_a_residual_block_is_explained_under_the_diagram() -> None:
    result = make_result()
    result.tasks["task1"].diagram[4].residual_adds = 1
    drawn = {"task1": {"diagram": "figures/task1_diagram.png"}}
    assert "An arc beside a block marks its residual (skip) connections" in html_text(result, drawn)
    assert "residual (skip) connections" not in html_text(make_result(), drawn)


def test_report_without_test_images_or_evaluation(tmp_path: Path) -> None:
    result = make_result()
    result.tasks = {"task2": failed_task()}
    pdf = write_report(result, tmp_path)
    assert not list((tmp_path / "figures").glob("*.png"))
    text = pdf_text(pdf, None)
    assert "This task stopped at stage weights" in text
    assert "Top-1 accuracy" not in text and "Layer (type)" not in text


def test_formatting_filters() -> None:
    assert thousands(11_173_962) == "11,173,962"
    assert thousands(150_000.0) == "150,000"
    assert thousands(None) == "—"
    assert percent(80.756) == "80.76%"
    assert score(12.5) == "12.5" and score(15.0) == "15" and score(0) == "0"
    assert shape([-1, 32, 32, 32]) == "[-1, 32, 32, 32]"
    assert log_tail("a\nb\nc\n", lines=2) == "[… 1 earlier lines omitted]\nb\nc"


def test_torchsummary_layout_matches_torchsummary() -> None:
    lines = torchsummary(cnn_summary()).splitlines()
    rule = "-" * 64
    assert lines[:4] == [
        rule,
        "        Layer (type)               Output Shape         Param #",
        "=" * 64,
        "            Conv2d-1           [-1, 32, 32, 32]             896",
    ]
    assert lines[-10:] == [
        "=" * 64,
        "Total params: 114,186",
        "Trainable params: 114,186",
        "Non-trainable params: 0",
        rule,
        "Input size (MB): 0.01",
        "Forward/backward pass size (MB): 1.44",
        "Params size (MB): 0.44",
        "Estimated Total Size (MB): 1.88",
        rule,
    ]


def test_results_json_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out" / "results.json"
    write_results_json(make_result(), path)
    data = json.loads(path.read_text())
    assert data["student_id"] == "B093040051"
    assert data["rubric"] == "hw2-cifar10"
    assert data["total"] == 42.5 and data["max_total"] == 100
    ok, failed = data["tasks"]["task1"], data["tasks"]["task2"]
    assert ok["status"] == "ok" and ok["error"] is None
    assert ok["params"] == 114_186 and ok["macs"]["thop"] == 10_571_776
    assert ok["macs_counter"] == "thop" and ok["test_accuracy"] == 80.76
    assert failed["status"] == "error" and failed["error"] == FAILED_MESSAGE
    assert failed["test_accuracy"] is None
    first = data["items"][1]
    assert {k: first[k] for k in ("id", "task", "title", "score", "max_score", "status")} == {
        "id": "t1-params",
        "task": "task1",
        "title": "Parameter budget",
        "score": 12.5,
        "max_score": 15,
        "status": "partial",
    }
    assert first["message"] == "note for t1-params"
    assert path.read_text().startswith('{\n  "student_id"')  # indent=2
    assert not list(path.parent.glob("*.tmp"))


def test_failed_json_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "results.json"
    path.write_text("old")

    def refuse(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_results_json(make_result(), path)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_unencodable_result_writes_nothing(tmp_path: Path) -> None:
    result = make_result()
    result.sandbox["limits"] = {"memory": object()}
    path = tmp_path / "results.json"
    with pytest.raises(TypeError):
        write_results_json(result, path)
    assert list(tmp_path.iterdir()) == []
