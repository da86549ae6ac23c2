"""Stages of one task inside the sandbox; each failure names its stage in plain words."""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

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
        tmp = self.out_dir / (REPORT + ".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.out_dir / REPORT)


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    report = Report(Path(job["out"]))
    started = time.monotonic()
    try:
        from grader.harness.stages import run_task

        run_task(job, report)
    except StageFailure as failure:
        report.failed(failure.stage, failure.message)
    except BaseException as exc:  # student code may raise anything, even SystemExit
        traceback.print_exc()
        report.failed("harness", f"{type(exc).__name__}: {exc}")
    report.data["harness_seconds"] = round(time.monotonic() - started, 3)
    report.flush()
    sys.stdout.flush()
    return 0
