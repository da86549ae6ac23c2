"""Grading hand-ins shaped like real ones (tests/files/realworld/) in the bubblewrap sandbox.

Every folder is graded as a whole submission; each row of ROWS says what the grader must make
of it: the task loads and is evaluated, or it stops at a stage with a message that names the
fix. For every folder that loads, the parameters and the MACs under both counters are also
computed a second way, layer by layer from an architecture description (tests/architectures.py),
never by importing the student's code, and must equal what the grader measured.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import inspect
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import nbformat
import pytest
import torch
import yaml
from torch import nn
from torch.nn.parameter import is_lazy

from grader.config import Settings
from grader.pipeline import Graded, grade
from grader.rubric import FlopsLimitItem, ParamsLimitItem, Rubric, load_rubric
from tests import architectures as arch
from tests.architectures import Cost
from tests.conftest import FILES, TEST_PER_CLASS

pytestmark = pytest.mark.slow


# --- what each folder is, and what the grader must make of it ------------------------------


@dataclass(frozen=True)
class Loads:
    """The task builds, loads its weights and is evaluated.

    ``warns``: fragments that must each appear in one of the grading's warnings;
    ``notes``: fragments that must each appear in a warning or an item's message;
    ``clean``: a plain file, so no warning may say it was cut down or missed a package.
    """

    warns: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    clean: bool = False


@dataclass(frozen=True)
class Fails:
    """The task stops at ``stage`` (any stage if None) with every fragment of ``words``."""

    stage: str | None
    words: tuple[str, ...]


@dataclass(frozen=True)
class Row:
    folder: str
    what: str
    outcome: Loads | Fails
    cost: Cost | None = None  # the independent count, for a folder that loads
    save: Callable[[nn.Module, Path], None] | None = None  # how, if not torch.save(model.state_dict())


def data_parallel(model: nn.Module, path: Path) -> None:
    """Saved from the model wrapped in nn.DataParallel: keys prefixed "module."."""
    torch.save({f"module.{key}": value for key, value in model.state_dict().items()}, path)


def compiled_checkpoint(model: nn.Module, path: Path) -> None:
    """R000000023's train.py: the torch.compile'd model's state_dict ("_orig_mod." keys) in a
    checkpoint dict beside the optimizer's and the scheduler's state."""
    state = model.state_dict()
    optimizer = {
        "state": {0: {"momentum_buffer": torch.zeros(3)}},
        "param_groups": [{"lr": 0.1, "params": [0]}],
    }
    checkpoint = {
        "epoch": 37,
        "model_state": {f"_orig_mod.{key}": value for key, value in state.items()},
        "optimizer_state": optimizer,
        "scheduler_state": {"last_epoch": 7000},
        "best_acc": 94.87,
    }
    torch.save(checkpoint, path)


def whole_model(model: nn.Module, path: Path) -> None:
    """R000000031's ``torch.save(model, path)``: the model itself, its class pickled by name as
    the student's run of the script defined it, ``__main__.ConvNet``."""
    cls, main = type(model), sys.modules["__main__"]
    home = cls.__module__
    cls.__module__ = "__main__"
    setattr(main, cls.__qualname__, cls)
    try:
        torch.save(model, path)
    finally:
        cls.__module__ = home
        delattr(main, cls.__qualname__)


DEFINITIONS_ONLY = "definitions only"
NOT_REPEATABLE = "change from one pass to the next"
PROBABILITIES = "probabilities"

