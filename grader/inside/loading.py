"""The student's code: importing the module the manifest names and building the model.

Only source runs. Bytecode next to the student's files (``__pycache__/*.pyc``, even one
marked "unchecked-hash", or a bare ``model.pyc``) and compiled extensions are never loaded
from the submission: its folders are imported through a finder that knows ``.py`` files
alone and compiles them from their text every time, which is the text the host hashed.

Students hand in files that do more than define a model, so importing is forgiving:

- A package the sandbox lacks, imported by the student's code, becomes a stand-in that fails
  only if the model uses it (a data pipeline's ``albumentations``, a logger's ``wandb``); the
  report names it either way.
- A model file whose module-level code fails (downloads into a read-only folder, argparse,
  ``sys.exit``) or runs past ``HarnessJob.import_budget_s`` (a training loop) is imported
  again from its definitions only (imports, functions, classes, constants), which the host
  built like a notebook's (``HarnessJob.definitions``); the report says so.
- A file inside a package (``models/resnet.py`` beside ``models/__init__.py``) is imported as
  ``models.resnet``, so its relative imports work.
- Lazy modules (``nn.LazyLinear``) get their shapes from one forward on an image of zeros.
- A model whose one required argument is its number of classes (``Net(num_classes)``) is
  built with the rubric's.
- A model that needs other constructor arguments gets the names of the callables in its module that
  build one with none.
- A model whose construction reaches for the network (torchvision or timm pretrained weights)
  is told the sandbox has none, and how to build it without downloading.
"""

from __future__ import annotations

import copy
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import signal
import socket
import sys
import traceback
import types
import urllib.error
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from grader.inside import reaper
from grader.inside.channel import StageFailure, bounded
from grader.inside.layout import build_device_hint
from grader.protocol import MAX_MESSAGE, HarnessJob, NotebookRef

Origins = tuple[tuple[int, int, int], ...]
_CANDIDATES = 8  # no-argument callables tried when a model needs constructor arguments


class SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compiles the ``.py`` file itself; never reads or writes a cached ``.pyc``."""

    def get_code(self, fullname: str) -> CodeType:
        return compile(self.get_data(self.path), self.path, "exec", dont_inherit=True)


@dataclass
class StudentCode:
    """Where the student's code lives inside the sandbox, and what it imported that is missing."""

    roots: tuple[Path, ...]
    main: Path | None = None  # the model file, whose lines are named without its name
    missing: set[str] = field(default_factory=set)  # top-level packages given stand-ins
    notes: list[str] = field(default_factory=list)  # what the report should say about loading
    origins: dict[str, Origins] = field(default_factory=dict)  # a built module's lines, by its path

    def holds(self, filename: str) -> bool:
        path = Path(filename)
        return any(path.is_relative_to(root) for root in self.roots)

    def raised(self, exc: BaseException) -> bool:
        """Whether the student's code is on the traceback of ``exc``."""
        return any(self.holds(frame.filename) for frame in traceback.extract_tb(exc.__traceback__))

    def where(self, exc: BaseException, named: bool = False) -> str:
        """The exception with the file and line of the student's code it came from; the model
        file itself is named only if ``named`` (a message that does not start with it)."""
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if self.holds(f.filename)]
        message, place = str(exc), None
        if isinstance(exc, SyntaxError) and exc.filename and self.holds(exc.filename):
            message, place = exc.msg or message, self._place(exc.filename, exc.lineno or 0, named)
        elif frames:
            place = self._place(frames[-1].filename, frames[-1].lineno or 0, named)
        return f"{type(exc).__name__}: {message}" + (f" ({place})" if place else "")

    def _place(self, filename: str, line: int, named: bool) -> str:
        """A line as the student finds it: in a module built from a notebook, the cell's line;
        from a file's definitions, the file's line; else the line of the file."""
        path = Path(filename)
        root = next(r for r in self.roots if path.is_relative_to(r))
        before = [origin for origin in self.origins.get(filename, ()) if origin[0] <= line]
        if before:
            start, cell, first = before[-1]
            return f"cell {cell}, line {first + line - start}" if cell else f"line {first + line - start}"
        if path == self.main and not named:
            return f"line {line}"
        return f"{path.relative_to(root)}, line {line}"


