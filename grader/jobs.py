"""One task of one submission as a sandbox job: what goes in, and reading what comes out.

The sandbox sees the submission (read-only), the unlabeled test images and a job file,
and for a notebook model the module built from the notebook (read-only, next to the
submission, so the harness imports it like a ``.py`` file). It writes ``report.json``
and ``logits.npy`` to its own output directory. Those files are untrusted: they are
opened without following links, size-capped and schema-checked.
"""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from grader.config import Settings
from grader.notebook import NotebookModule
from grader.rubric import COUNTERS, Rubric
from grader.sandbox import Backend, Job, Limits, Mount, Outcome
from grader.submission import TaskEntry

_REPORT_CAP = 4 * 2**20
_PACKAGE_DIR = Path(__file__).resolve().parent  # the grader package, mounted for the harness


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    output_shape: list[int]
    params: int


class _Summary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[_Row]
    total_params: int
    trainable_params: int
    input_mb: float
    forward_backward_mb: float
    params_mb: float
    total_mb: float


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    type: str
    output_shape: list[int]
    params: int


class _Epoch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float | None
    val_acc: float | None
    lr: float
    seconds: float


class _Training(BaseModel):
    model_config = ConfigDict(extra="forbid")
    history: list[_Epoch]
    stopped_early: str | None
    images_per_second: float
    channels_last: bool
    nchw_after: str | None = None
    resumed_from_epoch: int | None


class HarnessReport(BaseModel):
    """What the harness may say; anything else in report.json is refused."""

    model_config = ConfigDict(extra="forbid")
    stages_done: list[str]
    error: str | None = None
    error_stage: str | None = None
    device: str | None = None
    torch_version: str | None = None
    params: int | None = None
    trainable_params: int | None = None
    output_shape: list[int] | None = None
    residual_adds: int | None = None
    module_counts: dict[str, int] = {}
    summary: _Summary | None = None
    diagram: list[_Block] = []
    macs: dict[str, int] = {}
    forward_ok: bool = False
    weights_loaded: bool = False
    weights_fingerprint: list[float] | None = None
    logits_shape: list[int] | None = None
    harness_seconds: float | None = None
    stage_seconds: dict[str, float] = {}
    started_at: float | None = None
    training: _Training | None = None


@dataclass(frozen=True)
class TrainingInputs:
    """What a retraining job adds: the recipe, the labeled training split, a checkpoint folder."""

    recipe: dict[str, Any]
    train_images: Path
    train_labels: Path  # training labels may enter the sandbox; test labels never do
    checkpoints: Path  # kept on the host between attempts, so a killed job resumes
    timeout_s: float

    def mounts(self) -> dict[str, Mount]:
        return {
            "train_images": Mount(self.train_images, "/data/train_images.npy"),
            "train_labels": Mount(self.train_labels, "/data/train_labels.npy"),
            "checkpoints": Mount(self.checkpoints, "/checkpoints", writable=True),
        }

    def spec(self, where: dict[str, str]) -> dict[str, Any]:
        return {
            "mode": "train",
            "recipe": self.recipe,
            "train_images": where["train_images"],
            "train_labels": where["train_labels"],
            "checkpoints": where["checkpoints"],
        }


@dataclass
class TaskRun:
    outcome: Outcome
    report: HarnessReport | None
    logits: np.ndarray | None
    problem: str | None  # why the outputs could not be used, in plain words


def run_task(
    backend: Backend,
    entry: TaskEntry,
    submission_root: Path,
    images: Path,
    rubric: Rubric,
    settings: Settings,
    work_dir: Path,
    training: TrainingInputs | None = None,
) -> tuple[TaskRun, dict[str, str]]:
    """Evaluate the submitted weights, or with ``training``, retrain the model from scratch."""
    out_dir = work_dir / "out"
    out_dir.mkdir(parents=True)
    job_file = work_dir / "job.json"
    mounts = {
        "submission": Mount(submission_root, "/submission"),
        "images": Mount(images, "/data/test_images.npy"),
        "job": Mount(job_file, "/job/job.json"),
        "code": Mount(_PACKAGE_DIR, "/opt/grader/grader"),
        "out": Mount(out_dir, "/out", writable=True),
    }
    if entry.notebook is not None:
        mounts["notebook"] = Mount(_stage(entry.notebook, work_dir / "notebook"), "/notebook")
    if training is not None:
        mounts |= training.mounts()
    # Inside a sandbox the job sees the mount points; without one, the host paths.
    isolated = getattr(backend, "maps_paths", True)
    where = {key: m.inside if isolated else str(m.host) for key, m in mounts.items()}
    spec = _job_spec(entry, rubric, settings, where)
    if training is not None:
        spec |= training.spec(where)
    job_file.write_text(json.dumps(spec))
    job = Job(
        argv=[sys.executable, "-m", "grader.harness", where["job"]],
        mounts=list(mounts.values()),
        workdir=where["submission"],
        timeout_s=training.timeout_s if training else settings.task_timeout_s,
        limits=_limits(settings, training is not None),
        log_dir=work_dir / "logs",
        env={
            "PYTHONPATH": str(Path(where["code"]).parent),
            # torch's thread pool sized to the job's CPU share, not to the whole machine.
            "OMP_NUM_THREADS": str(max(1, int(settings.cpus))),
        },
        gpu=_wants_gpu(settings.device),
    )
    outcome = backend.run(job)
    return read_outputs(outcome, out_dir, settings, rubric.num_classes), backend.enforced(job)


