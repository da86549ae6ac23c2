"""The command line: flags, progress and exit codes; the work happens in pipeline.py."""

from __future__ import annotations

import logging
import os
import sys
import time
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from grader.batch.executors import ExecutorChoice
from grader.ci import FailOn, Profile
from grader.config import Device, Settings
from grader.errors import GraderError, UsageError
from grader.sandbox import SandboxChoice

if TYPE_CHECKING:
    from rich.progress import Progress

app = typer.Typer(
    add_completion=False,
    help="Grade deep-learning assignments in a sandbox and write PDF reports.",
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
_DEFAULTS = Settings()
_DEVICE, _SANDBOX = Device(_DEFAULTS.device), SandboxChoice(_DEFAULTS.sandbox)
log = logging.getLogger("grader")

# Options shared by several commands, declared once.
DataDir = Annotated[
    Path | None,
    typer.Option(
        metavar="PATH", help="CIFAR-10 source; default $GRADER_DATA_DIR, else `grader config data_dir`."
    ),
]
DeviceOption = Annotated[Device, typer.Option(help="Where models run: auto is CUDA when there is a GPU.")]
SandboxOption = Annotated[
    SandboxChoice,
    typer.Option(
        help="Sandbox backend: auto is Docker if a daemon answers and has the image, else bubblewrap."
    ),
]
SkipTraining = Annotated[
    bool, typer.Option("--skip-training", help="Leave out retraining (its items are left for a TA).")
]
RecipeFields = Annotated[
    list[str] | None,
    typer.Option(metavar="KEY=VALUE", help="Forced on every retraining, e.g. epochs=1 (repeatable)."),
]
DockerImage = Annotated[str, typer.Option(metavar="IMAGE", help="Image for the Docker backend.")]
DockerRuntime = Annotated[
    str | None, typer.Option(metavar="RUNTIME", help="Docker runtime, e.g. runsc for gVisor.")
]
TrainBudget = Annotated[
    float,
    typer.Option(
        metavar="SECONDS",
        help="Retraining is not started when a few timed steps say it would take longer (all runs).",
    ),
]
Timeout = Annotated[float, typer.Option(metavar="SECONDS", help="Time limit of one task in the sandbox.")]
Overrides = Annotated[Path | None, typer.Option(metavar="FILE", help="Scores set by hand (CSV or YAML).")]


@app.command()
def run(
    submission: Annotated[
        Path,
        typer.Argument(metavar="SUBMISSION", help="A student's submission folder (named by student id)."),
    ],
    rubric: Annotated[
        str | None,
        typer.Option(
            metavar="FILE|NAME",
            help="Rubric YAML file or name in rubrics/, used whatever the manifest says; "
            "default: the manifest's assignment.",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(metavar="DIR", help="Reports go to DIR/<student_id>/.")
    ] = _DEFAULTS.out_dir,
    data_dir: DataDir = None,
    device: DeviceOption = _DEVICE,
    sandbox: SandboxOption = _SANDBOX,
    unsafe_no_sandbox: Annotated[
        bool,
        typer.Option("--unsafe-no-sandbox", help="Run student code with no isolation (trusted code only)."),
    ] = False,
    docker_image: DockerImage = _DEFAULTS.docker_image,
    docker_runtime: DockerRuntime = _DEFAULTS.docker_runtime,
    skip_training: SkipTraining = False,
    train_budget: TrainBudget = _DEFAULTS.train_budget_s,
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
        train_budget_s=train_budget,
    )
    _run(submission, rubric, settings)


def _recipe_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["epochs=1", "flip=false"]`` → a validated dict of recipe fields."""
    from pydantic import ValidationError

    from grader import yamlfile
    from grader.protocol import Recipe

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--recipe {pair!r}: expected KEY=VALUE, e.g. --recipe epochs=1")
        try:
            overrides[key.strip()] = yamlfile.load(value)
        except yamlfile.YamlError as err:
            raise UsageError(f"--recipe {pair!r}: the value is not YAML ({err})") from None
    try:
        Recipe().with_changes(overrides)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(map(str, first["loc"])) or ", ".join(overrides)
        raise UsageError(f"--recipe {key}: {first['msg']}") from None
    return overrides


def _run(submission: Path, rubric_name: str | None, settings: Settings) -> None:
    from grader.pipeline import grade
    from grader.report import write_report, write_results_json
    from grader.rubric import find_rubric, load_rubric
    from grader.submission import load_submission

    assignment = None if rubric_name else load_submission(submission, settings).assignment
    name = rubric_name or assignment
    if not name:
        raise UsageError(
            f"no rubric: pass --rubric FILE or set 'assignment:' in {submission}/submission.yaml"
        )
    rubric = load_rubric(find_rubric(name, shipped_only=assignment is not None))
    with _Progress() as shown:
        graded = grade(submission, rubric, settings, progress=shown.stage, advance=shown.advance)
        shown.stage("writing report")
        target = settings.out_dir / graded.result.student_id
        target.mkdir(parents=True, exist_ok=True)
        write_results_json(graded.result, target / "results.json")
        pdf = write_report(graded.result, target, graded.test_images, graded.submission)
    _print_scores(graded.result)
    console.print(f"report: {pdf}\nresults: {target / 'results.json'}")


CI_HERE, CI_OUT = Path("."), Path("grader-ci")


@app.command()
def ci(
    rubric: Annotated[
        str,
        typer.Option(
            metavar="FILE|NAME", help="Rubric YAML from the course's side (never the student's repository)."
        ),
    ],
    submission: Annotated[
        Path, typer.Argument(metavar="PATH", help="The submission folder, e.g. the checked-out repo.")
    ] = CI_HERE,
    profile: Annotated[
        Profile, typer.Option(help="quick (no retraining, test subset), full, or auto (quick without a GPU).")
    ] = Profile.AUTO,
    out: Annotated[
        Path, typer.Option(metavar="DIR", help="junit.xml, results.json, summary.md and the PDF go here.")
    ] = CI_OUT,
    fail_on: Annotated[
        FailOn,
        typer.Option(
            help="Exit 1 when: load (a task fails to load), limits (that or a hard limit), "
            "any (any item short of full points), never."
        ),
    ] = FailOn.LIMITS,
    data_dir: DataDir = None,
    device: DeviceOption = _DEVICE,
    sandbox: SandboxOption = _SANDBOX,
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
    parsed = load_rubric(find_rubric(rubric))
    with _Progress() as shown:
        done = run_ci(submission, parsed, settings, profile, fail_on, shown.stage, os.environ)
    publish(done)
    _print_scores(done.result)
    console.print(f"profile {done.profile}, {done.seconds:.0f} s; outputs in {out}/")
    for problem in done.problems:
        console.print(Text("CI check failed: ", style="bold red") + student_text(problem), soft_wrap=True)
    if done.failed:
        raise typer.Exit(1)


@app.command()
def baselines(
    rubric: Annotated[str, typer.Option(metavar="FILE|NAME", help="Rubric YAML file or name in rubrics/.")],
    data_dir: DataDir = None,
    device: DeviceOption = _DEVICE,
    sandbox: SandboxOption = _SANDBOX,
) -> None:
    """Train the rubric's reference models once; later gradings reuse the cached results."""
    from grader.pipeline import train_baselines
    from grader.rubric import find_rubric, load_rubric

    settings = _settings(device, sandbox, data_dir=data_dir)
    parsed = load_rubric(find_rubric(rubric))
    with _Progress() as shown:
        runs = train_baselines(parsed, settings, progress=shown.stage)
    if not runs:
        console.print(f"{parsed.id} names no baselines (training.baselines)")
    table = Table(title=f"baselines of {parsed.id}")
    for column in ("task", "model", "epochs", "test accuracy", "note"):
        table.add_column(column)
    for task_id, run in runs.items():
        acc = f"{run.test_accuracy:.2f}%" if run.test_accuracy is not None else "—"
        table.add_row(task_id, run.label, str(len(run.history)), acc, student_text(run.error or ""))
    console.print(table)
    if any(run.error for run in runs.values()):
        raise typer.Exit(1)


@app.command("run-all")
def run_all(
    submissions: Annotated[
        Path, typer.Argument(metavar="SUBMISSIONS", help="A folder holding one sub-folder per student.")
    ],
    rubric: Annotated[str, typer.Option(metavar="FILE|NAME", help="Rubric YAML file or name in rubrics/.")],
    out: Annotated[
        Path, typer.Option(metavar="DIR", help="Reports go to DIR/<student_id>/.")
    ] = _DEFAULTS.out_dir,
    jobs: Annotated[int, typer.Option(min=1, metavar="N", help="Submissions graded at the same time.")] = 1,
    executor: Annotated[
        ExecutorChoice, typer.Option(help="local (worker processes) or ray (install grader[ray]).")
    ] = ExecutorChoice.LOCAL,
    ray_address: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS", help="A Ray cluster (ray start --head); default: a local Ray instance."
        ),
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option(metavar="ID", help="Grade only this student folder (repeatable).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Grade again even students whose grading is current.")
    ] = False,
    overrides: Overrides = None,
    data_dir: DataDir = None,
    device: DeviceOption = _DEVICE,
    sandbox: SandboxOption = _SANDBOX,
    docker_image: DockerImage = _DEFAULTS.docker_image,
    docker_runtime: DockerRuntime = _DEFAULTS.docker_runtime,
    skip_training: SkipTraining = False,
    train_budget: TrainBudget = _DEFAULTS.train_budget_s,
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
        docker_image=docker_image,
        docker_runtime=docker_runtime,
        recipe_overrides=_recipe_overrides(recipe or []),
        skip_training=skip_training,
        train_budget_s=train_budget,
    )
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
    _print_batch(result, out)


