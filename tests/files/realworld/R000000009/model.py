"""ShuffleNet V2 (Ma et al. 2018) adapted to 32x32 inputs, trained with albumentations."""
import albumentations as A
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from albumentations.pytorch import ToTensorV2

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

# out_channels of the three stages and the final 1x1 conv, repeats per stage
CONFIGS = {
    0.5: ((48, 96, 192, 1024), (3, 7, 3)),
    1.0: ((116, 232, 464, 1024), (3, 7, 3)),
}


def train_transforms():
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.ShiftScaleRotate(shift_limit=0.1, scale_limit=0.1, rotate_limit=15, p=0.5),
        A.CoarseDropout(max_holes=1, max_height=16, max_width=16, fill_value=CIFAR_MEAN, p=0.5),
        A.Normalize(mean=CIFAR_MEAN, std=CIFAR_STD),
        ToTensorV2(),
    ])


class AlbumentationsCIFAR10(torchvision.datasets.CIFAR10):
    def __getitem__(self, index):
        image, label = self.data[index], self.targets[index]
        if self.transform is not None:
            image = self.transform(image=np.asarray(image))["image"]
        return image, label


def channel_shuffle(x, groups=2):
    n, c, h, w = x.shape
    x = x.view(n, groups, c // groups, h, w).transpose(1, 2)
    return x.reshape(n, c, h, w)


def conv_bn(cin, cout, k, stride=1, groups=1, relu=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicUnit(nn.Module):
    """Half the channels pass through untouched, the other half through 1x1 - dw3x3 - 1x1."""

    def __init__(self, channels):
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(
            conv_bn(half, half, 1),
            conv_bn(half, half, 3, groups=half, relu=False),
            conv_bn(half, half, 1),
        )

    def forward(self, x):
        keep, work = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([keep, self.branch(work)], dim=1))


class DownUnit(nn.Module):
    """Both branches see all channels and halve the resolution."""

    def __init__(self, cin, cout):
        super().__init__()
        mid = cout // 2
        self.left = nn.Sequential(
            conv_bn(cin, cin, 3, stride=2, groups=cin, relu=False),
            conv_bn(cin, mid, 1),
        )
        self.right = nn.Sequential(
            conv_bn(cin, mid, 1),
            conv_bn(mid, mid, 3, stride=2, groups=mid, relu=False),
            conv_bn(mid, mid, 1),
        )

    def forward(self, x):
        return channel_shuffle(torch.cat([self.left(x), self.right(x)], dim=1))


class ShuffleNetV2(nn.Module):
    def __init__(self, net_size=0.5, num_classes=10):
        super().__init__()
        widths, repeats = CONFIGS[net_size]
        self.stem = conv_bn(3, 24, 3)
        stages = []
        cin = 24
        for cout, n in zip(widths[:3], repeats):
            stages.append(DownUnit(cin, cout))
            stages += [BasicUnit(cout) for _ in range(n)]
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = conv_bn(cin, widths[3], 1)
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x):
        out = self.stages(self.stem(x))       # (N, 192, 4, 4)
        out = self.head(out)
        out = F.avg_pool2d(out, 4).flatten(1)
        return self.fc(out)
