"""The retraining estimate: a few timed training steps per model, added up over the rubric's
runs, and the message that stops a retraining past the budget (the whole path through a real
sandbox is in tests/test_retraining.py)."""

from __future__ import annotations

import json
from pathlib import Path

from grader.config import Settings
from grader.jobs import TrainingInputs, run_task
from grader.protocol import Recipe
from grader.retraining import TIMED_STEPS, Estimate
from grader.rubric import find_rubric, load_rubric
from grader.sandbox import Job, Outcome
from grader.submission import TaskEntry


def _estimate(seconds: float) -> Estimate:
    speeds = {"task1": 850.0, "baseline of task1": 120.0}
    return Estimate(seconds, runs=11, epochs=165, images=45_000, speeds=speeds, device="machine")


def test_under_the_budget_the_retraining_starts() -> None:
    assert _estimate(1799.0).over(1800.0) is None


def test_past_the_budget_the_message_gives_the_sum_the_speeds_and_the_ways_out() -> None:
    message = _estimate(31 * 3600.0).over(1800.0)
    assert message == (
        "retraining would take about 31 h on this machine: 11 run(s), 165 epochs in all, of up to "
        "45,000 images, at 850 images/s (task1), 120 images/s (baseline of task1); run on a GPU, "
        "raise --train-budget, or --recipe epochs=1 for a look"
    )


class _Recorder:
    """A backend that keeps the job file it is handed and runs nothing."""

    name = "recorder"
    image_id = None

    def __init__(self) -> None:
        self.specs: list[dict[str, object]] = []

    def run(self, job: Job) -> Outcome:
        (job_file,) = [m.host for m in job.mounts if m.inside == "/job/job.json"]
        self.specs.append(json.loads(job_file.read_text(encoding="utf-8")))
        return Outcome(returncode=1, timed_out=False, seconds=0.0, stdout_tail="", stderr_tail="")

    def enforced(self, job: Job) -> dict[str, str]:
        return {}


def test_an_item_left_unchecked_says_why_in_one_sentence() -> None:
    assert _estimate(31 * 3600.0).brief(1800.0) == (
        "retraining would take about 31 h on this machine, past --train-budget (30 min); "
        "the warnings give the estimate"
    )


def test_a_timing_job_tells_the_harness_how_many_steps_to_time(tmp_path: Path) -> None:
    backend, rubric = _Recorder(), load_rubric(find_rubric("cifar10-cnn"))
    entry = TaskEntry("cnn", "model.py:Net", "weights/model.pt", rubric.preprocess)
    inputs = TrainingInputs(Recipe(), tmp_path / "x.npy", tmp_path / "y.npy", tmp_path, 60.0)
    for steps in (TIMED_STEPS, 0):
        work = tmp_path / f"work-{steps}"
        run_task(backend, entry, tmp_path, rubric, Settings(), work, training=inputs, time_steps=steps)
    timed, whole = (spec["training"] for spec in backend.specs)
    assert isinstance(timed, dict) and isinstance(whole, dict)
    assert (timed["time_steps"], whole["time_steps"]) == (TIMED_STEPS, 0)


def test_an_evaluation_job_names_the_rankings_the_rubric_reports(tmp_path: Path) -> None:
    """eai-lab2 shows top-1 only, cifar10-cnn top-1 and top-3: the sandbox keeps those float32's."""
    backend = _Recorder()
    for name in ("eai-lab2", "cifar10-cnn"):
        rubric = load_rubric(find_rubric(name))
        entry = TaskEntry("t", "model.py:Net", "weights/model.pt", rubric.preprocess)
        run_task(backend, entry, tmp_path, rubric, Settings(), tmp_path / name, images=tmp_path / "x.npy")
    assert [spec["ranks"] for spec in backend.specs] == [[1], [1, 3]]
