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
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from grader import notebook, yamlfile
from grader.config import Settings
from grader.errors import SubmissionError
from grader.files import UntrustedFileError, kind, open_untrusted, read_untrusted, sha256
from grader.notebook import NotebookModule
from grader.rubric import Preprocess, Rubric

MANIFEST = "submission.yaml"
# Folders that hold no notebook a student means to hand in (they are hashed all the same).
_NOT_HANDED_IN = {"__pycache__", ".git", ".ipynb_checkpoints"}
# A student id: visible ASCII letters, digits, '_', '-', '.', matched against the whole name.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


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
    # "file.py:Callable" or "file.ipynb:Callable", relative to the submission; model and
    # weights are "" when neither the manifest nor the rubric names them (``error`` says so).
    model: str
    weights: str
    preprocess: Preprocess
    claimed_test_accuracy: float | None = None
    error: str | None = None  # set when the manifest's entry for this task is unusable
    recipe: dict[str, Any] | None = None
    reported_experiments: dict[str, float] = field(default_factory=dict)
    notebook: NotebookModule | None = None  # the module built from a notebook model
    # A .py model file's definitions only, for when its own module-level code fails.
    definitions: NotebookModule | None = None

    @property
    def model_file(self) -> str:
        return self.model.rsplit(":", 1)[0]

    @property
    def model_name(self) -> str:
        return self.model.rsplit(":", 1)[-1]


@dataclass(frozen=True)
class Checkout:
    """The submission is a CI checkout, whose folder is named after the repository, not the
    student: the manifest's ``student_id`` is the id, else ``repository_id`` (what the CI system's
    naming gives, e.g. the username of GitHub Classroom's ``<assignment>-<username>``), else the
    folder name."""

    repository_id: str | None = None


