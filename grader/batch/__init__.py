"""Grading a whole class: ``run_all`` with a local or Ray executor, resumable.

runner.py     the driver: find submissions, skip current ones, land results
records.py    OUT/<id>/grading.json, fingerprints, staging folders swapped in by rename
executors.py  local worker processes or Ray tasks, both running worker.grade_into
worker.py     one submission graded into a folder of its own
"""

from grader.batch.records import Row
from grader.batch.runner import BatchOptions, BatchResult, run_all

__all__ = ["BatchOptions", "BatchResult", "Row", "run_all"]
