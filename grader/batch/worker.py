"""Grading one submission of a batch into a folder of its own.

``grade_into`` is what every executor runs: the local one in a fresh process per
submission (``python -m grader.batch.worker JOB.json``), Ray in a Ray worker. It never
raises for a submission's problems: the row says what went wrong.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import resource
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from grader.batch.records import Row
from grader.config import Settings
from grader.errors import GraderError
from grader.files import write_atomic
from grader.overrides import Override, apply_overrides
from grader.protocol import Progress, decode, encode
from grader.results import GradeResult
from grader.sandbox.leftovers import stop_on_sigterm

log = logging.getLogger("grader.batch")
_PR_SET_PDEATHSIG = 1


def grade_into(
    source: Path,
    rubric_file: Path,
    settings: Settings,
    target: Path,
    overrides: list[Override],
    stage_file: Path | None = None,
) -> Row:
    """Grade ``source`` and write results.json and report.pdf into ``target``; with
    ``stage_file``, keep a line there saying what the grading does now (run-all shows it)."""
    from grader.pipeline import grade
    from grader.report import write_report, write_results_json
    from grader.rubric import load_rubric

    started = time.monotonic()
    row = Row(student_id=source.name, source=str(source), status="failed")
    shown = _StageFile(stage_file)
    try:
        graded = grade(source, load_rubric(rubric_file), settings, shown.stage, shown.advance)
        apply_overrides(graded.result, overrides)
        write_results_json(graded.result, target / "results.json")
        write_report(graded.result, target, graded.test_images, graded.submission)
    except GraderError as err:
        row.reason = str(err)
    except Exception as err:  # the grader's own bug: this student's row, not the batch's end
        log.error("grading %s failed:\n%s", source, traceback.format_exc())
        row.reason = f"internal error ({type(err).__name__}: {err}); see the worker log"
    else:
        _fill(row, graded.result)
    row.wall_seconds = round(time.monotonic() - started, 2)
    return row


def _fill(row: Row, result: GradeResult) -> None:
    row.student_id, row.status = result.student_id, "graded"
    row.total, row.max_total = result.total, result.max_total
    row.regrade = result.regrade
    if "cuda" in result.device:
        held = [t.sandbox_seconds or 0.0 for t in result.tasks.values()]
        held += [r.seconds or 0.0 for t in result.tasks.values() for r in t.training.values()]
        row.gpu_seconds = round(sum(held), 2)


def _die_with_parent(parent: int) -> None:
    """A batch killed outright must not leave its workers grading on (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent was gone before the request took effect
        os._exit(1)


@dataclass(frozen=True)
class WorkerJob:
    """What the local executor hands its worker process, as a JSON file."""

    source: Path
    rubric_file: Path
    settings: Settings
    target: Path
    overrides: list[Override]
    row_file: Path  # where the worker writes its Row
    parent_pid: int
    stage_file: Path | None = None  # where the worker says what it does now


class _StageFile:
    """A one-line file saying what a grading does now, rewritten at most every second."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.text, self._written = path, "", 0.0

    def stage(self, text: str) -> None:
        self.text = text
        self._write(text, force=True)

    def advance(self, now: Progress) -> None:
        percent = 100 * now.done // max(1, now.total)
        self._write(f"{self.text} ({now.stage} {percent}%)")

    def _write(self, line: str, force: bool = False) -> None:
        clock = time.monotonic()
        if self.path is None or (not force and clock - self._written < 1.0):
            return
        self._written = clock
        with contextlib.suppress(OSError):
            write_atomic(self.path, line[:200].encode(), sync=False)


def main(argv: list[str]) -> int:
    """``python -m grader.batch.worker JOB.json``: the local executor's worker process."""
    job = decode(WorkerJob, Path(argv[1]).read_bytes())
    _die_with_parent(job.parent_pid)
    stop_on_sigterm()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    row = grade_into(job.source, job.rubric_file, job.settings, job.target, job.overrides, job.stage_file)
    row.peak_memory_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    write_atomic(job.row_file, encode(row))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
