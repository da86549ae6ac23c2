"""Network in Network for CIFAR-10 (Lin et al., 2014), at half width.

Every layer is a convolution: the last 1x1 convolution gives one map per class, and global
average pooling turns each map into that class's score.
"""
import torch.nn as nn


def mlpconv(in_channels, out_channels, kernel_size, padding):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 1),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 1),
        nn.ReLU(inplace=True),
    )


class NIN(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            mlpconv(3, 96, 5, 2),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.Dropout(0.5),
            mlpconv(96, 96, 5, 2),
            nn.AvgPool2d(2),
            nn.Dropout(0.5),
            nn.Conv2d(96, 96, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(96, 96, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(96, num_classes, 1),
            nn.ReLU(inplace=True),
        )
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = self.gap(self.features(x))
        return x.squeeze()
