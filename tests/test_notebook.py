"""grader/notebook.py on small notebooks built with nbformat: what is kept, what is read."""

from __future__ import annotations

import ast
import json
import shutil
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from grader.claims import Claim
from grader.config import Settings
from grader.notebook import Notebook, NotebookError, NotebookModule, read
from grader.pipeline import Graded, grade
from grader.rubric import Rubric, load_rubric
from grader.submission import load_submission
from tests.conftest import FILES, TEST_PER_CLASS, load_module


def notebook_of(*cells: str | Any) -> Notebook:
    """A notebook of code cells (a string each) and any cells given as nbformat nodes."""
    nb = new_notebook(cells=[new_code_cell(c) if isinstance(c, str) else c for c in cells])
    return Notebook("lab.ipynb", nb.cells)


def statements(module: NotebookModule) -> list[str]:
    """The module's top-level statements: one-liners as code, definitions by name."""
    described = []
    for node in ast.parse(module.source).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef):
            described.append(f"{type(node).__name__} {node.name}")
        else:
            described.append(ast.unparse(node))
    return described


def test_definitions_are_kept_and_everything_else_is_dropped() -> None:
    book = notebook_of(
        "import torch\nfrom torch import nn\nimport torchvision\nimport matplotlib.pyplot as plt",
        "NUM_CLASSES = 10\n"
        "CFG = {'width': [8, 16], 'classes': NUM_CLASSES}\n"
        "HIDDEN = CFG['width'][-1] * 2\n"
        "device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "class Net(nn.Module):\n"
        "    def __init__(self, width=CFG['width'][0]):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(width, NUM_CLASSES)\n"
        "\n"
        "    def forward(self, x):\n"
        "        return self.fc(torch.flatten(x, 1))\n"
        "\n"
        "def build():\n"
        "    return Net()",
        "trainset = torchvision.datasets.CIFAR10('./data', download=True)\n"
        "model = Net().to(device)\n"
        "for epoch in range(10):\n"
        "    model.train()\n"
        "with torch.no_grad():\n"
        "    model(torch.zeros(1, 8))\n"
        "if __name__ == '__main__':\n"
        "    build()\n"
        "plt.plot([1, 2])\n"
        "torch.save(model.state_dict(), 'weights/task1.pt')\n"
        "print(model)",
    )
    module = book.module()
    # torchvision and matplotlib served only the dropped download and plot.
    assert statements(module) == [
        "import torch",
        "from torch import nn",
        "NUM_CLASSES = 10",
        "CFG = {'width': [8, 16], 'classes': NUM_CLASSES}",
        "HIDDEN = CFG['width'][-1] * 2",
        "device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "ClassDef Net",
        "FunctionDef build",
    ]
    assert module.warnings == [] and module.problem is None


