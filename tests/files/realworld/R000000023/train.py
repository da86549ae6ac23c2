import os
import time

import torch
import torch.nn as nn
import torchvision
import torchvision.transforms as T

from model import resnet18_cifar

EPOCHS = 40
BATCH = 256
device = "cuda" if torch.cuda.is_available() else "cpu"

mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
test_tf = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
train_set = torchvision.datasets.CIFAR10("./data", train=True, download=True, transform=train_tf)
test_set = torchvision.datasets.CIFAR10("./data", train=False, download=True, transform=test_tf)
train_loader = torch.utils.data.DataLoader(train_set, BATCH, shuffle=True, num_workers=4, pin_memory=True)
test_loader = torch.utils.data.DataLoader(test_set, 512, num_workers=4)


def evaluate(model):
    model.eval()
    correct = 0
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
        for x, y in test_loader:
            correct += (model(x.to(device)).argmax(1) == y.to(device)).sum().item()
    return 100.0 * correct / len(test_set)


def main():
    model = resnet18_cifar().to(device).to(memory_format=torch.channels_last)
    model = torch.compile(model)  # ~1.6x faster epochs on the lab's A100
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, epochs=EPOCHS, steps_per_epoch=len(train_loader))
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    best_acc = 0.0
    os.makedirs("checkpoints", exist_ok=True)
    for epoch in range(EPOCHS):
        model.train()
        start = time.time()
        for x, y in train_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device, dtype=torch.bfloat16):
                loss = criterion(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        acc = evaluate(model)
        print(f"epoch {epoch + 1}/{EPOCHS}  loss {loss.item():.3f}  test acc {acc:.2f}%  {time.time() - start:.0f}s")
        if acc > best_acc:
            best_acc = acc
            torch.save(
                {
                    "epoch": epoch + 1,
                    "model_state": model.state_dict(),
                    "optimizer_state": optimizer.state_dict(),
                    "scheduler_state": scheduler.state_dict(),
                    "best_acc": best_acc,
                },
                "checkpoints/best.pt",
            )


if __name__ == "__main__":
    main()