def source_only(job: HarnessJob) -> StudentCode:
    """Import the submission's (and the host-built modules') folders from source alone, and
    give stand-ins for the packages the student's code imports that the sandbox lacks."""
    roots = [Path(job.submission)]
    for built in (job.notebook, job.definitions):
        if built is not None:
            roots.append(Path(built.module).parent)
    code = StudentCode(tuple(roots))
    code.origins = {b.module: b.origins for b in (job.notebook, job.definitions) if b is not None}
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
    sys.meta_path.append(_StandIns(code))
    return code


# --- packages the sandbox lacks ---------------------------------------------------------


class MissingPackage(ModuleNotFoundError):
    """The model used a package the sandbox lacks."""


class _StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """The last finder: a package nothing else found, imported by the student's own code,
    becomes a stand-in module (torch's and the harness's own optional imports still fail)."""

    def __init__(self, code: StudentCode) -> None:
        self.code = code

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> Any:
        top = fullname.partition(".")[0]
        if top not in self.code.missing and not self._asked_by_student():
            return None
        self.code.missing.add(top)
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: Any) -> ModuleType:
        return _Absent(spec.name)

    def exec_module(self, module: ModuleType) -> None:
        module.__path__ = []  # a package, so that its submodules are stand-ins too

    def _asked_by_student(self) -> bool:
        frame = sys._getframe(2)
        while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
            frame = frame.f_back  # type: ignore[assignment]
        return frame is not None and self.code.holds(frame.f_code.co_filename)


class _Absent(types.ModuleType):
    """A package the sandbox lacks: any name taken from it is a stand-in that fails when used."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Unusable(f"{self.__name__}.{name}")


class _Unusable:
    """Something from a missing package: harmless until the model calls or builds on it."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, name: str) -> _Unusable:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Unusable(f"{self._name}.{name}")

    def _fail(self, *args: object, **kwargs: object) -> Any:
        package = self._name.partition(".")[0]
        raise MissingPackage(
            f"{package} is not installed in the grader's sandbox, and {self._name} was used; "
            f"implement that part in the submission, or the course adds {package} to the "
            "rubric's packages and sets the sandbox up with them (docs/rubrics.md)"
        )

    __call__ = __iter__ = __getitem__ = __add__ = __mul__ = __mro_entries__ = _fail


# --- importing the model's module -------------------------------------------------------


class _TooLong(BaseException):
    """The module-level code of a model file ran past its budget (a training loop)."""


@contextmanager
def _budget(seconds: float | None) -> Iterator[None]:
    """Interrupt the import after ``seconds``, and every second after, should it catch that."""
    if not seconds:
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise _TooLong

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def import_factory(job: HarnessJob, code: StudentCode) -> Any:
    """``file.py:Name`` → the callable; the file may import its neighbours.

    For ``file.ipynb:Name`` the module is the one the host built from the notebook's
    definitions (``job.notebook``), with where each of its lines comes from in the cells.
    """
    root = Path(job.submission)
    file, name = job.model.rsplit(":", 1)
    if job.notebook and job.notebook.problem:
        raise StageFailure("import", job.notebook.problem)
    student_file = root / file
    code.main = None if job.notebook else student_file
    if not (Path(job.notebook.module) if job.notebook else student_file).is_file():
        kind = student_file.suffix
        found = ", ".join(sorted(p.name for p in root.glob(f"*{kind}"))) or f"no {kind} files"
        raise StageFailure("import", f"{file} not found in the submission (found: {found})")
    for folder in {str(student_file.parent), str(root)}:
        sys.path.insert(0, folder)
    # As if the file ran as `python model.py`: an argparse parser at module level or in
    # __init__ reads no arguments and takes its defaults, not the harness's own arguments.
    sys.argv = [str(student_file)]
    if job.notebook:
        module = _exec_built(job.notebook, file, code)
    else:
        module = _import_file(student_file, file, name, job, code)
    if not hasattr(module, name):
        taken = " (only its imports, functions, classes and constants were kept)" if job.notebook else ""
        raise StageFailure("import", f"{file} defines no {name} (it defines: {_defined(module)}){taken}")
    return getattr(module, name)


