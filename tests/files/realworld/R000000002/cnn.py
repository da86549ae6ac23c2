"""Lab 2 - a small CNN for CIFAR-10, trained with Adam.

Run:  python cnn.py   (downloads CIFAR-10 into ./data the first time)
"""
import os
import time

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.optim as optim
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

# ---------------- hyper-parameters ----------------
EPOCHS = 20
BATCH_SIZE = 128
LR = 1e-3
NUM_CLASSES = 10
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
FLAT = 64 * 8 * 8

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print("using", device)

train_tf = transforms.Compose([
    transforms.RandomCrop(32, padding=4),
    transforms.RandomHorizontalFlip(),
    transforms.ToTensor(),
    transforms.Normalize(MEAN, STD),
])
test_tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])

train_set = datasets.CIFAR10(root="./data", train=True, download=True, transform=train_tf)
test_set = datasets.CIFAR10(root="./data", train=False, download=True, transform=test_tf)
train_loader = DataLoader(train_set, batch_size=BATCH_SIZE, shuffle=True, num_workers=2)
test_loader = DataLoader(test_set, batch_size=256, shuffle=False, num_workers=2)


class SimpleCNN(nn.Module):
    def __init__(self):
        super(SimpleCNN, self).__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, kernel_size=3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, kernel_size=3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),            # 32x16x16
            nn.Dropout(0.25),

            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, kernel_size=3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),            # 64x8x8
            nn.Dropout(0.25),
        )
        self.fc1 = nn.Linear(FLAT, 128)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(128, NUM_CLASSES)

    def forward(self, x):
        x = self.features(x)
        x = x.view(x.size(0), -1)
        x = self.drop(torch.relu(self.fc1(x)))
        return self.fc2(x)


model = SimpleCNN().to(device)
criterion = nn.CrossEntropyLoss()
optimizer = optim.Adam(model.parameters(), lr=LR)

history = {"train_loss": [], "test_acc": []}
for epoch in range(EPOCHS):
    t0 = time.time()
    model.train()
    running = 0.0
    for x, y in train_loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        running += loss.item() * x.size(0)
    history["train_loss"].append(running / len(train_set))

    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in test_loader:
            x, y = x.to(device), y.to(device)
            correct += (model(x).argmax(1) == y).sum().item()
    history["test_acc"].append(100.0 * correct / len(test_set))
    print(f"epoch {epoch + 1:2d}/{EPOCHS}  loss {history['train_loss'][-1]:.4f}  "
          f"test acc {history['test_acc'][-1]:.2f}%  ({time.time() - t0:.0f}s)")

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
ax1.plot(history["train_loss"])
ax1.set_title("training loss")
ax2.plot(history["test_acc"])
ax2.set_title("test accuracy (%)")
plt.tight_layout()
plt.savefig("curves.png")

os.makedirs("weights", exist_ok=True)
torch.save(model.state_dict(), "weights/simple_cnn.pt")
