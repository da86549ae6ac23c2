"""The last stage: a graded submission as ``results.json`` and a PDF report.

``write_results_json`` is the record other tools read; ``write_report`` renders
``templates/report.html`` with figures into ``report.html`` and ``report.pdf``.
"""

from grader.report.render import write_report
from grader.report.results_json import write_results_json

__all__ = ["write_report", "write_results_json"]
