# HW1: first CIFAR-10 classifier
# based on the PyTorch CIFAR-10 tutorial, with wider conv layers
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
import torchvision
import torchvision.transforms as T
import matplotlib.pyplot as plt
import numpy as np

BATCH = 4
EPOCHS = 4
LABELS = ('plane', 'car', 'bird', 'cat', 'deer',
          'dog', 'frog', 'horse', 'ship', 'truck')

to_input = T.Compose([T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])

train_data = torchvision.datasets.CIFAR10('./data', train=True, download=True, transform=to_input)
test_data = torchvision.datasets.CIFAR10('./data', train=False, download=True, transform=to_input)
train_loader = torch.utils.data.DataLoader(train_data, batch_size=BATCH, shuffle=True, num_workers=2)
test_loader = torch.utils.data.DataLoader(test_data, batch_size=BATCH, shuffle=False, num_workers=2)


def show_batch(grid):
    grid = grid * 0.5 + 0.5   # undo the normalization for display
    plt.imshow(np.transpose(grid.numpy(), (1, 2, 0)))
    plt.axis('off')
    plt.show()


sample_images, sample_labels = next(iter(train_loader))
show_batch(torchvision.utils.make_grid(sample_images))
print('labels:', ', '.join(LABELS[int(k)] for k in sample_labels))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        # the tutorial has 6 and 16 filters; 16 and 32 trained better for me
        self.conv1 = nn.Conv2d(3, 16, 5)
        self.conv2 = nn.Conv2d(16, 32, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(32 * 5 * 5, 256)
        self.fc2 = nn.Linear(256, 128)
        self.fc3 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))   # -> 16 x 14 x 14
        x = self.pool(F.relu(self.conv2(x)))   # -> 32 x 5 x 5
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


net = Net()
loss_fn = nn.CrossEntropyLoss()
opt = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)

losses = []
for epoch in range(EPOCHS):
    total_loss = 0.0
    for step, (images, targets) in enumerate(train_loader):
        opt.zero_grad()
        loss = loss_fn(net(images), targets)
        loss.backward()
        opt.step()
        total_loss += loss.item()
        if (step + 1) % 2500 == 0:
            print('epoch %d step %d  loss %.3f' % (epoch + 1, step + 1, total_loss / 2500))
            losses.append(total_loss / 2500)
            total_loss = 0.0

print('done training')
plt.plot(losses)
plt.xlabel('x2500 steps')
plt.ylabel('loss')
plt.savefig('loss.png')

torch.save(net.state_dict(), './cifar_net.pth')

hits = 0
seen = 0
with torch.no_grad():
    for images, targets in test_loader:
        guess = net(images).argmax(dim=1)
        seen += targets.size(0)
        hits += (guess == targets).sum().item()
print('test accuracy: %d %%' % (100 * hits // seen))
