"""Returns NaN for every logit."""

from common import TinyCNN


class Net(TinyCNN):
    def forward(self, x):
        return super().forward(x) * float("nan")
