"""The gradebook frame and its CSV files, read back as a spreadsheet or an LMS would."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from grader.report import Failure, gradebook, write_gradebooks
from grader.results import GradeResult
from grader.rubric import Rubric
from tests.graded import NASTY_NAME, ci_graded

ITEMS = ["valid", "params", "acc", "tiny-acc", "report"]


def read_csv(path: Path, encoding: str = "utf-8") -> list[list[str]]:
    with path.open(newline="", encoding=encoding) as handle:
        return list(csv.reader(handle))


def test_one_row_per_student_sorted_with_item_columns(
    results: list[GradeResult], rubric: Rubric, failures: list[Failure]
) -> None:
    df = gradebook(results, rubric, failures)
    assert list(df.columns) == [
        "student_id",
        "name",
        *ITEMS,
        "total",
        "max_total",
        "pending_manual",
        "status",
    ]
    assert df["student_id"].tolist() == ["S001", "S002", "S003", "S004", "S005"]
    rows = df.set_index("student_id")
    assert rows.loc["S002", "params"] == 0 and rows.loc["S002", "acc"] == 30
    assert rows.loc["S002", "report"] == 8 and rows.loc["S002", "total"] == 53
    assert rows.loc["S004", "total"] == 100 and rows.loc["S004", "max_total"] == 100
    assert rows["status"].to_dict() == {
        "S001": "pending review",
        "S002": "complete",
        "S003": "task error",
        "S004": "complete",
        "S005": "failed",
    }
    assert rows["pending_manual"].tolist()[:4] == [10, 0, 10, 0]
    assert rows.loc["S001", "name"] == "Alice Chen" and rows.loc["S002", "name"] == ""


def test_pending_manual_and_failed_cells_are_empty(
    results: list[GradeResult], rubric: Rubric, failures: list[Failure]
) -> None:
    rows = gradebook(results, rubric, failures).set_index("student_id")
    assert math.isnan(rows.loc["S001", "report"])  # waiting for a TA, not a zero
    assert rows.loc["S004", "report"] == 10
    assert rows.loc["S005", [*ITEMS, "total"]].isna().all()
    assert rows.loc["S005", "max_total"] == 100


def test_gradebook_csv(
    tmp_path: Path, results: list[GradeResult], rubric: Rubric, failures: list[Failure]
) -> None:
    paths = write_gradebooks(gradebook(results, rubric, failures), tmp_path)
    assert paths["gradebook"] == tmp_path / "gradebook.csv"
    assert paths["gradebook"].read_bytes().startswith(b"\xef\xbb\xbf")  # BOM, for spreadsheet programs
    rows = read_csv(paths["gradebook"], encoding="utf-8-sig")
    assert rows[0] == ["student_id", "name", *ITEMS, "total", "max_total", "pending_manual", "status"]
    assert rows[1] == ["S001", "Alice Chen", "10", "20", "50", "10", "", "90", "100", "10", "pending review"]
    assert rows[2][:8] == ["S002", "", "10", "0", "30", "5", "8", "53"]
    assert rows[3][1] == "'" + NASTY_NAME  # a spreadsheet would run it as a formula
    assert rows[5] == ["S005", "", "", "", "", "", "", "", "100", "", "failed"]


def test_canvas_csv(
    tmp_path: Path, results: list[GradeResult], rubric: Rubric, failures: list[Failure]
) -> None:
    df = gradebook(results, rubric, failures)
    path = write_gradebooks(df, tmp_path, canvas_assignment_id="48213")["canvas"]
    assert not path.read_bytes().startswith(b"\xef\xbb\xbf")
    rows = read_csv(path)
    assert rows[0] == [
        "Student",
        "ID",
        "SIS User ID",
        "SIS Login ID",
        "Section",
        "HW3: CIFAR-10 models (48213)",
    ]
    assert rows[1] == ["    Points Possible", "", "", "", "", "100"]
    assert rows[2] == ["Alice Chen", "", "S001", "", "", "90"]
    assert rows[3] == ["S002", "", "S002", "", "", "53"]  # no name: the id stands in
    assert rows[6] == ["S005", "", "S005", "", "", ""]  # not graded: Canvas leaves it unchanged
    assert len(rows) == 7


def test_canvas_column_without_an_assignment_id(
    tmp_path: Path, results: list[GradeResult], rubric: Rubric
) -> None:
    path = write_gradebooks(gradebook(results, rubric), tmp_path, assignment="Lab 2")["canvas"]
    assert read_csv(path)[0][-1] == "Lab 2"


def test_moodle_csv(
    tmp_path: Path, results: list[GradeResult], rubric: Rubric, failures: list[Failure]
) -> None:
    path = write_gradebooks(gradebook(results, rubric, failures), tmp_path)["moodle"]
    rows = read_csv(path)
    assert rows[0] == [
        "ID number",
        "Email address",
        "HW3: CIFAR-10 models",
        "valid: Model builds",
        "params: At most 1M parameters",
        "acc: CNN test accuracy",
        "tiny-acc: Tiny test accuracy",
        "report: Written report",
    ]
    assert rows[1] == ["S001", "", "90", "10", "20", "50", "10", ""]
    assert rows[4] == ["S004", "", "100", "10", "20", "50", "10", "10"]
    assert rows[5] == ["S005", "", "", "", "", "", "", ""]


def test_not_checked_cells_stay_empty_in_the_gradebook(cnn_rubric: Rubric) -> None:
    rows = gradebook([ci_graded(cnn_rubric)], cnn_rubric)
    row = rows.iloc[0]
    assert row["3"] == 25 and row["4"] != row["4"]  # NaN: not scored yet
    assert row["status"] == "pending review"
