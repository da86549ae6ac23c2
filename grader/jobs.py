"""One task of one submission as a sandbox job: the job going in, what comes out, and what it
means for the task.

The sandbox sees the submission (read-only), the unlabeled test images, the job file, the
harness code (``grader.inside`` with the modules it shares with the host) and, for a notebook
model, the module built from the notebook. It writes ``report.json`` and ``logits.npy`` to its
own output folder. Those files are untrusted: opened without following links, size-capped,
and the report decoded into ``grader.protocol.HarnessReport``, which checks every field.
``failure`` is the one place an outcome becomes a task's failed stage and message.
"""

from __future__ import annotations

import io
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from grader import gpus
from grader.config import PACKAGE_DIR, Settings
from grader.files import UntrustedFileError, read_untrusted, write_atomic
from grader.gpus import Gpu
from grader.notebook import NotebookModule
from grader.protocol import (
    HarnessJob,
    HarnessReport,
    NotebookRef,
    Progress,
    Recipe,
    TrainingJob,
    decode,
    encode,
)
from grader.rubric import Preprocess, Rubric
from grader.sandbox import Backend, Job, Mount, Outcome
from grader.submission import TaskEntry

REPORT_CAP = 4 * 2**20
# The job ends itself this long after the grader's own deadline for it (HarnessJob.deadline_s).
JOB_SIDE_GRACE_S = 60.0
CODE_ROOT = "/opt/grader"  # where the harness code is mounted in a sandbox
# What the harness imports of the grader: its own package and the modules it shares with the host.
HARNESS_CODE = ("__init__.py", "protocol.py", "files.py", "inside")


@dataclass(frozen=True)
class TrainingInputs:
    """What a retraining job adds: the recipe, the labeled training split, a checkpoint folder."""

    recipe: Recipe
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


class Watched:
    """What a job said of its progress while it ran (``Progress`` lines), as the host saw them."""

    def __init__(self, forward: Callable[[Progress], None] | None = None) -> None:
        self.forward = forward
        self.last: Progress | None = None
        self._start: tuple[float, int] = (0.0, 0)  # when and where the current stage began
        self._last_at = 0.0

    def line(self, raw: bytes) -> None:
        try:
            now = decode(Progress, raw)
        except ValidationError:
            return  # anything may print a line like it; only well-formed ones count
        clock = time.monotonic()
        if self.last is None or now.stage != self.last.stage or now.done < self.last.done:
            self._start = (clock, now.done)
        self.last, self._last_at = now, clock
        if self.forward is not None:
            self.forward(now)

    def rate(self) -> float | None:
        """Images (or steps) per second over the stage under way, once it has moved."""
        if self.last is None or self._last_at <= self._start[0] or self.last.done <= self._start[1]:
            return None
        return (self.last.done - self._start[1]) / (self._last_at - self._start[0])


@dataclass
class TaskRun:
    outcome: Outcome
    report: HarnessReport | None
    logits: np.ndarray | None
    problem: str | None  # why the outputs could not be used, in plain words
    finished: str = "inference"  # the stage a job that did all its work reports last
    watched: Watched | None = None


@dataclass(frozen=True)
class Failure:
    stage: str
    message: str