@app.command()
def config(
    key: Annotated[str | None, typer.Argument(metavar="KEY", help="A setting: data_dir.")] = None,
    value: Annotated[str | None, typer.Argument(metavar="VALUE", help="Its new value.")] = None,
    unset: Annotated[bool, typer.Option("--unset", help="Remove the setting.")] = False,
) -> None:
    """Show the grader's settings and where each comes from, or set one (e.g. data_dir PATH)."""
    from grader.config import USER_KEYS, read_user_config, user_config_path, write_user_config

    if key is not None and (value is not None or unset):
        if key == "data_dir" and value is not None:
            if not Path(value).expanduser().exists():
                raise UsageError(
                    f"data_dir {value}: no such file or folder; give the CIFAR-10 archive or folder"
                )
            value = str(Path(value).expanduser().resolve())
        path = write_user_config(key, None if unset else value)
        typer.echo(f"{key} {'removed' if unset else '= ' + str(value)} in {path}")
        return
    stored = read_user_config()
    typer.echo(f"# {user_config_path()}")
    for name, meaning in USER_KEYS.items():
        if key in (None, name):
            typer.echo(f"{name} = {stored.get(name, '(not set)')}    # {meaning}")


@app.command()
def report(
    out: Annotated[Path, typer.Argument(metavar="DIR", help="The folder `grader run-all` wrote.")],
    rubric: Annotated[str, typer.Option(metavar="FILE|NAME", help="Rubric YAML file or name in rubrics/.")],
    overrides: Overrides = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(metavar="PATH", help="CIFAR-10 source, for the misclassified images in the PDFs."),
    ] = None,
) -> None:
    """Re-render PDFs, results.json and the gradebook from stored results (no model runs)."""
    from grader.batch.outputs import last_rows, write_class_outputs
    from grader.overrides import load_overrides
    from grader.rubric import find_rubric, load_rubric

    parsed = load_rubric(find_rubric(rubric))
    hand = load_overrides(overrides, parsed) if overrides else []
    if not out.is_dir():
        raise UsageError(f"{out} is not a folder of graded submissions; give the --out of grader run-all")
    rows = last_rows(out)
    rewritten = write_class_outputs(out, parsed, rows, hand, _test_images(data_dir), force=True)
    console.print(f"{len(rewritten)} reports rewritten; gradebook: {out / 'gradebook.csv'}")


