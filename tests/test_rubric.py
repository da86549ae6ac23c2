"""grader/rubric.py: the shipped rubrics load, and every invalid rubric names file, key and expectation.

docs/rubrics.md has a table row for every key, and its worked example is examples/rubric-course.yaml.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import subprocess
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from grader import rubric as rubrics
from grader.errors import RubricError
from grader.protocol import Recipe
from grader.rubric import ArchitectureItem, ManualItem, TestAccuracyItem, find_rubric, load_rubric
from grader.scoring import accuracy_fraction

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "rubrics.md"
COURSE_EXAMPLE = ROOT / "examples" / "rubric-course.yaml"

VALID: dict[str, Any] = {
    "id": "mini",
    "title": "Mini rubric",
    "tasks": {"task1": {"title": "CNN", "model": "model.py:Net", "weights": "weights/task1.pt"}},
    "items": [
        {
            "id": "1",
            "task": "task1",
            "title": "Size",
            "type": "params_limit",
            "points": 10,
            "max_params": 1000,
        },
        {
            "id": "2",
            "task": "task1",
            "title": "Accuracy",
            "type": "test_accuracy",
            "points": 5,
            "thresholds": [{"accuracy": 50, "fraction": 0.0}, {"accuracy": 80, "fraction": 1.0}],
        },
        {"id": "3", "task": "task1", "title": "Claim", "type": "claim", "points": 1},
    ],
}


def write_rubric(tmp_path: Path, change: Callable[[dict[str, Any]], object]) -> Path:
    data = copy.deepcopy(VALID)
    change(data)
    path = tmp_path / "lab-rubric.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def rubric_error(path: Path, pattern: str) -> str:
    """Load ``path`` expecting a RubricError that starts with the file name and matches ``pattern``."""
    with pytest.raises(RubricError, match=pattern) as info:
        load_rubric(path)
    assert str(info.value).startswith(f"{path}: ")
    return str(info.value)


@pytest.mark.parametrize(
    ("name", "tasks", "items", "total"), [("eai-lab2", 2, 16, 100), ("cifar10-cnn", 1, 5, 100)]
)
def test_shipped_rubrics_load(name: str, tasks: int, items: int, total: int) -> None:
    rubric = load_rubric(find_rubric(name))
    assert rubric.id == name
    assert (len(rubric.tasks), len(rubric.items)) == (tasks, items)
    assert rubric.max_total == total == sum(item.points for item in rubric.items)


def test_eai_lab2_items_are_typed(eai_rubric: Any) -> None:
    items = {item.id: item for item in eai_rubric.items}
    assert isinstance(items["4"], ArchitectureItem)
    assert items["4"].expected_params == 11_173_962
    assert items["4"].required_modules == {"Conv2d": 17, "BatchNorm2d": 17}
    assert isinstance(items["2a"], TestAccuracyItem)
    assert [(t.accuracy, t.fraction) for t in items["2a"].thresholds] == [(50, 0.0), (80, 1.0)]
    assert isinstance(items["8"], ManualItem) and items["8"].task is None
    assert eai_rubric.preprocess.mean == (0.4914, 0.4822, 0.4465)


def test_find_rubric_accepts_a_path_or_a_name(tmp_path: Path) -> None:
    path = write_rubric(tmp_path, lambda d: None)
    assert find_rubric(str(path)) == path
    assert find_rubric("eai-lab2.yaml") == find_rubric("eai-lab2")
    assert load_rubric(path).max_total == 16


def test_unknown_rubric_lists_the_known_ones() -> None:
    with pytest.raises(RubricError, match=r"'eai-lab9' not found.*cifar10-cnn, eai-lab2"):
        find_rubric("eai-lab9")


def test_missing_tasks(tmp_path: Path) -> None:
    rubric_error(write_rubric(tmp_path, lambda d: d.pop("tasks")), r": tasks: Field required")


def test_points_not_a_number(tmp_path: Path) -> None:
    path = write_rubric(tmp_path, lambda d: d["items"][0].update(points="ten"))
    message = rubric_error(path, re.escape("items[0].points: Input should be a valid number"))
    assert "(got 'ten')" in message


def test_negative_points(tmp_path: Path) -> None:
    path = write_rubric(tmp_path, lambda d: d["items"][1].update(points=-5))
    rubric_error(path, re.escape("items[1].points: Input should be greater than or equal to 0 (got -5)"))


def test_unknown_item_type_lists_the_known_ones(tmp_path: Path) -> None:
    path = write_rubric(tmp_path, lambda d: d["items"][0].update(type="bonus"))
    message = rubric_error(path, re.escape("items[0]: Input tag 'bonus'"))
    for known in ("model_valid", "params_limit", "flops_limit", "architecture", "test_accuracy", "claim"):
        assert f"'{known}'" in message


def test_misspelled_optional_key(tmp_path: Path) -> None:
    path = write_rubric(tmp_path, lambda d: d["items"][2].update(tolerence=2.0))
    rubric_error(path, re.escape("items[2].tolerence: unknown key (see docs/rubrics.md)"))


def test_misspelled_required_key_names_the_missing_one(tmp_path: Path) -> None:
    path = write_rubric(tmp_path, lambda d: d["items"][0].update(max_param=d["items"][0].pop("max_params")))
    rubric_error(path, re.escape("items[0].max_param: unknown key; expected max_params"))


def test_misspelled_required_key_also_names_the_misspelling(tmp_path: Path) -> None:
    path = write_rubric(tmp_path, lambda d: d["items"][0].update(max_param=d["items"][0].pop("max_params")))
    rubric_error(path, r"max_param\b.*unknown key|unknown key.*max_param\b")


def test_item_task_not_declared(tmp_path: Path) -> None:
    path = write_rubric(tmp_path, lambda d: d["items"][1].update(task="task9"))
    rubric_error(path, re.escape("items[1].task: 'task9' is not a task (task1)"))


def test_thresholds_not_increasing(tmp_path: Path) -> None:
    thresholds = [{"accuracy": 80, "fraction": 0.0}, {"accuracy": 50, "fraction": 1.0}]
    path = write_rubric(tmp_path, lambda d: d["items"][1].update(thresholds=thresholds))
    rubric_error(path, re.escape("items[1].thresholds: accuracies must be strictly increasing"))


def test_thresholds_repeated_accuracy(tmp_path: Path) -> None:
    thresholds = [{"accuracy": 50, "fraction": 0.0}, {"accuracy": 50, "fraction": 1.0}]
    path = write_rubric(tmp_path, lambda d: d["items"][1].update(thresholds=thresholds))
    rubric_error(path, re.escape("items[1].thresholds: accuracies must be strictly increasing"))


def test_duplicate_item_ids(tmp_path: Path) -> None:
    path = write_rubric(tmp_path, lambda d: d["items"][2].update(id="1"))
    rubric_error(path, re.escape("items[2].id: duplicate id '1'"))


@pytest.mark.parametrize("column", ["total", "status", "student_id"])
def test_an_item_id_that_is_a_gradebook_column_is_refused_before_grading(tmp_path: Path, column: str) -> None:
    path = write_rubric(tmp_path, lambda d: d["items"][2].update(id=column))
    rubric_error(path, re.escape(f"items[2].id: {column!r} is a column of the gradebook"))


def test_a_baseline_outside_reference_models_is_refused(tmp_path: Path) -> None:
    path = write_rubric(
        tmp_path, lambda d: d.update(training={"baselines": {"task1": "resnet50.py:ResNet50"}})
    )
    rubric_error(path, re.escape("training.baselines.task1: resnet50.py is not in reference_models/"))


def test_architecture_item_with_nothing_to_check(tmp_path: Path) -> None:
    item = {"id": "9", "task": "task1", "title": "Arch", "type": "architecture", "points": 1}
    path = write_rubric(tmp_path, lambda d: d["items"].append(item))
    rubric_error(path, re.escape("items[3]: give expected_params, required_modules or min_residual_adds"))


def test_a_task_may_leave_its_model_and_weights_to_the_manifests(tmp_path: Path) -> None:
    path = write_rubric(tmp_path, lambda d: d["tasks"].update(task1={"title": "CNN"}))
    spec = load_rubric(path).tasks["task1"]
    assert (spec.title, spec.model, spec.weights) == ("CNN", None, None)


def test_model_entry_point_pattern(tmp_path: Path) -> None:
    path = write_rubric(tmp_path, lambda d: d["tasks"]["task1"].update(model="model.py"))
    rubric_error(path, re.escape("tasks.task1.model: String should match pattern"))


def rewrite(path: Path, old: str, new: str) -> Path:
    """``path`` with the text ``old`` (which must be there) written as ``new``."""
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("written", "value"),
    [("6e8", 600_000_000), ("1.5e6", 1_500_000), ("6.0e+8", 600_000_000), ("2E3", 2000), ("1_000", 1000)],
)
def test_limits_accept_whole_numbers_written_as_floats(tmp_path: Path, written: str, value: int) -> None:
    flops = {"id": "4", "task": "task1", "title": "MACs", "type": "flops_limit", "points": 1, "max_macs": 7}
    arch = {"id": "5", "task": "task1", "title": "Size", "type": "architecture", "points": 1}
    path = write_rubric(tmp_path, lambda d: d["items"].extend([flops, arch | {"expected_params": 9}]))
    for old in ("max_params: 1000", "max_macs: 7", "expected_params: 9"):
        rewrite(path, old, f"{old.split(':')[0]}: {written}")
    items = load_rubric(path).items
    limits = [items[0].max_params, items[3].max_macs, items[4].expected_params]  # type: ignore[union-attr]
    assert limits == [value] * 3
    assert all(type(limit) is int for limit in limits)


@pytest.mark.parametrize(("written", "shown"), [("6.5e-1", "0.65"), ("1500.5", "1500.5"), ("25e-1", "2.5")])
def test_a_limit_that_is_not_whole_is_refused_in_one_line(tmp_path: Path, written: str, shown: str) -> None:
    path = rewrite(write_rubric(tmp_path, lambda d: None), "max_params: 1000", f"max_params: {written}")
    message = rubric_error(path, re.escape(f"items[0].max_params: {shown} is not a whole number"))
    assert message.endswith(" is not a whole number")  # one line, no "(got ...)" repeating it


def test_not_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("id: x\ntitle: X\ntasks:\n  task1: {title: CNN\nitems: []\n", encoding="utf-8")
    message = rubric_error(path, r"not valid YAML \(line \d+: ")
    line = int(re.search(r"line (\d+)", message).group(1))  # type: ignore[union-attr]
    assert 4 <= line <= 5  # the unclosed brace opens on line 4; the parser notices on line 5


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- one\n- two\n", encoding="utf-8")
    rubric_error(path, "expected a mapping with id, title, tasks and items")


# --- docs/rubrics.md and examples/rubric-course.yaml ------------------------------------------


def doc_section(heading: str) -> str:
    """The text under ``heading`` of docs/rubrics.md, up to the next ## or ### heading."""
    text = DOCS.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    end = re.search(r"^#{2,3} ", text[start:], re.MULTILINE)
    return text[start : start + end.start()] if end else text[start:]