@pytest.mark.parametrize(
    ("code", "is_kept"),
    [
        ("N = 10", True),
        ("H, W = 32, 32", True),
        ("SIZE: int = 32", True),
        ("MEAN = (0.4914, 0.4822, 0.4465)", True),
        ("NAME = f'net-{2 ** 3}'", True),
        ("SIGN = -1 if 2 > 1 else 1", True),
        ("N = len([1, 2])", True),
        ("CLASSES = ('plane', 'car')\nNUM_CLASSES = len(CLASSES)", True),
        ("DEVICE = 'cuda:0' if torch.cuda.is_available() else 'cpu'", True),
        ("GPUS = max(1, torch.cuda.device_count())", True),
        ("args = argparse.Namespace(width=64, num_classes=10)", True),
        ("CFG = SimpleNamespace(**{'width': 64})", False),  # ** may unpack anything
        ("CFG = dict(width=64, depth=[2, 2])", True),
        ("N = len(CLASSES)", False),  # CLASSES is not a constant kept earlier
        ("N = len(trainset.classes)", False),
        ("N = len(open('classes.txt').read())", False),
        ("N = int(**OPTIONS)", False),
        ("N = np.prod([3, 32, 32])", False),
        ("DATA = torchvision.datasets.CIFAR10('./data', download=True)", False),
        ("device = torch.device('cuda').type", True),
        ("WIDTH = args.width", False),  # args is not a constant kept earlier
        ("WIDTH = open('w.txt').name", False),
        ("N = 2 * DEPTH", False),  # DEPTH is not a constant kept earlier
        ("DTYPE = torch.float32", False),
        ("net.depth = 3", False),
        ("SQUARE = lambda x: x * x", False),
        ("ROWS = [i for i in range(3)]", False),
        ("SIZE: int", False),
        (
            "parser = argparse.ArgumentParser(description='lab 2')\n"
            "parser.add_argument('--width', type=int, default=64, help='channels')\n"
            "parser.add_argument('--amp', action='store_true')\n"
            "args = parser.parse_args(args=[])\n"
            "args, unknown = parser.parse_known_args()\n"
            "WIDTH = args.width * 2",
            True,
        ),
        ("parser = ArgumentParser()\ngroup = parser.add_argument_group('model')", True),
        ("parser.add_argument('--width', type=int)", False),  # parser is not a constant kept earlier
        ("parser = argparse.ArgumentParser(prog=sys.argv[0])", False),
    ],
)
def test_only_assignments_of_constant_values_are_kept(code: str, is_kept: bool) -> None:
    expected = [ast.unparse(node) for node in ast.parse(code).body] if is_kept else []
    assert statements(notebook_of(code).module()) == expected


RECORDS = {
    "dataclass": "@dataclass\nclass Config:\n    width: int = 16\n    lr: float = 0.1",
    "dataclass(frozen=True)": "@dataclasses.dataclass(frozen=True)\nclass Config:\n    width: int = 16",
    "NamedTuple": "class Config(NamedTuple):\n    width: int = 16",
}


@pytest.mark.parametrize("record", RECORDS.values(), ids=RECORDS.keys())
def test_a_configuration_record_made_of_constants_is_kept_with_what_reads_it(record: str) -> None:
    module = notebook_of(
        record, "cfg = Config(width=32)\nFEATURES = cfg.width * 8 * 8\nrun = Config(width=input())"
    ).module()
    assert statements(module) == ["ClassDef Config", "cfg = Config(width=32)", "FEATURES = cfg.width * 8 * 8"]


@pytest.mark.parametrize(
    "other",
    [
        "class Config:\n    def __init__(self, width):\n        train(width)",
        "@dataclass\nclass Config:\n    width: int = 16\n    def __post_init__(self):\n        train(self)",
        "def Config(width):\n    return train(width)",
    ],
    ids=["plain class", "__post_init__", "function"],
)
def test_a_call_to_any_other_class_or_function_is_dropped(other: str) -> None:
    module = notebook_of(RECORDS["dataclass"], other, "cfg = Config(width=32)").module()
    assert "cfg = Config(width=32)" not in statements(module)


def test_a_parsers_other_calls_and_arguments_that_are_no_constants_are_dropped() -> None:
    module = notebook_of(
        "parser = argparse.ArgumentParser()\nparser.print_help()\n"
        "parser.add_argument('--width', type=lambda s: int(s))\nparser.add_argument('--data', default=DATA)"
    ).module()
    assert statements(module) == ["parser = argparse.ArgumentParser()"]


def test_a_constant_rebound_from_a_call_stops_being_one() -> None:
    module = notebook_of("N = 10\nN += 2\nM = N * 2", "N = len(sys.argv)\nK = N + 1").module()
    assert statements(module) == ["N = 10", "N += 2", "M = N * 2"]


