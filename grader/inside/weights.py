"""Loading a submitted state_dict without trusting it.

``torch.load(weights_only=True)`` refuses any pickle that would run code (NumPy scalars and
arrays beside the weights, such as a checkpoint's accuracy, are let through); on top of that
the common ways students save weights are accepted: tensors saved on a GPU, ``.safetensors``
files, a checkpoint dict wrapping the state_dict under any key (next to the epoch, the
optimizer's state and the like), the ``module.`` prefix DataParallel and DDP leave, the
``_orig_mod.`` prefix of a ``torch.compile``d model, ``AveragedModel``'s (SWA, EMA) ``module.``
and ``n_averaged``, the ``total_ops`` and ``total_params`` an old thop left on every module, and
one attribute name around the model (a Lightning module's ``model.``) or missing from it.

A whole pickled model (``torch.save(model, path)``), or a checkpoint holding other Python
objects (an ``argparse.Namespace``), is read a second time with every class and function it
names replaced by an inert record: its modules' parameters and buffers are taken from the
records, and nothing named in the file runs.

Whatever is accepted must then match the model key for key and shape for shape: nothing is
loaded partially.
"""

from __future__ import annotations

import importlib
import os
import pickle
import zipfile
from collections.abc import Iterable, KeysView, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from grader.inside.channel import StageFailure

_WRAPPERS = ("state_dict", "model_state_dict", "model", "net")  # tried first, in this order
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP/AveragedModel, torch.compile
_SWA_COUNT = "n_averaged"  # torch.optim.swa_utils.AveragedModel's buffer
_DEPTH = 3  # checkpoint levels searched for a state_dict
# What thop's profile() before 0.1 left on every module it counted, and so in a state_dict saved
# after it; newer versions remove them.
_PROFILER_BUFFERS = ("total_ops", "total_params")
_SHOWN = 8
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"  # what a checkout without LFS holds


def load_state_dict(
    model: nn.Module, path: Path, shown_name: str, submission: Path | None = None
) -> str | None:
    """``path`` read into ``model``; ``submission``, the student's folder, is searched for the
    weight files it holds when ``path`` is missing, so the message can name them. Returns what
    the report should say about how the file was read, if anything."""
    expected = model.state_dict()
    saved, note = _read(path, shown_name, submission)
    state = _pick(_tensor_maps(saved, shown_name), expected.keys())
    _check_keys(expected, state, shown_name)
    model.load_state_dict(state, strict=True)
    return note


def _read(path: Path, name: str, submission: Path | None) -> tuple[Any, str | None]:
    if not path.is_file():
        found = _weight_files(submission) if submission is not None else []
        if found:
            more = f" and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
            raise StageFailure(
                "weights",
                f"{name} not found in the submission, which holds {', '.join(found[:_SHOWN])}{more}: "
                "name the right one as the task's weights in submission.yaml",
            )
        raise StageFailure(
            "weights",
            f"{name} not found in the submission, nor any other weight file; save it with "
            "torch.save(model.state_dict(), path) and add it",
        )
    foreign = _foreign(path, name)
    if foreign is not None:
        raise StageFailure("weights", foreign)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu"), None
        except Exception as exc:
            raise StageFailure("weights", f"{name} is not a readable .safetensors file ({exc})") from exc
    try:
        with torch.serialization.safe_globals(_numpy_values()):
            return torch.load(path, map_location="cpu", weights_only=True), None
    except pickle.UnpicklingError as exc:
        inert = _read_inert(path, name)
        if inert is not None:
            return inert
        raise StageFailure(
            "weights",
            f"{name} holds a whole pickled model or other Python objects; "
            "save model.state_dict() instead (torch.save(model.state_dict(), path))",
        ) from exc
    except Exception as exc:
        raise StageFailure(
            "weights",
            f"{name} could not be read as PyTorch weights ({type(exc).__name__}: {_first_line(exc)})",
        ) from exc


_ZIP = b"PK\x03\x04"
_SAVE = "hand in the PyTorch model's weights, saved with torch.save(model.state_dict(), path)"
# Files that are not PyTorch weights, by their first bytes: what they are, and what to do.
_MAGIC = {
    b"\x89HDF\r\n\x1a\n": "an HDF5 file (Keras or h5py weights)",
    b"\x93NUMPY": "a NumPy array (.npy)",
    b"\x7fELF": "a program",
    b"%PDF": "a PDF document",
}


