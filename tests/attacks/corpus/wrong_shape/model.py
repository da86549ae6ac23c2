"""Returns 7 logits per image instead of 10."""

from common import TinyCNN


class Net(TinyCNN):
    def forward(self, x):
        return super().forward(x)[:, :7]
