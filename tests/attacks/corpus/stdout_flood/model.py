"""Prints 128 MiB at import, then behaves; printing alone must not fail the task."""

import sys

from common import TinyCNN as Net

line = "flood " * 170 + "\n"  # 1 KiB
for _ in range(128):
    sys.stdout.write(line * 1024)

__all__ = ["Net"]
