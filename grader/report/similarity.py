"""Pairs of submissions a TA should look at: copied weights or near-identical model code.

The flags are listed in the class report, never scored. Student files are read as data
only: weights files are hashed as bytes and model files parsed with ``ast``; nothing a
student wrote is imported or unpickled in the grader process. For every task, every two
students are compared three ways:

  identical_weights  the weights files have the same SHA-256 (an exact copy of the bytes)
  similar_weights    both ``TaskResult.weights_fingerprint`` vectors are present (the
                     sandbox may fill them; nothing on the host reads tensors) and their
                     relative distance |a - b| / max(|a|, |b|) is at most WEIGHTS_TOLERANCE
  similar_code       the model files, normalized, share at least CODE_THRESHOLD of their
                     token shingles (Jaccard index of the sets of SHINGLE-token windows)

Normalizing a model file: parse it, drop docstrings, other bare strings, comments and type
annotations, rename every name the file itself defines (functions, classes, arguments,
variables, assigned attributes such as ``self.conv1``) to ``v0``, ``v1``, … in order of
first appearance, and print it back with ``ast.unparse``, which fixes the formatting.
Names the file does not define (``nn.Conv2d``, ``F.relu``) and import aliases are kept, so
two models built from different layers stay apart. The shingles ignore the numbers of the
renamed names, so one inserted variable does not shift every later name.

Why 0.8: a renamed, re-commented and reformatted copy scores 1.0 (0.93 with one extra
constructor argument), while independently written CIFAR-10 CNNs share 10-45% of their
6-token shingles (same layers, same ``forward`` idiom; measured on ``reference_models/``
and tutorial-style nets). Shared starter code raises every pair; a course that hands one
out may want a higher threshold.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Literal

import numpy as np

from grader import notebook
from grader.files import open_untrusted, read_untrusted, sha256
from grader.results import GradeResult, TaskResult

SimilarityKind = Literal["identical_weights", "similar_weights", "similar_code"]
CODE_THRESHOLD = 0.8  # Jaccard index of the shingle sets
SHINGLE = 6  # tokens per window
MIN_SHINGLES = 20  # smaller files (a one-line model) are too generic to compare
WEIGHTS_TOLERANCE = 0.01  # relative L2 distance between fingerprints
MAX_SOURCE_BYTES = 2_000_000
_TOKEN = re.compile(r"\w+|[^\w\s]")
_RENAMED = re.compile(r"v\d+")


@dataclass(frozen=True)
class SimilarityFlag:
    kind: SimilarityKind
    task: str
    students: tuple[str, str]  # in sorted order
    score: float  # 1.0 for identical; the Jaccard index or 1 - relative distance otherwise
    detail: str


@dataclass(frozen=True)
class _Entry:
    student_id: str
    root: Path
    task: TaskResult


@dataclass(frozen=True)
class CodeFingerprint:
    normalized: str  # the ast.unparse text after normalizing
    shingles: frozenset[tuple[str, ...]]


def _inside(root: Path, relative: str) -> Path | None:
    """``root / relative`` when it stays inside ``root`` through any links; else None."""
    base = root.resolve()
    path = (base / relative).resolve()
    return path if path.is_relative_to(base) else None


def file_sha256(root: Path, relative: str) -> str | None:
    """SHA-256 of a file's bytes, or None when it is missing or not a regular file in ``root``."""
    path = _inside(root, relative)
    if path is None:
        return None
    try:
        with open_untrusted(path) as handle:
            return sha256(handle)
    except OSError:
        return None


def read_source(root: Path, relative: str) -> str | None:
    """The Python source of a ``.py`` file, or the code cells of an ``.ipynb``, as text."""
    path = _inside(root, relative)
    try:
        data = read_untrusted(path, MAX_SOURCE_BYTES) if path else None
    except OSError:
        return None
    if data is None:
        return None
    text = data.decode("utf-8", errors="replace")
    if not relative.endswith(notebook.SUFFIX):
        return text
    try:
        return notebook.parse(relative, text).code()
    except notebook.NotebookError:
        return None


def _defined_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


