"""Weights for train_throughput.py --resnet18-weights: its ResNet18, trained by the engine.

The whole CIFAR-10 training split, one-cycle SGD, crop and flip, so that evaluation is measured
on a model with the margins of real training rather than of a few steps.

    .venv/bin/python benchmarks/trained_resnet18.py OUT.pt [--epochs 5] [--data-dir PATH]

Checkpoints go next to OUT (``OUT.checkpoints/``), so a run that is stopped resumes where it
left off. On this project's 2-core CPU an epoch takes 10 to 30 minutes, depending on the load.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from train_throughput import CPU, DEFAULT_DATA, ResNet18, load_train_split

from grader.inside.engine import train
from grader.protocol import Recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where the state_dict goes")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    images, labels = load_train_split(args.data_dir)
    recipe = Recipe(schedule="onecycle", lr=0.1, epochs=args.epochs, batch_size=128, val_size=0)
    torch.manual_seed(0)
    model, started = ResNet18(), time.monotonic()
    checkpoints = args.out.with_name(args.out.name + ".checkpoints")
    train(model, images, labels, images[:0], labels[:0], recipe, CPU, checkpoints, print)
    torch.save(model.state_dict(), args.out)
    print(f"{args.out}: {args.epochs} epochs in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
