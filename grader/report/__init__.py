"""The last stage: a graded submission as ``results.json`` and a PDF report.

``write_results_json`` is the record other tools read; ``write_report`` renders
``templates/report.html`` with figures into ``report.html`` and ``report.pdf``.

For a batch: ``gradebook`` + ``write_gradebooks`` (CSV for the staff, Canvas and
Moodle), ``find_similar`` (pairs for a TA to look at), ``write_class_report`` and
``write_index`` (the page linking every student's report).
"""

from grader.report.class_report import ReportPaths, write_class_report
from grader.report.gradebook import Failure, gradebook, write_gradebooks
from grader.report.index import write_index
from grader.report.render import write_report
from grader.report.results_json import write_results_json
from grader.report.similarity import SimilarityFlag, find_similar

__all__ = [
    "Failure",
    "ReportPaths",
    "SimilarityFlag",
    "find_similar",
    "gradebook",
    "write_class_report",
    "write_gradebooks",
    "write_index",
    "write_report",
    "write_results_json",
]
