"""The harness's only output channel: report.json (a ``HarnessReport``) and logits.npy.

The report is rewritten after every stage, so what a later crash or kill interrupts is still
on record. Each write replaces the file atomically; if the submission filled or blocked the
output folder, what it left there is removed and the write tried once more.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from grader.files import write_atomic
from grader.protocol import MAX_MESSAGE, PROGRESS_MARK, HarnessReport, Progress, encode

_write = os.write  # taken before student code runs, which may replace os.write or sys.stdout
_PROGRESS_EVERY_S = 0.5

REPORT = "report.json"
LOGITS = "logits.npy"


class StageFailure(Exception):
    """The task stops at ``stage``; ``message`` says why in words for the student."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = bounded(message)


# The distributions whose versions a grade depends on, as results.json records them.
GRADED_WITH = ("torch", "torchvision", "numpy", "ultralytics-thop", "ptflops")


def versions() -> dict[str, str]:
    """Python's version and those of GRADED_WITH installed here (read from their metadata)."""
    found = {"python": platform.python_version()}
    for name in GRADED_WITH:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def bounded(message: str, limit: int = MAX_MESSAGE) -> str:
    """A message (with a student's exception text in it) cut to what the report accepts."""
    return message if len(message) <= limit else message[: limit - 16] + " … (cut short)"


class Channel:
    """Writes the report after each stage, and the logits once they exist."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.report = HarnessReport(started_at=time.time())
        self._started = time.monotonic()
        self._logits: bytes | None = None
        self._last_progress = 0.0

    def done(self, stage: str, **fields: Any) -> None:
        """Record ``stage`` as finished, with what it measured and its time since the start."""
        self.report.update(**fields)
        self.report.stages_done.append(stage)
        self.report.stage_seconds[stage] = round(time.monotonic() - self._started, 3)
        self.flush()

    def started(self, device: str) -> None:
        """The first stage: where the model runs, and the versions that make the figures."""
        self.done("start", device=device, versions=versions())

    def failed(self, stage: str, message: str) -> None:
        self.report.error_stage, self.report.error = stage, bounded(message)
        self.flush()

    def progress(self, now: Progress) -> None:
        """Say how far a long stage has got, on stdout, at most every half second (and at its end)."""
        clock = time.monotonic()
        if now.done < now.total and clock - self._last_progress < _PROGRESS_EVERY_S:
            return
        self._last_progress = clock
        with contextlib.suppress(OSError):  # a job whose code closed stdout goes on without
            _write(1, PROGRESS_MARK.encode() + encode(now) + b"\n")

    def save_logits(self, data: bytes) -> None:
        """Write the logits file; its bytes are kept to be written again by ``seal``."""
        self._logits = data
        self._write(LOGITS, data)

    def seal(self) -> None:
        """The last word, once no other process of the job is left to overwrite it."""
        self.report.harness_seconds = round(time.monotonic() - self._started, 3)
        if self._logits is not None:
            self._write(LOGITS, self._logits)
        self.flush()

    def flush(self) -> None:
        self._write(REPORT, encode(self.report))

    def _write(self, name: str, data: bytes) -> None:
        try:
            write_atomic(self.out_dir / name, data, sync=False)
        except OSError:
            _clear_foreign(self.out_dir)
            write_atomic(self.out_dir / name, data, sync=False)


def _clear_foreign(out_dir: Path) -> None:
    """Everything in ``out_dir`` but the harness's own regular files."""
    for entry in os.scandir(out_dir):
        if entry.name in (REPORT, LOGITS) and entry.is_file(follow_symlinks=False):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
