"""An honest network; its weights.pt is a link to /etc/shadow (made by the test)."""

from common import TinyCNN as Net

__all__ = ["Net"]
