import torch.nn as nn
import torch.nn.functional as F

from .layers import PreActBlock

# Stage widths are a quarter of the usual 64/128/256/512 so a run fits in a Colab session.
WIDTHS = (16, 32, 64, 128)


class PreActResNet(nn.Module):
    def __init__(self, blocks_per_stage, num_classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, WIDTHS[0], 3, 1, 1, bias=False)
        stages = []
        in_ch = WIDTHS[0]
        for i, (width, n) in enumerate(zip(WIDTHS, blocks_per_stage)):
            first_stride = 1 if i == 0 else 2
            for j in range(n):
                stages.append(PreActBlock(in_ch, width, first_stride if j == 0 else 1))
                in_ch = width
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(in_ch)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x):
        out = self.stages(self.stem(x))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def PreActResNet18(num_classes=10):
    return PreActResNet([2, 2, 2, 2], num_classes)
