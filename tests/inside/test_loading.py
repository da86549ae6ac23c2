"""Importing what students hand in (grader.inside.loading), in this process: module-level code
that fails or never ends, packages the sandbox lacks, constructor arguments, packages with
relative imports, and errors that name the student's file and line.

Each test imports a folder written here; the import machinery the loader changes (path hooks,
finders, modules) is put back afterwards."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent

import pytest
import torch
from torch import nn

from grader import notebook
from grader.inside import loading
from grader.inside.channel import StageFailure
from grader.jobs import _notebook_ref
from grader.protocol import HarnessJob

NET = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))
"""


@pytest.fixture(autouse=True)
def _import_machinery_restored() -> Iterator[None]:
    saved = (list(sys.path), list(sys.path_hooks), list(sys.meta_path), dict(sys.modules))
    yield
    sys.path[:], sys.path_hooks[:], sys.meta_path[:] = saved[0], saved[1], saved[2]
    for name in set(sys.modules) - set(saved[3]):
        del sys.modules[name]
    sys.path_importer_cache.clear()


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(dedent(text))


def _load(tmp_path: Path, files: dict[str, str], model: str = "model.py:Net", budget: float = 30.0):
    """The model ``model`` names, built as the harness builds it: (model or failure, code)."""
    root = tmp_path / "submission"
    _write(root, files)
    file, name = model.rsplit(":", 1)
    built = tmp_path / "built"
    built.mkdir()
    definitions = notebook.definitions(root, file, [name])
    (built / definitions.file_name).write_text(definitions.source)
    job = HarnessJob(
        submission=str(root), model=model, weights="weights.pt", out=str(tmp_path), device="cpu",
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=10, batch_size=8,
        max_model_bytes=2**30, definitions=_notebook_ref(definitions, str(built)), import_budget_s=budget,
    )  # fmt: skip
    code = loading.source_only(job)
    try:
        return loading.build_fresh(
            loading.import_factory(job, code), model, code, job.input_shape, job.num_classes
        ), code
    except StageFailure as failure:
        return failure, code


def test_a_tutorial_file_training_at_module_level_is_graded_from_its_definitions(tmp_path: Path) -> None:
    training = NET + dedent("""
        import torchvision

        trainset = torchvision.datasets.CIFAR10(root="/nonexistent/data", train=True)
        net = Net()
        for epoch in range(2):
            print(epoch)
    """)
    model, code = _load(tmp_path, {"model.py": training})
    assert isinstance(model, nn.Module)
    (note,) = code.notes
    assert note.startswith("model.py failed to import: ") and "(line 16)" in note, note
    assert "definitions only" in note and 'if __name__ == "__main__":' in note


def test_module_level_code_that_runs_too_long_is_stopped(tmp_path: Path) -> None:
    endless = NET + "\nwhile True:\n    Net()(torch.zeros(1, 3, 32, 32))\n"
    model, code = _load(tmp_path, {"model.py": endless}, budget=0.5)
    assert isinstance(model, nn.Module)
    assert code.notes[0].startswith("model.py was still running its module-level code after 0 s; ")


def test_without_the_model_in_the_definitions_the_first_failure_is_the_message(tmp_path: Path) -> None:
    broken = "from torch import nn\nNet = nn.Conv2D\n"
    failure, code = _load(tmp_path, {"model.py": broken})
    assert isinstance(failure, StageFailure) and failure.stage == "import"
    assert failure.message == (
        "model.py failed to import: AttributeError: module 'torch.nn' has no attribute 'Conv2D' (line 2)"
    )
    assert code.notes == []


def test_a_package_used_only_around_the_model_is_a_stand_in(tmp_path: Path) -> None:
    pipeline = "\n\ndef augment():\n    return A.Compose([A.HorizontalFlip()])\n"
    uses = "import albumentations as A\nimport wandb\n" + NET + pipeline
    model, code = _load(tmp_path, {"model.py": uses})
    assert isinstance(model, nn.Module)
    assert code.missing == {"albumentations", "wandb"}
    assert code.notes == []


def test_a_missing_package_used_at_module_level_leaves_the_definitions(tmp_path: Path) -> None:
    uses = "import albumentations as A\n" + NET + "\nAUGMENT = A.Compose([A.HorizontalFlip()])\n"
    model, code = _load(tmp_path, {"model.py": uses})
    assert isinstance(model, nn.Module)
    (note,) = code.notes
    assert note.startswith("model.py failed to import: MissingPackage: albumentations is not installed")


def test_a_missing_package_the_model_uses_fails_naming_it(tmp_path: Path) -> None:
    uses = "import timm_like_zoo\n" + NET.replace("nn.Linear(", "timm_like_zoo.layers.Linear(")
    failure, _ = _load(tmp_path, {"model.py": uses})
    assert isinstance(failure, StageFailure) and failure.stage == "build"
    assert (
        "timm_like_zoo is not installed in the grader's sandbox, and timm_like_zoo.layers.Linear was used"
        in (failure.message)
    )
    assert failure.message.endswith("(line 10)")


def test_the_harness_own_optional_imports_still_fail(tmp_path: Path) -> None:
    """Stand-ins are for the student's imports only: a library probing for an optional package
    must see that it is absent."""
    _load(tmp_path, {"model.py": NET})
    with pytest.raises(ModuleNotFoundError):
        __import__("no_such_package_anywhere")


