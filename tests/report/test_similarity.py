"""Similarity flags from submission folders read as data: hashes, ast, fingerprints."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from grader.report import find_similar
from grader.report.similarity import (
    code_fingerprint,
    file_sha256,
    fingerprint_distance,
    jaccard,
    normalize_source,
    read_source,
)
from grader.results import GradeResult, TaskResult

ORIGINAL = '''
import torch
from torch import nn
import torch.nn.functional as F


class Net(nn.Module):
    """Three conv blocks and a classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(128 * 4 * 4, num_classes)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))  # (B, 32, 16, 16)
        x = self.pool(F.relu(self.conv2(x)))
        x = self.pool(F.relu(self.conv3(x)))
        return self.fc(torch.flatten(x, 1))
'''

# The same model renamed, re-commented and reformatted, with annotations added.
DISGUISED = """
import torch
from torch import nn
import torch.nn.functional as F

# My own design, written from scratch
class CifarClassifier(nn.Module):
    def __init__(self, n: int=10):
        super().__init__()
        self.a = nn.Conv2d(3, 32, 3, padding=1)
        self.b = nn.Conv2d(32, 64, 3, padding=1)
        self.c = nn.Conv2d(64, 128, 3, padding=1)
        self.p = nn.MaxPool2d(2)
        self.head = nn.Linear(128*4*4, n)
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        '''Run the network.'''
        h: torch.Tensor = self.p(F.relu(self.a(h)))
        h = self.p(F.relu(self.b(h)))
        h = self.p(F.relu(self.c(h)))
        return self.head(torch.flatten(h, 1))
"""

# Written independently: other layers, other forward pass.
DIFFERENT = """
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 5), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(64, 96, 5), nn.BatchNorm2d(96), nn.ReLU(), nn.AvgPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(0.3), nn.Linear(96 * 5 * 5, 200), nn.GELU(), nn.Linear(200, 10)
        )

    def forward(self, x):
        return self.classifier(self.features(x).view(x.size(0), -1))
"""

SIDE_EFFECT = "open(__file__ + '.ran', 'w').close()\n"


def make_submission(
    root: Path, student_id: str, code: str, weights: bytes, fingerprint: list[float] | None = None
) -> tuple[Path, GradeResult]:
    folder = root / student_id
    (folder / "weights").mkdir(parents=True)
    (folder / "model.py").write_text(SIDE_EFFECT + code)
    (folder / "weights" / "cnn.pt").write_bytes(weights)
    task = TaskResult(
        id="cnn", title="CNN", model="model.py:Net", weights="weights/cnn.pt", weights_fingerprint=fingerprint
    )
    result = GradeResult(student_id, None, "hw", "HW", "0" * 64, "0.1.0", "now", "cpu", {}, {"cnn": task})
    return folder, result


def test_flags_copied_weights_disguised_code_and_close_fingerprints(tmp_path: Path) -> None:
    submissions = [
        make_submission(tmp_path, "S1", ORIGINAL, b"weights of S1", [1.0, 2.0, 3.0, 4.0]),
        make_submission(tmp_path, "S2", DISGUISED, b"weights of S2", [9.0, 9.0, 9.0, 9.0]),
        make_submission(tmp_path, "S3", DIFFERENT, b"weights of S1", None),
        make_submission(
            tmp_path, "S4", DIFFERENT.replace("0.3", "0.5"), b"weights of S4", [1.0, 2.0, 3.0, 4.02]
        ),
    ]
    flags = find_similar(submissions)
    found = {(f.kind, f.students) for f in flags}
    assert found == {
        ("identical_weights", ("S1", "S3")),
        ("similar_weights", ("S1", "S4")),
        ("similar_code", ("S1", "S2")),
        ("similar_code", ("S3", "S4")),
    }
    by_kind = {(f.kind, f.students): f for f in flags}
    assert by_kind["identical_weights", ("S1", "S3")].score == 1.0
    # |(0, 0, 0, 0.02)| / |(1, 2, 3, 4.02)| = 0.02 / 5.4918... = 0.364%
    assert by_kind["similar_weights", ("S1", "S4")].score == pytest.approx(1 - 0.02 / 5.49185, abs=1e-5)
    code = by_kind["similar_code", ("S1", "S2")]
    assert code.score == 1.0 and "identical after normalizing" in code.detail
    assert all(f.task == "cnn" for f in flags)
    assert not list(tmp_path.rglob("*.ran")), "student code was executed"


def test_thresholds_are_parameters(tmp_path: Path) -> None:
    submissions = [
        make_submission(tmp_path, "S1", ORIGINAL, b"a", [1.0, 2.0, 3.0, 4.0]),
        make_submission(tmp_path, "S4", DIFFERENT, b"b", [1.0, 2.0, 3.0, 4.02]),
    ]
    assert find_similar(submissions, weights_tolerance=0.001) == []
    loose = find_similar(submissions, code_threshold=0.0, weights_tolerance=0.001)
    assert [(f.kind, f.students) for f in loose] == [("similar_code", ("S1", "S4"))]
    assert loose[0].score < 0.5


def test_normalizing_removes_names_docstrings_comments_and_format() -> None:
    assert normalize_source(SIDE_EFFECT + ORIGINAL) == normalize_source(SIDE_EFFECT + DISGUISED)
    normalized = normalize_source(ORIGINAL)
    assert normalized is not None
    assert "conv1" not in normalized and "Three conv blocks" not in normalized and "#" not in normalized
    assert "nn.Conv2d(3, 32, 3, padding=1)" in normalized  # library names are kept
    assert normalized.splitlines()[4] == "class v0(nn.Module):"


def test_an_inserted_variable_does_not_hide_a_copy() -> None:
    padded = ORIGINAL.replace(
        "        super().__init__()\n", "        super().__init__()\n        self.extra = 1\n"
    )
    a, b = code_fingerprint(ORIGINAL), code_fingerprint(padded)
    assert a is not None and b is not None
    assert normalize_source(ORIGINAL) != normalize_source(padded)
    assert jaccard(a.shingles, b.shingles) > 0.9


def test_unparsable_or_missing_models_are_skipped(tmp_path: Path) -> None:
    submissions = [
        make_submission(tmp_path, "S1", ORIGINAL + "\ndef broken(:\n", b"x"),
        make_submission(tmp_path, "S2", ORIGINAL + "\ndef broken(:\n", b"y"),
        make_submission(tmp_path, "S3", ORIGINAL, b"z"),
    ]
    (tmp_path / "S3" / "model.py").unlink()
    assert normalize_source("def broken(:") is None
    assert find_similar(submissions) == []


def test_notebook_code_cells_are_compared(tmp_path: Path) -> None:
    cells = [
        new_markdown_cell("# My model"),
        new_code_cell("%matplotlib inline\n!pip install torch\n" + ORIGINAL),
    ]
    nbformat.write(new_notebook(cells=cells), tmp_path / "nb.ipynb")
    source = read_source(tmp_path, "nb.ipynb")
    assert source is not None and "%matplotlib" not in source and "pip install" not in source
    assert normalize_source(source) == normalize_source(ORIGINAL)


def test_only_regular_files_inside_the_submission_are_read(tmp_path: Path) -> None:
    root, outside = tmp_path / "S1", tmp_path / "secret.pt"
    root.mkdir()
    outside.write_bytes(b"secret")
    (root / "link.pt").symlink_to(outside)
    os.mkfifo(root / "fifo.pt")  # opening it for reading would block forever
    (root / "real.pt").write_bytes(b"abc")
    assert file_sha256(root, "link.pt") is None
    assert file_sha256(root, "../secret.pt") is None
    assert file_sha256(root, "fifo.pt") is None
    assert file_sha256(root, "missing.pt") is None
    assert file_sha256(root, "real.pt") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_fingerprint_distance() -> None:
    assert fingerprint_distance([3.0, 4.0], [3.0, 4.0]) == 0.0
    assert fingerprint_distance([3.0, 4.0], [0.0, 0.0]) == 1.0
    assert fingerprint_distance([0.0, 0.0], [0.0, 0.0]) == 0.0
    assert fingerprint_distance([1.0], [1.0, 2.0]) is None
    assert fingerprint_distance([float("nan")], [1.0]) is None
    assert fingerprint_distance([], []) is None
