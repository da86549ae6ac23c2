"""RegNetY-style network (Radosavovic et al. 2020) for CIFAR-10.

Same block as RegNetY (1x1, grouped 3x3, squeeze-excitation, 1x1, residual) but a much
smaller design point than RegNetY-200MF: widths 16/32/64/128, depths 1/1/2/2.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class SE(nn.Module):
    """Squeeze-and-excitation with 1x1 convolutions."""

    def __init__(self, channels, se_channels):
        super().__init__()
        self.se1 = nn.Conv2d(channels, se_channels, kernel_size=1, bias=True)
        self.se2 = nn.Conv2d(se_channels, channels, kernel_size=1, bias=True)

    def forward(self, x):
        w = F.adaptive_avg_pool2d(x, (1, 1))
        w = F.relu(self.se1(w))
        w = self.se2(w).sigmoid()
        return x * w


class YBlock(nn.Module):
    def __init__(self, w_in, w_out, stride, group_width, bottleneck_ratio, se_ratio):
        super().__init__()
        w_b = int(round(w_out * bottleneck_ratio))
        groups = w_b // group_width
        self.conv1 = nn.Conv2d(w_in, w_b, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w_b)
        self.conv2 = nn.Conv2d(w_b, w_b, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(w_b)
        self.se = SE(w_b, int(round(w_in * se_ratio))) if se_ratio > 0 else None
        self.conv3 = nn.Conv2d(w_b, w_out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(w_out)
        self.shortcut = None
        if stride != 1 or w_in != w_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(w_in, w_out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(w_out),
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        if self.se is not None:
            out = self.se(out)
        out = self.bn3(self.conv3(out))
        out = out + (x if self.shortcut is None else self.shortcut(x))
        return F.relu(out)


class RegNet(nn.Module):
    def __init__(self, cfg, num_classes=10):
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        w_in = 32
        stages = []
        for depth, width, stride in zip(cfg["depths"], cfg["widths"], cfg["strides"]):
            blocks = []
            for i in range(depth):
                blocks.append(YBlock(w_in, width, stride if i == 0 else 1, cfg["group_width"],
                                     cfg["bottleneck_ratio"], cfg["se_ratio"]))
                w_in = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.linear = nn.Linear(cfg["widths"][-1], num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.stages(out)
        out = F.adaptive_avg_pool2d(out, (1, 1))
        out = out.view(out.size(0), -1)
        return self.linear(out)


MINI = {
    "depths": [1, 1, 2, 2],
    "widths": [16, 32, 64, 128],
    "strides": [1, 2, 2, 2],
    "group_width": 8,
    "bottleneck_ratio": 1,
    "se_ratio": 0.25,
}


def RegNetY_mini():
    return RegNet(MINI)


if __name__ == "__main__":
    net = RegNetY_mini()
    print(net(torch.randn(2, 3, 32, 32)).shape)