def test_imports_only_dropped_code_used_are_left_out() -> None:
    module = notebook_of(
        "import torch.nn.functional as F\n"
        "from tqdm import tqdm\n"
        "from helpers import *\n"
        "try:\n    from google.colab import drive\nexcept ImportError:\n    pass\n"
        "try:\n    import timm\nexcept ImportError:\n    timm = None",
        "def forward(x):\n    return F.relu(x)",
        "for x in tqdm(range(3)):\n    drive.mount(x)",
    ).module()
    # The try that also assigns is not an import alone: it stays, whatever uses it.
    assert statements(module) == [
        "import torch.nn.functional as F",
        "from helpers import *",
        "try:\n    import timm\nexcept ImportError:\n    timm = None",
        "FunctionDef forward",
    ]


def test_shell_magic_and_help_lines_are_not_python_and_are_dropped() -> None:
    book = notebook_of(
        new_markdown_cell("# Lab 2"),
        "!pip install torchsummary\n"
        "%matplotlib inline\n"
        "files = !ls\n"
        "nn?\n"
        "from torch import nn\n"
        "\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        !nvidia-smi\n"
        "        return x",
    )
    module = book.module()
    assert statements(module) == ["from torch import nn", "ClassDef Net"]
    assert module.warnings == []
    net = next(n for n in ast.parse(module.source).body if isinstance(n, ast.ClassDef))
    forward = net.body[0]
    assert isinstance(forward, ast.FunctionDef)
    assert [ast.unparse(s) for s in forward.body] == ["pass", "return x"]


def test_a_run_of_a_python_file_beside_the_notebook_is_a_star_import_of_it() -> None:
    module = notebook_of(
        "%run nets.py\n%run -i src/resnet.py\n%run train.py --epochs 5\n%run 'my nets.py'",
        "def build():\n    %run nets.py\n    return Net()",
    ).module()
    assert statements(module) == ["from nets import *", "from src.resnet import *", "FunctionDef build"]


RUN = 50_000  # characters of one kind in a row
LONG_LINES = {
    "spaces": " " * RUN + "x",
    "name and spaces": "a" * RUN + " " * RUN + "= x",
    "help after": "a" * RUN + "??" + " " * RUN + "x",
    "help before": "??" + "a" * RUN + " " * RUN + "x",
    "dots and spaces": "a" + "." * RUN + " " * RUN + "=" + " " * RUN + "x",
    "%run of a long name": "%run " + "a" * RUN + " x",
    "%run of a deep path": "%run " + "a/" * RUN + ".py",
}


@pytest.mark.parametrize("line", LONG_LINES.values(), ids=LONG_LINES.keys())
def test_long_lines_are_told_from_magics_in_linear_time(line: str) -> None:
    # Each quantifier in _MAGIC_LINE is followed by what it cannot match, so it never
    # backtracks far; this keeps it so. A generous bound against catastrophic backtracking.
    book = notebook_of("class Net:\n    pass", line)
    start = time.perf_counter()
    assert "class Net" in book.code()
    assert "ClassDef Net" in statements(book.module())
    assert time.perf_counter() - start < 0.5


def test_cell_magics_keep_python_bodies_and_skip_the_rest() -> None:
    module = notebook_of(
        "%%time\nclass Timed:\n    pass\nTimed()",
        "%%writefile model.py\nclass Written:\n    pass",
        "%%bash\npip install timm",
        "%%capture log\nDEPTH = 3",
    ).module()
    assert statements(module) == ["ClassDef Timed", "DEPTH = 3"]
    assert module.warnings == []


def test_a_cell_that_does_not_parse_is_skipped_and_named() -> None:
    module = notebook_of(
        new_markdown_cell("notes"),
        "import torch",
        "def broken(:\n    pass\nclass Lost:\n    pass",
        "class Net(torch.nn.Module):\n    pass",
    ).module()
    assert statements(module) == ["import torch", "ClassDef Net"]
    assert module.warnings == [
        "lab.ipynb: cell 3 is not valid Python (invalid syntax, line 1 of the cell) and was skipped; "
        "nothing it defines reaches the grader"
    ]


