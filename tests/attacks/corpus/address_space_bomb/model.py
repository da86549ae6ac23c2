"""Asks for 4 TiB in __init__ (a typo'd tensor size, or on purpose)."""

import torch
from common import TinyCNN


class Net(TinyCNN):
    def __init__(self):
        super().__init__()
        self.register_buffer("scratch", torch.empty(2**40), persistent=False)
