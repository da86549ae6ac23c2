import torch.nn as nn


def conv_bn(in_ch, out_ch):
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class Net(nn.Module):
    # wider channels (64-128-256-256) and a hidden fully connected layer
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 64),
            nn.MaxPool2d(2),        # 64 x 16 x 16
            conv_bn(64, 128),
            nn.MaxPool2d(2),        # 128 x 8 x 8
            conv_bn(128, 256),
            nn.MaxPool2d(2),        # 256 x 4 x 4
            conv_bn(256, 256),
            nn.MaxPool2d(2),        # 256 x 2 x 2
        )
        self.classifier = nn.Sequential(
            nn.Linear(256 * 2 * 2, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(256, 10),
        )

    def forward(self, x):
        out = self.features(x)
        out = out.view(out.size(0), -1)
        return self.classifier(out)
