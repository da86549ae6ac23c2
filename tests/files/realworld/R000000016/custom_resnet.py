"""The "custom ResNet" of the fast CIFAR-10 training recipes: prep, three layers, two residuals.

Channels are halved (32/64/128/256 instead of 64/128/256/512) to fit the 24-epoch budget
on a free GPU.
"""
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CustomResNet", "ResBlock", "conv_pool_bn"]


def conv_pool_bn(cin, cout):
    # conv -> max-pool -> BN -> ReLU: the order the recipe uses for its downsampling layers
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class ResBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )

    def forward(self, x):
        return self.body(x)


class CustomResNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.prep = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.layer1 = conv_pool_bn(32, 64)        # 16x16
        self.res1 = ResBlock(64)
        self.layer2 = conv_pool_bn(64, 128)       # 8x8
        self.layer3 = conv_pool_bn(128, 256)      # 4x4
        self.res3 = ResBlock(256)
        self.pool = nn.MaxPool2d(4)
        self.fc = nn.Linear(256, num_classes, bias=False)

    def forward(self, x):
        x = self.prep(x)
        x = self.layer1(x)
        x = x + self.res1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = x + self.res3(x)
        x = self.pool(x).view(-1, 256)
        x = self.fc(x)
        return F.log_softmax(x, dim=-1)