ROWS = [
    Row("R000000001", "tutorial model.py: downloads, trains, plots at module level",
        Loads(warns=(DEFINITIONS_ONLY,)), arch.lenet((16, 32, 256, 128), pool="nn")),
    Row("R000000002", "small CNN script: x.view(x.size(0), -1), training at module level",
        Loads(warns=(DEFINITIONS_ONLY,)), arch.simple_cnn()),
    Row("R000000003", "LeNet-5, clean file", Loads(clean=True), arch.lenet((6, 16, 120, 84), pool="F")),
    Row("R000000004", "VGG11 (quarter width) behind a VGG11() factory", Loads(clean=True),
        arch.vgg(arch.VGG11, conv_bias=True, head=(10,), tail_avgpool=True)),
    Row("R000000005", "VGG16 (quarter width) in a notebook, per-epoch logs", Loads(),
        arch.vgg(arch.VGG16, conv_bias=False, head=(128, 10), tail_avgpool=False)),
    Row("R000000006", "full ResNet18 in a models/ package, imported by model.py", Loads(clean=True),
        arch.resnet((64, 128, 256, 512), (2, 2, 2, 2))),
    Row("R000000007", "PreActResNet18 (quarter width): manifest names models/preact_resnet.py, "
        "which imports .layers", Loads(clean=True), arch.preact_resnet18()),
    Row("R000000008", "manifest names ResNet(block, num_blocks) instead of ResNet18()",
        Fails("build", ("model.py:ResNet18", "builds one with no arguments"))),
    Row("R000000009", "ShuffleNetV2 0.5x; albumentations imported, not needed by the model",
        Loads(warns=("albumentations",)), arch.shufflenet_v2_half()),
    Row("R000000010", "MobileNetV2 0.5x; wandb imported, not needed by the model",
        Loads(warns=("wandb",)), arch.mobilenet_v2_half()),
    Row("R000000011", "DenseNet121 layout, growth 12; tqdm.notebook imported, not needed",
        Loads(warns=("tqdm",)), arch.densenet_cifar()),
    Row("R000000012", "GoogLeNet (quarter width); sklearn imported, not needed",
        Loads(warns=("sklearn",)), arch.googlenet_quarter()),
    Row("R000000013", "ConvNeXt-style net built from timm layers",
        Fails(None, ("timm", "not installed in the grader"))),
    Row("R000000014", "MNIST example's network: forward ends in F.log_softmax",
        Loads(notes=(PROBABILITIES,), clean=True), arch.mnist_example_net()),
    Row("R000000015", "classifier ends in nn.Softmax; rubric's default model.py:Net",
        Loads(notes=(PROBABILITIES,), clean=True), arch.softmax_head_net()),
    Row("R000000016", "notebook: from custom_resnet import *, log_softmax, tqdm in a function",
        Loads(warns=("tqdm",), notes=(PROBABILITIES,)), arch.custom_resnet_half()),
    Row("R000000017", "the CIFAR-10 tutorial as a notebook",
        Loads(), arch.lenet((6, 16, 120, 84), pool="nn")),
    Row("R000000018", "course-exercise notebook, per-class test accuracy lines", Loads(), arch.udacity_net()),
    Row("R000000019", "RegNetY-style net with squeeze-excitation", Loads(clean=True), arch.regnety_mini()),
    Row("R000000020", "ResNet20, option-A shortcuts; torchsummary summary() at module level",
        Loads(warns=(DEFINITIONS_ONLY, "torchsummary")),
        arch.resnet((16, 32, 64), (3, 3, 3), shortcut="pad")),
    Row("R000000021", "training repo: main.py trains at module level, from models import *",
        Loads(warns=(DEFINITIONS_ONLY,)), arch.simple_dla_half(), save=data_parallel),
    Row("R000000022", "Colab notebook found by convention (no model in the manifest)",
        Loads(), arch.colab_net()),
    Row("R000000023", "torchvision resnet18 adapted to 32x32; torch.compile'd weights in a checkpoint dict",
        Loads(clean=True), arch.torchvision_resnet18_cifar(), save=compiled_checkpoint),
    Row("R000000024", "ImageNet-pretrained torchvision resnet18 downloaded when the model is built",
        Fails("build", ("no network", "weights=None"))),
    Row("R000000025", "classifier of nn.LazyLinear layers", Loads(clean=True), arch.lazy_linear_net()),
    Row("R000000026", "F.dropout(x, p=0.5) in forward, active in eval mode too",
        Loads(warns=(NOT_REPEATABLE,)), arch.functional_dropout_net()),
    Row("R000000027", "CoordConv channels made with .cuda() in forward",
        Loads(clean=True) if torch.cuda.is_available()
        else Fails("forward", ("puts tensors on CUDA", "device=x.device")), arch.coordconv_net()),
    Row("R000000028", "forward returns (logits, embedding); rubric's default model.py:Net",
        Fails("forward", ("tuple", "return the logits alone"))),
    Row("R000000029", "a module-level nn.Sequential instance named in the manifest",
        Loads(clean=True), arch.all_conv_sequential()),
    Row("R000000030", "CNN(num_classes) with no default for the number of classes",
        Loads(warns=("built as cnn.py:CNN(num_classes=10)",), clean=True), arch.num_classes_cnn()),
    Row("R000000031", "a training script's torch.save(model, path): the whole model pickled",
        Loads(warns=("holds a whole pickled model (ConvNet)", "model.state_dict()"), clean=True),
        arch.three_block_convnet(), save=whole_model),
    Row("R000000032", "a notebook downloaded from Colab as .py, its !pip, %cd and drive.mount lines kept",
        Loads(warns=("IPython lines (!pip, %matplotlib) left out",)), arch.colab_export_cnn()),
    Row("R000000033", "Network in Network ending in x.squeeze(): one image gives [10], not [1, 10]",
        Loads(warns=("forward drops the batch dimension of a single image", "x.flatten(1)"), clean=True),
        arch.network_in_network_half()),
]  # fmt: skip