def _foreign(path: Path, name: str) -> str | None:
    """What is wrong with ``path`` when its first bytes show it holds no PyTorch weights at all:
    an empty file, a Git LFS pointer, a web page saved in place of a download, a zip archive cut
    short, another framework's or library's format. None for anything else, which torch.load
    then reads."""
    with path.open("rb") as file:
        head = file.read(512)
    if not head:
        return f"{name} is empty (0 bytes): it was not saved or not copied whole; {_SAVE}"
    if head.startswith(_LFS_POINTER):
        return (
            f"{name} is a Git LFS pointer, not the weights: fetch them into the checkout "
            "(git lfs pull; in GitHub Actions, actions/checkout with lfs: true)"
        )
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return (
            f"{name} is a web page, not the weights (what a download link gives when it leads to a "
            "sign-in or confirmation page): download the file itself"
        )
    if head.startswith(_ZIP) and not zipfile.is_zipfile(path):
        return (
            f"{name} is cut short or damaged (a zip archive without its end, as an interrupted "
            "copy or upload leaves it): copy or save it again"
        )
    what = next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)
    if what is None and head.startswith(_ZIP):
        what = _zip_kind(path)
    if what is None and path.suffix.lower() == ".onnx":
        what = "an ONNX model"
    return None if what is None else f"{name} is {what}, not PyTorch weights: {_SAVE}"


def _zip_kind(path: Path) -> str | None:
    """A zip archive's kind where it is no PyTorch file: NumPy's .npz, a Keras model."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()[:10_000]
    if names and all(n.endswith(".npy") for n in names):
        return "a NumPy archive (.npz)"
    if any(n.endswith(("model.weights.h5", "saved_model.pb", "keras_metadata.pb")) for n in names):
        return "a Keras model"
    if not any(n.endswith("data.pkl") for n in names):
        return "a zip archive of other files"
    return None


class _Record:
    """What a class or function named in a pickle becomes on the second reading: whatever the
    pickle calls it with or sets on it is kept as data, and nothing runs. Each name gets its
    own subclass, so ``named`` says what the file meant."""

    named = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Record:
        record = object.__new__(cls)
        record.fields = {}
        return record

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.fields: dict[str, Any]

    def __setstate__(self, state: Any) -> None:
        for part in state if isinstance(state, tuple) else (state,):
            if isinstance(part, Mapping):
                self.fields.update((k, v) for k, v in part.items() if isinstance(k, str))


def _read_inert(path: Path, name: str) -> tuple[Any, str] | None:
    """``path`` read again with every global the restricted unpickler refused standing in as a
    ``_Record``; each pickled module in it becomes its state_dict. None when that reading fails
    too (a name from a module torch blocks, such as ``os``; a file that is not a zip) or finds no
    module and no state_dict: the file is then refused as before."""
    try:
        with torch.serialization.safe_globals(_numpy_values()):
            refused = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        records = [(type("Record", (_Record,), {"named": n}), n) for n in refused]
        with torch.serialization.safe_globals([*_numpy_values(), *records]):
            saved = torch.load(path, map_location="cpu", weights_only=True)
        modules: list[str] = []
        saved = _as_state_dicts(saved, _DEPTH + 1, modules)
    except Exception:  # RecursionError included: modules nested deeper than Python recurses
        return None
    if not isinstance(saved, Mapping) or not _nested_tensor_maps(saved, _DEPTH):
        return None
    if modules:
        return saved, (
            f"{name} holds a whole pickled model ({modules[0]}), not its state_dict: its weights "
            "were read without running any code from the file; save model.state_dict() instead"
        )
    shown = ", ".join(sorted(set(refused))[:3])
    return saved, (
        f"{name} holds Python objects ({shown}) beside the weights: the weights were read "
        "without running them; save model.state_dict() alone to drop this note"
    )


def _as_state_dicts(saved: Any, depth: int, modules: list[str]) -> Any:
    """``saved`` with each pickled module in it (down to ``depth`` levels of dicts) replaced by
    its state_dict; the modules' class names are added to ``modules``."""
    if _is_module(saved):
        modules.append(saved.named.rsplit(".", 1)[-1])
        state: dict[str, torch.Tensor] = {}
        _module_state(saved, "", state, set())
        return state
    if depth > 0 and isinstance(saved, Mapping):
        return {k: _as_state_dicts(v, depth - 1, modules) for k, v in saved.items()}
    return saved


def _is_module(value: Any) -> bool:
    return isinstance(value, _Record) and all(
        isinstance(value.fields.get(part), Mapping) for part in ("_parameters", "_buffers", "_modules")
    )


def _module_state(module: _Record, prefix: str, state: dict[str, torch.Tensor], seen: set[int]) -> None:
    """What ``nn.Module.state_dict`` would give, from a record of one: its parameters, its
    buffers but the non-persistent ones, then its children's, by dotted name."""
    if id(module) in seen or len(seen) > 100_000:
        return
    seen.add(id(module))
    transient = module.fields.get("_non_persistent_buffers_set")
    skipped = transient if isinstance(transient, set) else set()
    for part in ("_parameters", "_buffers"):
        for key, value in module.fields[part].items():
            if isinstance(key, str) and isinstance(value, torch.Tensor) and key not in skipped:
                state[prefix + key] = value
    for key, child in module.fields["_modules"].items():
        if isinstance(key, str) and _is_module(child):
            _module_state(child, f"{prefix}{key}.", state, seen)


_WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors", ".bin", ".tar", ".pkl")
_LOOKED_AT = 20_000  # entries walked at most: a submission may hold a dataset


