from .preact_resnet import PreActResNet18
