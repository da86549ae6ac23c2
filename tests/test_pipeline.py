"""Grading end to end in the real bubblewrap sandbox.

The zoo has one task per failure mode. Every task runs in its own sandbox; one task's crash,
hang or bad file must become that task's plain-words error while the others are graded
normally. The worked example of docs/rubrics.md grades a small real submission as written.
"""

from __future__ import annotations

import platform
import re
from importlib import metadata
from pathlib import Path

import pytest

from grader.config import Settings
from grader.pipeline import Graded, grade
from grader.rubric import TaskSpec, load_rubric
from grader.scoring import interpolate
from tests.conftest import FILES, TEST_PER_CLASS, load_module

COURSE_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rubric-course.yaml"

pytestmark = pytest.mark.slow
TIMEOUT_S = 45.0


@pytest.fixture(scope="module")
def settings(small_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        data_dir=small_cifar,
        task_timeout_s=TIMEOUT_S,
        cache_dir=tmp_path_factory.mktemp("cache"),
        sandbox="bwrap",  # the Docker backend has its own tests (tests/test_docker.py)
    )


@pytest.fixture(scope="module")
def graded(zoo: Path, settings: Settings) -> Graded:
    return grade(zoo, load_rubric(FILES / "rubrics" / "zoo.yaml"), settings)


def task(graded: Graded, task_id: str):
    return graded.result.tasks[task_id]


@pytest.mark.parametrize("task_id", ["good", "dataparallel", "cuda", "safetensors", "checkpoint", "pickled"])
def test_accepted_ways_of_saving_weights_give_the_same_accuracy(graded: Graded, task_id: str) -> None:
    reference = task(graded, "good").evaluation
    result = task(graded, task_id)
    assert result.status == "ok", result.error
    assert result.weights_loaded
    assert result.evaluation.n_images == 10 * TEST_PER_CLASS
    assert result.evaluation.top1 == reference.top1
    assert result.evaluation.confusion == reference.confusion


def test_good_task_is_counted_and_scored(graded: Graded) -> None:
    good = task(graded, "good")
    # Conv 3→8 (3×3) + BN(8) + Linear(512→10): counted by hand.
    assert good.params == (8 * 3 * 9 + 8) + 16 + (512 * 10 + 10)
    # thop: conv = out elements × in_ch × k²; affine BN = 4 per element; linear = in × out.
    assert good.macs["thop"] == 8 * 32 * 32 * 27 + 4 * 8 * 32 * 32 + 512 * 10
    assert good.summary is not None and good.summary.rows[0].name == "Conv2d-1"
    items = {i.id: i for i in graded.result.items}
    assert items["valid"].status == "pass" and items["valid"].score == 1
    assert items["params"].status == "pass"
    assert items["acc"].score == pytest.approx(2 * good.evaluation.top1 / 100, abs=0.01)
    assert good.evaluation.top3 is not None and good.evaluation.top3 >= good.evaluation.top1
    assert items["claim"].status == "pass" and "claimed 12.50%" in items["claim"].message
    assert items["report"].status == "manual" and items["report"].score == 0


@pytest.mark.parametrize(
    ("task_id", "stage", "words"),
    [
        (
            "mismatch",
            "weights",
            "missing: features.0.bias; unexpected: extra.weight; shape mismatch: fc.weight",
        ),
        ("missing_weights", "weights", "weights/absent.pt not found in the submission"),
        (
            "traversal",
            "manifest",
            "tasks.traversal.weights '../../../etc/passwd' leaves the submission folder",
        ),
        ("syntax", "import", "broken.py failed to import: SyntaxError"),
        (
            "no_class",
            "import",
            "nets.py defines no ResNet18 (it defines: TinyCNN, WrongShape, Endless, NaNOut",
        ),
        ("sys_exit", "import", "exits.py called sys.exit(3) while being imported"),
        ("wrong_shape", "forward", "returned shape [1, 7], expected [1, 10]"),
        ("huge", "build", "6,166,000,010 parameters"),
        ("endless", "timeout", f"stopped after {TIMEOUT_S:.0f} s"),
    ],
)
def test_each_bad_input_is_its_tasks_plain_error(
    graded: Graded, task_id: str, stage: str, words: str
) -> None:
    result = task(graded, task_id)
    assert result.status == "error"
    assert result.error_stage == stage
    assert words in result.error


