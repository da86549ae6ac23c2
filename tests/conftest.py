"""Shared fixtures: a small real slice of CIFAR-10 and the test submission zoo."""

from __future__ import annotations

import dataclasses
import gc
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from lxml import etree

from grader.config import Settings
from grader.protocol import Limits
from grader.rubric import Rubric, find_rubric, load_rubric

# Hand-made graded results (tests/graded.py), as fixtures for every test.
from tests.graded import cnn_rubric, failures, results, rubric  # noqa: F401

FILES = Path(__file__).parent / "files"
CIFAR_TARBALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"
TEST_PER_CLASS = 20
TRAIN_PER_CLASS = 5


GOLDEN = FILES / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-golden",
        action="store_true",
        help="write the outputs the golden tests produce into tests/files/golden/ instead of comparing",
    )


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """``golden(name, text)``: ``text`` must equal tests/files/golden/<name>; ``--regen-golden``
    writes it instead."""

    def check(name: str, text: str) -> None:
        path = GOLDEN / name
        if request.config.getoption("--regen-golden"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        if not path.is_file():
            pytest.fail(f"{path} is missing: run pytest --regen-golden and review the new file")
        assert text == path.read_text(encoding="utf-8"), f"{name} changed: review, then pytest --regen-golden"

    return check


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that need Docker or a browser, or run install steps, are slow ones too: `-m "not slow"`
    leaves them out."""
    for item in items:
        if any(item.get_closest_marker(name) for name in ("docker", "browser", "install")):
            item.add_marker(pytest.mark.slow)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Everything imported by now (torch, weasyprint, matplotlib, ...) lives for the whole run:
    frozen, it is left out of every garbage collection the tests trigger."""
    gc.freeze()


@pytest.fixture(scope="session", autouse=True)
def _private_state(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Decoded datasets go to a per-session cache and settings to a per-session file, never the
    user's; nothing is downloaded."""
    mp = pytest.MonkeyPatch()
    mp.setenv("GRADER_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("GRADER_CONFIG", str(tmp_path_factory.mktemp("config") / "config.toml"))
    mp.setenv("GRADER_DOWNLOAD", "0")
    yield
    mp.undo()


@pytest.fixture(scope="session")
def eai_rubric() -> Rubric:
    return load_rubric(find_rubric("eai-lab2"))


@pytest.fixture(scope="session")
def cifar_tarball() -> Path:
    if not CIFAR_TARBALL.is_file():
        pytest.fail(f"{CIFAR_TARBALL} is missing: the tests read CIFAR-10 from ../shared/data")
    return CIFAR_TARBALL


@pytest.fixture(scope="session")
def small_cifar(cifar_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tarball with the first TEST_PER_CLASS test and TRAIN_PER_CLASS train images per class."""
    target = tmp_path_factory.mktemp("data") / "cifar10-small.tar.gz"
    return _slice(cifar_tarball, target, {"test": TEST_PER_CLASS, "train": TRAIN_PER_CLASS})


@pytest.fixture(scope="session")
def train_cifar(cifar_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough training images per class for the retraining tests (60), and the same test slice."""
    target = tmp_path_factory.mktemp("data") / "cifar10-train.tar.gz"
    return _slice(cifar_tarball, target, {"test": TEST_PER_CLASS, "train": 60})


def _slice(cifar_tarball: Path, target: Path, wanted: dict[str, int]) -> Path:
    taken: dict[tuple[str, str], int] = defaultdict(int)
    with tarfile.open(cifar_tarball) as src, tarfile.open(target, "w:gz") as dst:
        for member in src:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 3 or parts[-3] not in wanted:
                continue
            key = (parts[-3], parts[-2])
            if taken[key] < wanted[parts[-3]]:
                taken[key] += 1
                payload = src.extractfile(member).read()  # type: ignore[union-attr]
                info = tarfile.TarInfo("cifar10/" + "/".join(parts[-3:]))
                info.size = len(payload)
                dst.addfile(info, io.BytesIO(payload))
    return target


def pdf_text(path: Path, mode: str | None = "-layout", page: int | None = None) -> str:
    """What a reader sees in a PDF, as poppler's pdftotext extracts it: ``-layout`` keeps the
    columns of a page, ``-raw`` the order in which the text was drawn, None pdftotext's default;
    ``page`` (from 1) reads that page only."""
    flags = [mode] if mode else []
    if page is not None:
        flags += ["-f", str(page), "-l", str(page)]
    done = subprocess.run(["pdftotext", *flags, str(path), "-"], capture_output=True, text=True, check=True)
    return done.stdout


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # so torch.save can pickle a whole model of this module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/files/submissions/B000000001 copied out, with its small CNN's seed-0 weights."""
    import torch

    root = tmp_path_factory.mktemp("subs") / "B000000001"
    shutil.copytree(FILES / "submissions" / "B000000001", root)
    torch.manual_seed(0)
    model = load_module(root / "model.py").Net()
    (root / "weights").mkdir()
    torch.save(model.state_dict(), root / "weights" / "model.pt")
    return root


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/files/zoo copied out, with one weights file per way of saving them."""
    import torch
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("subs") / "zoo"
    shutil.copytree(FILES / "zoo", root)
    weights = root / "weights"
    weights.mkdir()
    nets = load_module(root / "nets.py")
    torch.manual_seed(0)
    model = nets.TinyCNN()
    state = model.state_dict()
    torch.save(state, weights / "good.pt")
    torch.save({f"module.{k}": v for k, v in state.items()}, weights / "dataparallel.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, weights / "good.safetensors")
    torch.save({"epoch": 3, "model_state_dict": state, "best_acc": 0.5}, weights / "checkpoint.pt")
    torch.save(model, weights / "pickled.pt")
    broken = dict(state)
    broken["fc.weight"] = torch.zeros(10, 99)
    broken["extra.weight"] = broken.pop("features.0.bias")
    torch.save(broken, weights / "mismatch.pt")
    _save_as_if_on_gpu(state, weights / "cuda.pt")
    return root


def _save_as_if_on_gpu(state: dict, path: Path) -> None:
    """Tag every storage 'cuda:0', exactly as torch.save does for tensors on a GPU."""
    import torch

    mp = pytest.MonkeyPatch()
    mp.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    try:
        torch.save(state, path)
    finally:
        mp.undo()


# The image the sandbox tests run (tests/sandbox/): the grader's own unless GRADER_TEST_IMAGE
# names another build of the Dockerfile, e.g. one made with IMAGE=... scripts/build_image.sh.
HARNESS_IMAGE = os.environ.get("GRADER_TEST_IMAGE") or "grader-harness:latest"


def require_docker_or_skip(image: str | None = None) -> None:
    """Skip when no Docker daemon answers or the harness image (the grader's default, or
    `image`) is missing; in CI (GRADER_REQUIRE_DOCKER=1) that is a failure instead."""
    from grader.sandbox.container import DEFAULT_IMAGE, docker_client

    image = image or DEFAULT_IMAGE
    client = docker_client()
    problem = None
    if client is None:
        problem = "no Docker daemon answers"
    else:
        try:
            client.images.get(image)
        except Exception:
            problem = f"image {image} is not built (scripts/build_image.sh)"
    if problem:
        skip_unless_required(problem, "GRADER_REQUIRE_DOCKER")


# A script any interpreter runs (a virtualenv's, the sandbox image's): its Python version and every
# distribution it sees, as JSON; read_packages_report reads what it prints.
PACKAGES_REPORT = """
import importlib.metadata, json, sys
print(json.dumps({
    "python": list(sys.version_info[:2]),
    "packages": {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()},
}))
"""


def read_packages_report(printed: str | bytes) -> tuple[tuple[int, ...], dict[str, str]]:
    """(Python's major and minor version, {name: version}), names as pip compares them (PEP 503:
    `Pillow` and `pillow` are one package)."""
    report = json.loads(printed)
    packages = {re.sub(r"[-_.]+", "-", name).lower(): v for name, v in report["packages"].items()}
    return tuple(report["python"]), packages


def locked_versions() -> dict[str, str]:
    """requirements.lock's pins, {name: version}, names as read_packages_report writes them."""
    lines = (Path(__file__).resolve().parents[1] / "requirements.lock").read_text().splitlines()
    pins = (line.split("==") for line in lines if "==" in line and not line.startswith((" ", "#")))
    return {re.sub(r"[-_.]+", "-", name).lower(): version.strip() for name, version in pins}


def skip_unless_required(problem: str, variable: str) -> None:
    """Skip a test this machine cannot run; where CI sets `variable` to 1, fail it instead."""
    if os.environ.get(variable) == "1":
        pytest.fail(f"{problem}, and {variable}=1")
    pytest.skip(problem)


JUNIT_XSD = Path(sys.prefix) / "share" / "junit" / "junit-10.xsd"


def junit_schema() -> etree.XMLSchema:
    """Jenkins xUnit's JUnit schema, which scripts/setup.sh takes from pytest's source release."""
    if not JUNIT_XSD.is_file():
        pytest.fail(f"{JUNIT_XSD} is missing: run scripts/setup.sh, which fetches it")
    return etree.XMLSchema(etree.parse(str(JUNIT_XSD)))


def copy_checkout(target: Path) -> Path:
    """This checkout's files (tracked, or untracked and not ignored) copied into `target`: what
    a clone of it holds, without build leftovers or the virtualenv."""
    root = Path(__file__).resolve().parents[1]
    listed = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = root / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def job_limits(**changes: float) -> Limits:
    """A sandbox job's limits as the grader sets them, with 8 GiB of address space and files of at
    most 1 MiB, and ``changes``."""
    base = dataclasses.replace(Settings().limits(), address_space_bytes=8 * 2**30, file_size_bytes=2**20)
    return dataclasses.replace(base, **changes)
