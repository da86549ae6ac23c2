# Fine-tuning an ImageNet ResNet-18 on CIFAR-10 (transfer learning homework, part 2)
import torch
import torch.nn as nn
import torchvision.models as models


def get_model():
    model = models.resnet18(weights=models.ResNet18_Weights.DEFAULT)
    for p in model.parameters():
        p.requires_grad = False  # freeze the backbone
    model.fc = nn.Linear(model.fc.in_features, 10)
    return model


if __name__ == "__main__":
    model = get_model()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print("trainable parameters:", trainable)