def test_a_whole_pickled_model_is_noted(graded: Graded) -> None:
    (note,) = [n for n in task(graded, "pickled").notes if "pickled" in n]
    assert note.startswith("weights/pickled.pt holds a whole pickled model (TinyCNN), not its state_dict")


def test_syntax_error_names_the_students_line(graded: Graded) -> None:
    assert "(line 10)" in task(graded, "syntax").error


def test_huge_model_is_counted_on_the_meta_device(graded: Graded) -> None:
    huge = task(graded, "huge")
    assert huge.params == 3072 * 2_000_000 + 2_000_000 + 2_000_000 * 10 + 10
    assert huge.macs["thop"] == 3072 * 2_000_000 + 2_000_000 * 10
    item = next(i for i in graded.result.items if i.id == "huge-params")
    assert item.status == "fail" and "over the limit of 1,000,000" in item.message


def test_nan_logits_count_as_wrong(graded: Graded) -> None:
    nan = task(graded, "nan")
    assert nan.status == "ok"
    assert nan.evaluation.nonfinite_rows == 10 * TEST_PER_CLASS
    assert nan.evaluation.top1 == 0.0


def test_result_records_the_sandbox_and_its_limits(graded: Graded) -> None:
    assert graded.result.device == "cpu"  # --device auto on a machine without a GPU
    assert task(graded, "good").device == "cpu"
    sandbox = graded.result.sandbox
    assert sandbox["backend"] == "bwrap"
    assert sandbox["limits"]["network"].startswith("none")
    assert graded.result.class_names[0] == "airplane"
    assert graded.test_images.shape == (10 * TEST_PER_CLASS, 32, 32, 3)


def test_result_records_the_versions_that_graded_it(graded: Graded) -> None:
    """bubblewrap runs the host's environment, so the sandbox's versions are the host's own."""
    versions = graded.result.versions
    for name in ("torch", "torchvision", "numpy", "ultralytics-thop", "ptflops"):
        assert versions[name] == metadata.version(name), name
    assert versions["python"] == versions["host python"] == platform.python_version()
    assert versions["grader"] == metadata.version("grader")
    assert versions["sandbox image"] == "none: the bwrap sandbox runs the host's environment"


# --- the worked example of docs/rubrics.md -----------------------------------------------------


def test_the_course_example_grades_a_real_submission(student: Path, settings: Settings) -> None:
    result = grade(student, load_rubric(COURSE_EXAMPLE), settings).result
    cnn = result.tasks["cnn"]
    assert cnn.status == "ok", cnn.error
    assert (cnn.model, cnn.weights) == ("model.py:Net", "weights/model.pt")  # the rubric's defaults
    assert (cnn.params, cnn.macs["thop"]) == (5370, 259_072)
    items = {item.id: item for item in result.items}
    assert [(items[i].status, items[i].score) for i in ("builds", "params", "macs")] == [
        ("pass", 10),
        ("pass", 10),
        ("pass", 20),
    ]
    assert items["params"].message == "5,370 parameters, within the limit of 500,000"
    assert items["macs"].message == "259,072 MACs (thop), within the limit of 60,000,000"
    assert cnn.evaluation is not None and cnn.evaluation.n_images == 10 * TEST_PER_CLASS
    fraction = interpolate([(50, 0.0), (70, 0.75), (80, 1.0)], cnn.evaluation.top1)
    assert items["accuracy"].score == pytest.approx(40 * fraction, abs=0.01)
    # Untrained weights: the manifest's 85% is far from what they measure.
    assert (items["claim"].status, items["claim"].score) == ("fail", 0)
    assert items["claim"].message.startswith("claimed 85.00%, measured ")
    assert (items["writeup"].status, items["writeup"].score) == ("manual", 0)
    assert items["writeup"].message.startswith("pending TA review: 6 pts: design choices")
    assert (result.total, result.max_total) == (pytest.approx(40 + items["accuracy"].score), 100)
    # B000000001's manifest says cifar10-cnn; the rubric given wins, and the report says so.
    assert result.rubric == "dl101-lab3"
    warning = "submission.yaml says assignment 'cifar10-cnn' but it was graded with rubric 'dl101-lab3'"
    assert warning in result.warnings


