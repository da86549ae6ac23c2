"""A model of 6 billion parameters (23 GiB in float32): it must be counted, never built."""

from torch import nn


def Net():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2_000_000), nn.Linear(2_000_000, 10))
