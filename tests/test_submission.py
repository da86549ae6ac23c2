"""grader/submission.py on submission folders built in tmp_path."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from grader.errors import SubmissionError
from grader.rubric import Preprocess, Rubric
from grader.submission import MANIFEST, Checkout, content_hash, load_submission

STUDENT = "B093040051"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / STUDENT
    (root / "weights").mkdir(parents=True)
    (root / "model.py").write_text("class SimpleCNN: ...\n", encoding="utf-8")
    (root / "resnet.py").write_text("class ResNet18: ...\n", encoding="utf-8")
    (root / "weights" / "task1.pt").write_bytes(bytes(range(256)))
    (root / "weights" / "task2.pt").write_bytes(b"\x00" * 64)
    return root


def write_manifest(root: Path, data: Any) -> None:
    (root / MANIFEST).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def test_defaults_come_from_the_rubric(folder: Path, eai_rubric: Any) -> None:
    sub = load_submission(folder)
    assert (sub.student_id, sub.name, sub.manifest_error, sub.warnings) == (STUDENT, None, None, [])
    tasks = sub.tasks(eai_rubric)
    assert list(tasks) == ["task1", "task2"]
    assert (tasks["task1"].model, tasks["task1"].weights) == ("model.py:SimpleCNN", "weights/task1.pt")
    assert (tasks["task2"].model, tasks["task2"].weights) == ("resnet.py:ResNet18", "weights/task2.pt")
    assert tasks["task1"].preprocess == eai_rubric.preprocess
    assert all(t.error is None and t.claimed_test_accuracy is None for t in tasks.values())


def test_manifest_overrides_the_defaults(folder: Path, eai_rubric: Any) -> None:
    write_manifest(
        folder,
        {
            "student_id": STUDENT,
            "name": "Lin Mei",
            "assignment": "eai-lab2",
            "tasks": {
                "task1": {
                    "model": "nets/cnn.py:MyCNN",
                    "weights": "ckpt/best.pth",
                    "claimed_test_accuracy": 81.25,
                    "preprocess": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
                }
            },
        },
    )
    sub = load_submission(folder)
    assert (sub.name, sub.assignment, sub.warnings, sub.manifest_error) == ("Lin Mei", "eai-lab2", [], None)
    task1, task2 = sub.tasks(eai_rubric).values()
    assert (task1.model, task1.weights, task1.claimed_test_accuracy) == (
        "nets/cnn.py:MyCNN",
        "ckpt/best.pth",
        81.25,
    )
    assert task1.preprocess == Preprocess(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert task1.error is None
    assert (task2.model, task2.weights, task2.preprocess) == (
        "resnet.py:ResNet18",
        "weights/task2.pt",
        eai_rubric.preprocess,
    )


def rubric_with(**task1: str) -> Rubric:
    """A one-task rubric whose task gives the defaults in ``task1`` (maybe none)."""
    item = {"id": "1", "task": "task1", "title": "Builds", "type": "model_valid", "points": 1}
    tasks = {"task1": {"title": "CNN", **task1}}
    return Rubric.model_validate({"id": "lab", "title": "Lab", "tasks": tasks, "items": [item]})


def test_without_defaults_the_task_says_what_to_add(folder: Path) -> None:
    task1 = load_submission(folder).tasks(rubric_with())["task1"]
    assert task1.error == (
        f"{MANIFEST}: tasks.task1.model and tasks.task1.weights are not set and the rubric gives no "
        "default; add tasks.task1.model: file.py:ClassName and tasks.task1.weights: path/to/weights.pt"
    )
    assert (task1.model, task1.weights) == ("", "")


@pytest.mark.parametrize(
    ("defaults", "given", "unset", "add"),
    [
        ({}, {"weights": "weights/task1.pt"}, "model", "file.py:ClassName"),
        ({}, {"model": "model.py:SimpleCNN"}, "weights", "path/to/weights.pt"),
        ({"weights": "weights/task1.pt"}, {}, "model", "file.py:ClassName"),
    ],
)
def test_the_one_key_neither_names_is_the_one_asked_for(
    folder: Path, defaults: dict[str, str], given: dict[str, str], unset: str, add: str
) -> None:
    write_manifest(folder, {"tasks": {"task1": given}})
    task1 = load_submission(folder).tasks(rubric_with(**defaults))["task1"]
    assert task1.error == (
        f"{MANIFEST}: tasks.task1.{unset} is not set and the rubric gives no default; "
        f"add tasks.task1.{unset}: {add}"
    )


def test_the_manifest_completes_a_rubric_without_defaults(folder: Path) -> None:
    write_manifest(folder, {"tasks": {"task1": {"model": "model.py:SimpleCNN"}}})
    task1 = load_submission(folder).tasks(rubric_with(weights="weights/task1.pt"))["task1"]
    assert (task1.model, task1.weights, task1.error) == ("model.py:SimpleCNN", "weights/task1.pt", None)
    both = {"model": "resnet.py:ResNet18", "weights": "weights/task2.pt"}
    write_manifest(folder, {"tasks": {"task1": both}})
    task1 = load_submission(folder).tasks(rubric_with())["task1"]
    assert (task1.model, task1.weights, task1.error) == ("resnet.py:ResNet18", "weights/task2.pt", None)


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"weights": "../other-student/weights/task1.pt"}, "tasks.task1.weights"),
        ({"weights": "weights/../../x.pt"}, "tasks.task1.weights"),
        ({"weights": "/etc/passwd"}, "tasks.task1.weights"),
        ({"model": "../model.py:SimpleCNN"}, "tasks.task1.model"),
        ({"model": "/tmp/model.py:SimpleCNN"}, "tasks.task1.model"),
    ],
)
def test_paths_leaving_the_folder_are_refused(folder: Path, eai_rubric: Any, entry: dict, key: str) -> None:
    write_manifest(folder, {"tasks": {"task1": entry}})
    tasks = load_submission(folder).tasks(eai_rubric)
    value = next(iter(entry.values())).rsplit(":", 1)[0]
    assert tasks["task1"].error == (
        f"{MANIFEST}: {key} {value!r} leaves the submission folder; use a path relative to it"
    )
    assert tasks["task2"].error is None


def test_symlink_pointing_outside_is_refused(folder: Path, tmp_path: Path, eai_rubric: Any) -> None:
    secret = tmp_path / "answers.pt"
    secret.write_bytes(b"teacher weights")
    (folder / "weights" / "linked.pt").symlink_to(secret)
    write_manifest(folder, {"tasks": {"task2": {"weights": "weights/linked.pt"}}})
    tasks = load_submission(folder).tasks(eai_rubric)
    assert tasks["task2"].error is not None
    assert tasks["task2"].error.startswith(f"{MANIFEST}: tasks.task2.weights 'weights/linked.pt' is a link")
    assert "pointing outside the submission" in tasks["task2"].error
    assert tasks["task1"].error is None


def test_symlink_inside_the_folder_is_accepted(folder: Path, eai_rubric: Any) -> None:
    (folder / "best.pt").symlink_to(folder / "weights" / "task1.pt")
    write_manifest(folder, {"tasks": {"task1": {"weights": "best.pt"}}})
    assert load_submission(folder).tasks(eai_rubric)["task1"].error is None


def test_broken_yaml_reaches_every_task(folder: Path, eai_rubric: Any) -> None:
    (folder / MANIFEST).write_text(
        "student_id: B093040051\ntasks:\n  task1: {weights: a.pt\n", encoding="utf-8"
    )
    sub = load_submission(folder)
    assert sub.manifest_error is not None
    assert sub.manifest_error.startswith(f"{MANIFEST} is not valid YAML at line ")
    line = int(re.search(r"at line (\d+): ", sub.manifest_error)[1])
    assert 3 <= line <= 4
    tasks = sub.tasks(eai_rubric)
    assert [t.error for t in tasks.values()] == [sub.manifest_error] * 2
    assert tasks["task1"].weights == "weights/task1.pt"  # defaults, since nothing could be read


def test_invalid_task_entry_names_its_key(folder: Path, eai_rubric: Any) -> None:
    write_manifest(folder, {"tasks": {"task1": {"claimed_test_accuracy": 180}}})
    sub = load_submission(folder)
    assert sub.manifest_error is not None
    assert sub.manifest_error.startswith(f"{MANIFEST}: tasks.task1.claimed_test_accuracy: ")
    assert "100" in sub.manifest_error


def test_unknown_manifest_key_is_a_warning(folder: Path, eai_rubric: Any) -> None:
    write_manifest(folder, {"student_id": STUDENT, "studnet_name": "Lin Mei"})
    sub = load_submission(folder)
    assert sub.warnings == [f"{MANIFEST}: unknown key 'studnet_name' ignored"]
    assert sub.manifest_error is None
    assert all(t.error is None for t in sub.tasks(eai_rubric).values())


def test_the_rubric_given_wins_over_the_manifests_assignment(folder: Path, eai_rubric: Any) -> None:
    write_manifest(folder, {"assignment": "eai-lab1", "tasks": {"task3": {"weights": "w.pt"}}})
    sub = load_submission(folder)
    assert sub.assignment == "eai-lab1" and sub.manifest_error is None
    assert all(t.error is None for t in sub.tasks(eai_rubric).values())
    assert sub.rubric_warnings(eai_rubric) == [
        f"{MANIFEST} says assignment 'eai-lab1' but it was graded with rubric 'eai-lab2'",
        f"{MANIFEST}: tasks.task3 is not a task of eai-lab2 (task1, task2); it was ignored",
    ]


@pytest.mark.parametrize("assignment", ["eai-lab2", None])
def test_a_matching_or_absent_assignment_is_no_warning(
    folder: Path, eai_rubric: Any, assignment: str | None
) -> None:
    write_manifest(folder, {"name": "Lin Mei", "assignment": assignment})
    assert load_submission(folder).rubric_warnings(eai_rubric) == []


def test_student_id_mismatch_is_a_warning(folder: Path) -> None:
    write_manifest(folder, {"student_id": "B093040099"})
    sub = load_submission(folder)
    assert sub.student_id == STUDENT
    assert sub.warnings == [
        f"{MANIFEST} says student_id 'B093040099' but the folder is '{STUDENT}'; the folder name is used"
    ]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A CI checkout: the folder is named after the repository, not the student."""
    root = tmp_path / "lab2-chen-yt"
    root.mkdir()
    (root / "model.py").write_text("class Net: ...\n", encoding="utf-8")
    return root


