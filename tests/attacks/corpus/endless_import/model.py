"""Trains at module level for ever, as a tutorial file does for many minutes: the grader stops
it after its import budget and builds the model from the file's definitions."""

import torch
from common import TinyCNN as Net

model = Net()
while True:
    model(torch.zeros(1, 3, 32, 32)).sum().backward()

__all__ = ["Net"]
