"""A small CIFAR-10 CNN: three conv3×3-BN-ReLU-maxpool blocks and one linear layer."""

from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))


class SimpleCNN(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(_block(3, 32), _block(32, 64), _block(64, 128))
        self.fc = nn.Linear(128 * 4 * 4, num_classes)

    def forward(self, x):  # (B, 3, 32, 32)
        return self.fc(self.features(x).flatten(1))  # (B, classes)
