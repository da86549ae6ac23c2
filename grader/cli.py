"""The command line: flags, progress and exit codes; the work happens in pipeline.py."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.status import Status
from rich.table import Table

from grader.config import Settings
from grader.errors import GraderError, UsageError
from grader.sandbox import CHOICES

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Grade deep-learning assignments in a sandbox and write PDF reports.",
)
console = Console(stderr=True)
_DEFAULTS = Settings()
log = logging.getLogger("grader")


@app.command()
def run(
    submission: Annotated[Path, typer.Argument(help="A student's submission folder (named by student id).")],
    rubric: Annotated[
        str | None,
        typer.Option(help="Rubric YAML file or name in rubrics/; default: the manifest's assignment."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Reports go to OUT/<student_id>/.")] = _DEFAULTS.out_dir,
    data_dir: Annotated[Path | None, typer.Option(help="CIFAR-10 source; default $GRADER_DATA_DIR.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = _DEFAULTS.device,
    sandbox: Annotated[
        str,
        typer.Option(
            help="Sandbox backend: auto (Docker if a daemon answers, else bubblewrap), docker or bwrap."
        ),
    ] = _DEFAULTS.sandbox,
    unsafe_no_sandbox: Annotated[
        bool,
        typer.Option("--unsafe-no-sandbox", help="Run student code with no isolation (trusted code only)."),
    ] = False,
    docker_image: Annotated[str, typer.Option(help="Image for the Docker backend.")] = _DEFAULTS.docker_image,
    docker_runtime: Annotated[
        str | None, typer.Option(help="Docker runtime, e.g. runsc for gVisor.")
    ] = _DEFAULTS.docker_runtime,
    skip_training: Annotated[
        bool, typer.Option("--skip-training", help="Leave out retraining (its items are left for a TA).")
    ] = False,
    recipe: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE forced on every retraining, e.g. epochs=1 (repeatable)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds per task in the sandbox.")
    ] = _DEFAULTS.task_timeout_s,
) -> None:
    """Grade one submission: OUT/<student_id>/report.pdf and results.json."""
    if device not in ("auto", "cpu", "cuda"):
        _exit(UsageError(f"--device {device!r}: use auto, cpu or cuda"))
    if sandbox not in CHOICES:
        _exit(UsageError(f"--sandbox {sandbox!r}: use {', '.join(CHOICES)} (or --unsafe-no-sandbox)"))
    settings = Settings(
        data_dir=data_dir,
        out_dir=out,
        device=device,
        sandbox="none" if unsafe_no_sandbox else sandbox,
        task_timeout_s=timeout,
        docker_image=docker_image,
        docker_runtime=docker_runtime,
        recipe_overrides=_recipe_overrides(recipe or []),
        skip_training=skip_training,
    )
    try:
        _run(submission, rubric, settings)
    except GraderError as err:
        _exit(err)


def _recipe_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["epochs=1", "flip=false"]`` → a validated dict of recipe fields."""
    import yaml
    from pydantic import ValidationError

    from grader.recipe import Recipe

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            _exit(UsageError(f"--recipe {pair!r}: expected KEY=VALUE, e.g. --recipe epochs=1"))
        overrides[key.strip()] = yaml.safe_load(value)
    try:
        Recipe().with_changes(overrides)
    except ValidationError as err:
        first = err.errors()[0]
        _exit(UsageError(f"--recipe {'.'.join(map(str, first['loc']))}: {first['msg']}"))
    return overrides


def _run(submission: Path, rubric_name: str | None, settings: Settings) -> None:
    from grader.pipeline import grade
    from grader.report import write_report, write_results_json
    from grader.rubric import find_rubric, load_rubric
    from grader.submission import load_submission

    name = rubric_name or load_submission(submission).assignment
    if not name:
        raise UsageError(
            f"no rubric: pass --rubric FILE or set 'assignment:' in {submission}/submission.yaml"
        )
    rubric = load_rubric(find_rubric(name))
    with console.status("starting") as status:
        graded = grade(submission, rubric, settings, progress=lambda stage: _stage(status, stage))
        status.update("writing report")
        target = settings.out_dir / graded.result.student_id
        target.mkdir(parents=True, exist_ok=True)
        write_results_json(graded.result, target / "results.json")
        pdf = write_report(graded.result, target, graded.test_images)
    _print_scores(graded.result)
    console.print(f"report: {pdf}\nresults: {target / 'results.json'}")


@app.command()
def baselines(
    rubric: Annotated[str, typer.Option(help="Rubric YAML file or name in rubrics/.")],
    data_dir: Annotated[Path | None, typer.Option(help="CIFAR-10 source; default $GRADER_DATA_DIR.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = _DEFAULTS.device,
    sandbox: Annotated[str, typer.Option(help="auto, docker or bwrap.")] = _DEFAULTS.sandbox,
) -> None:
    """Train the rubric's reference models once; later gradings reuse the cached results."""
    from grader.pipeline import train_baselines
    from grader.rubric import find_rubric, load_rubric

    settings = Settings(data_dir=data_dir, device=device, sandbox=sandbox)
    try:
        parsed = load_rubric(find_rubric(rubric))
        with console.status("starting") as status:
            runs = train_baselines(parsed, settings, progress=lambda stage: _stage(status, stage))
    except GraderError as err:
        _exit(err)
    if not runs:
        console.print(f"{parsed.id} names no baselines (training.baselines)")
    table = Table(title=f"baselines of {parsed.id}")
    for column in ("task", "model", "epochs", "test accuracy", "note"):
        table.add_column(column)
    for task_id, run in runs.items():
        acc = f"{run.test_accuracy:.2f}%" if run.test_accuracy is not None else "—"
        table.add_row(task_id, run.label, str(len(run.history)), acc, run.error or "")
    console.print(table)
    if any(run.error for run in runs.values()):
        raise typer.Exit(1)


def _stage(status: Status, stage: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {stage}", highlight=False)
    status.update(stage)


def _print_scores(result: object) -> None:
    from grader.results import GradeResult

    assert isinstance(result, GradeResult)
    table = Table(title=f"{result.student_id} — {result.rubric_title}")
    for column in ("item", "task", "score", "status", "reason"):
        table.add_column(column)
    for item in result.items:
        table.add_row(
            item.id, item.task or "", f"{item.score:g}/{item.max_score:g}", item.status, item.message
        )
    table.add_row("total", "", f"{result.total:g}/{result.max_total:g}", "", "")
    console.print(table)


def _exit(err: GraderError) -> None:
    console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(err.exit_code)


def main() -> None:
    sys.exit(app())
