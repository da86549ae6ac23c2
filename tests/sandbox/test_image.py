"""The sandbox image runs the host's Python with the host's versions of every package.

A model must import, count, load and evaluate inside the sandbox exactly as on the host, so
the image and the host's virtualenv both install requirements.lock (the Dockerfile and
scripts/setup.sh). The image checked is the grader's own, or the one GRADER_TEST_IMAGE names.
Skipped where no daemon answers, except in CI (GRADER_REQUIRE_DOCKER=1), where that fails.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from grader.sandbox.container import IMAGE_PYTHON, docker_client
from tests.conftest import (
    HARNESS_IMAGE,
    PACKAGES_REPORT,
    locked_versions,
    read_packages_report,
    require_docker_or_skip,
)

pytestmark = pytest.mark.docker

# What the harness imports (image/requirements-harness.txt): their versions decide what a
# submission's model computes, counts and loads.
HARNESS = [
    "torch",
    "torchvision",
    "ultralytics-thop",
    "ptflops",
    "numpy",
    "pydantic",
    "safetensors",
    "pillow",
]
# Each virtualenv's own installer, not one of the grader's dependencies.
NOT_LOCKED = {"pip"}
# (Python's major and minor version, {package: version}), as read_packages_report reads them.
Report = tuple[tuple[int, ...], dict[str, str]]


@pytest.fixture(scope="module")
def image() -> Report:
    """The image's Python version and every distribution its interpreter sees, with versions."""
    require_docker_or_skip(HARNESS_IMAGE)
    command = [IMAGE_PYTHON, "-c", PACKAGES_REPORT]
    return read_packages_report(
        docker_client().containers.run(HARNESS_IMAGE, command, network_mode="none", remove=True)
    )


@pytest.fixture(scope="module")
def host() -> Report:
    """The same for the Python running the tests (the host's virtualenv)."""
    printed = subprocess.run([sys.executable, "-c", PACKAGES_REPORT], capture_output=True, check=True).stdout
    return read_packages_report(printed)


def test_the_image_runs_the_hosts_python(image: Report, host: Report) -> None:
    assert image[0] == host[0] == sys.version_info[:2], f"{HARNESS_IMAGE} runs Python {image[0]}"


def test_the_harness_packages_have_the_hosts_versions(image: Report, host: Report) -> None:
    (_, in_image), (_, on_host) = image, host
    assert {n: in_image.get(n) for n in HARNESS} == {n: on_host.get(n) for n in HARNESS}
    assert all(in_image.get(n) for n in HARNESS), f"{HARNESS_IMAGE} lacks some of {HARNESS}"


def test_every_package_in_the_image_has_the_hosts_and_the_locked_version(image: Report, host: Report) -> None:
    (_, in_image), (_, on_host), locked = image, host, locked_versions()
    differ = {
        name: (version, on_host.get(name), locked.get(name))
        for name, version in in_image.items()
        if name not in NOT_LOCKED and not version == on_host.get(name) == locked.get(name)
    }
    assert not differ, f"{HARNESS_IMAGE}, this virtualenv and requirements.lock differ: {differ}"
