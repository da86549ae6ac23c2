"""Small models for the grader's own tests (they stand in for student code)."""

from torch import nn


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4)
        )
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        x = self.features(x)
        return self.fc(x.view(x.size(0), -1))


class WrongShape(TinyCNN):
    def forward(self, x):
        return super().forward(x)[:, :7]


class Endless(TinyCNN):
    def forward(self, x):
        while True:
            x = x + 0


class NaNOut(TinyCNN):
    def forward(self, x):
        return super().forward(x) * float("nan")


def make_huge():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2_000_000), nn.Linear(2_000_000, 10))
