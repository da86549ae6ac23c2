"""``grader ci``: one pushed submission graded for continuous integration.

Profiles:
  quick  the default when torch sees no GPU. Every task is loaded in the sandbox and
         counted (parameters, MACs, architecture); accuracy is measured on the first
         ``QUICK_TEST_PER_CLASS`` test images of each class, in test-split order; the
         grader's own retraining is left out and its items are scored ``not_checked``,
         as is a claimed accuracy (it is compared with the whole test split).
  full   exactly what ``grader run`` does.

One run writes into OUT: ``junit.xml``, ``results.json`` (Gradescope's autograder format),
``summary.md`` (also appended to ``$GITHUB_STEP_SUMMARY`` when set), ``grader-results.json``
(the grader's own record) and ``report.pdf``. The exit-code policy (``fail_on``) decides
which findings fail the CI job; see ``policy_problems``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from grader.config import Settings
from grader.errors import UsageError
from grader.files import write_atomic
from grader.pipeline import grade
from grader.report import write_report, write_results_json
from grader.report.gradescope import write_gradescope
from grader.report.junit import write_junit
from grader.report.summary import markdown_summary
from grader.results import GradeResult
from grader.rubric import Rubric
from grader.submission import Checkout

QUICK_TEST_PER_CLASS = 100  # 1,000 of CIFAR-10's 10,000 test images


class Profile(StrEnum):
    """How much a CI run grades: ``auto`` is ``full`` on a GPU, else ``quick``."""

    AUTO = "auto"
    QUICK = "quick"
    FULL = "full"


class FailOn(StrEnum):
    """When the CI job fails: a task does not load; that or a hard limit; any item short of full
    points; never."""

    LOAD = "load"
    LIMITS = "limits"
    ANY = "any"
    NEVER = "never"


HARD_LIMITS = ("params_limit", "flops_limit")
QUICK_SKIP_REASON = (
    "not checked in CI (quick profile): the grader's retraining runs in the full grading after the deadline"
)
JUNIT, GRADESCOPE, SUMMARY, RECORD = "junit.xml", "results.json", "summary.md", "grader-results.json"


@dataclass
class CiRun:
    """What one ``grader ci`` run produced, and whether the exit-code policy fails it."""

    result: GradeResult
    profile: str
    seconds: float
    files: dict[str, Path]
    problems: list[str]  # empty: the CI job passes

    @property
    def failed(self) -> bool:
        return bool(self.problems)


def resolve_profile(profile: str, device: str) -> str:
    """``auto`` is ``full`` when the grading device is (or would pick) a GPU, else ``quick``."""
    if profile not in set(Profile):
        raise UsageError(f"--profile {profile!r}: use {', '.join(Profile)}")
    if profile != "auto":
        return profile
    if device == "cuda":
        return "full"
    if device == "cpu":
        return "quick"
    import torch

    return "full" if torch.cuda.is_available() else "quick"


def profile_settings(settings: Settings, profile: str) -> Settings:
    """The settings a profile grades with; ``full`` leaves them as given."""
    if profile == "full":
        return settings
    return dataclasses.replace(
        settings,
        skip_training=True,
        skip_training_reason=QUICK_SKIP_REASON,
        test_subset_per_class=QUICK_TEST_PER_CLASS,
    )


def run_ci(
    submission: Path,
    rubric: Rubric,
    settings: Settings,
    profile: str,
    fail_on: str,
    progress: Callable[[str], None] = lambda _stage: None,
    env: Mapping[str, str] | None = None,
) -> CiRun:
    """Grade ``submission`` under ``profile`` and write every CI output into ``settings.out_dir``.

    ``env`` is the CI job's environment: the student id comes from the manifest, else from
    ``$GITHUB_REPOSITORY`` (``repository_student_id``), else from the folder's name.
    """
    if fail_on not in set(FailOn):
        raise UsageError(f"--fail-on {fail_on!r}: use {', '.join(FailOn)}")
    chosen = resolve_profile(profile, settings.device)
    started = time.monotonic()
    checkout = Checkout(repository_student_id(env or {}, rubric.id))
    graded = grade(submission, rubric, profile_settings(settings, chosen), progress, checkout=checkout)
    progress("writing JUnit, Gradescope, summary and PDF")
    seconds = time.monotonic() - started
    problems = policy_problems(graded.result, fail_on)
    out = settings.out_dir
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "junit": write_junit(graded.result, out / JUNIT, seconds),
        "gradescope": write_gradescope(graded.result, out / GRADESCOPE, seconds, chosen),
        "summary": _write_summary(markdown_summary(graded.result, chosen, problems), out),
        "record": out / RECORD,
        "report": write_report(graded.result, out, graded.test_images, graded.submission),
    }
    write_results_json(graded.result, files["record"])
    return CiRun(graded.result, chosen, seconds, files, problems)


def repository_student_id(env: Mapping[str, str], assignment: str) -> str | None:
    """The username in a GitHub Classroom repository's name, ``<assignment>-<username>``, from
    ``$GITHUB_REPOSITORY`` (``<organization>/<repository>``); None elsewhere.

    Both parts may hold hyphens, so the name is cut after ``assignment`` (the rubric's id)
    where it starts so, else before ``$GITHUB_ACTOR`` (who pushed) where it ends so, else
    at its last hyphen.
    """
    name = env.get("GITHUB_REPOSITORY", "").rpartition("/")[2]
    actor = env.get("GITHUB_ACTOR", "")
    if name.startswith(f"{assignment}-") and len(name) > len(assignment) + 1:
        return name[len(assignment) + 1 :]
    if actor and name.lower().endswith(f"-{actor.lower()}") and len(name) > len(actor) + 1:
        return name[-len(actor) :]
    head, dash, user = name.rpartition("-")
    return user if dash and head and user else None


def policy_problems(result: GradeResult, fail_on: str) -> list[str]:
    """Why the CI job should fail under ``fail_on``; an empty list lets it pass.

    ``load``: a task did not load, build or evaluate in the sandbox. ``limits``: that, or a
    hard limit (parameters, MACs) is broken. ``any``: that, or any item failed, as junit.xml
    counts failures: errored, failed, or scored partially. ``never``: the job always passes.
    """
    if fail_on == "never":
        return []
    problems = [t.stopped for t in result.tasks.values() if t.stopped]
    if fail_on == "load":
        return problems
    broken = [i for i in result.items if i.outcome == "failed"]
    if fail_on == "limits":
        broken = [i for i in broken if i.type in HARD_LIMITS]
    return problems + [f"item {i.id} ({i.title}): {i.outcome_message}" for i in broken]


def _write_summary(text: str, out: Path) -> Path:
    path = out / SUMMARY
    write_atomic(path, text.encode("utf-8"))
    return path


def publish(run: CiRun, env: Mapping[str, str] = os.environ, echo: Callable[[str], Any] = print) -> None:
    """Hand the results to the CI system: the job's step summary and step outputs (GitHub),
    and on GitHub Actions the "Points X/Y" notice GitHub Classroom reads a score from."""
    if env.get("GITHUB_ACTIONS") == "true":
        echo(f"::notice title=Autograding complete::Points {run.result.total:g}/{run.result.max_total:g}")
    summary = env.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(run.files["summary"].read_text(encoding="utf-8"))
    outputs = env.get("GITHUB_OUTPUT")
    if outputs:
        with open(outputs, "a", encoding="utf-8") as handle:
            handle.write(
                f"score={run.result.total:g}\nmax-score={run.result.max_total:g}\n"
                f"profile={run.profile}\npassed={'false' if run.failed else 'true'}\n"
            )
