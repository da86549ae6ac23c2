"""``python -m grader.packages RUBRIC...``: the rubrics' ``packages:``, one pip requirement a line.

What scripts/setup.sh and scripts/build_image.sh install into the sandbox for a course's
rubrics. A rubric that cannot be read is one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grader.errors import GraderError
from grader.rubric import load_rubric


def main(paths: list[str]) -> int:
    wanted: dict[str, None] = {}
    for path in paths:
        try:
            wanted.update(dict.fromkeys(load_rubric(Path(path)).packages))
        except GraderError as err:
            print(f"grader.packages: {err}", file=sys.stderr)
            return 2
    for requirement in wanted:
        print(requirement)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