def test_a_ci_checkout_takes_the_manifests_student_id(checkout: Path) -> None:
    write_manifest(checkout, {"student_id": STUDENT})
    sub = load_submission(checkout, checkout=Checkout("chen-yt"))
    assert (sub.student_id, sub.warnings) == (STUDENT, [])
    assert load_submission(checkout).student_id == "lab2-chen-yt"  # grader run: the folder's name


def test_a_ci_checkout_without_a_manifest_id_takes_the_repositorys(checkout: Path) -> None:
    write_manifest(checkout, {"name": "Chen Yu-Ting"})
    assert load_submission(checkout, checkout=Checkout("chen-yt")).student_id == "chen-yt"
    assert load_submission(checkout, checkout=Checkout(None)).student_id == "lab2-chen-yt"


def test_a_ci_checkout_skips_ids_that_are_not_usable(checkout: Path, tmp_path: Path) -> None:
    write_manifest(checkout, {"student_id": "../etc"})
    sub = load_submission(checkout, checkout=Checkout("chen yt"))
    assert sub.student_id == "lab2-chen-yt"
    assert sub.warnings == [f"{MANIFEST}: student_id '../etc' is not a usable student id; ignored"]
    unnamed = tmp_path / "my repo"
    shutil.copytree(checkout, unnamed)
    with pytest.raises(
        SubmissionError, match=f"no usable student id: .* add student_id: YOUR_ID to {MANIFEST}"
    ):
        load_submission(unnamed, checkout=Checkout(None))
    write_manifest(unnamed, {"student_id": STUDENT})
    assert load_submission(unnamed, checkout=Checkout(None)).student_id == STUDENT