def run_task(
    backend: Backend,
    entry: TaskEntry,
    submission_root: Path,
    rubric: Rubric,
    settings: Settings,
    work_dir: Path,
    *,
    images: Path | None = None,
    weights: Path | None = None,
    training: TrainingInputs | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    time_steps: int = 0,
    normalizations: tuple[Preprocess, ...] = (),
) -> tuple[TaskRun, dict[str, str]]:
    """With ``images``: evaluate the submitted weights (or the file ``weights`` instead) on them;
    with ``normalizations`` too, once under each of those instead of the task's own, top-1 only
    and without counting the model. With ``training``: retrain the model from scratch, leaving
    its weights in the checkpoints. With ``time_steps`` too: only time that many training steps.
    ``on_progress`` hears how far the job has got while it runs."""
    out_dir = work_dir / "out"
    out_dir.mkdir(parents=True)
    job_file = work_dir / "job.json"
    mounts = {
        "submission": Mount(submission_root, "/submission"),
        "job": Mount(job_file, "/job/job.json"),
        **{f"code:{name}": Mount(PACKAGE_DIR / name, f"{CODE_ROOT}/grader/{name}") for name in HARNESS_CODE},
        "out": Mount(out_dir, "/out", writable=True),
    }
    if images is not None:
        mounts["images"] = Mount(images, "/data/images.npy")
    if weights is not None:
        mounts["weights"] = Mount(weights, f"/weights/{weights.name}")
    if entry.notebook is not None:
        mounts["notebook"] = Mount(_stage(entry.notebook, work_dir / "notebook"), "/notebook")
    if entry.definitions is not None and entry.definitions.problem is None:
        mounts["definitions"] = Mount(_stage(entry.definitions, work_dir / "definitions"), "/definitions")
    if training is not None:
        mounts |= training.mounts()
    # Inside a sandbox the job sees the mount points; without one, the host paths.
    isolated = getattr(backend, "maps_paths", True)
    where = {key: m.inside if isolated else str(m.host) for key, m in mounts.items()}
    timeout_s = training.timeout_s if training else settings.task_timeout_s
    spec = harness_job(entry, rubric, settings, where, training, time_steps)
    spec = replace(spec, deadline_s=timeout_s + JOB_SIDE_GRACE_S)
    if normalizations:
        stats = tuple((p.mean, p.std) for p in normalizations)
        spec = replace(spec, normalizations=stats, ranks=(1,), counters=())
    write_atomic(job_file, encode(spec))
    job = Job(
        argv=[sys.executable, "-m", "grader.inside", where["job"]],
        mounts=list(mounts.values()),
        workdir=where["submission"],
        timeout_s=timeout_s,
        limits=settings.limits(training is not None),
        log_dir=work_dir / "logs",
        env={
            "PYTHONPATH": CODE_ROOT if isolated else str(PACKAGE_DIR.parent),
            # torch's thread pool sized to the job's CPU share, not to the whole machine.
            "OMP_NUM_THREADS": str(max(1, int(settings.cpus))),
            **({"CUDA_VISIBLE_DEVICES": gpu.uuid} if (gpu := job_gpu(settings)) else {}),
        },
        gpu=gpu,
        progress=(watched := Watched(on_progress)).line,
    )
    outcome = backend.run(job)
    finished = "training" if training is not None else "inference"
    run = read_outputs(outcome, out_dir, settings, rubric.num_classes, finished)
    run.watched = watched
    return run, backend.enforced(job)


def harness_job(
    entry: TaskEntry,
    rubric: Rubric,
    settings: Settings,
    where: dict[str, str],
    training: TrainingInputs | None = None,
    time_steps: int = 0,
) -> HarnessJob:
    weights_path = where.get("weights") or f"{where['submission']}/{entry.weights}"
    return HarnessJob(
        submission=where["submission"],
        model=entry.model,
        weights=entry.weights,
        weights_path=weights_path,
        images=where.get("images"),
        ranks=(1, 3) if rubric.top3 else (1,),
        out=where["out"],
        device=settings.device,  # type: ignore[arg-type]  # checked by the CLI
        mean=entry.preprocess.mean,
        std=entry.preprocess.std,
        num_classes=rubric.num_classes,
        batch_size=settings.eval_batch_size,
        max_model_bytes=settings.max_model_bytes,
        notebook=_notebook_ref(entry.notebook, where.get("notebook")),
        definitions=_notebook_ref(entry.definitions, where.get("definitions")),
        # A quarter of the job at most, so that the definitions still have time to be graded.
        import_budget_s=min(settings.import_budget_s, settings.task_timeout_s / 4),
        packages=tuple(rubric.packages),
        training=None
        if training is None
        else TrainingJob(
            training.recipe, where["train_images"], where["train_labels"], where["checkpoints"], time_steps
        ),
    )


def job_gpu(settings: Settings) -> Gpu | None:
    """The GPU a job gets: for --device cuda, or auto on a machine that has one, this grading's
    own (``settings.gpu``), else the first the driver lists."""
    wanted = settings.device == "cuda" or (settings.device == "auto" and Path("/dev/nvidiactl").exists())
    if not wanted:
        return None
    return settings.gpu or next(iter(gpus.visible()), None)