# The accuracy each notebook printed last, as a reader would quote it: (percent, tolerance).
# "Accuracy: 8645/10000 (86%)" and "76% (7674/10000)" give both a count and a rounded percent.
NOTEBOOK_CLAIMS = {
    "R000000005": (84.37, 0.005),
    "R000000016": (86.45, 0.5),
    "R000000017": (54.0, 0.005),
    "R000000018": (76.74, 0.75),
    "R000000022": (81.02, 0.005),
}


# --- building each model here, to write the weights it is graded with -----------------------
# Only the fixture runs student code in this process, and only its definitions: the training
# loops, downloads and plots around them never run.

_CONSTANT_NODES = (
    ast.Constant, ast.Name, ast.Tuple, ast.List, ast.Set, ast.Dict, ast.BinOp, ast.UnaryOp,
    ast.Subscript, ast.Slice, ast.Load, ast.operator, ast.unaryop,
)  # fmt: skip


def definitions(source: str, filename: str) -> ast.Module:
    """A student file cut down to its imports, functions, classes and constants: assignments
    built from literals and earlier constants only."""
    tree = ast.parse(source, filename)
    kept, constants = [], set()
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.ClassDef):
            kept.append(node)
        elif isinstance(node, ast.Assign) and _constant(node.value, constants):
            kept.append(node)
            constants |= {n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    tree.body = kept
    return tree


def _constant(value: ast.expr, constants: set[str]) -> bool:
    return all(
        isinstance(n, _CONSTANT_NODES) and (not isinstance(n, ast.Name) or n.id in constants)
        for n in ast.walk(value)
    )


def notebook_source(path: Path) -> str:
    """A notebook's code cells without IPython's ``!shell`` and ``%magic`` lines."""
    cells = nbformat.read(path, as_version=4).cells
    return python_only("\n".join(cell.source for cell in cells if cell.cell_type == "code"))


def python_only(source: str) -> str:
    """``source`` without IPython's ``!shell`` and ``%magic`` lines (a notebook downloaded
    as a .py file keeps them); a file that is Python as it is stays whole (a line may go on
    with ``% (loss, acc)``)."""
    with contextlib.suppress(SyntaxError):
        ast.parse(source)
        return source
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("!", "%"))]
    return "\n".join(lines) + "\n"


class StandIn(ModuleType):
    """An empty module for a package this environment lacks; every name in it is one too."""

    def __getattr__(self, name: str) -> StandIn:
        if name.startswith("__"):
            raise AttributeError(name)
        return StandIn(f"{self.__name__}.{name}")