def _import_file(path: Path, file: str, name: str, job: HarnessJob, code: StudentCode) -> ModuleType:
    """The model file as Python imports it; if its module-level code fails or runs too long,
    its definitions only, and a note saying so. Where those do not define ``name`` either,
    the failure itself is the message."""
    try:
        with _budget(job.import_budget_s):
            return _import_source(path, file, Path(job.submission), code)
    except StageFailure as failure:
        if job.definitions is None or job.definitions.problem:
            raise
        first = failure
    except _TooLong:
        first = StageFailure(
            "import", f"{file} was still running its module-level code after {job.import_budget_s:.0f} s"
        )
        if job.definitions is None or job.definitions.problem:
            raise first from None
    reaper.end_descendants()  # what the module-level code started (a fork bomb's children) ends first
    module = _exec_built(job.definitions, file, code, package=_package_of(path, Path(job.submission)))
    if not hasattr(module, name):
        raise first
    fix = (
        "; the model was built from its definitions only (imports, functions, classes and constants): "
        'keep training, downloads and prints under if __name__ == "__main__":'
    )
    if _ipython_line(first.__cause__, path):
        fix = (
            "; the model was built from its definitions only, with the IPython lines (!pip, %matplotlib) "
            "left out: a .py file must be plain Python"
        )
    code.notes.append(bounded(first.message, MAX_MESSAGE - len(fix)) + fix)
    return module


def _ipython_line(exc: BaseException | None, path: Path) -> bool:
    """Whether ``exc`` is Python refusing a ``!shell`` or ``%magic`` line of the file at ``path``,
    as a notebook downloaded as a .py file keeps them."""
    return (
        isinstance(exc, SyntaxError)
        and exc.filename == str(path)
        and (exc.text or "").lstrip().startswith(("!", "%"))
    )


def _package_of(path: Path, root: Path) -> str:
    """``models.resnet``'s package ``models`` for ``models/resnet.py`` beside ``models/__init__.py``."""
    parts: list[str] = []
    folder = path.parent
    while folder != root and folder.is_relative_to(root) and (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts)


def _import_source(path: Path, file: str, root: Path, code: StudentCode) -> ModuleType:
    package = _package_of(path, root)
    if package:  # imported as part of its package, so that its relative imports work
        sys.path.insert(0, str(path.parents[len(package.split("."))]))  # the folder above the top package
        return _run(lambda: importlib.import_module(f"{package}.{path.stem}"), file, code)
    name = f"submission_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path, loader=SourceOnlyLoader(name, str(path)))
    return _exec_spec(spec, file, code)


def _exec_built(built: NotebookRef, file: str, code: StudentCode, package: str = "") -> ModuleType:
    """A module the host built from a notebook's or a file's definitions."""
    path = Path(built.module)
    name = f"{package}.{path.stem}_definitions" if package else f"submission_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path, loader=SourceOnlyLoader(name, str(path)))
    return _exec_spec(spec, file, code)


def _exec_spec(spec: Any, file: str, code: StudentCode) -> ModuleType:
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    return _run(lambda: (spec.loader.exec_module(module), module)[1], file, code)


