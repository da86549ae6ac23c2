import torch
from torch import nn


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(3, 8, 3)

    def forward(self, x)
        return self.conv(x)
