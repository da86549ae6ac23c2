"""Grows resident memory without end in forward: 64 MiB more, written, every step."""

from common import TinyCNN

hoard = []


class Net(TinyCNN):
    def forward(self, x):
        while True:
            hoard.append(b"x" * 2**26)