def test_a_cell_nested_beyond_the_parser_is_skipped_too() -> None:
    module = notebook_of("x = " + "+".join(["1"] * 200_000), "N = 3").module()
    assert statements(module) == ["N = 3"]
    [warning] = module.warnings
    assert warning.startswith("lab.ipynb: cell 1 is not valid Python")


def test_every_block_maps_back_to_its_cell_line() -> None:
    cells = [
        new_markdown_cell("# Lab"),
        "!pip install timm\nimport torch\nfrom torch import nn",
        "EPOCHS = 3\nmodel = Net()\n\n\n@torch.no_grad()\ndef predict(x):\n    return x",
        new_markdown_cell("more"),
        "from __future__ import annotations\nclass Net(nn.Module):\n    width: int = 8",
    ]
    book = notebook_of(*cells)
    module = book.module()
    compile(module.source, "lab.py", "exec")  # compiled, never run
    module_lines = module.source.split("\n")
    cell_lines = {n: str(c["source"]).split("\n") for n, c in enumerate(book.cells, 1)}
    found = [(o.cell, o.cell_line, module_lines[o.module_line - 1]) for o in module.origins]
    assert found == [
        (5, 1, "from __future__ import annotations"),  # must open the module
        (2, 2, "import torch"),
        (2, 3, "from torch import nn"),
        (3, 1, "EPOCHS = 3"),
        (3, 5, "@torch.no_grad()"),
        (5, 2, "class Net(nn.Module):"),
    ]
    assert all(cell_lines[cell][line - 1] == text for cell, line, text in found)
    assert "# lab.ipynb, cell 3" in module_lines


def test_a_notebook_is_read_as_data(tmp_path: Path) -> None:
    nb = new_notebook(cells=[new_code_cell("class Net:\n    pass\nNet().fit()")])
    nbformat.write(nb, tmp_path / "lab.ipynb")
    book = read(tmp_path, "lab.ipynb")
    assert book.name == "lab.ipynb"
    assert statements(book.module()) == ["ClassDef Net"]


def test_an_old_notebook_without_cell_ids_is_read(tmp_path: Path) -> None:
    cell = {"cell_type": "code", "source": ["N = 4\n", "class Net:\n", "    pass"], "metadata": {}}
    old = {"cells": [cell | {"outputs": [], "execution_count": 1}], "metadata": {}}
    (tmp_path / "old.ipynb").write_text(json.dumps(old | {"nbformat": 4, "nbformat_minor": 2}))
    assert statements(read(tmp_path, "old.ipynb").module()) == ["N = 4", "ClassDef Net"]


def test_a_notebook_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    nb = new_notebook(cells=[new_code_cell("class Net:\n    pass")])
    (tmp_path / "lab.ipynb").write_bytes(b"\xef\xbb\xbf" + nbformat.writes(nb).encode("utf-8"))
    assert statements(read(tmp_path, "lab.ipynb").module()) == ["ClassDef Net"]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "lab.ipynb is not a readable Jupyter notebook (NotJSONError"),
        ('{"cells": 3}', "lab.ipynb is not a readable Jupyter notebook"),
        ("", "lab.ipynb is not a readable Jupyter notebook"),
    ],
)
def test_an_unreadable_notebook_says_so(tmp_path: Path, content: str, words: str) -> None:
    (tmp_path / "lab.ipynb").write_text(content)
    with pytest.raises(NotebookError, match=r"open it in Jupyter and save it again") as caught:
        read(tmp_path, "lab.ipynb")
    assert str(caught.value).startswith(words)


def _claims_notebook() -> Notebook:
    stream = new_output("stream", text="Test accuracy: 50.00%\nTask 1 Test Accuracy: 70.00%\n")
    result = new_output("execute_result", data={"text/plain": "'Task 2 test acc = 0.81'"}, execution_count=2)
    shown = new_output("display_data", data={"text/plain": "Task 1 Test Accuracy: 75.50%"})
    error = new_output("error", ename="ValueError", evalue="Task 2 test acc: 0.1", traceback=[])
    return notebook_of(
        new_markdown_cell("# Results"),
        new_code_cell("evaluate()", outputs=[stream]),
        new_code_cell("summary", outputs=[result, error]),
        new_code_cell("show()", outputs=[shown]),
    )