def _is_bare_string(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


class _Normalizer(ast.NodeTransformer):
    """Drops docstrings and annotations; renames defined names in order of appearance."""

    def __init__(self, defined: set[str]) -> None:
        self.defined = defined
        self.names: dict[str, str] = {}

    def _name(self, name: str) -> str:
        if name not in self.defined:
            return name
        return self.names.setdefault(name, f"v{len(self.names)}")

    def generic_visit(self, node: ast.AST) -> ast.AST:
        for field in ("body", "orelse", "finalbody"):
            stmts = getattr(node, field, None)
            if isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt):
                setattr(node, field, [s for s in stmts if not _is_bare_string(s)] or [ast.Pass()])
        return super().generic_visit(node)

    def _definition(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> ast.AST:
        node.name = self._name(node.name)
        if not isinstance(node, ast.ClassDef):
            node.returns = None
        return self.generic_visit(node)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _definition

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg, node.annotation = self._name(node.arg), None
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST | None:
        if node.value is None:
            return None
        return self.visit(ast.Assign(targets=[node.target], value=node.value, lineno=node.lineno))

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self._name(node.id)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        node.attr = self._name(node.attr)
        return node

    def visit_keyword(self, node: ast.keyword) -> ast.AST:
        node.arg = self._name(node.arg) if node.arg else None
        return self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        node.name = self._name(node.name) if node.name else None
        return self.generic_visit(node)


def normalize_source(source: str) -> str | None:
    """The source with names, docstrings, comments and formatting normalized; None if unparsable."""
    try:
        tree = ast.parse(source)
        tree = _Normalizer(_defined_names(tree)).visit(tree)
        return ast.unparse(ast.fix_missing_locations(tree))
    except (SyntaxError, ValueError, RecursionError):
        return None


def code_fingerprint(source: str) -> CodeFingerprint | None:
    normalized = normalize_source(source)
    if normalized is None:
        return None
    tokens = [_RENAMED.sub("v", token) for token in _TOKEN.findall(normalized)]
    windows = zip(*(tokens[i:] for i in range(SHINGLE)), strict=False)
    return CodeFingerprint(normalized, frozenset(windows))


def jaccard(a: frozenset[tuple[str, ...]], b: frozenset[tuple[str, ...]]) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def fingerprint_distance(a: Sequence[float], b: Sequence[float]) -> float | None:
    """|a - b| / max(|a|, |b|); None when the vectors cannot be compared."""
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if va.shape != vb.shape or va.size == 0 or not (np.isfinite(va).all() and np.isfinite(vb).all()):
        return None
    scale = max(float(np.linalg.norm(va)), float(np.linalg.norm(vb)))
    return 0.0 if scale == 0 else float(np.linalg.norm(va - vb)) / scale


def _by_task(submissions: Sequence[tuple[Path, GradeResult]]) -> dict[str, list[_Entry]]:
    tasks: dict[str, list[_Entry]] = {}
    for root, result in sorted(submissions, key=lambda s: s[1].student_id):
        for task_id, task in result.tasks.items():
            tasks.setdefault(task_id, []).append(_Entry(result.student_id, root, task))
    return tasks


def _weights_flags(task_id: str, entries: list[_Entry], tolerance: float) -> list[SimilarityFlag]:
    digests = {e.student_id: file_sha256(e.root, e.task.weights) if e.task.weights else None for e in entries}
    flags = []
    for a, b in combinations(entries, 2):
        pair = (a.student_id, b.student_id)
        digest = digests[a.student_id]
        if digest is not None and digest == digests[b.student_id]:
            detail = f"{a.task.weights} and {b.task.weights}: same bytes, sha256 {digest[:16]}…"
            flags.append(SimilarityFlag("identical_weights", task_id, pair, 1.0, detail))
        elif a.task.weights_fingerprint and b.task.weights_fingerprint:
            distance = fingerprint_distance(a.task.weights_fingerprint, b.task.weights_fingerprint)
            if distance is not None and distance <= tolerance:
                detail = f"weight fingerprints {distance:.2%} apart (flagged at {tolerance:.2%} or less)"
                flags.append(SimilarityFlag("similar_weights", task_id, pair, 1 - distance, detail))
    return flags


def _model_file(task: TaskResult) -> str | None:
    return task.model.rsplit(":", 1)[0] if task.model else None


def _code_flags(task_id: str, entries: list[_Entry], threshold: float) -> list[SimilarityFlag]:
    prints: dict[str, tuple[str, CodeFingerprint]] = {}
    for e in entries:
        file = _model_file(e.task)
        source = read_source(e.root, file) if file else None
        code = code_fingerprint(source) if source is not None else None
        if file and code is not None and len(code.shingles) >= MIN_SHINGLES:
            prints[e.student_id] = (file, code)
    flags = []
    for (sa, (fa, ca)), (sb, (fb, cb)) in combinations(prints.items(), 2):
        score = jaccard(ca.shingles, cb.shingles)
        if score >= threshold:
            same = " (identical after normalizing)" if ca.normalized == cb.normalized else ""
            detail = f"{fa} and {fb}: {score:.0%} of normalized code shingles shared{same}"
            flags.append(SimilarityFlag("similar_code", task_id, (sa, sb), score, detail))
    return flags


def find_similar(
    submissions: Sequence[tuple[Path, GradeResult]],
    *,
    code_threshold: float = CODE_THRESHOLD,
    weights_tolerance: float = WEIGHTS_TOLERANCE,
) -> list[SimilarityFlag]:
    """Flags for every pair of students whose weights or model code look copied, task by task.

    ``submissions`` pairs each submission directory with its result; the files compared
    are the ones the result's tasks name (``TaskResult.model`` and ``TaskResult.weights``,
    relative to the directory). Missing or unreadable files are skipped silently.
    """
    flags = []
    for task_id, entries in _by_task(submissions).items():
        flags += _weights_flags(task_id, entries, weights_tolerance)
        flags += _code_flags(task_id, entries, code_threshold)
    return sorted(flags, key=lambda f: (f.task, f.kind, -f.score, f.students))