def test_manifest_symlink_is_refused(folder: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "manifest.yaml"
    elsewhere.write_text("name: x\n", encoding="utf-8")
    (folder / MANIFEST).symlink_to(elsewhere)
    sub = load_submission(folder)
    assert sub.manifest_error == f"{MANIFEST} is a symbolic link; submit it as a regular file"


def test_content_hash_is_stable_and_location_free(folder: Path, tmp_path: Path) -> None:
    first = content_hash(folder)
    assert len(first) == 64 and first == content_hash(folder)
    copy = tmp_path / "elsewhere" / STUDENT
    shutil.copytree(folder, copy)
    assert content_hash(copy) == first
    assert load_submission(folder).sha256 == first


def test_content_hash_changes_with_one_byte(folder: Path) -> None:
    before = content_hash(folder)
    weights = folder / "weights" / "task1.pt"
    data = bytearray(weights.read_bytes())
    data[100] ^= 1
    weights.write_bytes(bytes(data))
    assert content_hash(folder) != before
    data[100] ^= 1
    weights.write_bytes(bytes(data))
    assert content_hash(folder) == before


def test_content_hash_changes_when_a_file_is_renamed(folder: Path) -> None:
    before = content_hash(folder)
    (folder / "resnet.py").rename(folder / "resnet18.py")
    assert content_hash(folder) != before


@pytest.mark.parametrize("hidden", ["__pycache__/model.cpython-311.pyc", ".git/HEAD", ".ipynb_checkpoints/x"])
def test_every_file_counts_in_the_hash_caches_and_hidden_folders_too(folder: Path, hidden: str) -> None:
    before = content_hash(folder)
    (folder / hidden).parent.mkdir()
    (folder / hidden).write_bytes(b"\x00pyc")
    assert content_hash(folder) != before


def test_not_a_directory(tmp_path: Path) -> None:
    zipped = tmp_path / f"{STUDENT}.zip"
    zipped.write_bytes(b"PK\x03\x04")
    with pytest.raises(SubmissionError, match=r"B093040051\.zip is an archive, not a directory; unpack it"):
        load_submission(zipped)
    with pytest.raises(SubmissionError, match="is not a directory"):
        load_submission(tmp_path / "missing")


@pytest.mark.parametrize("litter", [[], ["__MACOSX", ".DS_Store"], ["Thumbs.db", ".git"]])
def test_a_folder_holding_only_the_submission_folder_is_graded_from_it(
    folder: Path, tmp_path: Path, eai_rubric: Any, litter: list[str]
) -> None:
    """An archive of the submission folder, unpacked into a folder named after the student."""
    write_manifest(folder, {"name": "Lin Mei", "tasks": {"task1": {"model": "model.py:MyCNN"}}})
    unpacked = tmp_path / "download" / STUDENT
    shutil.move(folder, unpacked / "lab2" / "B093040051_final")
    for name in litter:
        (unpacked / name).mkdir()
    sub = load_submission(unpacked)
    assert (sub.root, sub.student_id) == (unpacked / "lab2" / "B093040051_final", STUDENT)
    assert sub.warnings == [
        "the submission lies in lab2/B093040051_final/ inside the folder, as unpacking an archive of the "
        "folder leaves it; graded from there"
    ]
    assert sub.sha256 == content_hash(sub.root)
    assert (sub.name, sub.tasks(eai_rubric)["task1"].model) == ("Lin Mei", "model.py:MyCNN")


def test_a_folder_beside_files_or_a_linked_folder_is_no_wrapper(folder: Path, tmp_path: Path) -> None:
    outer = tmp_path / "B093040052"
    outer.mkdir()
    (outer / "weights").symlink_to(folder / "weights")
    assert load_submission(outer).root == outer
    (outer / "weights").unlink()
    (outer / "lab").mkdir()
    (outer / "README.md").write_text("my lab\n")
    assert load_submission(outer).root == outer


def test_paths_differing_only_in_case_from_one_file_name_it_with_a_warning(
    folder: Path, eai_rubric: Any
) -> None:
    """Written on Windows or macOS, whose file names ignore case."""
    (folder / "model.py").rename(folder / "Model.py")
    (folder / "weights").rename(folder / "Weights")
    write_manifest(
        folder, {"tasks": {"task2": {"model": "ResNet.py:ResNet18", "weights": "weights/TASK2.pt"}}}
    )
    sub = load_submission(folder)
    tasks = sub.tasks(eai_rubric)
    assert (tasks["task1"].model, tasks["task1"].weights) == ("Model.py:SimpleCNN", "Weights/task1.pt")
    assert (tasks["task2"].model, tasks["task2"].weights) == ("resnet.py:ResNet18", "Weights/task2.pt")
    assert all(t.error is None for t in tasks.values())
    assert sub.warnings[0] == (
        "task1: model.py is not in the submission but Model.py is, differing only in upper and lower "
        "case, and was used: file names are case-sensitive where the grader runs, so write "
        "tasks.task1.model as Model.py"
    )
    assert len(sub.warnings) == 4


def test_a_path_matching_several_files_but_for_case_is_left_as_written(folder: Path, eai_rubric: Any) -> None:
    shutil.copy(folder / "model.py", folder / "MODEL.py")
    (folder / "model.py").rename(folder / "Model.py")
    tasks = load_submission(folder).tasks(eai_rubric)
    assert tasks["task1"].model == "model.py:SimpleCNN"


def test_folder_name_must_be_a_student_id(tmp_path: Path) -> None:
    root = tmp_path / "my submission (final)"
    root.mkdir()
    with pytest.raises(SubmissionError, match=r"'my submission \(final\)' is not a usable student id"):
        load_submission(root)
    trailing_newline = tmp_path / f"{STUDENT}\n"
    trailing_newline.mkdir()
    with pytest.raises(SubmissionError, match=r"'B093040051\\n' is not a usable student id"):
        load_submission(trailing_newline)


def test_content_hash_sees_a_symlinked_folder(folder: Path, tmp_path: Path) -> None:
    before = content_hash(folder)
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / "data").symlink_to(outside)
    assert content_hash(folder) != before


