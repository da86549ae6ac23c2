"""No sandbox: the harness runs as a plain child process with the grader's own rights.

Only for trusted code on machines with neither Docker nor bubblewrap, behind the
``--unsafe-no-sandbox`` flag; every report it produces carries a warning. Time, file-size
and address-space limits still apply (rlimits and the deadline), nothing else does.
"""

from __future__ import annotations

import sys

from grader.sandbox.base import Job, Outcome
from grader.sandbox.process import run_process

WARNING = (
    "graded WITHOUT a sandbox (--unsafe-no-sandbox): student code ran with the grader's own "
    "permissions and could read the test labels; do not trust these scores"
)


class UnsandboxedBackend:
    name = "none"
    image_id: str | None = None
    maps_paths = False  # the job sees host paths as they are

    def run(self, job: Job) -> Outcome:
        return run_process([sys.executable, *job.argv[1:]], job)

    def enforced(self, job: Job) -> dict[str, str]:
        return {"isolation": "NONE", "time": f"{job.timeout_s:.0f} s", **job.limits.as_dict()}
