"""The command line as a TA types it: exit codes, one-line errors, the files it writes.

Messages and exit codes are checked in-process through ``run_cli``, the function the
``grader`` script runs; the slow tests start the real script and grade in the sandbox.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from grader.cli import _print_scores, run_cli, student_text
from grader.rubric import Rubric
from tests.conftest import FILES, pdf_text
from tests.graded import ci_graded

GRADER = str(Path(sys.executable).parent / "grader")


@dataclass
class Ran:
    returncode: int
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Ran]:
    """``grader ARGS`` run in this process, with no $GRADER_DATA_DIR."""
    monkeypatch.delenv("GRADER_DATA_DIR", raising=False)

    def run(*args: str) -> Ran:
        capsys.readouterr()
        code = run_cli(list(args))
        return Ran(code, capsys.readouterr().err)

    return run


def run_grader(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "GRADER_DATA_DIR"}
    full_env.update(env or {})
    return subprocess.run([GRADER, *args], capture_output=True, text=True, env=full_env, timeout=600)


@pytest.mark.slow
def test_run_writes_results_and_a_pdf_with_the_score_table(
    student: Path, small_cifar: Path, tmp_path: Path
) -> None:
    done = run_grader(
        "run", str(student), "--data-dir", str(small_cifar), "--out", str(tmp_path), "--sandbox", "bwrap"
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / "B000000001"
    results = json.loads((out / "results.json").read_text())
    assert results["student_id"] == "B000000001" and results["rubric"] == "cifar10-cnn"
    assert results["max_total"] == 100
    task = results["tasks"]["cnn"]
    assert task["status"] == "ok" and task["error"] is None
    assert task["params"] == 5370 and task["macs"]["thop"] == 259072 and task["macs_counter"] == "thop"
    assert 0 <= task["test_accuracy"] <= 100
    items = {i["id"]: i for i in results["items"]}
    assert set(items) == {"1", "2", "3", "4", "5"}
    assert items["2"]["status"] == "pass" and items["2"]["score"] == 20
    assert items["5"]["status"] == "manual"
    assert results["total"] == pytest.approx(sum(i["score"] for i in results["items"]))
    text = pdf_text(out / "report.pdf", "-raw")
    squashed = "".join(text.split())  # table cells wrap titles across lines
    assert "Atmost1,000,000parameters" in squashed
    assert "ThemodelbuildsandclassifiesaCIFAR-10image" in squashed
    assert f"{results['total']:g}/100" in squashed
    assert "Layer(type)" in squashed and "5,370" in squashed


@pytest.mark.slow
def test_run_needs_no_flags_once_the_data_is_configured(
    student: Path, small_cifar: Path, tmp_path: Path
) -> None:
    env = {"GRADER_CONFIG": str(tmp_path / "config.toml")}
    assert run_grader("config", "data_dir", str(small_cifar), env=env).returncode == 0
    done = subprocess.run(
        [GRADER, "run", str(student)], capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={**{k: v for k, v in os.environ.items() if k != "GRADER_DATA_DIR"}, **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "reports" / "B000000001" / "report.pdf").stat().st_size > 10_000


def test_no_data_is_one_line_naming_the_options(
    cli: Callable[..., Ran], student: Path, tmp_path: Path
) -> None:
    done = cli("run", str(student), "--out", str(tmp_path))
    assert done.returncode == 4
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and done.stderr.rstrip().endswith(errors[0])
    assert "--data-dir" in errors[0] and "GRADER_DATA_DIR" in errors[0]
    assert not (tmp_path / "B000000001").exists()


def test_invalid_rubric_names_file_and_key(cli: Callable[..., Ran], student: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "id: x\ntitle: X\ntasks: {t: {title: T, model: 'm.py:Net', weights: w.pt}}\n"
        "items: [{id: a, task: t, title: A, type: model_valid, points: ten}]\n"
    )
    done = cli("run", str(student), "--rubric", str(bad), "--data-dir", str(tmp_path))
    assert done.returncode == 3
    assert "bad.yaml: items[0].points" in done.stderr and "'ten'" in done.stderr


def test_missing_rubric_is_a_usage_error(cli: Callable[..., Ran], tmp_path: Path) -> None:
    sub = tmp_path / "B1"
    sub.mkdir()
    done = cli("run", str(sub), "--data-dir", str(tmp_path))
    assert done.returncode == 2
    assert "pass --rubric FILE" in done.stderr


def test_a_manifest_cannot_pick_a_rubric_file_of_its_own(
    cli: Callable[..., Ran], student: Path, tmp_path: Path
) -> None:
    own = tmp_path / student.name
    shutil.copytree(student, own)
    (own / "easy.yaml").write_text((FILES / "rubrics" / "zoo.yaml").read_text())
    for assignment in ("easy.yaml", str(own / "easy.yaml"), "../../etc/passwd"):
        (own / "submission.yaml").write_text(f"assignment: {assignment!r}\n")
        done = cli("run", str(own), "--data-dir", str(tmp_path))
        assert done.returncode == 3, done.stderr
        assert f"assignment {assignment!r} of the manifest is not a rubric in rubrics/" in done.stderr


def test_unknown_rubric_lists_the_known_ones(cli: Callable[..., Ran], student: Path) -> None:
    done = cli("run", str(student), "--rubric", "no-such-lab")
    assert done.returncode == 3
    assert "cifar10-cnn" in done.stderr and "eai-lab2" in done.stderr


def test_missing_submission_folder(cli: Callable[..., Ran], tmp_path: Path) -> None:
    done = cli("run", str(tmp_path / "nobody"), "--rubric", "cifar10-cnn")
    assert done.returncode == 6
    assert "is not a directory" in done.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--device", "tpu"], "'--device': 'tpu' is not one of 'auto', 'cpu', 'cuda'"),
        (["--sandbox", "chroot"], "'--sandbox': 'chroot' is not one of 'auto', 'docker', 'bwrap'"),
        (["--recipe", "epochs"], "--recipe 'epochs': expected KEY=VALUE"),
        (["--recipe", "epochs=0"], "--recipe epochs: Input should be greater than or equal to 1"),
    ],
)
def test_bad_flags_are_usage_errors(
    cli: Callable[..., Ran], student: Path, args: list[str], words: str
) -> None:
    done = cli("run", str(student), *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and words in done.stderr


@pytest.mark.parametrize("command", ["run", "run-all", "ci", "baselines", "report"])
def test_every_command_checks_its_choices(cli: Callable[..., Ran], command: str, tmp_path: Path) -> None:
    done = cli(command, str(tmp_path), "--rubric", "cifar10-cnn", "--device", "tpu")
    if command == "report":  # draws from stored results: no device to choose
        assert done.returncode == 2 and "No such option: --device" in done.stderr
    else:
        assert done.returncode == 2 and "'tpu' is not one of" in done.stderr


@pytest.mark.parametrize("command", ["run", "run-all", "ci", "baselines", "report"])
def test_help_names_every_value(capsys: pytest.CaptureFixture[str], command: str) -> None:
    assert run_cli([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "--rubric FILE|NAME" in text
    assert "<bool>" not in text and "<str>" not in text, text
    if command != "report":
        assert "--device <auto|cpu|cuda>" in text
    if command == "run-all":
        assert "--executor <local|ray>" in text and "--jobs N" in text


def test_a_student_message_reaches_the_terminal_as_plain_text() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, color_system="truecolor")
    nasty = "[green]all checks pass[/] [/x] \x1b]52;c;cHduZWQ=\x07 \x1b]0;title\x07 done"
    console.print(student_text(nasty))
    out = console.file.getvalue()
    assert "\x1b]" not in out and "\x07" not in out
    assert "[green]all checks pass[/] [/x]" in out and "\ufffd]52;c;cHduZWQ=\ufffd" in out


def test_a_stopped_task_is_told_once_below_the_score_table(cnn_rubric: Rubric) -> None:
    error = "weights/model.pt holds a whole pickled model; save model.state_dict() instead"
    out = io.StringIO()
    _print_scores(ci_graded(cnn_rubric, error=error), Console(file=out, width=400))
    text = out.getvalue()
    assert text.count("holds a whole pickled model") == 1
    assert f"stopped: task cnn stopped at stage weights: {error}" in text
    assert text.count("no evidence: task cnn stopped at stage weights") == 2  # accuracy and claim


def test_an_alert_is_printed_below_the_score_table(cnn_rubric: Rubric) -> None:
    result = ci_graded(cnn_rubric)
    result.alerts = ["cnn: the claimed test accuracy 92.00% is 27.00 points above the 65.00% measured"]
    out = io.StringIO()
    _print_scores(result, Console(file=out, width=400))
    assert f"look at this: {result.alerts[0]}" in out.getvalue()


@pytest.mark.slow
def test_unsafe_no_sandbox_stamps_every_report(student: Path, small_cifar: Path, tmp_path: Path) -> None:
    done = run_grader(
        "run", str(student), "--data-dir", str(small_cifar), "--out", str(tmp_path), "--unsafe-no-sandbox"
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "B000000001" / "results.json").read_text())
    assert results["sandbox"]["backend"] == "none"
    assert any("WITHOUT a sandbox" in w for w in results["warnings"])
    assert results["tasks"]["cnn"]["status"] == "ok"
    text = pdf_text(tmp_path / "B000000001" / "report.pdf", None)
    assert "WITHOUT a sandbox" in text
