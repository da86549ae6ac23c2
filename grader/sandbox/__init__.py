"""Sandbox backends behind one small interface.

A ``Job`` says what to run and what it may see: read-only mounts, one writable output
directory, a time limit and resource limits. A backend runs it isolated from the host
(no network, no view of anything not mounted) and returns an ``Outcome``. The harness
inside reads only its mounts; the host reads only the output directory.

Backends: ``docker`` (production; GPU by device request), ``bwrap`` (bubblewrap, where no
Docker daemon runs) and ``none`` (no isolation at all; only behind --unsafe-no-sandbox).
"""

from __future__ import annotations

import shutil
from enum import StrEnum

from grader.errors import SandboxError
from grader.sandbox import leftovers
from grader.sandbox.base import Backend, Job, Limits, Mount, Outcome
from grader.sandbox.bwrap import BwrapBackend
from grader.sandbox.container import DEFAULT_IMAGE, DockerBackend, docker_client
from grader.sandbox.unsafe import UnsandboxedBackend

__all__ = [
    "Backend", "BwrapBackend", "DockerBackend", "Job", "Limits", "Mount", "Outcome",
    "SandboxChoice", "UnsandboxedBackend", "pick_backend",
]  # fmt: skip


class SandboxChoice(StrEnum):
    """The backends a user may pick; ``none`` (no isolation) only through --unsafe-no-sandbox."""

    AUTO = "auto"
    DOCKER = "docker"
    BWRAP = "bwrap"


def pick_backend(name: str = "auto", image: str = DEFAULT_IMAGE, runtime: str | None = None) -> Backend:
    """The named backend; ``auto`` is Docker when a daemon answers and has the image, else bubblewrap."""
    client = docker_client() if name in ("auto", "docker") else None
    leftovers.reap(client)  # jobs and work folders of graders that died
    if name == "docker":
        return DockerBackend(image, runtime, client)
    if name == "none":
        return UnsandboxedBackend()
    if name == "auto" and client is not None and _has_image(client, image):
        return DockerBackend(image, runtime, client)
    if name in ("auto", "bwrap"):
        if shutil.which("bwrap"):
            return BwrapBackend()
        raise SandboxError(
            "bubblewrap is not installed: apt-get install bubblewrap, or start a Docker daemon "
            "(student code only ever runs inside a sandbox)"
        )
    raise SandboxError(f"unknown sandbox {name!r}: use one of {', '.join(SandboxChoice)}")


def _has_image(client: object, image: str) -> bool:
    try:
        client.images.get(image)  # type: ignore[attr-defined]
        return True
    except Exception:  # not found, or the daemon went away: fall back to bubblewrap
        return False