def _weight_files(submission: Path) -> list[str]:
    """The files under ``submission`` that look like saved weights, by their path in it, sorted;
    symbolic links are not followed."""
    found, seen = [], 0
    for folder, dirs, files in os.walk(submission, followlinks=False):
        dirs.sort()
        seen += len(dirs) + len(files)
        found += [
            str((Path(folder) / f).relative_to(submission))
            for f in files
            if f.lower().endswith(_WEIGHT_SUFFIXES)
        ]
        if seen > _LOOKED_AT:
            break
    return sorted(found)


def _numpy_values() -> list[Any]:
    """What NumPy scalars and arrays in a checkpoint unpickle through (``"acc": np.float64(93.1)``,
    a loss history as an array), under NumPy 2's module names and NumPy 1's. They rebuild plain
    values from bytes; any object inside an object array still passes the same restricted
    unpickler."""
    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # NumPy 1, where numpy.core is the module itself
        multiarray = importlib.import_module("numpy.core.multiarray")
    numeric = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"}  # bool, integers, floats, complex
    return [
        np.dtype,
        *sorted(numeric, key=lambda kind: kind.__name__),
        np.ndarray,
        multiarray.scalar,
        multiarray._reconstruct,
        (multiarray.scalar, "numpy.core.multiarray.scalar"),
        (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        (multiarray.scalar, "numpy._core.multiarray.scalar"),
        (multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
    ]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def _tensor_maps(state: Any, name: str) -> list[Mapping[str, torch.Tensor]]:
    """Every mapping of names to tensors in what was saved: the object itself, or those a
    checkpoint dict holds (up to _DEPTH levels down), the usual wrapper keys first."""
    if not isinstance(state, Mapping):
        raise StageFailure(
            "weights",
            f"{name} holds a {type(state).__name__}, expected a state_dict "
            "(save it with torch.save(model.state_dict(), path))",
        )
    found = _nested_tensor_maps(state, _DEPTH)
    if not found:
        keys = ", ".join(map(str, list(state)[:_SHOWN]))
        raise StageFailure(
            "weights",
            f"{name} is a dict whose values are not all tensors (keys: {keys}); "
            "save model.state_dict() itself",
        )
    return found


def _nested_tensor_maps(state: Mapping[Any, Any], depth: int) -> list[Mapping[str, torch.Tensor]]:
    if all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        return [state]
    if depth == 0:
        return []
    keys = sorted(state, key=_wrapper_rank)
    inner = [state[k] for k in keys if isinstance(state[k], Mapping)]
    return [found for value in inner for found in _nested_tensor_maps(value, depth - 1)]


def _wrapper_rank(key: Any) -> int:
    """Where a checkpoint's key comes in the search: the usual wrapper keys first; any other
    key (a number, or a tensor in a crafted file) after them."""
    return _WRAPPERS.index(key) if isinstance(key, str) and key in _WRAPPERS else len(_WRAPPERS)


def _pick(candidates: list[Mapping[str, torch.Tensor]], expected: KeysView[str]) -> dict[str, torch.Tensor]:
    """The candidate whose names, once the usual prefixes are handled, are the model's own;
    else the one sharing most names with it (whose mismatch is then reported)."""
    renamed = [_rename(dict(c), expected) for c in candidates]
    return max(renamed, key=lambda state: (state.keys() == expected, len(state.keys() & expected)))


def _rename(state: dict[str, torch.Tensor], expected: KeysView[str]) -> dict[str, torch.Tensor]:
    if state.keys() == expected:
        return state
    state = {k: v for k, v in state.items() if k in expected or k.rsplit(".", 1)[-1] not in _PROFILER_BUFFERS}
    if _SWA_COUNT in state and _SWA_COUNT not in expected:
        rest = {k: v for k, v in state.items() if k != _SWA_COUNT}
        if rest and all(k.startswith("module.") for k in rest):
            state = rest
    while state and (prefix := next((p for p in _PREFIXES if all(k.startswith(p) for k in state)), None)):
        state = {k[len(prefix) :]: v for k, v in state.items()}
    if state.keys() == expected:
        return state
    outer = _common_head(state.keys())  # saved from a wrapper: "model.conv1.weight"
    if outer and {k[len(outer) :] for k in state} == expected:
        return {k[len(outer) :]: v for k, v in state.items()}
    inner = _common_head(expected)  # the manifest names the wrapper: "net.conv1.weight" expected
    if inner and {inner + k for k in state} == expected:
        return {inner + k: v for k, v in state.items()}
    return state


def _common_head(keys: Iterable[str]) -> str:
    """The first dotted component with its dot, when every key has it and goes on; else ""."""
    heads = {k.split(".", 1)[0] + "." if "." in k else "" for k in keys}
    return heads.pop() if len(heads) == 1 else ""


def _check_keys(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], name: str) -> None:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {list(state[k].shape)} vs model {list(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if keys:
            more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
            problems.append(f"{label}: {', '.join(keys[:_SHOWN])}{more}")
    if problems:
        raise StageFailure(
            "weights",
            f"{name} does not match the model ({'; '.join(problems)}); "
            "save the state_dict of the same class the manifest names",
        )
