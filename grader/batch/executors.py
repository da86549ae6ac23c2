"""Where a batch's submissions are graded: local worker processes, or Ray tasks.

Both grade each submission in a worker process of its own (``python -m grader.batch.worker``)
under the watchdog (watchdog.py), at most ``workers`` at a time, and hand each finished row to
the driver's ``done`` callback on the driver's thread, with the submission's outputs in its
staging folder. A worker that crashes, is stopped by the watchdog or cannot be scheduled
becomes that submission's failed row; the others go on.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from enum import StrEnum
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol

from grader import gpus
from grader.batch.records import Row
from grader.batch.watchdog import Bounds, supervise, worker_argv
from grader.batch.worker import WorkerJob
from grader.config import Settings
from grader.files import write_atomic
from grader.gpus import Gpu, GpuPool
from grader.jobs import job_gpu
from grader.overrides import Override
from grader.protocol import decode, encode, from_plain, to_plain
from grader.sandbox.leftovers import work_dir


class ExecutorChoice(StrEnum):
    """local: worker processes on this machine; ray: Ray tasks, on this machine or a cluster."""

    LOCAL = "local"
    RAY = "ray"


_LOG_TAIL = 2_000
STAGE_SUFFIX = ".stage"  # beside a submission's staging folder: what its grading does now


@dataclass
class BatchJob:
    source: Path  # the submission folder
    student_id: str
    fingerprint: str  # of what is graded (records.fingerprint)
    staging: Path  # the worker's outputs go here
    log: Path  # the worker's own log (the grader's, not the student's)
    overrides: list[Override]


Done = Callable[[BatchJob, Row], None]


class Executor(Protocol):
    name: str

    def run(self, jobs: list[BatchJob], done: Done) -> None: ...


def grade_supervised(
    source: Path,
    student_id: str,
    rubric_file: Path,
    settings: Settings,
    target: Path,
    overrides: list[Override],
    log: Path,
    limit: Bounds,
) -> Row:
    """Grade one submission into ``target`` in a worker process under the watchdog."""
    spec, row_file = target.with_suffix(".job.json"), target.with_suffix(".row.json")
    stage_file = target.with_suffix(STAGE_SUFFIX)
    job = WorkerJob(source, rubric_file, settings, target, overrides, row_file, os.getpid(), stage_file)
    write_atomic(spec, encode(job))
    try:
        ended = supervise(worker_argv(spec), log, limit)
        if ended.stopped is None and ended.returncode == 0 and row_file.is_file():
            return decode(Row, row_file.read_bytes())
    finally:
        for leftover in (spec, row_file, stage_file):
            leftover.unlink(missing_ok=True)
    reason = (
        ended.stopped or f"the grading process ended with exit code {ended.returncode}: {_last_line(log)}"
    )
    return Row(student_id, str(source), "failed", reason)


class LocalExecutor:
    """A fresh Python process per submission, ``workers`` at a time, on this machine."""

    name = "local"

    def __init__(
        self,
        rubric_file: Path,
        settings: Settings,
        workers: int,
        limit: Bounds,
        devices: list[Gpu] | None = None,
    ) -> None:
        self.rubric_file, self.settings, self.workers, self.limit = rubric_file, settings, workers, limit
        # On CUDA each grading gets a GPU of its own, the least busy one (the driver's list).
        self.gpus = GpuPool(gpus.visible() if devices is None else devices)

    def run(self, jobs: list[BatchJob], done: Done) -> None:
        with ThreadPoolExecutor(self.workers) as pool:
            futures = {pool.submit(self._one, job): job for job in jobs}
            try:
                for future in as_completed(futures):
                    done(futures[future], future.result())
            except BaseException:  # Ctrl-C: start nothing more; each running worker is stopped
                pool.shutdown(wait=False, cancel_futures=True)
                raise

    def _one(self, job: BatchJob) -> Row:
        gpu = self.gpus.take() if job_gpu(self.settings) is not None else None
        try:
            return grade_supervised(
                job.source, job.student_id, self.rubric_file, replace(self.settings, gpu=gpu), job.staging,
                job.overrides, job.log, self.limit,
            )  # fmt: skip
        finally:
            self.gpus.give_back(gpu)


class RayExecutor:
    """Each submission is a Ray task (one GPU each when grading on CUDA, a CPU otherwise).

    The submission travels as a tar archive and the outputs come back as bytes, so
    workers on other machines need only the grader installed and the dataset at the
    same ``data_dir``; the driver writes every output.
    """

    name = "ray"

    def __init__(
        self, rubric_file: Path, settings: Settings, workers: int, limit: Bounds, address: str | None
    ) -> None:
        self.rubric_file, self.settings, self.workers, self.limit = rubric_file, settings, workers, limit
        self.address = address

    def run(self, jobs: list[BatchJob], done: Done) -> None:
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        try:
            self._schedule(ray, jobs, done)
        finally:
            if started_here:
                ray.shutdown()

    def _schedule(self, ray: Any, jobs: list[BatchJob], done: Done) -> None:
        task = ray.remote(_ray_grade).options(num_cpus=1, num_gpus=1 if self._gpu(ray) else 0, max_retries=0)
        rubric = (self.rubric_file.name, self.rubric_file.read_text(encoding="utf-8"))
        settings = to_plain(self.settings)
        queue = list(jobs)
        pending: dict[Any, BatchJob] = {}
        try:
            while queue or pending:
                while queue and len(pending) < self.workers:
                    job = queue.pop(0)
                    args = (_pack(job.source), job.source.name, rubric, settings, to_plain(job.overrides))
                    pending[task.remote(*args, to_plain(self.limit))] = job
                ready, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ready[0])
                done(job, self._collect(ray, ready[0], job))
        finally:  # Ctrl-C: the tasks still running are cancelled, their workers stopped
            for ref in pending:
                ray.cancel(ref)

    def _gpu(self, ray: Any) -> bool:
        if self.settings.device == "cuda":
            return True
        return self.settings.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0

    def _collect(self, ray: Any, ref: Any, job: BatchJob) -> Row:
        try:
            row_data, files, log = ray.get(ref)
        except Exception as err:  # the task died (worker crash, node lost)
            return Row(job.student_id, str(job.source), "failed", f"the Ray task failed: {err}"[:_LOG_TAIL])
        job.log.parent.mkdir(parents=True, exist_ok=True)
        job.log.write_bytes(log)
        for name, data in files.items():
            path = job.staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return from_plain(Row, row_data)


def _pack(source: Path) -> bytes:
    """The submission as a tar archive; links are kept as links, never followed."""
    buffer = BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(source, arcname=source.name)
    return buffer.getvalue()


def _ray_grade(
    archive: bytes,
    name: str,
    rubric: tuple[str, str],
    settings: dict[str, Any],
    overrides: list[dict[str, Any]],
    limit: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, bytes], bytes]:
    """Runs in a Ray worker: unpack, grade in a supervised worker process, and return the
    row, the outputs and the log."""
    with work_dir("ray") as root:
        with tarfile.open(fileobj=BytesIO(archive)) as packed:
            packed.extractall(root / "in", filter="tar")  # keeps links; no member leaves root/in
        rubric_file = root / rubric[0]
        rubric_file.write_text(rubric[1], encoding="utf-8")
        target, log = root / "out", root / "worker.log"
        target.mkdir()
        chosen = replace(from_plain(Settings, settings), gpu=_ray_gpu())
        row = grade_supervised(
            root / "in" / name, name, rubric_file, chosen, target, from_plain(list[Override], overrides), log,
            from_plain(Bounds, limit),
        )  # fmt: skip
        row.source = name
        files = {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()}
        return to_plain(row), files, log.read_bytes() if log.is_file() else b""


def _ray_gpu() -> Gpu | None:
    """The GPU Ray assigned this task (Ray counts GPUs as the driver lists them), if any."""
    import ray

    assigned, listed = ray.get_gpu_ids(), gpus.visible()
    index = int(assigned[0]) if assigned else -1
    return listed[index] if 0 <= index < len(listed) else None


def _last_line(log: Path) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.path.getsize(log) - _LOG_TAIL))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"
