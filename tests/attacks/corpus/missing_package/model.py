"""Imports a package the grader's environment does not have."""

import tensorflow_addons  # noqa: F401
from common import TinyCNN as Net

__all__ = ["Net"]
