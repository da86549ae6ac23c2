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


INSTALLED = (Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve())


@pytest.fixture(autouse=True)
def _import_machinery_restored() -> Iterator[None]:
    """Afterwards, the student's modules (and stand-ins) a test imported are forgotten; what it
    first imported from the installed packages stays, as a second import of some (torch's
    operator libraries) fails."""
    saved = (list(sys.path), list(sys.path_hooks), list(sys.meta_path), dict(sys.modules))
    argv = list(sys.argv)
    yield
    sys.path[:], sys.path_hooks[:], sys.meta_path[:] = saved[0], saved[1], saved[2]
    sys.argv[:] = argv
    for name in set(sys.modules) - set(saved[3]):
        file = getattr(sys.modules[name], "__file__", None)
        if file is None or not any(Path(file).resolve().is_relative_to(root) for root in INSTALLED):
            del sys.modules[name]
    sys.path_importer_cache.clear()


def _write(root: Path, files: dict[str, str] | dict[str, bytes]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            (root / name).write_bytes(text)
        else:
            (root / name).write_text(dedent(text))


def _load(
    tmp_path: Path,
    files: dict[str, str] | dict[str, bytes],
    model: str = "model.py:Net",
    budget: float = 30.0,
):
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


ARGUMENTS = """
import argparse
import torch
from torch import nn

parser = argparse.ArgumentParser(description="CIFAR-10 training")
parser.add_argument("--lr", default=0.1, type=float, help="learning rate")
parser.add_argument("--width", default=24, type=int)
parser.add_argument("--resume", "-r", action="store_true")
args = parser.parse_args()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, args.width)

    def forward(self, x):
        return self.fc(x.flatten(1))[:, :10]
"""


@pytest.mark.parametrize("training", ["", 'trainset = torch.load("/nonexistent/cifar.pt")\n'])
def test_a_script_parsing_its_arguments_at_module_level_is_built_with_their_defaults(
    tmp_path: Path, training: str
) -> None:
    """Imported as if run with no arguments (pytest's own would be refused), and where its
    training fails, its definitions keep the parser and what it parses."""
    model, code = _load(tmp_path, {"model.py": ARGUMENTS + training})
    assert isinstance(model, nn.Module), model
    assert model.fc.out_features == 24
    assert bool(code.notes) == bool(training), code.notes


def test_a_file_saved_from_a_notebook_with_its_ipython_lines_is_graded_from_its_definitions(
    tmp_path: Path,
) -> None:
    exported = (
        dedent("""\
        # -*- coding: utf-8 -*-
        \"\"\"HW2.ipynb

        Automatically generated by Colab.
        \"\"\"

        !pip install torchsummary
        %matplotlib inline
        """)
        + NET
        + "\nmodel = Net()\n!nvidia-smi\n"
    )
    model, code = _load(tmp_path, {"model.py": exported})
    assert isinstance(model, nn.Module)
    (note,) = code.notes
    assert note.startswith("model.py failed to import: SyntaxError: invalid syntax (line 7); "), note
    assert note.endswith(
        "with the IPython lines (!pip, %matplotlib) left out: a .py file must be plain Python"
    )
    # Python's own syntax error, which its parser lets through, is not blamed on IPython
    model, code = _load(tmp_path / "return", {"model.py": NET + "\nreturn Net()\n"})
    assert isinstance(model, nn.Module)
    assert "'return' outside function (line 14)" in code.notes[0]
    assert code.notes[0].endswith('keep training, downloads and prints under if __name__ == "__main__":')


def test_a_file_in_another_encoding_is_read_by_its_coding_line_or_named(tmp_path: Path) -> None:
    chinese = NET.replace("class Net(nn.Module):", 'class Net(nn.Module):\n    """卷積神經網路 (作業二)"""')
    declared = ("# -*- coding: big5 -*-\n" + chinese + "\nprint(Net())\nraise SystemExit(0)\n").encode("big5")
    model, code = _load(tmp_path / "declared", {"model.py": declared})
    assert isinstance(model, nn.Module)  # from its definitions, read by the declared encoding
    assert code.notes[0].startswith("model.py called sys.exit(0) while being imported; ")
    failure, _ = _load(tmp_path / "undeclared", {"model.py": chinese.encode("big5")})
    assert isinstance(failure, StageFailure) and failure.stage == "import"
    assert "'utf-8' codec can't decode byte" in failure.message
    assert failure.message.endswith(
        "; save the file as UTF-8 text (or declare its encoding on its first line: # -*- coding: big5 -*-)"
    )
    windows = NET + '\nDATA = "C:\\Users\\student\\cifar10"\n'
    failure, _ = _load(tmp_path / "windows", {"model.py": windows})
    assert isinstance(failure, StageFailure) and "'unicodeescape' codec" in failure.message
    assert failure.message.endswith(
        '; write Windows paths with forward slashes or as raw strings (r"C:\\data")'
    )


def test_a_model_moving_itself_to_cuda_when_built_gets_the_fix_on_a_cpu(tmp_path: Path) -> None:
    fc = "self.fc = nn.Linear(3 * 32 * 32, 10)"
    model, _ = _load(tmp_path, {"model.py": NET.replace(fc, fc + "\n        self.cuda()")})
    if torch.cuda.is_available():  # a GPU grading runs it as the student did
        assert isinstance(model, nn.Module)
        return
    assert isinstance(model, StageFailure) and model.stage == "build"
    assert "(line 10); the model moves itself to CUDA when it is built" in model.message
    assert model.message.endswith("(model = Net().to(device)), as the grader moves it to its own device")


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


def _notebook_job(
    tmp_path: Path, cells: list[str], files: dict[str, str] | None = None
) -> tuple[HarnessJob, loading.StudentCode]:
    """A job for ``lab.ipynb:Net``: a markdown cell, then ``cells``, beside ``files``; the import
    machinery set up."""
    root = tmp_path / "submission"
    root.mkdir(parents=True)
    _write(root, files or {})
    book = notebook.Notebook(
        "lab.ipynb",
        [{"cell_type": "markdown", "source": "# Lab 2", "metadata": {}}]
        + [{"cell_type": "code", "source": text, "metadata": {}, "outputs": []} for text in cells],
    )
    built = book.module(["Net"])
    (tmp_path / "built").mkdir()
    (tmp_path / "built" / built.file_name).write_text(built.source)
    job = HarnessJob(
        submission=str(root), model="lab.ipynb:Net", weights="w.pt", out=str(tmp_path), device="cpu",
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=10, batch_size=8,
        max_model_bytes=2**30, notebook=_notebook_ref(built, str(tmp_path / "built")),
    )  # fmt: skip
    return job, loading.source_only(job)


def test_a_notebook_importing_a_broken_sibling_names_the_sibling(tmp_path: Path) -> None:
    broken = {"custom_resnet.py": "import torch\n\n\n\n\n\nraise ValueError('bad block')\n"}
    job, code = _notebook_job(tmp_path, ["from custom_resnet import *\n"], broken)
    with pytest.raises(StageFailure) as caught:
        loading.import_factory(job, code)
    assert caught.value.message.endswith("ValueError: bad block (custom_resnet.py, line 7)")


NOTEBOOK_NET = """\
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 8 * 8, num_classes)

    def forward(self, x):
        x = self.conv(x)
        return self.fc(x.flatten(1))
"""


def test_errors_after_the_import_name_the_notebook_cell_and_line(tmp_path: Path) -> None:
    imports = "import torch\nfrom torch import nn\nimport torchvision"
    unknown = (
        "trainset = torchvision.datasets.CIFAR10('./data', download=True)\n"
        "num_classes = len(trainset.classes)"
    )
    job, code = _notebook_job(tmp_path / "build", [imports, unknown, NOTEBOOK_NET])
    with pytest.raises(StageFailure) as caught:
        loading.build_fresh(loading.import_factory(job, code), job.model, code, job.input_shape, 10)
    assert caught.value.message == (
        "lab.ipynb:Net() raised NameError: name 'num_classes' is not defined (cell 4, line 5)"
    )
    classes = "classes = ('plane', 'car', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')\n"
    job, code = _notebook_job(
        tmp_path / "forward", [imports, classes + "num_classes = len(classes)", NOTEBOOK_NET]
    )
    model = loading.build_fresh(loading.import_factory(job, code), job.model, code, job.input_shape, 10)
    assert isinstance(model, nn.Module) and model.fc.out_features == 10
    with pytest.raises(RuntimeError) as raised:
        model(torch.zeros(1, 3, 32, 32))  # 16 × 32 × 32 features, not 16 × 8 × 8
    assert code.where(raised.value, named=True).endswith("(cell 4, line 9)")


def test_a_failing_forward_names_the_model_file_and_line(tmp_path: Path) -> None:
    model, code = _load(tmp_path, {"model.py": "from torch import nn\nnum_classes = 10\n\n" + NOTEBOOK_NET})
    assert isinstance(model, nn.Module)
    with pytest.raises(RuntimeError) as raised:
        model(torch.zeros(1, 3, 32, 32))
    assert code.where(raised.value, named=True).endswith("(model.py, line 12)")
    assert code.where(raised.value).endswith("(line 12)")


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
