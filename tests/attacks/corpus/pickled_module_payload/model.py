"""An honest network; the attack is in the weights file next to it (built by the test)."""

from common import TinyCNN as Net

__all__ = ["Net"]
