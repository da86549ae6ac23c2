"""Sandbox backends behind one small interface.

A ``Job`` says what to run and what it may see: read-only mounts, one writable output
directory, a time limit and resource limits. A backend runs it isolated from the host
(no network, no view of anything not mounted) and returns an ``Outcome``. The harness
inside reads only its mounts; the host reads only the output directory.
"""

from __future__ import annotations

import shutil

from grader.errors import SandboxError
from grader.sandbox.base import Backend, Job, Limits, Mount, Outcome
from grader.sandbox.bwrap import BwrapBackend

__all__ = ["Backend", "BwrapBackend", "Job", "Limits", "Mount", "Outcome", "pick_backend"]


def pick_backend(name: str = "auto") -> Backend:
    """The named backend, or for ``auto`` the first that can run here."""
    if name in ("auto", "bwrap"):
        if shutil.which("bwrap"):
            return BwrapBackend()
        raise SandboxError(
            "bubblewrap is not installed: apt-get install bubblewrap "
            "(student code only ever runs inside a sandbox)"
        )
    raise SandboxError(f"unknown sandbox {name!r}: use auto or bwrap")
