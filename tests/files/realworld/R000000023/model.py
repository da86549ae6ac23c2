import torch.nn as nn
from torchvision import models


def resnet18_cifar(num_classes=10):
    """torchvision's ResNet-18, adapted to 32x32 inputs."""
    net = models.resnet18(weights=None, num_classes=num_classes)
    # a 7x7 stride-2 stem plus max-pool would leave 8x8 maps after the stem: keep 32x32
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net
