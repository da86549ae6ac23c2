import torch.nn as nn


class SimpleCNN(nn.Module):
    """Task 1: three conv blocks (32 -> 64 -> 128 channels) and one linear classifier."""

    def __init__(self, num_classes=10):
        super(SimpleCNN, self).__init__()
        # block 1: 3x32x32 -> 32x16x16
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        # block 2: 32x16x16 -> 64x8x8
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        # block 3: 64x8x8 -> 128x4x4
        self.conv3 = nn.Conv2d(64, 128, kernel_size=3, padding=1)
        self.bn3 = nn.BatchNorm2d(128)

        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(128 * 4 * 4, num_classes)

    def forward(self, x):
        out = self.pool(self.relu(self.bn1(self.conv1(x))))
        out = self.pool(self.relu(self.bn2(self.conv2(out))))
        out = self.pool(self.relu(self.bn3(self.conv3(out))))
        out = out.view(out.size(0), -1)
        out = self.fc(out)
        return out