def _stage(module: NotebookModule, folder: Path) -> Path:
    """Write the module built from a notebook into this job's own folder."""
    folder.mkdir()
    (folder / module.file_name).write_text(module.source, encoding="utf-8")
    return folder


def _notebook_ref(module: NotebookModule | None, folder: str | None) -> NotebookRef | None:
    """Where the harness finds the built module, and how its lines map to the notebook's cells."""
    if module is None or folder is None:
        return None
    origins = tuple((o.module_line, o.cell, o.cell_line) for o in module.origins)
    return NotebookRef(f"{folder}/{module.file_name}", origins, module.problem)


def read_outputs(
    outcome: Outcome, out_dir: Path, settings: Settings, num_classes: int, finished: str = "inference"
) -> TaskRun:
    report, problem = _read_report(out_dir / "report.json")
    logits = None
    if report is not None and finished == "inference" and "inference" in report.stages_done:
        logits, problem = _read_logits(out_dir / "logits.npy", settings.max_output_bytes, num_classes)
    if report is None and problem is None:
        problem = _silent_exit(outcome)
    return TaskRun(outcome, report, logits, problem, finished)


def failure(run: TaskRun) -> Failure | None:
    """Why the job's task stopped, or None when it finished its last stage with usable outputs."""
    report, outcome = run.report, run.outcome
    if outcome.infrastructure:
        return Failure("infrastructure", outcome.infrastructure)
    if outcome.timed_out:
        return Failure("timeout", _timeout_message(run))
    if outcome.resource_problem():
        return Failure("resources", outcome.resource_problem() or "")
    if report is not None and report.error:
        return Failure(report.error_stage or "internal", report.error)
    if run.problem:
        return Failure("sandbox", run.problem)
    if report is not None and run.finished not in report.stages_done:
        done = report.stages_done[-1] if report.stages_done else "start"
        return Failure(
            "sandbox",
            f"the sandboxed process ended after stage {done!r} without finishing "
            f"(exit code {outcome.returncode})",
        )
    return None


# Where a job stopped at its deadline, by the last stage it finished, and what usually causes it.
_STUCK_AFTER = {
    None: "while importing the model file (a long loop or download at module level?)",
    "start": "while importing the model file (a long loop or download at module level?)",
    "import": "while building the model (an endless loop in __init__?)",
    "build": "in the first forward pass (an endless loop in forward?)",
    "forward": "while counting MACs",
    "macs": "while loading the weights",
    "weights": "during the test pass",
}


def _timeout_message(run: TaskRun) -> str:
    seconds, report, watched = run.outcome.seconds, run.report, run.watched
    last = report.stages_done[-1] if report and report.stages_done else None
    now = watched.last if watched is not None else None
    rate = watched.rate() if watched is not None else None
    if now is not None and rate and now.stage == "inference" and last == "weights":
        return (
            f"stopped during the test pass after {seconds:.0f} s at {rate:.0f} images/s: "
            f"{now.total:,} images need about {now.total / rate:.0f} s; raise --timeout"
        )
    if now is not None and rate and now.stage == "training":
        return (
            f"stopped while training, in epoch {now.epoch} of {now.epochs}, after {seconds:.0f} s at "
            f"{rate:.1f} steps/s: {now.total:,} steps need about {now.total / rate:.0f} s; raise the "
            "recipe's budget_s or --timeout"
        )
    if run.finished == "training" and last == "build":
        where = "while training"
    else:
        where = _STUCK_AFTER.get(last, f"after stage {last!r}")
    return f"stopped after {seconds:.0f} s {where}: the task did not finish within the time limit"


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


def _read_report(path: Path) -> tuple[HarnessReport | None, str | None]:
    try:
        raw = read_untrusted(path, REPORT_CAP)
    except FileNotFoundError:
        return None, None
    except UntrustedFileError:
        return None, "the sandbox's report file was not a regular file or was too large"
    try:
        return decode(HarnessReport, raw), None
    except ValidationError:
        return None, "the sandbox's report file did not have the expected form"


def _read_logits(path: Path, cap: int, num_classes: int) -> tuple[np.ndarray | None, str | None]:
    try:
        raw = read_untrusted(path, cap)
    except OSError:
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