def _missing_modules(tree: ast.Module, own: set[str]) -> set[str]:
    """The modules that absolute imports in ``tree`` name but this environment lacks (the
    first missing level of each dotted name and every level below it); the folder's own
    modules (``own``) are not missing."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    missing = set()
    for name in names:
        parts = name.split(".")
        if parts[0] in own:
            continue
        levels = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        absent = next((i for i, level in enumerate(levels) if not _installed(level)), None)
        missing |= set(levels[absent:]) if absent is not None else set()
    return missing


def _installed(name: str) -> bool:
    # find_spec imports the parents, and fails on modules already loaded without a spec
    return name in sys.modules or importlib.util.find_spec(name) is not None


def _own_modules(folder: Path) -> set[str]:
    """The top-level modules and packages a folder provides."""
    return {p.stem for p in folder.glob("*.py")} | {p.parent.name for p in folder.glob("*/__init__.py")}


def _within(name: str, roots: set[str]) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


@contextlib.contextmanager
def student_imports(folder: Path, stand_ins: set[str]) -> Iterator[None]:
    """``folder`` first on sys.path, ``stand_ins`` in sys.modules; afterwards, every module
    imported from the folder is forgotten, so the next folder's ``models`` is its own."""
    roots = _own_modules(folder) | stand_ins
    shadowed = {n: sys.modules.pop(n) for n in list(sys.modules) if _within(n, roots)}
    sys.modules.update({name: StandIn(name) for name in stand_ins})
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if _within(n, roots)]:
            del sys.modules[name]
        sys.modules.update(shadowed)


def build(folder: Path, ref: str) -> nn.Module:
    """The model ``file:Name`` names, built from the file's definitions (a file inside a
    package is imported as part of it, so its relative imports resolve)."""
    file, name = ref.rsplit(":", 1)
    path = folder / file
    if (path.parent / "__init__.py").is_file():
        dotted = ".".join(path.relative_to(folder).with_suffix("").parts)
        with student_imports(folder, set()):
            return getattr(importlib.import_module(dotted), name)()
    source = (
        notebook_source(path) if path.suffix == ".ipynb" else python_only(path.read_text(encoding="utf-8"))
    )
    tree = definitions(source, str(path))
    namespace: dict[str, object] = {"__name__": f"realworld_{folder.name}_{path.stem}"}
    with student_imports(folder, _missing_modules(tree, _own_modules(folder))):
        exec(compile(tree, str(path), "exec"), namespace)
        if name not in namespace:  # a module-level model: a plain file, whose code may run
            exec(compile(source, str(path), "exec"), namespace)
        made = namespace[name]
        if isinstance(made, nn.Module):
            return made
        needs_classes = inspect.signature(made).parameters.get("num_classes")  # type: ignore[arg-type]
        if needs_classes is not None and needs_classes.default is inspect.Parameter.empty:
            return made(num_classes=10)  # type: ignore[operator]
        return made()  # type: ignore[operator]


def entry(folder: Path, rubric: Rubric) -> tuple[str, str]:
    """The task's model and weights as the grader will read them: the manifest's, else the
    rubric's; a missing default model file gives way to the folder's only notebook."""
    default = rubric.tasks["task1"]
    manifest = yaml.safe_load((folder / "submission.yaml").read_text(encoding="utf-8"))
    given = (manifest.get("tasks") or {}).get("task1") or {}
    model, weights = given.get("model", default.model), given.get("weights", default.weights)
    if not (folder / model.rsplit(":", 1)[0]).exists():
        (notebook,) = folder.glob("*.ipynb")
        model = f"{notebook.name}:{model.rsplit(':', 1)[1]}"
    return model, weights


@pytest.fixture(scope="session")
def realworld_rubric() -> Rubric:
    return load_rubric(FILES / "rubrics" / "realworld.yaml")


