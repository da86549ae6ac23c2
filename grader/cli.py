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

# Options shared by several commands, declared once.
DataDir = Annotated[Path | None, typer.Option(help="CIFAR-10 source; default $GRADER_DATA_DIR.")]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
SandboxChoice = Annotated[
    str,
    typer.Option(
        help="Sandbox backend: auto (Docker if a daemon answers, else bubblewrap), docker or bwrap."
    ),
]
SkipTraining = Annotated[
    bool, typer.Option("--skip-training", help="Leave out retraining (its items are left for a TA).")
]
RecipeFields = Annotated[
    list[str] | None, typer.Option(help="KEY=VALUE forced on every retraining, e.g. epochs=1 (repeatable).")
]
Timeout = Annotated[float, typer.Option(help="Seconds per task in the sandbox.")]
Overrides = Annotated[Path | None, typer.Option(help="Scores set by hand (CSV or YAML).")]


@app.command()
def run(
    submission: Annotated[Path, typer.Argument(help="A student's submission folder (named by student id).")],
    rubric: Annotated[
        str | None,
        typer.Option(help="Rubric YAML file or name in rubrics/; default: the manifest's assignment."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Reports go to OUT/<student_id>/.")] = _DEFAULTS.out_dir,
    data_dir: DataDir = None,
    device: Device = _DEFAULTS.device,
    sandbox: SandboxChoice = _DEFAULTS.sandbox,
    unsafe_no_sandbox: Annotated[
        bool,
        typer.Option("--unsafe-no-sandbox", help="Run student code with no isolation (trusted code only)."),
    ] = False,
    docker_image: Annotated[str, typer.Option(help="Image for the Docker backend.")] = _DEFAULTS.docker_image,
    docker_runtime: Annotated[
        str | None, typer.Option(help="Docker runtime, e.g. runsc for gVisor.")
    ] = _DEFAULTS.docker_runtime,
    skip_training: SkipTraining = False,
    recipe: RecipeFields = None,
    timeout: Timeout = _DEFAULTS.task_timeout_s,
) -> None:
    """Grade one submission: OUT/<student_id>/report.pdf and results.json."""
    settings = _settings(
        device,
        sandbox,
        unsafe_no_sandbox,
        data_dir=data_dir,
        out_dir=out,
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


CI_HERE, CI_OUT = Path("."), Path("grader-ci")


@app.command()
def ci(
    rubric: Annotated[
        str, typer.Option(help="Rubric YAML from the course's side (never the student's repository).")
    ],
    submission: Annotated[
        Path, typer.Argument(help="The submission folder, e.g. the checked-out repo.")
    ] = CI_HERE,
    profile: Annotated[
        str, typer.Option(help="quick (no retraining, test subset), full, or auto (quick without a GPU).")
    ] = "auto",
    out: Annotated[
        Path, typer.Option(help="junit.xml, results.json, summary.md and the PDF go here.")
    ] = CI_OUT,
    fail_on: Annotated[
        str,
        typer.Option(
            help="Exit 1 when: load (a task fails to load), limits (that or a hard limit), any, never."
        ),
    ] = "limits",
    data_dir: DataDir = None,
    device: Device = _DEFAULTS.device,
    sandbox: SandboxChoice = _DEFAULTS.sandbox,
    unsafe_no_sandbox: Annotated[
        bool,
        typer.Option("--unsafe-no-sandbox", help="Run student code with no isolation (trusted code only)."),
    ] = False,
    timeout: Timeout = _DEFAULTS.task_timeout_s,
) -> None:
    """Grade a pushed submission in CI: JUnit, Gradescope JSON, step summary and PDF."""
    from grader.ci import publish, run_ci
    from grader.rubric import find_rubric, load_rubric

    settings = _settings(
        device, sandbox, unsafe_no_sandbox, data_dir=data_dir, out_dir=out, task_timeout_s=timeout
    )
    try:
        parsed = load_rubric(find_rubric(rubric))
        with console.status("starting") as status:
            done = run_ci(submission, parsed, settings, profile, fail_on, lambda s: _stage(status, s))
    except GraderError as err:
        _exit(err)
    publish(done)
    _print_scores(done.result)
    console.print(f"profile {done.profile}, {done.seconds:.0f} s; outputs in {out}/")
    for problem in done.problems:
        console.print(f"[bold red]CI check failed:[/] {problem}", highlight=False, soft_wrap=True)
    if done.failed:
        raise typer.Exit(1)


@app.command()
def baselines(
    rubric: Annotated[str, typer.Option(help="Rubric YAML file or name in rubrics/.")],
    data_dir: DataDir = None,
    device: Device = _DEFAULTS.device,
    sandbox: SandboxChoice = _DEFAULTS.sandbox,
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


@app.command("run-all")
def run_all(
    submissions: Annotated[Path, typer.Argument(help="A folder holding one sub-folder per student.")],
    rubric: Annotated[str, typer.Option(help="Rubric YAML file or name in rubrics/.")],
    out: Annotated[Path, typer.Option(help="Reports go to OUT/<student_id>/.")] = _DEFAULTS.out_dir,
    jobs: Annotated[int, typer.Option(min=1, help="Submissions graded at the same time.")] = 1,
    executor: Annotated[str, typer.Option(help="local (worker processes) or ray.")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="A Ray cluster (ray start --head); default: a local Ray instance.")
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option(help="Grade only this student folder (repeatable).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Grade again even students whose grading is current.")
    ] = False,
    overrides: Overrides = None,
    data_dir: DataDir = None,
    device: Device = _DEFAULTS.device,
    sandbox: SandboxChoice = _DEFAULTS.sandbox,
    skip_training: SkipTraining = False,
    recipe: RecipeFields = None,
    timeout: Timeout = _DEFAULTS.task_timeout_s,
) -> None:
    """Grade a whole class, resumably: unchanged submissions are not graded again."""
    from grader.batch import BatchOptions
    from grader.batch import run_all as run_batch
    from grader.overrides import load_overrides
    from grader.rubric import find_rubric, load_rubric

    settings = _settings(
        device,
        sandbox,
        data_dir=data_dir,
        out_dir=out,
        task_timeout_s=timeout,
        recipe_overrides=_recipe_overrides(recipe or []),
        skip_training=skip_training,
    )
    try:
        rubric_file = find_rubric(rubric)
        parsed = load_rubric(rubric_file)
        options = BatchOptions(
            submissions,
            rubric_file,
            settings,
            jobs,
            executor,
            ray_address,
            only or [],
            load_overrides(overrides, parsed) if overrides else [],
            force,
        )
        with _BatchProgress() as progress:
            result = run_batch(options, progress)
    except GraderError as err:
        _exit(err)
    _print_batch(result, out)


@app.command()
def report(
    out: Annotated[Path, typer.Argument(help="The folder `grader run-all` wrote.")],
    rubric: Annotated[str, typer.Option(help="Rubric YAML file or name in rubrics/.")],
    overrides: Overrides = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="CIFAR-10 source, for the misclassified images in the PDFs.")
    ] = None,
) -> None:
    """Re-render PDFs, results.json and the gradebook from stored results (no model runs)."""
    from grader.batch.outputs import last_rows, write_class_outputs
    from grader.overrides import load_overrides
    from grader.rubric import find_rubric, load_rubric

    try:
        parsed = load_rubric(find_rubric(rubric))
        hand = load_overrides(overrides, parsed) if overrides else []
        if not out.is_dir():
            raise UsageError(f"{out} is not a folder of graded submissions; give the --out of grader run-all")
        rows = last_rows(out)
        rewritten = write_class_outputs(out, parsed, rows, hand, _test_images(data_dir), force=True)
    except GraderError as err:
        _exit(err)
    except ValueError as err:
        _exit(UsageError(str(err)))
    console.print(f"{len(rewritten)} reports rewritten; gradebook: {out / 'gradebook.csv'}")


def _test_images(data_dir: Path | None) -> Any:
    """The test images for the PDFs' misclassified grid; without data the grid is left out."""
    from grader import data as datasets

    try:
        source = datasets.resolve_source(data_dir)
        return datasets.load_split(source, "test", Settings().cache_dir).images()
    except GraderError as err:
        console.print(f"[yellow]note:[/] {err}; the reports leave out the misclassified images")
        return None


class _BatchProgress:
    """A progress bar with ETA for run-all; failures are printed as they happen."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            "{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            "ETA",
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.bar.add_task("grading", total=None)

    def __enter__(self) -> _BatchProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def planned(self, to_grade: int, skipped: int) -> None:
        self.bar.update(self.task, total=to_grade)
        self.bar.console.print(f"{to_grade} to grade; {skipped} unchanged or unreadable, not graded again")

    def finished(self, row: Any) -> None:
        self.bar.advance(self.task)
        if row.status == "failed":
            self.bar.console.print(f"[red]failed[/] {row.student_id}: {row.reason}", highlight=False)


def _print_batch(result: Any, out: Path) -> None:
    graded, skipped, failed = (result.by_status(s) for s in ("graded", "skipped", "failed"))
    console.print(
        f"{len(graded)} graded, {len(skipped)} unchanged, {len(failed)} failed in {result.seconds:.0f} s; "
        f"index: {out / 'index.html'}"
    )
    if failed:
        table = Table(title="not graded")
        table.add_column("student")
        table.add_column("reason")
        for row in failed:
            table.add_row(row.student_id, row.reason)
        console.print(table)


def _settings(device: str, sandbox: str, unsafe_no_sandbox: bool = False, **fields: Any) -> Settings:
    """A command's Settings, once the --device and --sandbox choices every command shares are
    checked; --unsafe-no-sandbox overrides the backend."""
    if device not in ("auto", "cpu", "cuda"):
        _exit(UsageError(f"--device {device!r}: use auto, cpu or cuda"))
    if sandbox not in CHOICES:
        _exit(UsageError(f"--sandbox {sandbox!r}: use {', '.join(CHOICES)} (or --unsafe-no-sandbox)"))
    return Settings(device=device, sandbox="none" if unsafe_no_sandbox else sandbox, **fields)


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