def test_manifest_that_is_not_a_mapping_says_so(folder: Path) -> None:
    (folder / MANIFEST).write_text("- model.py\n- weights/task1.pt\n", encoding="utf-8")
    sub = load_submission(folder)
    assert sub.manifest_error is not None
    assert sub.manifest_error.startswith(f"{MANIFEST}: Input should be a valid dictionary")


# --- notebooks --------------------------------------------------------------------------


def write_notebook(path: Path, source: str, printed: str = "") -> None:
    outputs = [new_output("stream", text=printed)] if printed else []
    cells = [new_markdown_cell("# Lab 2"), new_code_cell(source, outputs=outputs)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=cells), path)


def test_the_only_notebook_stands_in_for_a_missing_model_file(folder: Path, eai_rubric: Any) -> None:
    (folder / "model.py").unlink()
    write_notebook(
        folder / "lab2.ipynb",
        "class SimpleCNN:\n    pass\nSimpleCNN().fit()",
        "Task 1 Test Accuracy: 64.20%\n",
    )
    write_notebook(folder / ".ipynb_checkpoints" / "lab2-checkpoint.ipynb", "class Old:\n    pass")
    sub = load_submission(folder)
    tasks = sub.tasks(eai_rubric)
    task1, task2 = tasks["task1"], tasks["task2"]
    assert (task1.model, task1.error, task1.claimed_test_accuracy) == ("lab2.ipynb:SimpleCNN", None, 64.2)
    assert task1.notebook is not None and task1.notebook.file_name == "lab2.py"
    assert "class SimpleCNN:" in task1.notebook.source and "fit()" not in task1.notebook.source
    assert (task2.model, task2.notebook) == ("resnet.py:ResNet18", None)
    expected = [
        "task1: model.py is not in the submission, so the model is taken from lab2.ipynb, its only "
        f"notebook, as lab2.ipynb:SimpleCNN (say so in {MANIFEST} as tasks.task1.model to silence this)",
        "task1: claimed test accuracy 64.2% read from lab2.ipynb, cell 2: 'Task 1 Test Accuracy: 64.20%'",
    ]
    assert sub.warnings == expected
    sub.tasks(eai_rubric)
    assert sub.warnings == expected  # told once, however often the tasks are read


