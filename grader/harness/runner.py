"""Stages of one task inside the sandbox; each failure names its stage in plain words."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

from grader.harness import reaper

REPORT = "report.json"
LOGITS = "logits.npy"


class StageFailure(Exception):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message


class Report:
    """The harness's only output channel besides the logits file."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.data: dict[str, Any] = {
            "stages_done": [],
            "error": None,
            "error_stage": None,
            "stage_seconds": {},
        }
        self._started = time.monotonic()
        self.logits: bytes | None = None
        # Wall clock (shared with the host) so the host can measure the sandbox's start-up.
        self.data["started_at"] = time.time()

    def done(self, stage: str, **fields: Any) -> None:
        """Record ``stage`` as finished, with seconds since the harness started."""
        self.data.update(fields)
        self.data["stages_done"].append(stage)
        self.data["stage_seconds"][stage] = round(time.monotonic() - self._started, 3)
        self.flush()

    def failed(self, stage: str, message: str) -> None:
        self.data["error_stage"] = stage
        self.data["error"] = message
        self.flush()

    def flush(self) -> None:
        self._write(REPORT, json.dumps(self.data).encode())

    def save_logits(self, data: bytes) -> None:
        """Write the logits file; its bytes are kept to be written again by ``seal``."""
        self.logits = data
        self._write(LOGITS, data)

    def seal(self) -> None:
        """The last word, once no other process of the job is left to overwrite it."""
        if self.logits is not None:
            self._write(LOGITS, self.logits)
        self.flush()

    def _write(self, name: str, data: bytes) -> None:
        """Replace ``name`` atomically; if the submission filled or blocked the output
        directory, what it left there is removed and the write tried once more."""
        try:
            _replace(self.out_dir / name, data)
        except OSError:
            _clear_foreign(self.out_dir)
            _replace(self.out_dir / name, data)


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


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


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    report = Report(Path(job["out"]))
    started = time.monotonic()
    reaper.adopt_orphans()
    try:
        if job.get("mode") == "train":
            from grader.harness.training import run_training

            run_training(job, report)
        else:
            from grader.harness.stages import run_task

            run_task(job, report)
    except StageFailure as failure:
        report.failed(failure.stage, failure.message)
    except BaseException as exc:  # student code may raise anything, even SystemExit
        traceback.print_exc()
        report.failed("harness", f"{type(exc).__name__}: {exc}")
    reaper.end_descendants()
    report.data["harness_seconds"] = round(time.monotonic() - started, 3)
    report.seal()
    return 0
