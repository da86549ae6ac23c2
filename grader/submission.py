"""A student's submission: its directory, manifest, tasks and content hash.

Everything here reads student files as data (YAML, bytes, notebook JSON); no student code
is imported. Problems in the manifest become messages on the tasks they concern, never
exceptions that stop grading, except when there is no submission directory at all.
A task whose model lives in a notebook gets the module built from it (grader/notebook.py).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from grader import notebook
from grader.errors import SubmissionError
from grader.notebook import NotebookModule
from grader.rubric import Preprocess, Rubric

MANIFEST = "submission.yaml"
_SKIPPED_DIRS = {"__pycache__", ".git", ".ipynb_checkpoints"}
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # fullmatch: "$" would let a final "\n" in


class ManifestTask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    weights: str | None = None
    preprocess: Preprocess | None = None
    claimed_test_accuracy: float | None = Field(default=None, ge=0, le=100)
    # How the student trained (the rubric decides which fields it honours when retraining).
    recipe: dict[str, Any] | None = None
    # Test accuracies the student reports for the rubric's experiment variants, by name.
    experiments: dict[str, float] = Field(default_factory=dict)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")
    student_id: str | None = None
    name: str | None = None
    assignment: str | None = None
    tasks: dict[str, ManifestTask] = Field(default_factory=dict)


@dataclass
class TaskEntry:
    """One task as this submission answers it, after manifest and rubric defaults."""

    id: str
    model: str  # "file.py:Callable" or "file.ipynb:Callable", relative to the submission
    weights: str
    preprocess: Preprocess
    claimed_test_accuracy: float | None = None
    error: str | None = None  # set when the manifest's entry for this task is unusable
    recipe: dict[str, Any] | None = None
    reported_experiments: dict[str, float] = field(default_factory=dict)
    notebook: NotebookModule | None = None  # the module built from a notebook model

    @property
    def model_file(self) -> str:
        return self.model.rsplit(":", 1)[0]


@dataclass
class Submission:
    root: Path
    student_id: str
    name: str | None
    assignment: str | None
    sha256: str
    manifest_error: str | None = None
    warnings: list[str] = field(default_factory=list)
    manifest: Manifest = field(default_factory=Manifest)

    def unknown_tasks(self, rubric: Rubric) -> list[str]:
        """Warnings for manifest tasks the rubric does not have (they would be ignored silently)."""
        known = ", ".join(rubric.tasks)
        return [
            f"{MANIFEST}: tasks.{key} is not a task of {rubric.id} ({known}); it was ignored"
            for key in sorted(self.manifest.tasks.keys() - rubric.tasks.keys())
        ]

    def tasks(self, rubric: Rubric) -> dict[str, TaskEntry]:
        """Each task as this submission answers it. What the grader did with a notebook
        (picked it, skipped a cell, read a claimed accuracy) is added to ``warnings``, once."""
        entries = {task_id: self._task(task_id, rubric) for task_id in rubric.tasks}
        users: dict[str, list[TaskEntry]] = {}
        for entry in entries.values():
            if entry.error is None and entry.model_file.endswith(notebook.SUFFIX):
                users.setdefault(entry.model_file, []).append(entry)
        places = {task_id: place for place, task_id in enumerate(rubric.tasks, 1)}
        for name, group in users.items():
            self._attach_notebook(name, group, {e.id: places[e.id] for e in group})
        return entries

    def _task(self, task_id: str, rubric: Rubric) -> TaskEntry:
        spec = rubric.tasks[task_id]
        given = self.manifest.tasks.get(task_id, ManifestTask())
        entry = TaskEntry(
            task_id,
            given.model or spec.model,
            given.weights or spec.weights,
            given.preprocess or rubric.preprocess,
            given.claimed_test_accuracy,
            recipe=given.recipe,
            reported_experiments=dict(given.experiments),
        )
        if self.manifest_error:
            entry.error = self.manifest_error
            return entry
        try:
            _inside(self.root, entry.model_file, f"tasks.{task_id}.model")
            _inside(self.root, entry.weights, f"tasks.{task_id}.weights")
        except ValueError as err:
            entry.error = str(err)
        if entry.error is None and given.model is None:
            self._notebook_by_convention(entry)
        return entry

    def _notebook_by_convention(self, entry: TaskEntry) -> None:
        """The rubric's model file is missing: the submission's only notebook stands in for it."""
        file, name = entry.model.rsplit(":", 1)
        if file.endswith(notebook.SUFFIX) or os.path.lexists(self.root / file):
            return
        found = notebooks(self.root)
        if len(found) == 1:
            entry.model = f"{found[0]}:{name}"
            self._warn(
                f"{entry.id}: {file} is not in the submission, so the model is taken from "
                f"{found[0]}, its only notebook, as {entry.model} (say so in {MANIFEST} "
                f"as tasks.{entry.id}.model to silence this)"
            )
        elif found:
            self._warn(
                f"{entry.id}: {file} is not in the submission, which holds {len(found)} notebooks "
                f"({', '.join(found)}); name the one with the model in {MANIFEST}, "
                f"e.g. tasks.{entry.id}.model: {found[0]}:{name}"
            )

    def _attach_notebook(self, name: str, group: list[TaskEntry], places: dict[str, int]) -> None:
        """Build the module of notebook ``name`` for the tasks in ``group``; read their claims."""
        if not (self.root / name).is_file():
            return  # the harness reports the missing file, naming the notebooks there are
        try:
            book = notebook.read(self.root, name)
        except notebook.NotebookError as err:
            for entry in group:
                entry.notebook = NotebookModule(name, problem=str(err))
            return
        module = book.module()
        self._warn(*module.warnings)
        claims = book.claims(places)
        for entry in group:
            entry.notebook = module
            claim = claims.get(entry.id)
            if entry.claimed_test_accuracy is None and claim is not None:
                entry.claimed_test_accuracy = claim.accuracy
                self._warn(
                    f"{entry.id}: claimed test accuracy {claim.accuracy:g}% read from {name}, "
                    f"cell {claim.cell}: {claim.line!r}"
                )

    def _warn(self, *messages: str) -> None:
        self.warnings += [m for m in messages if m not in self.warnings]


def load_submission(root: Path) -> Submission:
    if not root.is_dir():
        raise SubmissionError(f"{root} is not a directory; give the folder of one student's submission")
    root = root.resolve()
    sub = Submission(root, root.name, None, None, content_hash(root))
    manifest_path = root / MANIFEST
    if manifest_path.is_symlink():
        sub.manifest_error = f"{MANIFEST} is a symbolic link; submit it as a regular file"
    elif manifest_path.is_file():
        _read_manifest(sub, manifest_path)
    if not _ID.fullmatch(sub.student_id):
        raise SubmissionError(
            f"folder name {root.name!r} is not a usable student id "
            "(letters, digits, '_', '-', '.'); rename the folder to the student id"
        )
    return sub


def _read_manifest(sub: Submission, path: Path) -> None:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        sub.manifest = Manifest.model_validate(data)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        sub.manifest_error = f"{MANIFEST} is not valid YAML{where}; fix it (see docs/submission.md)"
        return
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        where = f"{key}: " if key else ""
        sub.manifest_error = f"{MANIFEST}: {where}{first['msg']} (see docs/submission.md)"
        return
    except (UnicodeDecodeError, OSError) as err:
        sub.manifest_error = f"{MANIFEST} cannot be read ({err}); save it as UTF-8 text"
        return
    _apply_manifest(sub)


def _apply_manifest(sub: Submission) -> None:
    manifest = sub.manifest
    sub.name, sub.assignment = manifest.name, manifest.assignment
    if manifest.student_id and manifest.student_id != sub.student_id:
        sub.warnings.append(
            f"{MANIFEST} says student_id {manifest.student_id!r} but the folder is "
            f"{sub.student_id!r}; the folder name is used"
        )
    for key in manifest.model_extra or {}:
        sub.warnings.append(f"{MANIFEST}: unknown key {key!r} ignored")


def _inside(root: Path, relative: str, key: str) -> Path:
    """Refuse manifest paths that leave the submission, literally or through symlinks."""
    if Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise ValueError(
            f"{MANIFEST}: {key} {relative!r} leaves the submission folder; use a path relative to it"
        )
    resolved = (root / relative).resolve()
    if not resolved.is_relative_to(root):
        raise ValueError(
            f"{MANIFEST}: {key} {relative!r} is a link pointing outside the submission; "
            "submit the file itself"
        )
    return resolved


def content_hash(root: Path) -> str:
    """SHA-256 over every file's relative path and bytes; links hash their target, unfollowed."""
    digest = hashlib.sha256()
    for path in _files(root):
        rel = path.relative_to(root).as_posix()
        digest.update(rel.encode() + b"\0")
        if path.is_symlink():
            digest.update(b"link:" + os.readlink(path).encode())
        else:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def notebooks(root: Path) -> list[str]:
    """The submission's notebooks (regular files, not links, not checkpoints), relative to it."""
    return [
        path.relative_to(root).as_posix()
        for path in _files(root)
        if path.suffix == notebook.SUFFIX and path.is_file() and not path.is_symlink()
    ]


def _files(root: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        # A linked folder is hashed as a link (its target), like a linked file.
        found += [Path(dirpath) / d for d in dirnames if (Path(dirpath) / d).is_symlink()]
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS)
        found += [Path(dirpath) / name for name in filenames]
    return sorted(found)
