"""The honest network behind one module called 6,000 times: a layer table and a diagram that
would grow without end, if nothing bounded them."""

from common import TinyCNN
from torch import nn


class Net(TinyCNN):
    def __init__(self):
        super().__init__()
        self.again = nn.Identity()

    def forward(self, x):
        for _ in range(6000):
            x = self.again(x)
        return super().forward(x)
