"""``python -m grader.inside JOB.json``: the sandboxed harness (see ``grader.inside``)."""

import sys
from os import _exit  # taken before student code runs, which may replace os._exit

from grader.inside.harness import main

if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # Threads the submission started must neither keep the job alive nor run after the report.
    _exit(code)
