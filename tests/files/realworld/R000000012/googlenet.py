"""GoogLeNet (Inception v1) for 32x32 images.

Every channel count is a quarter of the paper's, so the whole net has ~0.4M parameters.
The 5x5 branch is two 3x3 convolutions, as in Inception v2.
"""
import numpy as np
import torch
import torch.nn as nn
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix


def conv_bn_relu(cin, cout, k):
    return [nn.Conv2d(cin, cout, kernel_size=k, padding=k // 2), nn.BatchNorm2d(cout), nn.ReLU(True)]


class Inception(nn.Module):
    def __init__(self, in_planes, n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_planes):
        super(Inception, self).__init__()
        self.b1 = nn.Sequential(*conv_bn_relu(in_planes, n1x1, 1))
        self.b2 = nn.Sequential(*conv_bn_relu(in_planes, n3x3red, 1), *conv_bn_relu(n3x3red, n3x3, 3))
        self.b3 = nn.Sequential(
            *conv_bn_relu(in_planes, n5x5red, 1),
            *conv_bn_relu(n5x5red, n5x5, 3),
            *conv_bn_relu(n5x5, n5x5, 3),
        )
        self.b4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), *conv_bn_relu(in_planes, pool_planes, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class GoogLeNet(nn.Module):
    def __init__(self, num_classes=10):
        super(GoogLeNet, self).__init__()
        self.pre_layers = nn.Sequential(*conv_bn_relu(3, 48, 3))

        self.a3 = Inception(48, 16, 24, 32, 4, 8, 8)
        self.b3 = Inception(64, 32, 32, 48, 8, 24, 16)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        self.a4 = Inception(120, 48, 24, 52, 4, 12, 16)
        self.b4 = Inception(128, 40, 28, 56, 6, 16, 16)
        self.c4 = Inception(128, 32, 32, 64, 6, 16, 16)
        self.d4 = Inception(128, 28, 36, 72, 8, 16, 16)
        self.e4 = Inception(132, 64, 40, 80, 8, 32, 32)

        self.a5 = Inception(208, 64, 40, 80, 8, 32, 32)
        self.b5 = Inception(208, 96, 48, 96, 12, 32, 32)

        self.avgpool = nn.AvgPool2d(8, stride=1)
        self.linear = nn.Linear(256, num_classes)

    def forward(self, x):
        out = self.pre_layers(x)
        out = self.b3(self.a3(out))
        out = self.maxpool(out)
        out = self.e4(self.d4(self.c4(self.b4(self.a4(out)))))
        out = self.maxpool(out)
        out = self.b5(self.a5(out))
        out = self.avgpool(out)
        out = out.view(out.size(0), -1)
        return self.linear(out)


CLASSES = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def plot_confusion(model, loader, device="cpu"):
    model.eval()
    truth, preds = [], []
    with torch.no_grad():
        for x, y in loader:
            preds.append(model(x.to(device)).argmax(1).cpu().numpy())
            truth.append(y.numpy())
    cm = confusion_matrix(np.concatenate(truth), np.concatenate(preds))
    ConfusionMatrixDisplay(cm, display_labels=CLASSES).plot(xticks_rotation=45)
    return cm