def test_an_error_in_a_sibling_module_names_its_file_and_line(tmp_path: Path) -> None:
    sibling = NET + "\n\nBROKEN = undefined_name + 1\n"
    failure, _ = _load(tmp_path, {"custom_resnet.py": sibling, "model.py": "from custom_resnet import *\n"})
    assert isinstance(failure, StageFailure)
    assert failure.message == (
        "model.py failed to import: NameError: name 'undefined_name' is not defined "
        "(custom_resnet.py, line 15)"
    )


def test_a_notebook_importing_a_broken_sibling_names_the_sibling(tmp_path: Path) -> None:
    root = tmp_path / "submission"
    _write(root, {"custom_resnet.py": "import torch\n\n\n\n\n\nraise ValueError('bad block')\n"})
    cells = [{"cell_type": "code", "source": "from custom_resnet import *\n", "metadata": {}, "outputs": []}]
    book = notebook.Notebook("lab.ipynb", cells)
    built = book.module(["Net"])
    (tmp_path / "built").mkdir()
    (tmp_path / "built" / built.file_name).write_text(built.source)
    job = HarnessJob(
        submission=str(root), model="lab.ipynb:Net", weights="w.pt", out=str(tmp_path), device="cpu",
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=10, batch_size=8,
        max_model_bytes=2**30, notebook=_notebook_ref(built, str(tmp_path / "built")),
    )  # fmt: skip
    code = loading.source_only(job)
    with pytest.raises(StageFailure) as caught:
        loading.import_factory(job, code)
    assert caught.value.message.endswith("ValueError: bad block (custom_resnet.py, line 7)")


def test_a_model_that_needs_arguments_names_the_builders_that_do_not(tmp_path: Path) -> None:
    needs = "class ResNet(nn.Module):\n    def __init__(self, block, num_blocks):"
    zoo = NET.replace("class Net(nn.Module):\n    def __init__(self):", needs) + dedent("""

        def ResNet18():
            return ResNet(None, [2, 2, 2, 2])


        def helper(x):
            return x
    """)
    failure, _ = _load(tmp_path, {"model.py": zoo}, model="model.py:ResNet")
    assert isinstance(failure, StageFailure) and failure.stage == "build"
    assert failure.message.endswith(
        "; model.py:ResNet18 builds one with no arguments: name it in submission.yaml as the task's model"
    )
    assert "missing 2 required positional arguments: 'block' and 'num_blocks'" in failure.message


PACKAGE = {"models/__init__.py": "", "models/blocks.py": NET}  # models/resnet.py imports from it


def test_a_file_in_a_package_gets_its_relative_imports(tmp_path: Path) -> None:
    files = {**PACKAGE, "models/resnet.py": "from .blocks import Net\n"}
    model, _ = _load(tmp_path, files, model="models/resnet.py:Net")
    assert isinstance(model, nn.Module)


def test_a_file_in_a_package_falls_back_to_its_definitions_with_relative_imports(tmp_path: Path) -> None:
    files = {**PACKAGE, "models/resnet.py": "from .blocks import Net\nopen('/nonexistent/log.txt', 'w')\n"}
    model, code = _load(tmp_path, files, model="models/resnet.py:Net")
    assert isinstance(model, nn.Module)
    assert "FileNotFoundError" in code.notes[0] and "definitions only" in code.notes[0]


def test_a_requirement_is_installed_only_at_its_version() -> None:
    import torch

    assert loading.installed("torch") and loading.installed(f"torch=={torch.__version__}")
    assert not loading.installed("torch==0.0.1") and not loading.installed("no-such-distribution")


SEQUENTIAL = """
from torch import nn

model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.LazyLinear(10))
"""


def test_a_module_level_model_is_copied_and_freshly_initialised_from_the_seed(tmp_path: Path) -> None:
    torch.default_generator.manual_seed(7)  # torch.manual_seed would import torch._dynamo here
    first, _ = _load(tmp_path / "a", {"model.py": SEQUENTIAL}, model="model.py:model")
    torch.default_generator.manual_seed(7)  # torch.manual_seed would import torch._dynamo here
    second, code = _load(tmp_path / "b", {"model.py": SEQUENTIAL}, model="model.py:model")
    assert isinstance(first, nn.Sequential) and isinstance(second, nn.Sequential)
    assert first[3].weight.shape == (10, 8 * 30 * 30)  # the lazy layer got its shape
    (module,) = [m for m in list(sys.modules.values()) if getattr(m, "__file__", None) == str(code.main)]
    instance = module.model
    assert instance is not second, "the student's own instance is not handed out"
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name}: the same seed gives different initial weights"
    assert not torch.equal(first[0].weight, instance[0].weight), "import-time weights kept"


NEEDS = """
from torch import nn


class Net(nn.Module):
    def __init__(self, {params}):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, {classes})


def resnet18():
    return Net(*([None] * {count}))
"""


@pytest.mark.parametrize("params", ["num_classes", "n_classes", "*, nclasses"])
def test_a_model_whose_one_required_argument_is_the_class_count_gets_the_rubric_s(
    tmp_path: Path, params: str
) -> None:
    name = params.split()[-1]
    files = {"model.py": NEEDS.format(params=params, classes=name, count=0)}
    model, code = _load(tmp_path, files)
    assert isinstance(model, nn.Module) and model.fc.out_features == 10
    assert code.notes == [
        f"model.py:Net has no default for its number of classes: built as model.py:Net({name}=10)"
    ]


def test_other_required_arguments_are_not_guessed(tmp_path: Path) -> None:
    files = {"model.py": NEEDS.format(params="block, num_classes", classes=10, count=2)}
    failure, _ = _load(tmp_path, files)
    assert isinstance(failure, StageFailure)
    assert "missing 2 required positional arguments" in failure.message
    assert "model.py:resnet18 builds one with no arguments" in failure.message
