"""Errors the grader raises when it cannot do its own job.

A student's mistake is not one of these: a broken submission becomes part of the
result (see ``results.TaskResult.error``), so one student never stops a batch.
These are for the grader's own inputs and environment, caught once in the CLI and
printed as a single line a person can act on::

    GraderError                 exit 1
    ├── UsageError              exit 2  bad flags or paths on the command line
    ├── RubricError             exit 3  rubric file missing or invalid (names file:key)
    ├── DataError               exit 4  dataset missing or unreadable
    ├── SandboxError            exit 5  no sandbox backend can run here
    └── SubmissionError         exit 6  no submission to grade at that path
"""

from __future__ import annotations


class GraderError(Exception):
    """Base class; ``str(err)`` is the one line shown to the user."""

    exit_code = 1


class UsageError(GraderError):
    exit_code = 2


class RubricError(GraderError):
    exit_code = 3


class DataError(GraderError):
    exit_code = 4


class SandboxError(GraderError):
    exit_code = 5


class SubmissionError(GraderError):
    exit_code = 6
