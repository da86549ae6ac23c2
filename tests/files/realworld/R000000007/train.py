import argparse

import torch
import torch.nn as nn
import torchvision
import torchvision.transforms as transforms

from models import PreActResNet18


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
    ])
    data = torchvision.datasets.CIFAR10("./data", train=True, download=True, transform=tf)
    loader = torch.utils.data.DataLoader(data, batch_size=128, shuffle=True, num_workers=4)
    net = PreActResNet18().to(device)
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(args.epochs):
        net.train()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            loss_fn(net(x), y).backward()
            opt.step()
        sched.step()
        print(f"epoch {epoch + 1} done")
    torch.save(net.state_dict(), "weights/preact18.pt")


if __name__ == "__main__":
    main()