def _run(load: Any, file: str, code: StudentCode) -> ModuleType:
    try:
        module: ModuleType = load()
    except SystemExit as exc:
        raise StageFailure("import", f"{file} called sys.exit({exc.code}) while being imported") from exc
    except _TooLong:
        raise
    except BaseException as exc:
        raise StageFailure(
            "import", f"{file} failed to import: {code.where(exc)}{network_hint(exc)}{text_hint(exc)}"
        ) from exc
    return module


def _defined(module: ModuleType) -> str:
    """The classes and functions the student's module itself defines, by name."""
    names = [
        n
        for n, v in vars(module).items()
        if inspect.isclass(v) or inspect.isfunction(v)
        if getattr(v, "__module__", None) == module.__name__
    ]
    return ", ".join(names) or "nothing"


# --- building the model -----------------------------------------------------------------


def build(
    factory: Any,
    name: str,
    code: StudentCode,
    input_shape: tuple[int, ...],
    num_classes: int,
    meta: bool = False,
) -> nn.Module | None:
    """``factory()``, its lazy modules initialised; on the meta device a failure returns None
    (some models only build on a real device, and the real build reports the error). A
    module-level model (``model = nn.Sequential(...)``) is copied instead; it exists already, so
    there is nothing to count on the meta device."""
    if isinstance(factory, nn.Module):
        model: nn.Module | None = None if meta else _copied(factory)
    else:
        model = _called(factory, name, code, num_classes, meta)
    if model is None:
        return None
    try:
        _materialize(model, input_shape)
    except Exception as exc:
        if meta:
            return None
        shape = ", ".join(map(str, (1, *input_shape)))
        raise StageFailure(
            "build",
            f"{name} has lazy modules (nn.LazyLinear, nn.LazyConv2d, ...), and a forward on a "
            f"({shape}) batch to give them their shapes raised {code.where(exc)}",
        ) from exc
    return model


def _called(factory: Any, name: str, code: StudentCode, num_classes: int, meta: bool) -> nn.Module | None:
    arguments = _class_count(factory, num_classes)
    if arguments and not meta:
        given = ", ".join(f"{k}={v}" for k, v in arguments.items())
        code.notes.append(f"{name} has no default for its number of classes: built as {name}({given})")
    try:
        if meta:
            with torch.device("meta"):
                model = factory(**arguments)
        else:
            model = factory(**arguments)
    except SystemExit as exc:
        raise StageFailure("build", f"{name}() called sys.exit({exc.code})") from exc
    except Exception as exc:
        if meta:
            return None
        raise StageFailure(
            "build",
            f"{name}() raised {code.where(exc)}{_arguments_hint(exc, factory, name)}{network_hint(exc)}"
            f"{build_device_hint(exc)}",
        ) from exc
    if not isinstance(model, nn.Module):
        raise StageFailure("build", f"{name}() returned {type(model).__name__}, expected a torch.nn.Module")
    return model


def _copied(instance: nn.Module) -> nn.Module:
    try:
        return copy.deepcopy(instance)
    except Exception:
        return instance  # it holds something that cannot be copied: a lock, a generator


