"""``run_all``: grade every submission of a class folder, resumably.

The driver finds the submissions, skips those whose stored grading is current, hands
the rest to an executor, and moves each finished grading into OUT/<student_id>/ as it
arrives. It alone writes OUT, under a lock, so two runs cannot interleave there.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

from grader import data as datasets
from grader.batch import records, watchdog
from grader.batch.executors import (
    STAGE_SUFFIX,
    BatchJob,
    Executor,
    ExecutorChoice,
    LocalExecutor,
    RayExecutor,
)
from grader.batch.outputs import SUMMARY, write_class_outputs
from grader.batch.records import Row
from grader.config import Settings
from grader.errors import SubmissionError, UsageError
from grader.files import write_atomic
from grader.overrides import Override
from grader.rubric import load_rubric
from grader.submission import ARCHIVES, load_submission, visible

LOGS = "logs"  # OUT/logs/<student_id>.log: the worker's log of a submission that failed
# A student's work lying in the class folder as one file, as a learning platform's download of a
# class may leave it: refused with the fix rather than passed over without a word.
LOOSE_WORK = (".py", ".ipynb", ".pt", ".pth", ".ckpt", ".safetensors")


class Reporter(Protocol):
    """How the driver tells the user what happens (the CLI draws a progress bar)."""

    def planned(self, to_grade: int, skipped: int) -> None: ...

    def finished(self, row: Row) -> None: ...

    def running(self, stages: dict[str, str]) -> None:
        """What each grading under way does now, by student id (local workers only)."""


@dataclass
class BatchOptions:
    submissions_dir: Path
    rubric_file: Path
    settings: Settings
    jobs: int = 1
    executor: str = "local"
    ray_address: str | None = None
    only: list[str] = field(default_factory=list)
    overrides: list[Override] = field(default_factory=list)
    force: bool = False  # grade again even where the stored grading is current


@dataclass
class BatchResult:
    rows: list[Row]
    seconds: float

    def by_status(self, status: str) -> list[Row]:
        return [r for r in self.rows if r.status == status]


def run_all(options: BatchOptions, reporter: Reporter) -> BatchResult:
    if options.executor == "local" and options.settings.cpus == Settings().cpus:
        # Jobs side by side on this machine share its cores instead of each taking all.
        shared = replace(options.settings, cpus=max(1.0, options.settings.cpus / options.jobs))
        options = replace(options, settings=shared)
    out = options.settings.out_dir
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    source = datasets.resolve_source(options.settings.data_dir)  # no data: stop before grading
    rubric = load_rubric(options.rubric_file)
    with _lock(out):
        records.clear_staging(out)
        rows, jobs = _plan(options)
        reporter.planned(len(jobs), len(rows))
        graded: list[Row] = []

        def done(job: BatchJob, row: Row) -> None:
            graded.append(_land(job, row, out))
            reporter.finished(graded[-1])

        with _watching_stages(out, reporter):
            _executor(options, watchdog.bounds(rubric, options.settings)).run(jobs, done)
        result = BatchResult(rows + graded, round(time.monotonic() - started, 2))
        write_atomic(out / SUMMARY, (json.dumps(_summary(result), indent=2) + "\n").encode())
        test = datasets.load_split(source, "test", options.settings.cache_dir)
        write_class_outputs(out, rubric, result.rows, options.overrides, test.images())
    return result


def _plan(options: BatchOptions) -> tuple[list[Row], list[BatchJob]]:
    """Rows decided before any grading (skipped, unreadable), and the jobs to run."""
    out, jobs = options.settings.out_dir, []
    rows: list[Row] = []
    key = records.grading_key(options.rubric_file, options.settings)
    seen: dict[str, Path] = {}
    folders, loose = _submissions(options.submissions_dir, options.only)
    for path, stem in loose.items():
        rows.append(Row(visible(stem), str(path), "failed", _loose_reason(path, stem)))
    for source in folders:
        try:
            sub = load_submission(source, options.settings)
        except SubmissionError as err:
            rows.append(Row(visible(source.name), str(source), "failed", str(err)))
            continue
        if sub.student_id in seen:
            reason = f"{seen[sub.student_id]} already has student id {sub.student_id}; rename one folder"
            rows.append(Row(sub.student_id, str(source), "failed", reason))
            continue
        seen[sub.student_id] = source
        expected = records.fingerprint(sub.sha256, key)
        stored = records.read_record(out / sub.student_id)
        if (
            not options.force
            and stored is not None
            and records.is_current(out / sub.student_id, stored, expected)
        ):
            stored.status, stored.reason = "skipped", "unchanged since it was graded"
            rows.append(stored)
            continue
        jobs.append(_job(source, sub.student_id, expected, options))
    return rows, jobs


def _job(source: Path, student_id: str, expected: str, options: BatchOptions) -> BatchJob:
    out = options.settings.out_dir
    return BatchJob(
        source.resolve(),
        student_id,
        expected,
        records.new_staging(out, student_id),
        out / LOGS / f"{student_id}.log",
        [o for o in options.overrides if o.student_id == student_id],
    )


def _submissions(root: Path, only: list[str]) -> tuple[list[Path], dict[Path, str]]:
    """The student folders of ``root``, and the files in it that hold a student's work but are
    no folder (an archive, a lone notebook), by the folder name they stand for, where no folder
    of that name is beside them."""
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder; give the folder holding one sub-folder per student")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    found = [p for p in entries if p.is_dir()]
    names = {p.name for p in found}
    loose = {p: stem for p in entries if p.is_file() and (stem := _stem(p)) is not None and stem not in names}
    if only:
        unknown = sorted(set(only) - names - set(loose.values()))
        if unknown:
            raise UsageError(f"--only {', '.join(unknown)}: no such folder in {root}")
        found = [p for p in found if p.name in set(only)]
        loose = {p: stem for p, stem in loose.items() if stem in set(only)}
    return found, loose


def _stem(path: Path) -> str | None:
    """The name of the folder ``path`` should have been, where it looks like a student's work."""
    name = path.name.lower()
    suffix = next((s for s in (*ARCHIVES, *LOOSE_WORK) if name.endswith(s)), None)
    return path.name[: -len(suffix)] if suffix and len(name) > len(suffix) else None


