"""ResNet for 32x32 inputs: a 3x3 stem, no max-pool, four stages of BasicBlocks."""
import torch.nn as nn
import torch.nn.functional as F

from .blocks import BasicBlock


class ResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._stage(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._stage(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._stage(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._stage(block, 512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _stage(self, block, planes, count, stride):
        layers = []
        for s in [stride] + [1] * (count - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)          # (N, 512, 1, 1)
        out = out.view(out.size(0), -1)
        return self.linear(out)


def ResNet18(num_classes=10):
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes)


def ResNet34(num_classes=10):
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes)