def test_with_several_notebooks_none_is_picked(folder: Path, eai_rubric: Any) -> None:
    (folder / "model.py").unlink()
    write_notebook(folder / "lab2.ipynb", "class SimpleCNN:\n    pass")
    write_notebook(folder / "drafts" / "try.ipynb", "class SimpleCNN:\n    pass")
    sub = load_submission(folder)
    task1 = sub.tasks(eai_rubric)["task1"]
    assert (task1.model, task1.notebook) == ("model.py:SimpleCNN", None)
    assert sub.warnings == [
        "task1: model.py is not in the submission, which holds 2 notebooks (drafts/try.ipynb, "
        f"lab2.ipynb); name the one with the model in {MANIFEST}, e.g. tasks.task1.model: "
        "drafts/try.ipynb:SimpleCNN"
    ]


def test_a_notebook_is_not_picked_when_the_model_file_is_there(folder: Path, eai_rubric: Any) -> None:
    write_notebook(folder / "lab2.ipynb", "class SimpleCNN:\n    pass", "Test accuracy: 50%\n")
    sub = load_submission(folder)
    task1 = sub.tasks(eai_rubric)["task1"]
    assert (task1.model, task1.notebook, task1.claimed_test_accuracy) == ("model.py:SimpleCNN", None, None)
    assert sub.warnings == []


