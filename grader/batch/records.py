"""What a batch run keeps per student, and how a finished grading is moved into place.

OUT/<student_id>/ holds ``results.json``, ``report.pdf`` and ``grading.json``. The last one
is the batch's record: the fingerprint of what was graded (submission content, rubric,
grader version, the settings that change scores) and how long it took. A rerun skips a
student whose record matches; a student without one (never graded, failed, or in flight
when the run was killed) is graded again.

A worker writes into OUT/.staging/<student_id>.<n>/, and the driver swaps that folder
in with renames, so a kill leaves either the old outputs or the new ones, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Literal

from grader.config import Settings
from grader.files import write_atomic

RECORD = "grading.json"
STAGING = ".staging"
RowStatus = Literal["graded", "skipped", "failed"]


@dataclass
class Row:
    """One student's line in the batch: what happened and what it cost."""

    student_id: str
    source: str  # the submission folder
    status: RowStatus
    reason: str = ""
    total: float | None = None
    max_total: float | None = None
    wall_seconds: float = 0.0
    gpu_seconds: float = 0.0  # sandbox time of jobs that held a GPU (0 on CPU)
    peak_memory_bytes: int = 0  # the grading process's own peak resident memory (not its jobs')
    fingerprint: str = ""
    # Failures that were the grader's or the machine's, not the student's: graded again next run.
    regrade: list[str] = field(default_factory=list)


def grading_key(rubric_file: Path, settings: Settings) -> str:
    """What every student's grade in one run depends on besides their submission: the rubric,
    the grader's version and the settings that change scores (computed once per run)."""
    digest = hashlib.sha256()
    for part in (
        hashlib.sha256(rubric_file.read_bytes()).hexdigest(),
        version("grader"),
        settings.device,
        str(settings.skip_training),
        json.dumps(settings.recipe_overrides, sort_keys=True),
    ):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def fingerprint(submission_sha256: str, key: str) -> str:
    """Changes when anything the machine grade depends on changes (hand overrides are
    applied on top of stored results, so they do not call for a regrade)."""
    return hashlib.sha256(f"{submission_sha256}\0{key}".encode()).hexdigest()


def is_current(student_dir: Path, record: Row, expected: str) -> bool:
    """True when ``record`` (read from ``student_dir``) is a complete grading of exactly ``expected``
    with no failure that was the grader's or the machine's."""
    return (
        record.fingerprint == expected
        and not record.regrade
        and (student_dir / "results.json").is_file()
        and (student_dir / "report.pdf").is_file()
    )


def read_record(student_dir: Path) -> Row | None:
    try:
        data = json.loads((student_dir / RECORD).read_text(encoding="utf-8"))
        return Row(**data)
    except (OSError, ValueError, TypeError):
        return None


def new_staging(out_dir: Path, student_id: str) -> Path:
    staging = out_dir / STAGING / f"{student_id}.{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    return staging


def commit(staging: Path, out_dir: Path, row: Row) -> Path:
    """Write the record into ``staging`` and swap it in as OUT/<student_id>/."""
    write_atomic(staging / RECORD, (json.dumps(asdict(row), indent=2) + "\n").encode())
    final = out_dir / row.student_id
    old = None
    if final.exists():
        old = staging.with_name(staging.name + ".old")
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def clear_staging(out_dir: Path) -> None:
    """Folders left by a run that was killed: their students are graded again."""
    shutil.rmtree(out_dir / STAGING, ignore_errors=True)
