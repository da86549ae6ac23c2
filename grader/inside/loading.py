"""The student's code: importing the module the manifest names and building the model.

Only source runs. Bytecode next to the student's files (``__pycache__/*.pyc``, even one
marked "unchecked-hash", or a bare ``model.pyc``) and compiled extensions are never loaded
from the submission: its folders are imported through a finder that knows ``.py`` files
alone and compiles them from their text every time, which is the text the host hashed.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import inspect
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

import torch
from torch import nn

from grader.inside.channel import StageFailure
from grader.protocol import HarnessJob, NotebookRef


class SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compiles the ``.py`` file itself; never reads or writes a cached ``.pyc``."""

    def get_code(self, fullname: str) -> CodeType:
        return compile(self.get_data(self.path), self.path, "exec", dont_inherit=True)


@dataclass(frozen=True)
class StudentCode:
    """Where the student's code lives inside the sandbox."""

    roots: tuple[Path, ...]

    def holds(self, filename: str) -> bool:
        path = Path(filename)
        return any(path.is_relative_to(root) for root in self.roots)

    def raised(self, exc: BaseException) -> bool:
        """Whether the student's code is on the traceback of ``exc``."""
        return any(self.holds(frame.filename) for frame in traceback.extract_tb(exc.__traceback__))


def source_only(job: HarnessJob) -> StudentCode:
    """Import the submission's (and a built notebook module's) folders from source alone."""
    roots = [Path(job.submission)]
    if job.notebook is not None:
        roots.append(Path(job.notebook.module).parent)
    code = StudentCode(tuple(roots))
    sys.dont_write_bytecode = True
    student_finder = importlib.machinery.FileFinder.path_hook(
        (SourceOnlyLoader, importlib.machinery.SOURCE_SUFFIXES)
    )

    def hook(path: str) -> Any:
        if not code.holds(path):
            raise ImportError  # the next hook, Python's own, finds it
        return student_finder(path)

    sys.path_hooks.insert(0, hook)
    sys.path_importer_cache.clear()
    return code


def import_factory(root: Path, ref: str, notebook: NotebookRef | None = None) -> Any:
    """``file.py:Name`` → the callable; the file may import its neighbours.

    For ``file.ipynb:Name``, ``notebook`` names the module the host built from the notebook,
    and where each of its lines comes from in the notebook's cells.
    """
    file, name = ref.rsplit(":", 1)
    if notebook and notebook.problem:
        raise StageFailure("import", notebook.problem)
    student_file = root / file
    path = Path(notebook.module) if notebook else student_file
    if not path.is_file():
        kind = student_file.suffix
        found = ", ".join(sorted(p.name for p in root.glob(f"*{kind}"))) or f"no {kind} files"
        raise StageFailure("import", f"{file} not found in the submission (found: {found})")
    for folder in {str(student_file.parent), str(root)}:
        sys.path.insert(0, folder)
    module = _exec_module(path, file, notebook.origins if notebook else ())
    if not hasattr(module, name):
        taken = " (a notebook gives only its imports, functions, classes and constants)" if notebook else ""
        raise StageFailure("import", f"{file} defines no {name} (it defines: {_defined(module)}){taken}")
    return getattr(module, name)


def _defined(module: ModuleType) -> str:
    """The classes and functions the student's module itself defines, by name."""
    names = [
        n
        for n, v in vars(module).items()
        if inspect.isclass(v) or inspect.isfunction(v)
        if getattr(v, "__module__", None) == module.__name__
    ]
    return ", ".join(names) or "nothing"


Origins = tuple[tuple[int, int, int], ...]


def _exec_module(path: Path, file: str, origins: Origins) -> ModuleType:
    name = f"submission_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path, loader=SourceOnlyLoader(name, str(path)))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except SystemExit as exc:
        raise StageFailure("import", f"{file} called sys.exit({exc.code}) while being imported") from exc
    except BaseException as exc:
        raise StageFailure("import", f"{file} failed to import: {_where(exc, path, origins)}") from exc
    return module


def _where(exc: BaseException, path: Path, origins: Origins) -> str:
    """The exception with the student's own line number, not the harness's."""
    line = next(
        (f.lineno for f in reversed(traceback.extract_tb(exc.__traceback__)) if Path(f.filename) == path),
        None,
    )
    message = str(exc)
    if isinstance(exc, SyntaxError):
        line, message = exc.lineno, exc.msg or message
    at = f" ({_place(line, origins)})" if line else ""
    return f"{type(exc).__name__}: {message}{at}"


def _place(line: int, origins: Origins) -> str:
    """A line of the imported file as the student finds it: in a notebook, a cell's line.

    ``origins`` holds ``(module line, cell, cell line)`` for each block of a built module.
    """
    before = [origin for origin in origins if origin[0] <= line]
    if not before:
        return f"line {line}"
    start, cell, first = before[-1]
    return f"cell {cell}, line {first + line - start}"


def build(factory: Any, name: str, meta: bool = False) -> nn.Module | None:
    """``factory()``; on the meta device a failure returns None (some models only build on a
    real device, and the real build reports the error)."""
    try:
        if meta:
            with torch.device("meta"):
                model = factory()
        else:
            model = factory()
    except SystemExit as exc:
        raise StageFailure("build", f"{name}() called sys.exit({exc.code})") from exc
    except Exception as exc:
        if meta:
            return None
        raise StageFailure("build", f"{name}() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise StageFailure("build", f"{name}() returned {type(model).__name__}, expected a torch.nn.Module")
    return model


def build_fresh(factory: Any, name: str) -> nn.Module:
    """The model with freshly initialised weights, as the student's code builds it."""
    model = build(factory, name)
    assert model is not None
    return model