def test_tasks_sharing_a_named_notebook(folder: Path, eai_rubric: Any) -> None:
    printed = "Test accuracy: 50.00%\nTask 1 Test Accuracy: 66.10%\nTask 2 test acc = 0.9012\n"
    write_notebook(folder / "lab2.ipynb", "class Net:\n    pass\nclass ResNet:\n    pass", printed)
    write_manifest(
        folder,
        {
            "tasks": {
                "task1": {"model": "lab2.ipynb:Net"},
                "task2": {"model": "lab2.ipynb:ResNet", "claimed_test_accuracy": 88.5},
            }
        },
    )
    sub = load_submission(folder)
    task1, task2 = sub.tasks(eai_rubric).values()
    assert task1.notebook is not None and task1.notebook is task2.notebook  # built once
    assert (task1.claimed_test_accuracy, task2.claimed_test_accuracy) == (66.1, 88.5)  # the manifest wins
    assert sub.warnings == [
        "task1: claimed test accuracy 66.1% read from lab2.ipynb, cell 2: 'Task 1 Test Accuracy: 66.10%'"
    ]


def test_an_unreadable_notebook_reaches_the_harness_as_a_problem(folder: Path, eai_rubric: Any) -> None:
    (folder / "lab2.ipynb").write_text("{ not a notebook", encoding="utf-8")
    write_manifest(folder, {"tasks": {"task1": {"model": "lab2.ipynb:SimpleCNN"}}})
    task1 = load_submission(folder).tasks(eai_rubric)["task1"]
    assert task1.error is None and task1.notebook is not None
    assert task1.notebook.problem is not None
    assert task1.notebook.problem.startswith("lab2.ipynb is not a readable Jupyter notebook")


def test_a_linked_notebook_is_never_picked(folder: Path, tmp_path: Path, eai_rubric: Any) -> None:
    (folder / "model.py").unlink()
    write_notebook(tmp_path / "answers.ipynb", "class SimpleCNN:\n    pass")
    (folder / "lab2.ipynb").symlink_to(tmp_path / "answers.ipynb")
    assert load_submission(folder).tasks(eai_rubric)["task1"].model == "model.py:SimpleCNN"
