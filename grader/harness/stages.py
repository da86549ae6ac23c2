"""The task's stages, in order: import, build, analyze, load weights, infer."""

from __future__ import annotations

import importlib.util
import inspect
import io
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from grader import analysis
from grader.harness.runner import Report, StageFailure
from grader.harness.weights import load_state_dict


def run_task(job: dict[str, Any], report: Report) -> None:
    device = pick_device(job["device"])
    report.done("start", device=str(device), torch_version=torch.__version__)
    factory = import_factory(Path(job["submission"]), job["model"], job.get("notebook"))
    report.done("import")
    model = build(factory, job, report)
    analyze(model, job, report)
    load_state_dict(model, Path(job["submission"]) / job["weights"], job["weights"])
    report.done("weights", weights_loaded=True, weights_fingerprint=analysis.weights_sketch(model))
    logits = infer(model.to(device), job, device)
    buffer = io.BytesIO()
    np.save(buffer, logits, allow_pickle=False)
    report.save_logits(buffer.getvalue())
    report.done("inference", logits_shape=list(logits.shape))


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise StageFailure("start", "--device cuda was asked for but no GPU is visible in the sandbox")
    return torch.device(requested)


def import_factory(root: Path, ref: str, notebook: dict[str, Any] | None = None) -> Any:
    """``file.py:Name`` → the callable; the file may import its neighbours.

    For ``file.ipynb:Name``, ``notebook`` (from the job) names the module the host built
    from the notebook, and where each of its lines comes from in the notebook's cells.
    """
    file, name = ref.rsplit(":", 1)
    if notebook and notebook["problem"]:
        raise StageFailure("import", notebook["problem"])
    student_file = root / file
    path = Path(notebook["module"]) if notebook else student_file
    if not path.is_file():
        kind = student_file.suffix
        found = ", ".join(sorted(p.name for p in root.glob(f"*{kind}"))) or f"no {kind} files"
        raise StageFailure("import", f"{file} not found in the submission (found: {found})")
    for folder in {str(student_file.parent), str(root)}:
        sys.path.insert(0, folder)
    origins = notebook["origins"] if notebook else []
    module = _exec_module(path, file, origins)
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


def _exec_module(path: Path, file: str, origins: list[list[int]]) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"submission_{path.stem}", path)
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


def _where(exc: BaseException, path: Path, origins: list[list[int]]) -> str:
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


def _place(line: int, origins: list[list[int]]) -> str:
    """A line of the imported file as the student finds it: in a notebook, a cell's line.

    ``origins`` holds ``[module line, cell, cell line]`` for each block of a built module.
    """
    before = [origin for origin in origins if origin[0] <= line]
    if not before:
        return f"line {line}"
    start, cell, first = before[-1]
    return f"cell {cell}, line {first + line - start}"


def build(factory: Any, job: dict[str, Any], report: Report) -> nn.Module:
    """Count on the meta device first, so a model too large for memory is never allocated."""
    name = job["model"]
    meta = _call(factory, name, meta=True)
    if meta is not None:
        total, trainable = analysis.count_params(meta)
        if total * 4 > job["max_model_bytes"]:
            _report_oversized(meta, total, trainable, job, report)
    torch.manual_seed(0)
    model = _call(factory, name, meta=False)
    assert model is not None
    model.eval()
    total, trainable = analysis.count_params(model)
    report.done("build", params=total, trainable_params=trainable)
    return model


def build_fresh(factory: Any, name: str) -> nn.Module:
    """The model with freshly initialised weights, as the student's code builds it."""
    model = _call(factory, name, meta=False)
    assert model is not None
    return model


def _call(factory: Any, name: str, meta: bool) -> nn.Module | None:
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
            return None  # some models only build on a real device; the real build reports errors
        raise StageFailure("build", f"{name}() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise StageFailure("build", f"{name}() returned {type(model).__name__}, expected a torch.nn.Module")
    return model


def _report_oversized(
    meta: nn.Module, total: int, trainable: int, job: dict[str, Any], report: Report
) -> None:
    macs = {}
    x = torch.zeros(1, *job["input_shape"], device="meta")
    for counter in job["counters"]:
        try:
            macs[counter] = analysis.count_macs(meta, x, counter)
        except Exception:
            continue
    report.done("build", params=total, trainable_params=trainable, macs=macs)
    gib = total * 4 / 2**30
    limit = job["max_model_bytes"] / 2**30
    raise StageFailure(
        "build",
        f"the model has {total:,} parameters ({gib:.1f} GiB in float32), more than "
        f"the {limit:.1f} GiB the grader allows; it was counted without being built",
    )


def analyze(model: nn.Module, job: dict[str, Any], report: Report) -> None:
    shape = tuple(job["input_shape"])
    x = torch.zeros(1, *shape)
    try:
        probe = analysis.ForwardProbe(model).run(x)
    except Exception as exc:
        raise StageFailure(
            "forward",
            f"forward on a (1, {', '.join(map(str, shape))}) batch raised {type(exc).__name__}: {exc}",
        ) from exc
    out = probe.output
    if not isinstance(out, torch.Tensor):
        raise StageFailure("forward", f"forward returned {type(out).__name__}, expected a tensor of logits")
    report.done(
        "forward",
        output_shape=list(out.shape),
        residual_adds=probe.residual_adds,
        module_counts=analysis.module_counts(model),
        summary=probe.summary(shape),
        diagram=probe.blocks,
    )
    expected = [1, job["num_classes"]]
    if list(out.shape) != expected:
        raise StageFailure(
            "forward",
            f"forward on one image returned shape {list(out.shape)}, "
            f"expected {expected} (one logit per class)",
        )
    macs = {}
    for counter in job["counters"]:
        macs[counter] = analysis.count_macs(model, x, counter)
    report.done("macs", macs=macs, forward_ok=True)


def infer(model: nn.Module, job: dict[str, Any], device: torch.device) -> np.ndarray:
    images = torch.from_numpy(np.load(job["images"], allow_pickle=False))  # (N, H, W, C) uint8
    mean = torch.tensor(job["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(job["std"], device=device).view(1, 3, 1, 1)
    chunks = []
    with torch.inference_mode(), torch.autocast(device.type, enabled=device.type == "cuda"):
        for start in range(0, len(images), job["batch_size"]):
            batch = images[start : start + job["batch_size"]].to(device).permute(0, 3, 1, 2)  # (B, C, H, W)
            # Contiguous NCHW: students' forward often calls x.view(x.size(0), -1).
            x = ((batch.float() / 255.0 - mean) / std).contiguous()
            chunks.append(_forward_chunk(model, x, start, job["num_classes"]))
    return torch.cat(chunks).numpy()


def _forward_chunk(model: nn.Module, x: torch.Tensor, start: int, num_classes: int) -> torch.Tensor:
    try:
        logits = model(x)
    except Exception as exc:
        raise StageFailure(
            "inference",
            f"forward on test images {start}–{start + len(x) - 1} raised {type(exc).__name__}: {exc}",
        ) from exc
    if not isinstance(logits, torch.Tensor) or list(logits.shape) != [len(x), num_classes]:
        got = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise StageFailure(
            "inference", f"forward on a batch of {len(x)} returned {got}, expected [{len(x)}, {num_classes}]"
        )
    return logits.float().cpu()
