"""grader/report/summary.py: the Markdown step summary, line by line."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from grader.ci import policy_problems
from grader.report.summary import cell, markdown_summary
from grader.rubric import Rubric
from tests.graded import ci_graded


def test_summary_has_the_score_table_limits_and_accuracy(cnn_rubric: Rubric) -> None:
    result = ci_graded(cnn_rubric)
    result.warnings = ["a | pipe\nand a <b>tag</b>"]
    result.alerts = ["cnn: the claimed test accuracy 92.00% is 27.00 points above"]
    text = markdown_summary(result, "quick", [])
    assert "- 🚩 **cnn: the claimed test accuracy 92.00% is 27.00 points above**" in text
    assert "**55 / 100 points** (profile `quick`)" in text
    assert "- 10 points not checked in CI; the full grading scores them" in text
    assert "✅ **CI check passed**" in text
    assert "| 2 | cnn | At most 1,000,000 parameters | 20 / 20 | ✅ pass |" in text
    assert "| 3 | cnn | Test accuracy (full points at 85%) | 25 / 50 | 🟡 partial |" in text
    assert "| 4 | cnn | Reported test accuracy matches the measured one | 0 / 10 | ⏭️ not checked |" in text
    assert "| **Total** | | | **55 / 100** | | |" in text
    assert "| cnn | parameters | 5,370 | 1,000,000 | ✅ yes |" in text
    assert "| cnn | MACs (thop) | 259,072 | — | — |" in text
    assert "| cnn | 72.50% | 90.00% | 1,000 (first 100 per class) | 85.00% |" in text
    assert "- ⚠️ a \\| pipe and a &lt;b&gt;tag&lt;/b&gt;" in text


def test_a_rubric_without_top3_gets_no_top3_column(cnn_rubric: Rubric) -> None:
    result = ci_graded(cnn_rubric)
    evaluation = result.tasks["cnn"].evaluation
    assert evaluation is not None
    evaluation.top3 = None
    text = markdown_summary(result, "quick", [])
    assert "| Task | Top-1 | Test images | Claimed |" in text
    assert "| cnn | 72.50% | 1,000 (first 100 per class) | 85.00% |" in text


def test_summary_lists_why_the_check_failed(cnn_rubric: Rubric) -> None:
    result = ci_graded(cnn_rubric, params=2_000_000)
    problems = policy_problems(result, "limits")
    text = markdown_summary(result, "quick", problems)
    assert "❌ **CI check failed**" in text
    assert "- item 2 (At most 1,000,000 parameters): 2,000,000 parameters, over the limit" in text
    assert "| cnn | parameters | 2,000,000 | 1,000,000 | ❌ no |" in text


@pytest.mark.parametrize("fail_on", ["never", "load"])
def test_summary_tells_a_stopped_tasks_error_once(cnn_rubric: Rubric, fail_on: str) -> None:
    result = ci_graded(cnn_rubric, error="weights/model.pt is missing")
    text = markdown_summary(result, "quick", policy_problems(result, fail_on))
    assert text.count("weights/model.pt is missing") == 1
    assert "task cnn stopped at stage weights: weights/model.pt is missing" in text
    row = "| 3 | cnn | Test accuracy (full points at 85%) | 0 / 50 | 💥 error | no evidence: task cnn"
    assert row in text


def test_cell_keeps_a_table_row_on_one_line() -> None:
    assert cell("a|b\n\nc  d") == "a\\|b c d"


def test_summary_matches_the_golden_file(cnn_rubric: Rubric, golden: Callable[[str, str], None]) -> None:
    result = ci_graded(cnn_rubric, params=2_000_000)
    golden("summary.md", markdown_summary(result, "quick", policy_problems(result, "limits")))


def test_summary_counts_partial_credit_as_junit_and_gradescope_do(cnn_rubric: Rubric) -> None:
    text = markdown_summary(ci_graded(cnn_rubric), "quick", [])
    assert "Items: 2 passed, 1 failed (1 with partial credit, which counts as failed), 2 skipped." in text
    assert "| 25 / 50 | 🟡 partial | partial credit: 25 of 50 points; top-1 accuracy 72.50%" in text
