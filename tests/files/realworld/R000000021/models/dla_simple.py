'''Simplified Deep Layer Aggregation (Yu et al. 2018) for CIFAR-10.

Tree stages aggregate their blocks' outputs through a 1x1 "root" convolution. Widths are
half the usual ones (16..256 instead of 32..512).
'''
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['SimpleDLA']


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class Root(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, xs):
        return F.relu(self.bn(self.conv(torch.cat(xs, 1))))


class Tree(nn.Module):
    def __init__(self, in_channels, out_channels, level=1, stride=1):
        super().__init__()
        self.level = level
        self.root = Root((level + 1) * out_channels, out_channels)
        if level == 1:
            self.left = BasicBlock(in_channels, out_channels, stride)
            self.right = BasicBlock(out_channels, out_channels, 1)
        else:
            # the subtree takes the input; its output feeds one more block, and the root sees all
            self.subtree = Tree(in_channels, out_channels, level - 1, stride)
            self.prev = BasicBlock(in_channels, out_channels, stride)
            self.right = BasicBlock(out_channels, out_channels, 1)

    def forward(self, x):
        if self.level == 1:
            left = self.left(x)
            return self.root([left, self.right(left)])
        skip = self.prev(x)
        sub = self.subtree(x)
        return self.root([skip, sub, self.right(sub)])


class SimpleDLA(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.base = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(True))
        self.layer1 = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(True))
        self.layer2 = nn.Sequential(nn.Conv2d(8, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(True))
        self.layer3 = Tree(16, 32, level=1, stride=1)
        self.layer4 = Tree(32, 64, level=2, stride=2)
        self.layer5 = Tree(64, 128, level=2, stride=2)
        self.layer6 = Tree(128, 256, level=1, stride=2)
        self.linear = nn.Linear(256, num_classes)

    def forward(self, x):
        out = self.layer2(self.layer1(self.base(x)))
        out = self.layer6(self.layer5(self.layer4(self.layer3(out))))
        out = F.avg_pool2d(out, 4)
        out = out.view(out.size(0), -1)
        return self.linear(out)
