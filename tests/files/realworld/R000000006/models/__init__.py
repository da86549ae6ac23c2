from .resnet import ResNet, ResNet18, ResNet34