def documented_keys(heading: str) -> set[str]:
    """The keys in the first column of the section's tables."""
    return set(re.findall(r"^\| `([a-z_0-9]+)` \|", doc_section(heading), re.MULTILINE))


ITEM_TYPES: tuple[type[BaseModel], ...] = typing.get_args(typing.get_args(rubrics.Item)[0])
COMMON_KEYS = set(rubrics.ModelValidItem.model_fields)


def type_name(item: type[BaseModel]) -> str:
    return str(typing.get_args(item.model_fields["type"].annotation)[0])


def keys_of(kind: Any) -> set[str]:
    if dataclasses.is_dataclass(kind):
        return {f.name for f in dataclasses.fields(kind)}
    return set(kind.model_fields)


@pytest.mark.parametrize(
    ("heading", "keys"),
    [
        ("## The top level", keys_of(rubrics.Rubric)),
        ("### `preprocess`", keys_of(rubrics.Preprocess)),
        ("### `tasks`", keys_of(rubrics.TaskSpec)),
        ("## Items", COMMON_KEYS | {type_name(item) for item in ITEM_TYPES}),
        *[(f"### `{type_name(item)}`", keys_of(item) - COMMON_KEYS) for item in ITEM_TYPES],
        ("## Retraining", keys_of(rubrics.Training)),
        ("### `training.recipe`", keys_of(Recipe)),
        ("### `training.student`", keys_of(rubrics.StudentBounds)),
    ],
)
def test_the_docs_have_a_row_for_every_key(heading: str, keys: set[str]) -> None:
    assert documented_keys(heading) == keys


