"""Loading a submitted state_dict without trusting it.

``torch.load(weights_only=True)`` refuses any pickle that would run code; on top of that
the common ways students save weights are accepted: a ``module.`` prefix left by
DataParallel, tensors saved on a GPU, a checkpoint dict wrapping the state_dict, and
``.safetensors`` files.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from grader.inside.channel import StageFailure

_WRAPPERS = ("state_dict", "model_state_dict", "model", "net")
_SHOWN = 8


def load_state_dict(model: nn.Module, path: Path, shown_name: str) -> None:
    state = _read(path, shown_name)
    state = _unwrap(state, shown_name)
    state = _strip_prefix(state, "module.")
    _check_keys(model, state, shown_name)
    model.load_state_dict(state, strict=True)


def _read(path: Path, name: str) -> Any:
    if not path.is_file():
        raise StageFailure(
            "weights",
            f"{name} not found in the submission; save it with "
            "torch.save(model.state_dict(), path) and add it",
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise StageFailure("weights", f"{name} is not a readable .safetensors file ({exc})") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
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


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def _unwrap(state: Any, name: str) -> Mapping[str, torch.Tensor]:
    if not isinstance(state, Mapping):
        raise StageFailure(
            "weights",
            f"{name} holds a {type(state).__name__}, expected a state_dict "
            "(save it with torch.save(model.state_dict(), path))",
        )
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        inner = [k for k in _WRAPPERS if isinstance(state.get(k), Mapping)]
        if not inner:
            keys = ", ".join(map(str, list(state)[:_SHOWN]))
            raise StageFailure(
                "weights",
                f"{name} is a dict whose values are not all tensors (keys: {keys}); "
                "save model.state_dict() itself",
            )
        return _unwrap(state[inner[0]], name)
    return state


def _strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def _check_keys(model: nn.Module, state: Mapping[str, torch.Tensor], name: str) -> None:
    expected = model.state_dict()
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
