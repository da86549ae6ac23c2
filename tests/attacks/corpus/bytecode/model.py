"""Honest source. The test puts bytecode of another model next to it, in __pycache__, marked
"unchecked-hash" so Python would load it without looking at this file: it must never run."""

from common import TinyCNN as Net

__all__ = ["Net"]