@dataclass
class Submission:
    root: Path  # where the work lies: the folder given, or the one folder it wraps
    folder: Path  # the folder given
    student_id: str
    name: str | None
    assignment: str | None
    sha256: str
    manifest_error: str | None = None
    warnings: list[str] = field(default_factory=list)
    manifest: Manifest = field(default_factory=Manifest)

    def rubric_warnings(self, rubric: Rubric) -> list[str]:
        """What the manifest says that does not fit ``rubric``, which is graded against anyway:
        another assignment, or tasks the rubric does not have (they would be ignored silently)."""
        warnings = []
        if self.assignment is not None and self.assignment != rubric.id:
            warnings.append(
                f"{MANIFEST} says assignment {self.assignment!r} but it was graded with rubric {rubric.id!r}"
            )
        known = ", ".join(rubric.tasks)
        return warnings + [
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
        for entry in entries.values():
            file = self.root / entry.model_file
            if entry.error is None and file.suffix == ".py" and file.is_file() and not file.is_symlink():
                entry.definitions = notebook.definitions(self.root, entry.model_file, [entry.model_name])
        return entries

    def _task(self, task_id: str, rubric: Rubric) -> TaskEntry:
        spec = rubric.tasks[task_id]
        given = self.manifest.tasks.get(task_id, ManifestTask())
        model, weights = given.model or spec.model, given.weights or spec.weights
        entry = TaskEntry(
            task_id,
            model or "",
            weights or "",
            given.preprocess or rubric.preprocess,
            given.claimed_test_accuracy,
            recipe=given.recipe,
            reported_experiments=dict(given.experiments),
        )
        if self.manifest_error:
            entry.error = self.manifest_error
            return entry
        unset = [key for key, value in (("model", model), ("weights", weights)) if value is None]
        if unset:
            entry.error = _not_set(task_id, unset)
            return entry
        try:
            _inside(self.root, entry.model_file, f"tasks.{task_id}.model")
            _inside(self.root, entry.weights, f"tasks.{task_id}.weights")
            self._case_fixed(entry)
        except ValueError as err:
            entry.error = str(err)
        if entry.error is None and given.model is None:
            self._notebook_by_convention(entry)
        return entry

    def _case_fixed(self, entry: TaskEntry) -> None:
        """A model or weights path that names no file but differs only in upper and lower case
        from one file of the submission (written on Windows or macOS, whose file names ignore
        case) is taken to name that file, with a warning."""
        for key, given in (("model", entry.model_file), ("weights", entry.weights)):
            if os.path.lexists(self.root / given):
                continue
            matches = [
                rel for path in _files(self.root, Settings())
                if (rel := path.relative_to(self.root).as_posix()).casefold() == given.casefold()
            ]  # fmt: skip
            if len(matches) != 1:
                continue
            _inside(self.root, matches[0], f"tasks.{entry.id}.{key}")
            if key == "model":
                entry.model = f"{matches[0]}:{entry.model_name}"
            else:
                entry.weights = matches[0]
            self._warn(
                f"{entry.id}: {given} is not in the submission but {matches[0]} is, differing only in "
                f"upper and lower case, and was used: file names are case-sensitive where the grader "
                f"runs, so write tasks.{entry.id}.{key} as {matches[0]}"
            )

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
        module = book.module(entry.model_name for entry in group)
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


def visible(name: str) -> str:
    """A folder name as a gradebook may show it: control and non-ASCII characters escaped, so a
    name ending in a newline never looks like the student id before it."""
    return name.encode("unicode_escape").decode("ascii")


def load_submission(
    root: Path, settings: Settings | None = None, checkout: Checkout | None = None
) -> Submission:
    """The submission in folder ``root``: its id, manifest and content hash.

    The folder's name is the student id; in a CI ``checkout`` the manifest's and the
    repository's come first (see ``Checkout``). Raises ``SubmissionError`` (one line naming
    the file and the fix) when there is no such folder, no usable student id, or the folder
    holds anything but regular files, folders and links, or more than
    ``Settings.max_submission_bytes`` / ``max_submission_files``.
    """
    settings = settings or Settings()
    if root.is_file() and root.name.lower().endswith(ARCHIVES):
        raise SubmissionError(f"{root} is an archive, not a directory; unpack it and give its folder")
    if not root.is_dir():
        raise SubmissionError(f"{root} is not a directory; give the folder of one student's submission")
    root = root.resolve()
    if checkout is None and not _ID.fullmatch(root.name):
        raise SubmissionError(
            f"folder name '{visible(root.name)}' is not a usable student id "
            "(letters, digits, '_', '-', '.'); rename the folder to the student id"
        )
    files = _files(root, settings)
    inner = _unwrapped(root)
    sha256 = content_hash(inner, [f for f in files if f.is_relative_to(inner)])
    sub = Submission(inner, root, root.name, None, None, sha256)
    if inner != root:
        sub.warnings.append(
            f"the submission lies in {inner.relative_to(root).as_posix()}/ inside the folder, as unpacking "
            "an archive of the folder leaves it; graded from there"
        )
    manifest_path = inner / MANIFEST
    if manifest_path.is_symlink():
        sub.manifest_error = f"{MANIFEST} is a symbolic link; submit it as a regular file"
    elif manifest_path.is_file():
        _read_manifest(sub, manifest_path, checkout is not None)
    if checkout is not None:
        sub.student_id = _checkout_id(sub, checkout)
    return sub


# What a submission handed in as one archive file is named.
ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".7z", ".rar")
# What unpacking an archive or copying a folder around leaves beside the work itself.
_LITTER = {"__MACOSX", "Thumbs.db", "desktop.ini"}


def _unwrapped(root: Path, depth: int = 3) -> Path:
    """Where the work of ``root`` lies: ``root`` itself, or the one folder it holds besides
    hidden files and an archiver's litter, followed down at most ``depth`` levels (an archive of
    the submission folder, unpacked into a folder named after the student, nests it so)."""
    for _ in range(depth):
        kept = [p for p in root.iterdir() if not p.name.startswith(".") and p.name not in _LITTER]
        if len(kept) != 1 or kept[0].is_symlink() or not kept[0].is_dir():
            break
        root = kept[0]
    return root


def _checkout_id(sub: Submission, checkout: Checkout) -> str:
    """A CI checkout's student id: the manifest's, the repository's, or the folder's name."""
    folder = sub.folder.name
    given = sub.manifest.student_id or None
    if given is not None and not _ID.fullmatch(given):
        sub.warnings.append(f"{MANIFEST}: student_id '{visible(given)}' is not a usable student id; ignored")
        given = None
    for candidate in (given, checkout.repository_id, folder):
        if candidate is not None and _ID.fullmatch(candidate):
            return candidate
    raise SubmissionError(
        f"no usable student id: the folder '{visible(folder)}' is none and {MANIFEST} names none; "
        f"add student_id: YOUR_ID to {MANIFEST}"
    )


