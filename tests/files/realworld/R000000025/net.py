import torch.nn as nn


class Net(nn.Module):
    """Two conv blocks; the classifier's input size is left to nn.LazyLinear."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.LazyLinear(128),  # no need to work out 64 * 8 * 8 by hand
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.LazyLinear(num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