def _loose_reason(path: Path, stem: str) -> str:
    if path.name.lower().endswith(ARCHIVES):
        return (
            f"{path.name} is an archive, not a submission folder: unpack it into a folder of its own "
            f"({stem}/) and grade again"
        )
    return (
        f"{path.name} lies loose in the class folder: move it into a folder named after the student "
        f"({stem}/) and grade again"
    )


def _land(job: BatchJob, row: Row, out: Path) -> Row:
    """Move a finished grading into place, or clean up after a failed one."""
    row.student_id, row.source, row.fingerprint = job.student_id, str(job.source), job.fingerprint
    for leftover in (job.staging.with_suffix(".job.json"), job.staging.with_suffix(".row.json")):
        leftover.unlink(missing_ok=True)
    if row.status == "graded":
        final = records.commit(job.staging, out, row)
        if job.log.is_file():
            shutil.move(job.log, final / "grading.log")
    else:
        shutil.rmtree(job.staging, ignore_errors=True)
    return row


def _executor(options: BatchOptions, limit: watchdog.Bounds) -> Executor:
    if options.executor == "ray":
        return RayExecutor(options.rubric_file, options.settings, options.jobs, limit, options.ray_address)
    if options.executor == "local":
        return LocalExecutor(options.rubric_file, options.settings, options.jobs, limit)
    raise UsageError(f"--executor {options.executor!r}: use {', '.join(ExecutorChoice)}")


def _summary(result: BatchResult) -> dict[str, object]:
    return {"seconds": result.seconds, "rows": [asdict(r) for r in result.rows]}


@contextmanager
def _watching_stages(out: Path, reporter: Reporter, every_s: float = 1.0) -> Iterator[None]:
    """Tell the reporter every second what each local worker's grading does now."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(every_s):
            stages = {}
            for path in (out / records.STAGING).glob(f"*{STAGE_SUFFIX}"):
                with contextlib.suppress(OSError):
                    stages[path.name.removesuffix(STAGE_SUFFIX)] = path.read_text(errors="replace")[:200]
            reporter.running(stages)

    thread = threading.Thread(target=watch, name="stages", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextmanager
def _lock(out: Path) -> Iterator[None]:
    with open(out / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another grader run is writing to {out}; wait for it to end") from None
        yield