def test_tasks_sharing_a_notebook_take_the_last_line_naming_them() -> None:
    claims = _claims_notebook().claims({"task1": 1, "task2": 2})
    assert claims == {
        "task1": Claim(75.5, 4, "Task 1 Test Accuracy: 75.50%"),
        "task2": Claim(81.0, 3, "'Task 2 test acc = 0.81'"),
    }


def test_a_task_is_named_by_its_place_when_its_id_has_no_number() -> None:
    claims = _claims_notebook().claims({"cnn": 1, "resnet": 2})
    assert {t: c.accuracy for t, c in claims.items()} == {"cnn": 75.5, "resnet": 81.0}


def test_a_line_naming_no_task_counts_only_for_a_notebook_of_one_task() -> None:
    book = notebook_of(new_code_cell("run()", outputs=[new_output("stream", text="Test accuracy: 50.00%\n")]))
    assert book.claims({"task1": 1}) == {"task1": Claim(50.0, 1, "Test accuracy: 50.00%")}
    assert book.claims({"task1": 1, "task2": 2}) == {}
    # A notebook used by task2 alone does not take task 1's line.
    assert {t: c.accuracy for t, c in _claims_notebook().claims({"task2": 2}).items()} == {"task2": 81.0}


def test_the_last_test_accuracy_of_the_training_log_and_its_progress_bars_is_the_claim() -> None:
    log = "".join(f"Epoch {e}/3, Train Acc: 0.{50 + e}, Test Acc: 0.{60 + e}\n" for e in (1, 2, 3))
    # tqdm in a notebook's text stream: each refresh ends in "\r", the last one in "\n"
    bar = "Test: 50%|█████     | 20/40 [acc=0.700]\rTest: 100%|██████████| 40/40 [acc=0.874]\n"
    after = "Train accuracy: 95%\nSaved weights/task1.pt\n"
    book = notebook_of(
        new_code_cell("train()", outputs=[new_output("stream", text=log)]),
        new_code_cell("test()", outputs=[new_output("stream", text=bar + after)]),
    )
    assert book.claims({"task1": 1}) == {"task1": Claim(87.4, 2, "Test: 100%|██████████| 40/40 [acc=0.874]")}
    book.cells.pop()
    epoch3 = "Epoch 3/3, Train Acc: 0.53, Test Acc: 0.63"
    assert book.claims({"task1": 1}) == {"task1": Claim(63.0, 1, epoch3)}


# --- end to end: grading notebook hand-ins end to end in the real bubblewrap sandbox -----
# The notebook also installs packages, downloads CIFAR-10, trains, saves and plots: none of
# that may run (the sandbox has no network and a read-only submission, so any of it would
# fail the import), while its model class is built, loaded with weights and evaluated.


@pytest.fixture(scope="module")
def rubric() -> Rubric:
    return load_rubric(FILES / "rubrics" / "notebook.yaml")