def _materialize(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Lazy modules get their parameters from their first forward: one image of zeros, in
    eval mode, so that no BatchNorm statistic moves before the weights are loaded."""
    tensors = [*model.parameters(), *model.buffers()]
    if not any(is_lazy(t) for t in tensors):
        return
    device = next((t.device for t in tensors if not is_lazy(t)), torch.device("cpu"))
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(training)


def build_fresh(
    factory: Any, name: str, code: StudentCode, input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """The model with freshly initialised weights, as the student's code builds it; a
    module-level model has every layer's ``reset_parameters`` called, so that its initial
    weights come from the caller's seed as a built one's do."""
    model = build(factory, name, code, input_shape, num_classes)
    assert model is not None
    if isinstance(factory, nn.Module):
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return model


_NETWORK_ERRORS = (urllib.error.URLError, socket.gaierror, socket.timeout, ConnectionError)


def network_hint(exc: BaseException) -> str:
    """For a failure that came from reaching the network (a download of pretrained weights,
    by urllib, requests or a hub client): what to change so the model builds offline."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, _NETWORK_ERRORS):
            return (
                "; the sandbox has no network, so nothing can be downloaded: build the model without "
                "pretrained weights (torchvision: weights=None; timm: pretrained=False), as the "
                "submitted weights are loaded into it afterwards"
            )
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return ""


def text_hint(exc: BaseException) -> str:
    """For a file Python cannot read as text: not UTF-8 (saved by an editor in a local encoding
    such as Big5), or a Windows path whose backslashes make an escape (``"C:\\Users"``)."""
    if not isinstance(exc, SyntaxError):
        return ""
    message = str(exc.msg or "")
    if "Non-UTF-8 code" in message or "'utf-8' codec can't decode" in message:
        return (
            "; save the file as UTF-8 text (or declare its encoding on its first line: "
            "# -*- coding: big5 -*-)"
        )
    if "'unicodeescape' codec" in message:
        return '; write Windows paths with forward slashes or as raw strings (r"C:\\data")'
    return ""


_CLASS_COUNT_NAMES = ("num_classes", "n_classes", "nclasses", "num_class", "number_of_classes", "classes_num")


def _class_count(factory: Any, num_classes: int) -> dict[str, int]:
    """For ``Net(num_classes)`` whose one required parameter is the number of classes, by its
    usual names: that argument, the rubric's count; else nothing."""
    try:
        signature = inspect.signature(factory)
    except Exception:  # no signature, or student code that raises when asked for one
        return {}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    required = [p for p in signature.parameters.values() if p.default is p.empty and p.kind in kinds]
    if len(required) == 1 and required[0].name.lower() in _CLASS_COUNT_NAMES:
        return {required[0].name: num_classes}
    return {}


def _arguments_hint(exc: Exception, factory: Any, name: str) -> str:
    """For a model that needs constructor arguments: the callables of its module that build
    one with none, tried on the meta device."""
    if not isinstance(exc, TypeError) or "argument" not in str(exc):
        return ""
    module = sys.modules.get(getattr(factory, "__module__", ""))
    if module is None:
        return ""
    file = name.rsplit(":", 1)[0]
    found = [f"{file}:{other}" for other in _no_argument_builders(module, factory)]
    if not found:
        return "; the manifest must name a class or function that builds the model with no arguments"
    builds = "build" if len(found) > 1 else "builds"
    names = " and ".join(found)
    return f"; {names} {builds} one with no arguments: name it in submission.yaml as the task's model"


def _no_argument_builders(module: ModuleType, factory: Any) -> list[str]:
    """Up to two callables of the module, other than ``factory``, that build an ``nn.Module``
    with no arguments (at most _CANDIDATES are tried, on the meta device)."""
    candidates = [
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and value is not factory and callable(value)
        if getattr(value, "__module__", None) == module.__name__ and _takes_no_arguments(value)
    ]
    found: list[str] = []
    for name in candidates[:_CANDIDATES]:
        try:
            with torch.device("meta"):
                built = getattr(module, name)()
        except Exception:
            continue
        if isinstance(built, nn.Module):
            found.append(name)
        if len(found) == 2:
            break
    return found


def _takes_no_arguments(value: Any) -> bool:
    try:
        parameters = inspect.signature(value).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters)


def installed(requirement: str) -> bool:
    """Whether the sandbox holds ``requirement`` ("timm" or "timm==1.0.9"), by its metadata."""
    name, _, wanted = requirement.partition("==")
    try:
        found = metadata.version(name.split("[", 1)[0])
    except metadata.PackageNotFoundError:
        return False
    if not wanted or wanted == found:
        return True
    # A local label ("+cu130") on one side only does not tell two versions apart.
    one_local = ("+" in wanted) != ("+" in found)
    return one_local and wanted.split("+", 1)[0] == found.split("+", 1)[0]
