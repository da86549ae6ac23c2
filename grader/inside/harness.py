"""The harness's entry point: read the job, run its stages, seal the report.

Whose fault a failure is: a ``StageFailure`` says the student's stage itself. Any other
exception is the student's when the student's code is on its traceback (it is filed under
the stage that was running), else the grader's own: stage ``internal``, which the host never
counts against the student and grades again.
"""

from __future__ import annotations

import threading
import time
import traceback
from os import _exit  # taken before student code runs, which may replace os._exit
from pathlib import Path

from grader.inside import loading, reaper
from grader.inside.channel import Channel, StageFailure
from grader.protocol import HarnessJob, decode

# The stages of each kind of job, in order; the one after the last finished is running.
EVALUATION = ("start", "import", "build", "forward", "macs", "weights", "inference")
TRAINING = ("start", "import", "build", "training")


def main(argv: list[str]) -> int:
    job = decode(HarnessJob, Path(argv[0]).read_bytes())
    if job.deadline_s is not None:
        _end_at(job.deadline_s)
    channel = Channel(Path(job.out))
    reaper.adopt_orphans()
    student_code = loading.source_only(job)
    try:
        if job.training is not None:
            from grader.inside.training import retrain

            retrain(job, job.training, student_code, channel)
        else:
            from grader.inside.stages import evaluate

            evaluate(job, student_code, channel)
    except StageFailure as failure:
        channel.failed(failure.stage, failure.message)
    except BaseException as exc:  # student code may raise anything, even SystemExit
        traceback.print_exc()
        stages = TRAINING if job.training is not None else EVALUATION
        stage = _running(channel, stages) if student_code.raised(exc) else "internal"
        channel.failed(stage, f"{type(exc).__name__}: {exc}")
    reaper.end_descendants()
    channel.report.notes = student_code.notes[:16]
    channel.report.missing_packages = sorted(student_code.missing)[:64]
    channel.report.absent_packages = [p for p in job.packages if not loading.installed(p)]
    channel.seal()
    return 0


def _running(channel: Channel, stages: tuple[str, ...]) -> str:
    done = channel.report.stages_done
    return stages[min(len(done), len(stages) - 1)]


def _end_at(seconds: float) -> None:
    """End this process after ``seconds`` whatever runs in it: the job-side deadline, for when
    the grader that would end the job is gone. The thread holds its own references to sleep and
    _exit, taken before student code runs, so patching time or os cannot stop it."""
    sleep = time.sleep

    def expire() -> None:
        sleep(seconds)
        _exit(137)

    threading.Thread(target=expire, name="deadline", daemon=True).start()