def _test_images(data_dir: Path | None) -> Any:
    """The test images for the PDFs' misclassified grid; without data the grid is left out."""
    from grader import data as datasets

    try:
        source = datasets.resolve_source(data_dir)
        return datasets.load_split(source, "test", Settings().cache_dir).images()
    except GraderError as err:
        console.print(
            Text("note: ", style="yellow")
            + student_text(f"{err}; the reports leave out the misclassified images")
        )
        return None


def _bar(spinner: bool, transient: bool) -> Progress:
    """A progress bar with done/total, the time so far and the ETA, on the console."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    spin: list[str | ProgressColumn] = [SpinnerColumn()] if spinner else []
    columns = [*spin, "{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    return Progress(*columns, "ETA", TimeRemainingColumn(), console=console, transient=transient)


class _BatchProgress:
    """A progress bar with ETA for run-all; failures are printed as they happen."""

    def __init__(self) -> None:
        self.bar = _bar(spinner=False, transient=False)
        self.task = self.bar.add_task("grading", total=None)

    def __enter__(self) -> _BatchProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def planned(self, to_grade: int, skipped: int) -> None:
        self.bar.update(self.task, total=to_grade)
        self.bar.console.print(f"{to_grade} to grade; {skipped} unchanged or unreadable, not graded again")

    def running(self, stages: dict[str, str]) -> None:
        now = " · ".join(f"{student}: {what}" for student, what in sorted(stages.items()))
        self.bar.update(
            self.task, description=escape(student_text(f"grading {now}" if now else "grading").plain)
        )

    def finished(self, row: Any) -> None:
        self.bar.advance(self.task)
        if row.status == "failed":
            self.bar.console.print(
                Text("failed ", style="red") + student_text(f"{row.student_id}: {row.reason}")
            )


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
            table.add_row(student_text(row.student_id), student_text(row.reason))
        console.print(table)


def _settings(
    device: Device, sandbox: SandboxChoice, unsafe_no_sandbox: bool = False, **fields: Any
) -> Settings:
    """A command's Settings from the choices every command shares; --unsafe-no-sandbox
    overrides the backend."""
    backend = "none" if unsafe_no_sandbox else sandbox.value
    return Settings(device=device.value, sandbox=backend, **fields)


class _Progress:
    """A line per stage of a grading, and a bar with ETA for a job's progress within its stage
    (the test pass, a retraining's steps)."""

    _NAMES: ClassVar[dict[str, str]] = {
        "inference": "test pass",
        "training": "training",
        "timing": "timing training steps",
    }

    def __init__(self) -> None:
        self.bar = _bar(spinner=True, transient=True)
        self.task = self.bar.add_task("starting", total=None)

    def __enter__(self) -> _Progress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def stage(self, text: str) -> None:
        self.bar.console.print(Text(time.strftime("%H:%M:%S "), style="dim") + student_text(text))
        self.bar.reset(self.task, total=None, description=escape(student_text(text).plain))

    def advance(self, now: Any) -> None:
        what = self._NAMES.get(now.stage, now.stage)
        if now.stage == "training" and now.epochs:
            what += f", epoch {now.epoch}/{now.epochs}"
        self.bar.update(self.task, total=now.total, completed=now.done, description=what)


def _print_scores(result: object, to: Console = console) -> None:
    from grader.results import GradeResult

    assert isinstance(result, GradeResult)
    table = Table(title=student_text(f"{result.student_id} — {result.rubric_title}"))
    for column in ("item", "task", "score", "status", "reason"):
        table.add_column(column)
    for item in result.items:
        score = f"{item.score:g}/{item.max_score:g}"
        table.add_row(item.id, item.task or "", score, item.status, student_text(item.message))
    table.add_row("total", "", f"{result.total:g}/{result.max_total:g}", "", "")
    to.print(table)
    for task in result.tasks.values():  # once per task; its items say "no evidence: task ..."
        if task.stopped:
            to.print(Text("stopped: ", style="bold red") + student_text(task.stopped), soft_wrap=True)
    for alert in result.alerts:
        to.print(Text("look at this: ", style="bold reverse red") + student_text(alert), soft_wrap=True)


def student_text(text: str) -> Text:
    """Text a student controls (messages, exception text, names) for the terminal: shown as it
    is, never read as Rich markup, with control characters (escape sequences among them) and
    other invisible format characters replaced by U+FFFD."""
    return Text("".join(_visible(c) for c in text))


def _visible(char: str) -> str:
    if char in "\n\t":
        return char
    return "\ufffd" if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn") else char


def _print_error(err: GraderError) -> None:
    console.print(Text("error: ", style="bold red") + student_text(str(err)), soft_wrap=True)


def run_cli(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: the process's) and return the exit code.

    Every ``GraderError`` is caught here, once, and printed as its one line with its exit code.
    """
    from grader.sandbox.leftovers import Terminated, stop_on_sigterm

    args = sys.argv[1:] if argv is None else argv
    if argv is None:
        stop_on_sigterm()
    try:
        code = app(args=args or ["--help"], standalone_mode=False, prog_name="grader")
    except GraderError as err:
        _print_error(err)
        return err.exit_code
    except typer.TyperException as err:  # the parser's own: a bad flag or value (exit 2)
        message = err.format_message().replace("Value error, ", "")
        console.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)
        return err.exit_code
    except (typer.Abort, KeyboardInterrupt):
        console.print("interrupted: the running jobs were stopped")
        return 130
    except Terminated:
        console.print("terminated: the running jobs were stopped")
        return 143
    return code if isinstance(code, int) else 0


def main() -> None:
    sys.exit(run_cli())