def test_a_task_no_one_names_fails_at_the_manifest_stage(student: Path, settings: Settings) -> None:
    course = load_rubric(COURSE_EXAMPLE)
    without_defaults = course.model_copy(update={"tasks": {"cnn": TaskSpec(title="Your CNN")}})
    result = grade(student, without_defaults, settings).result
    cnn = result.tasks["cnn"]
    message = (
        "submission.yaml: tasks.cnn.model and tasks.cnn.weights are not set and the rubric gives no "
        "default; add tasks.cnn.model: file.py:ClassName and tasks.cnn.weights: path/to/weights.pt"
    )
    assert (cnn.status, cnn.error_stage, cnn.error) == ("error", "manifest", message)
    assert (cnn.model, cnn.weights, cnn.params) == (None, None, None)
    builds = next(item for item in result.items if item.id == "builds")
    assert (builds.status, builds.score) == ("error", 0)
    assert builds.message == "no evidence: task cnn stopped at stage manifest"


# --- a job that runs out of time says where and how fast ------------------------------------

SLOW_EVAL = """
import time

from nets import TinyCNN


class Slow(TinyCNN):
    def forward(self, x):
        if x.shape[0] > 1:  # the test pass: one second a batch; building and counting are quick
            time.sleep(1.0)
        return super().forward(x)
"""


def test_a_slow_test_pass_is_told_its_speed_and_the_fix(small_cifar: Path, tmp_path: Path) -> None:
    import torch

    root = tmp_path / "B000000009"
    root.mkdir()
    (root / "nets.py").write_text((FILES / "zoo" / "nets.py").read_text())
    (root / "slow.py").write_text(SLOW_EVAL)
    torch.save(load_module(FILES / "zoo" / "nets.py").TinyCNN().state_dict(), root / "weights.pt")
    (root / "submission.yaml").write_text(
        "student_id: B000000009\ntasks:\n  slow: {model: slow.py:Slow, weights: weights.pt}\n"
    )
    rubric = tmp_path / "slow.yaml"
    rubric.write_text(
        "id: slow\ntitle: slow\npreprocess: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}\n"
        "tasks: {slow: {title: slow}}\n"
        "items: [{id: valid, task: slow, title: builds, type: model_valid, points: 1}]\n"
    )
    settings = Settings(
        data_dir=small_cifar,
        task_timeout_s=12,
        eval_batch_size=10,
        cache_dir=tmp_path / "cache",
        sandbox="bwrap",
    )
    slow = grade(root, load_rubric(rubric), settings).result.tasks["slow"]
    assert slow.error_stage == "timeout"
    pattern = (
        r"stopped during the test pass after 1\d s at (\d+) images/s: "
        r"(\d+) images need about (\d+) s; raise --timeout"
    )
    found = re.fullmatch(pattern, slow.error or "")
    assert found, slow.error
    rate, images, need = int(found[1]), int(found[2]), int(found[3])
    assert 5 <= rate <= 11  # ten images a second, less the time between batches
    assert images >= 10 * TEST_PER_CLASS and abs(need - images / rate) <= 0.1 * images / rate + 1
