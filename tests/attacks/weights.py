"""Hostile weights files, built at test time (never committed), one per weights attack.

Each would run code or corrupt memory in a loader that trusts it; the harness loads
with ``torch.load(weights_only=True)`` (torch ≥ 2.10 for CVE-2026-24747) or safetensors,
and reads a file that unpickler refuses once more with every name in it standing in as an
inert record (a whole pickled model's weights are taken, nothing it names is called).
"""

from __future__ import annotations

import copy
import io
import os
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# Printed by every payload that runs: it must appear in no log.
PAYLOAD_MARKER = "payload-ran-5e02"
_SHELL = f"echo {PAYLOAD_MARKER}; touch /out/pwned"


class _Payload:
    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (os.system, (_SHELL,))


def pickle_reduce(path: Path, state: dict[str, torch.Tensor]) -> None:
    """A state_dict with one object whose unpickling calls os.system."""
    torch.save({**state, "fc.bias": _Payload()}, path)


class _ExecPayload:
    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (exec, (f"print({PAYLOAD_MARKER!r}); open('/out/pwned', 'w').close()",))


def pickled_module_payload(path: Path, model: torch.nn.Module) -> None:
    """``torch.save(model)``, the whole model, with an attribute whose unpickling calls exec: the
    harness's second, inert reading takes the weights and must never make that call."""
    whole = copy.deepcopy(model)
    whole.history = _ExecPayload()
    torch.save(whole, path)


def pickle_exec_global(path: Path, state: dict[str, torch.Tensor]) -> None:
    """A real torch zip whose data.pkl calls builtins.exec on a string."""
    code = f"print({PAYLOAD_MARKER!r}); open('/out/pwned', 'w').close()".encode()
    pickle = b"\x80\x02cbuiltins\nexec\nX" + struct.pack("<I", len(code)) + code + b"\x85R."
    torch.save(state, path)
    _replace_member(path, "data.pkl", pickle)


def weights_oob_view(path: Path, state: dict[str, torch.Tensor]) -> None:
    """A tensor whose view starts 2**28 elements into a 4-element storage (memory outside it)."""
    torch.save({"fc.weight": torch.zeros(4)}, path)
    in_bounds = b"K\x00K\x04\x85"  # storage offset 0, size (4,)
    out_of_bounds = b"J" + struct.pack("<i", 2**28) + b"K\x04\x85"
    _edit_member(path, "data.pkl", in_bounds, out_of_bounds)


def torchscript_weights(path: Path, state: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    """A TorchScript archive: code, not weights."""
    torch.jit.save(torch.jit.script(model), str(path))


def legacy_pickle(path: Path, state: dict[str, torch.Tensor]) -> None:
    """The pre-1.6 format (not a zip) with an os.system payload."""
    torch.save({**state, "fc.bias": _Payload()}, path, _use_new_zipfile_serialization=False)


def safetensors_header(path: Path) -> None:
    """A safetensors file whose header says it is 2**60 bytes long."""
    path.write_bytes(struct.pack("<Q", 2**60) + b'{"fc.weight": ')


def build(corpus: Path, state: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about the legacy format and TorchScript
        for attack in (pickle_reduce, pickle_exec_global, weights_oob_view, legacy_pickle):
            attack(corpus / attack.__name__ / "weights.pt", state)
        torchscript_weights(corpus / "torchscript_weights" / "weights.pt", state, model)
        pickled_module_payload(corpus / "pickled_module_payload" / "weights.pt", model)
    safetensors_header(corpus / "safetensors_header" / "weights.safetensors")


def _edit_member(path: Path, suffix: str, old: bytes, new: bytes) -> None:
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith(suffix)))
    if old not in data:
        raise ValueError(f"{path}: {old!r} not found in {suffix}; torch changed its format")
    _replace_member(path, suffix, data.replace(old, new, 1))


def _replace_member(path: Path, suffix: str, data: bytes) -> None:
    """Rewrite the zip with the member ending in ``suffix`` replaced, the rest as it was."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, data if name.endswith(suffix) else content)
    path.write_bytes(buffer.getvalue())
