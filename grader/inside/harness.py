"""The harness's entry point: read the job, run its stages, seal the report."""

from __future__ import annotations

import traceback
from pathlib import Path

from grader.inside import reaper
from grader.inside.channel import Channel, StageFailure
from grader.protocol import HarnessJob, decode


def main(argv: list[str]) -> int:
    job = decode(HarnessJob, Path(argv[0]).read_bytes())
    channel = Channel(Path(job.out))
    reaper.adopt_orphans()
    try:
        if job.training is not None:
            from grader.inside.training import retrain

            retrain(job, job.training, channel)
        else:
            from grader.inside.stages import evaluate

            evaluate(job, channel)
    except StageFailure as failure:
        channel.failed(failure.stage, failure.message)
    except BaseException as exc:  # student code may raise anything, even SystemExit
        traceback.print_exc()
        channel.failed("harness", f"{type(exc).__name__}: {exc}")
    reaper.end_descendants()
    channel.seal()
    return 0