@pytest.fixture(scope="module")
def submissions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/files/notebooks copied out; the notebook's model gets the zoo's TinyCNN weights."""
    root = tmp_path_factory.mktemp("notebooks")
    shutil.copytree(FILES / "notebooks", root, dirs_exist_ok=True)
    torch.manual_seed(0)
    model = load_module(FILES / "zoo" / "nets.py").TinyCNN()  # the notebook's class, same layers
    (root / "B000000002" / "weights").mkdir()
    torch.save(model.state_dict(), root / "B000000002" / "weights" / "task1.pt")
    return root


def _grade(folder: Path, rubric: Rubric, cache: Path, small_cifar: Path) -> Graded:
    settings = Settings(data_dir=small_cifar, task_timeout_s=60.0, cache_dir=cache, sandbox="bwrap")
    return grade(folder, rubric, settings)


@pytest.fixture(scope="module")
def graded(
    submissions: Path, rubric: Rubric, small_cifar: Path, tmp_path_factory: pytest.TempPathFactory
) -> Graded:
    return _grade(submissions / "B000000002", rubric, tmp_path_factory.mktemp("cache"), small_cifar)


@pytest.mark.slow
def test_the_notebooks_model_is_built_loaded_and_evaluated(graded: Graded) -> None:
    task1, task2 = graded.result.tasks["task1"], graded.result.tasks["task2"]
    for task in (task1, task2):
        assert task.status == "ok", task.error
        assert task.forward_ok and task.weights_loaded
        assert task.evaluation is not None and task.evaluation.n_images == 10 * TEST_PER_CLASS
        # Conv 3→8 (3×3) + BN(8) + Linear(8·8·8 → 10), the sizes set by the notebook's constants.
        assert task.params == (8 * 3 * 9 + 8) + 16 + (512 * 10 + 10)
    assert (task1.model, task2.model) == ("lab.ipynb:TinyCNN", "lab.ipynb:build")
    assert task1.evaluation.top1 == task2.evaluation.top1  # type: ignore[union-attr]
    assert task1.evaluation.confusion == task2.evaluation.confusion  # type: ignore[union-attr]


@pytest.mark.slow
def test_the_claims_are_read_from_the_saved_outputs(graded: Graded) -> None:
    task1, task2 = graded.result.tasks["task1"], graded.result.tasks["task2"]
    # "Test accuracy: 99.00%" names no task, and two tasks share the notebook: not taken.
    assert (task1.claimed_test_accuracy, task2.claimed_test_accuracy) == (12.5, 11.0)
    items = {item.id: item for item in graded.result.items}
    assert "claimed 12.50%" in items["claim1"].message
    assert "claimed 11.00%" in items["claim2"].message
    assert (
        "task1: claimed test accuracy 12.5% read from lab.ipynb, cell 8: 'Task 1 Test Accuracy: 12.50%'"
        in graded.result.warnings
    )


@pytest.mark.slow
def test_the_student_is_told_which_notebook_was_used(graded: Graded) -> None:
    assert any(
        w.startswith("task1: model.py is not in the submission, so the model is taken from lab.ipynb")
        for w in graded.result.warnings
    )


@pytest.mark.slow
def test_only_definitions_reach_the_sandbox(submissions: Path, rubric: Rubric) -> None:
    module = load_submission(submissions / "B000000002").tasks(rubric)["task1"].notebook
    assert module is not None
    never_run = ("pip install", "download=True", "optimizer.step()", "torch.save", "plt.", ".to(device)")
    assert not [code for code in never_run if code in module.source]
    assert "class TinyCNN(nn.Module):" in module.source and "NUM_CLASSES = 10" in module.source
    assert 'device = torch.device("cuda" if torch.cuda.is_available() else "cpu")' in module.source


@pytest.mark.slow
def test_an_import_error_names_the_notebook_cell(
    submissions: Path, rubric: Rubric, small_cifar: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    graded = _grade(submissions / "B000000003", rubric, tmp_path_factory.mktemp("cache"), small_cifar)
    task1, task2 = graded.result.tasks["task1"], graded.result.tasks["task2"]
    assert (task1.status, task1.error_stage) == ("error", "import")
    # The dataset is not downloaded, so `num_classes = len(trainset.classes)` is not run either,
    # and the class body that reads it fails.
    assert task1.error == (
        "broken.ipynb failed to import: NameError: name 'num_classes' is not defined (cell 3, line 5)"
    )
    assert (task2.status, task2.error_stage) == ("error", "import")
    assert task2.error == "lab.ipynb not found in the submission (found: broken.ipynb)"