def _limits(settings: Settings, training: bool) -> Limits:
    # A training job writes checkpoints (weights and optimizer state) besides its outputs.
    largest_file = max(settings.max_output_bytes, settings.max_checkpoint_bytes if training else 0)
    return Limits(
        address_space_bytes=settings.address_space_bytes,
        file_size_bytes=largest_file,
        memory_bytes=settings.memory_bytes,
        pids=settings.max_pids,
        cpus=settings.cpus,
        output_bytes=settings.max_output_bytes,
        log_bytes=settings.max_log_bytes,
    )


def _wants_gpu(device: str) -> bool:
    """Hand the GPU to the job for --device cuda, or for auto on a machine that has one."""
    return device == "cuda" or (device == "auto" and Path("/dev/nvidiactl").exists())


def _stage(module: NotebookModule, folder: Path) -> Path:
    """Write the module built from a notebook into this job's own folder."""
    folder.mkdir()
    (folder / module.file_name).write_text(module.source, encoding="utf-8")
    return folder


def _notebook_spec(module: NotebookModule | None, folder: str | None) -> dict[str, Any] | None:
    """Where the harness finds the built module, and how its lines map to the notebook's cells."""
    if module is None or folder is None:
        return None
    return {
        "module": f"{folder}/{module.file_name}",
        "origins": [[o.module_line, o.cell, o.cell_line] for o in module.origins],
        "problem": module.problem,
    }


def _job_spec(entry: TaskEntry, rubric: Rubric, settings: Settings, where: dict[str, str]) -> dict[str, Any]:
    return {
        "submission": where["submission"],
        "model": entry.model,
        "notebook": _notebook_spec(entry.notebook, where.get("notebook")),
        "weights": entry.weights,
        "images": where["images"],
        "out": where["out"],
        "device": settings.device,
        "mean": list(entry.preprocess.mean),
        "std": list(entry.preprocess.std),
        "num_classes": rubric.num_classes,
        "input_shape": [3, 32, 32],
        "batch_size": settings.eval_batch_size,
        "counters": list(COUNTERS),
        "max_model_bytes": settings.max_model_bytes,
    }


def read_outputs(outcome: Outcome, out_dir: Path, settings: Settings, num_classes: int) -> TaskRun:
    report, problem = _read_report(out_dir / "report.json")
    logits = None
    if report is not None and "inference" in report.stages_done:
        logits, problem = _read_logits(out_dir / "logits.npy", settings.max_output_bytes, num_classes)
    if report is None and problem is None:
        problem = _silent_exit(outcome)
    return TaskRun(outcome, report, logits, problem)


def _silent_exit(outcome: Outcome) -> str:
    if outcome.resource_problem():
        return outcome.resource_problem() or ""
    if outcome.timed_out:
        return f"stopped after {outcome.seconds:.0f} s without reporting (time limit)"
    code = outcome.returncode
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (often: out of memory)" if name == "SIGKILL" else ""
        return f"the sandboxed process was killed by {name}{hint} before reporting anything"
    return f"the sandboxed process exited with code {code} before reporting anything (see the log)"


def _read_untrusted(path: Path, cap: int) -> bytes | None:
    """The file's bytes if it is a regular file under ``cap``; links are not followed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > cap:
            return None
        return f.read(cap + 1)


def _read_report(path: Path) -> tuple[HarnessReport | None, str | None]:
    if not os.path.lexists(path):
        return None, None
    raw = _read_untrusted(path, _REPORT_CAP)
    if raw is None:
        return None, "the sandbox's report file was not a regular file or was too large"
    try:
        return HarnessReport.model_validate_json(raw), None
    except ValidationError:
        return None, "the sandbox's report file did not have the expected form"


def _read_logits(path: Path, cap: int, num_classes: int) -> tuple[np.ndarray | None, str | None]:
    raw = _read_untrusted(path, cap)
    if raw is None:
        return None, "the logits file was missing, not a regular file, or too large"
    try:
        logits = np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError:
        return None, "the logits file was not a plain .npy array"
    if logits.ndim != 2 or logits.shape[1] != num_classes or logits.dtype.kind != "f":
        return (
            None,
            f"the logits had shape {list(logits.shape)} ({logits.dtype}), expected [N, {num_classes}] floats",
        )
    return logits.astype(np.float32), None
