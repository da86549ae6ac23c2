"""Fills the output folder at import until writes fail, then carries on as an honest model.

The harness must still be able to write its report and logits afterwards.
"""

import contextlib

from common import TinyCNN as Net

with contextlib.suppress(OSError):
    for n in range(10**6):
        with open(f"/out/fill{n}", "wb") as f:
            f.write(b"x" * 2**20)

__all__ = ["Net"]