@pytest.fixture(scope="session")
def realworld(realworld_rubric: Rubric, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/files/realworld copied out, with freshly initialised weights written for every
    folder that should load."""
    root = tmp_path_factory.mktemp("realworld")
    for row in ROWS:
        folder = root / row.folder
        shutil.copytree(FILES / "realworld" / row.folder, folder)
        if isinstance(row.outcome, Loads):
            model, weights = entry(folder, realworld_rubric)
            torch.manual_seed(0)
            built = build(folder, model)
            if any(is_lazy(p) for p in built.parameters()):  # nn.LazyLinear: shapes from a forward
                built.eval()(torch.zeros(1, 3, 32, 32))
            (folder / weights).parent.mkdir(parents=True, exist_ok=True)
            if row.save is None:
                torch.save(built.state_dict(), folder / weights)
            else:
                row.save(built, folder / weights)
    return root


# --- grading -----------------------------------------------------------------------------

TIMEOUT_S = 180.0


@pytest.fixture(scope="module")
def graded(
    realworld: Path, realworld_rubric: Rubric, small_cifar: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Graded]:
    """``graded(folder)``: that folder graded in the bubblewrap sandbox, once per module."""
    settings = Settings(
        data_dir=small_cifar,
        task_timeout_s=TIMEOUT_S,
        cache_dir=tmp_path_factory.mktemp("cache"),
        sandbox="bwrap",
    )
    done: dict[str, Graded] = {}

    def get(folder: str) -> Graded:
        if folder not in done:
            done[folder] = grade(realworld / folder, realworld_rubric, settings)
        return done[folder]

    return get


def _params(rows: list[Row]) -> list:
    return [pytest.param(row, id=row.folder) for row in rows]


LOADING = [row for row in ROWS if isinstance(row.outcome, Loads)]
FAILING = [row for row in ROWS if isinstance(row.outcome, Fails)]


@pytest.mark.parametrize("row", _params(LOADING))
def test_folder_loads_and_is_evaluated(graded: Callable[[str], Graded], row: Row) -> None:
    result = graded(row.folder).result
    task = result.tasks["task1"]
    assert task.status == "ok", f"{row.what}: {task.error_stage}: {task.error}"
    assert task.weights_loaded
    assert task.evaluation is not None and task.evaluation.n_images == 10 * TEST_PER_CLASS
    expected = row.outcome
    assert isinstance(expected, Loads)
    messages = [*result.warnings, *(item.message for item in result.items)]
    for words in expected.warns:
        assert any(words in w for w in result.warnings), f"no warning mentions {words!r}: {result.warnings}"
    for words in expected.notes:
        assert any(words in m for m in messages), f"nothing mentions {words!r}: {messages}"
    if NOT_REPEATABLE not in expected.warns:
        assert not any(NOT_REPEATABLE in w for w in result.warnings), result.warnings
    if expected.clean:
        odd = [w for w in result.warnings if DEFINITIONS_ONLY in w or "not installed" in w]
        assert not odd, f"a plain file, yet: {odd}"


@pytest.mark.parametrize("row", _params(FAILING))
def test_folder_fails_with_a_message_that_names_the_fix(graded: Callable[[str], Graded], row: Row) -> None:
    task = graded(row.folder).result.tasks["task1"]
    expected = row.outcome
    assert isinstance(expected, Fails)
    assert task.status == "error", f"{row.what}: expected a failure, but it loaded"
    if expected.stage is not None:
        assert task.error_stage == expected.stage, task.error
    for words in expected.words:
        assert words in (task.error or ""), f"{words!r} not in: {task.error}"


@pytest.mark.parametrize("row", _params(LOADING))
def test_counts_equal_the_independent_ones(
    graded: Callable[[str], Graded], realworld_rubric: Rubric, row: Row
) -> None:
    result = graded(row.folder).result
    task = result.tasks["task1"]
    assert task.status == "ok", f"not counted: {task.error_stage}: {task.error}"
    cost = row.cost
    assert cost is not None
    assert task.params == cost.params
    assert task.macs == {"thop": cost.thop, "ptflops": cost.ptflops}
    # and the limits are scored from these numbers
    scored = {i.id: i for i in result.items}
    assert scored["valid"].status == "pass"
    for item in realworld_rubric.items:
        if isinstance(item, ParamsLimitItem):
            over = cost.params > item.max_params
        elif isinstance(item, FlopsLimitItem):
            over = getattr(cost, item.counter) > item.max_macs
        else:
            continue
        assert scored[item.id].status == ("fail" if over else "pass"), item.id


def test_resnet18_description_gives_the_documented_counts() -> None:
    """docs/rubrics.md quotes thop's count for ResNet18 with a 3×3 stem; the description of
    R000000006's ResNet18 must reproduce it, and the 11,173,962 parameters usually quoted."""
    cost = arch.resnet((64, 128, 256, 512), (2, 2, 2, 2))
    assert cost.thop == 557_880_320
    assert cost.params == 11_173_962


@pytest.mark.parametrize("folder", sorted(NOTEBOOK_CLAIMS))
def test_notebook_claims_are_read_from_the_printed_accuracy(
    graded: Callable[[str], Graded], folder: str
) -> None:
    claim, tolerance = NOTEBOOK_CLAIMS[folder]
    task = graded(folder).result.tasks["task1"]
    assert task.claimed_test_accuracy == pytest.approx(claim, abs=tolerance)
