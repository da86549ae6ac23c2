"""Rewrites a host kernel setting: core_pattern would run a program as root on the next crash.

It writes back the current value, so nothing changes should the write go through.
"""

from common import TinyCNN as Net

with open("/proc/sys/kernel/core_pattern") as f:
    current = f.read()
with open("/proc/sys/kernel/core_pattern", "w") as f:
    f.write(current)

__all__ = ["Net"]