def _read_manifest(sub: Submission, path: Path, checkout: bool) -> None:
    try:
        data = yamlfile.load(read_untrusted(path, yamlfile.MAX_BYTES).decode("utf-8")) or {}
        sub.manifest = Manifest.model_validate(data)
    except yamlfile.YamlError as err:
        sub.manifest_error = f"{MANIFEST} is not valid YAML at {err}; fix it (see docs/submission.md)"
        return
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        where = f"{key}: " if key else ""
        sub.manifest_error = f"{MANIFEST}: {where}{first['msg']} (see docs/submission.md)"
        return
    except UntrustedFileError as err:
        sub.manifest_error = f"{MANIFEST} cannot be read ({err}); hand in a small UTF-8 text file"
        return
    except (UnicodeDecodeError, OSError) as err:
        sub.manifest_error = f"{MANIFEST} cannot be read ({err}); save it as UTF-8 text"
        return
    _apply_manifest(sub, checkout)


def _apply_manifest(sub: Submission, checkout: bool) -> None:
    manifest = sub.manifest
    sub.name, sub.assignment = manifest.name, manifest.assignment
    if not checkout and manifest.student_id and manifest.student_id != sub.student_id:
        sub.warnings.append(
            f"{MANIFEST} says student_id {manifest.student_id!r} but the folder is "
            f"{sub.student_id!r}; the folder name is used"
        )
    for key in manifest.model_extra or {}:
        sub.warnings.append(f"{MANIFEST}: unknown key {key!r} ignored")


# What a manifest key holds, as the message for a missing one shows it.
_PLACEHOLDERS = {"model": "file.py:ClassName", "weights": "path/to/weights.pt"}


def _not_set(task_id: str, keys: list[str]) -> str:
    """The task's error when neither the manifest nor the rubric names its model or weights."""
    names = " and ".join(f"tasks.{task_id}.{key}" for key in keys)
    verb = "is" if len(keys) == 1 else "are"
    add = " and ".join(f"tasks.{task_id}.{key}: {_PLACEHOLDERS[key]}" for key in keys)
    return f"{MANIFEST}: {names} {verb} not set and the rubric gives no default; add {add}"


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


def content_hash(root: Path, files: list[Path] | None = None) -> str:
    """SHA-256 over every file's relative path and bytes, read a chunk at a time; links hash
    their target, unfollowed. Every file counts, bytecode caches and hidden folders included."""
    digest = hashlib.sha256()
    for path in _files(root, Settings()) if files is None else files:
        rel = path.relative_to(root).as_posix()
        digest.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        if path.is_symlink():
            digest.update(b"link:" + os.fsencode(os.readlink(path)))
        else:
            with open_untrusted(path) as handle:
                digest.update(bytes.fromhex(sha256(handle)))
    return digest.hexdigest()


def notebooks(root: Path) -> list[str]:
    """The submission's notebooks (regular files, not links, not checkpoints), relative to it."""
    found = []
    for path in _files(root, Settings()):
        rel = path.relative_to(root)
        if path.suffix == notebook.SUFFIX and not path.is_symlink() and not _NOT_HANDED_IN & set(rel.parts):
            found.append(rel.as_posix())
    return found


def _files(root: Path, settings: Settings) -> list[Path]:
    """Every file and link in ``root`` (a linked folder is one entry: its link), sorted.

    Bounded before anything is read: a FIFO, device or socket would block or mean nothing, and
    the size is summed from the folder's entries, so a sparse or huge file is refused unread.
    """
    found: list[Path] = []
    total, entries = 0, 0
    for dirpath, dirnames, filenames in os.walk(root):
        folder = Path(dirpath)
        dirnames.sort()
        for name in [*dirnames, *filenames]:
            entries += 1
            if entries > settings.max_submission_files:
                raise SubmissionError(
                    f"{root.name} holds more than {settings.max_submission_files:,} files and folders; "
                    "hand in the code, weights and notebooks only"
                )
            path = folder / name
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode):
                continue  # os.walk goes in; a linked folder is a link here, and not entered
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
                raise SubmissionError(
                    f"{path.relative_to(root)} is {kind(info.st_mode)}, not a file; "
                    "a submission holds regular files, folders and links only: remove it"
                )
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
            found.append(path)
    if total > settings.max_submission_bytes:
        raise SubmissionError(
            f"{root.name} holds {total / 2**20:,.0f} MiB of files, over the grader's limit of "
            f"{settings.max_submission_bytes / 2**20:,.0f} MiB; leave out datasets and checkpoints"
        )
    return sorted(found)