def test_the_docs_name_every_reserved_id() -> None:
    paragraph = doc_section("## Items").split("**Reserved ids.**")[1].split("\n\n")[0]
    assert set(re.findall(r"`(\w+)`", paragraph)) == rubrics.RESERVED_IDS


def test_the_course_example_in_the_docs_is_the_example_file() -> None:
    section = doc_section("## Write a rubric for your course")
    first_block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert first_block is not None
    assert first_block.group(1) == COURSE_EXAMPLE.read_text(encoding="utf-8")


def test_the_course_example_loads_as_the_docs_describe_it() -> None:
    rubric = load_rubric(COURSE_EXAMPLE)
    assert rubric.id == "dl101-lab3" and rubric.max_total == 100
    items = {item.id: item for item in rubric.items}
    assert [item.type for item in rubric.items] == [
        "model_valid", "params_limit", "flops_limit", "test_accuracy", "claim", "manual",
    ]  # fmt: skip
    assert items["params"].max_params == 500_000  # type: ignore[union-attr]
    assert items["macs"].max_macs == 60_000_000  # type: ignore[union-attr]
    accuracy = items["accuracy"]
    assert isinstance(accuracy, TestAccuracyItem)
    # The points the walkthrough works out: 65% earns 22.5 of 40, 75% earns 35.
    assert [accuracy.points * accuracy_fraction(accuracy, a) for a in (65, 75)] == [22.5, 35.0]
    assert accuracy_fraction(accuracy, 65) == 0.5625 and accuracy_fraction(accuracy, 85) == 1.0


def test_packages_are_plain_pip_requirements_printed_for_the_setup(tmp_path: Path) -> None:
    wanted = ["timm==1.0.9", "einops", "opencv-python-headless"]
    path = write_rubric(tmp_path, lambda d: d.update(packages=wanted))
    printed = subprocess.run(
        [sys.executable, "-m", "grader.packages", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert printed.splitlines() == wanted
    for bad in ("--index-url=http://example.com", "git+https://example.com/x.git", "timm>=1", "x; rm -rf /"):
        rubric_error(write_rubric(tmp_path, lambda d, bad=bad: d.update(packages=[bad])), "packages.0")
