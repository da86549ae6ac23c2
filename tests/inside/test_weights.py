"""grader/inside/weights.py: the ways students save weights, read back into the model the
manifest names, with every tensor in its place, or refused with a message naming the fix."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from grader.inside.channel import StageFailure
from grader.inside.weights import load_state_dict


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


class Wrapper(nn.Module):
    """A training module around the network, as Lightning code and course scaffolds write it."""

    def __init__(self) -> None:
        super().__init__()
        self.model = Net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def trained() -> Net:
    """A Net whose every tensor differs from a fresh one's, BN statistics included."""
    torch.manual_seed(1)
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(4, 3, 8, 8)).sum().backward()
    opt.step()
    return net


def optimizer_state(net: nn.Module) -> dict[str, Any]:
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    return opt.state_dict()


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def compiled_state(net: Net) -> dict[str, torch.Tensor]:
    return torch.compile(net).state_dict()  # compiling is lazy: no graph is built here


def swa_state(net: Net) -> dict[str, torch.Tensor]:
    averaged = AveragedModel(net)
    averaged.update_parameters(net)
    return averaged.state_dict()


SAVED: dict[str, Callable[[Net], Any]] = {
    "state_dict": lambda n: n.state_dict(),
    "pytorch-cifar checkpoint": lambda n: {"net": n.state_dict(), "acc": 93.1, "epoch": 199},
    "any key, optimizer first": lambda n: {
        "epoch": 30,
        "optimizer_state": optimizer_state(trained()),
        "model_state": n.state_dict(),
        "history": {"train_loss": [1.2, 0.9]},
    },
    "checkpoint with NumPy values": lambda n: {
        "model": n.state_dict(),
        "best_acc": np.float64(93.1),
        "lr": np.float32(0.05),
        "history": np.array([[1.9, 31.2], [1.4, 48.8]]),
        "labels_seen": np.arange(10),
    },
    "nested two levels": lambda n: {"checkpoint": {"weights": {"network": n.state_dict()}}},
    "DataParallel": lambda n: prefixed(n.state_dict(), "module."),
    "torch.compile": compiled_state,
    "torch.compile in DataParallel": lambda n: prefixed(compiled_state(n), "module."),
    "AveragedModel (SWA)": swa_state,
    "Lightning-style checkpoint": lambda n: {
        "epoch": 3,
        "global_step": 1170,
        "state_dict": prefixed(n.state_dict(), "model."),
        "optimizer_states": [optimizer_state(trained())],
    },
    "profiled by an old thop": lambda n: {
        **n.state_dict(),
        **{
            f"{name}{'.' if name else ''}{count}": torch.zeros(1)
            for name, _ in n.named_modules()
            for count in ("total_ops", "total_params")
        },
    },
    "half precision": lambda n: {
        k: v.half() if v.is_floating_point() else v for k, v in n.state_dict().items()
    },
}


@pytest.mark.parametrize("how", list(SAVED))
def test_every_usual_way_of_saving_loads_every_tensor(tmp_path: Path, how: str) -> None:
    source = trained()
    torch.save(SAVED[how](source), tmp_path / "model.pt")
    torch.manual_seed(2)
    model = Net()
    load_state_dict(model, tmp_path / "model.pt", "weights/model.pt")
    half = "half" in how
    for key, value in source.state_dict().items():
        want = value.half().to(value.dtype) if half and value.is_floating_point() else value
        assert torch.equal(model.state_dict()[key], want), key


def test_the_manifest_naming_the_wrapper_takes_the_inner_network_s_weights(tmp_path: Path) -> None:
    source = trained()
    torch.save(source.state_dict(), tmp_path / "model.pt")
    model = Wrapper()
    load_state_dict(model, tmp_path / "model.pt", "weights/model.pt")
    assert torch.equal(model.model.conv.weight, source.conv.weight)


def test_the_wrapper_key_listed_first_wins_over_others_that_also_match(tmp_path: Path) -> None:
    model_weights, ema_weights = trained(), Net()
    torch.save({"ema": ema_weights.state_dict(), "model": model_weights.state_dict()}, tmp_path / "m.pt")
    model = Net()
    load_state_dict(model, tmp_path / "m.pt", "m.pt")
    assert torch.equal(model.fc.weight, model_weights.fc.weight)


class Other(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.head = nn.Linear(16, 10)


@pytest.mark.parametrize(
    ("saved", "words"),
    [
        (
            lambda: Other().state_dict(),
            ["does not match the model", "missing: bn.weight", "unexpected: head"],
        ),
        (
            lambda: {
                "epoch": 3,
                "optimizer": optimizer_state(trained()),
                "model_state": Other().state_dict(),
            },
            ["does not match the model", "conv.weight [16, 3, 3, 3] vs model [8, 3, 3, 3]"],
        ),
        (lambda: {"epoch": 3, "acc": 91.0}, ["values are not all tensors", "keys: epoch, acc"]),
        (lambda: [1, 2, 3], ["holds a list", "torch.save(model.state_dict(), path)"]),
        (lambda: {torch.arange(3): {"a": 1}, "epoch": 3}, ["values are not all tensors"]),
        (lambda: prefixed(Net().state_dict(), "encoder.backbone."), ["does not match the model"]),
    ],
)
def test_what_does_not_fit_the_model_is_refused_with_the_fix(
    tmp_path: Path, saved: Callable[[], Any], words: list[str]
) -> None:
    torch.save(saved(), tmp_path / "model.pt")
    model = Net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(StageFailure) as caught:
        load_state_dict(model, tmp_path / "model.pt", "weights/model.pt")
    assert caught.value.stage == "weights"
    assert "weights/model.pt" in caught.value.message and "\n" not in caught.value.message
    for fragment in words:
        assert fragment in caught.value.message
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "partly loaded"


class Payload:
    """Anything that is not a plain value: unpickling it would run its module's code."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("this must never run",))


class SystemPayload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo this must never run",))


class Tripwire(Net):
    """A network whose unpickling would run its own code: a plain pickle.load calls
    ``__setstate__``."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        print("this must never run")
        super().__setstate__(state)


def same_tensors(model: nn.Module, source: nn.Module) -> bool:
    want = source.state_dict()
    return model.state_dict().keys() == want.keys() and all(
        torch.equal(v, want[k]) for k, v in model.state_dict().items()
    )


def whole(net: Net) -> Tripwire:
    model = Tripwire()
    model.load_state_dict(net.state_dict())
    model.register_buffer("scale", torch.ones(1), persistent=False)  # not in a state_dict
    return model


WHOLE: dict[str, Callable[[Net], Any]] = {
    "torch.save(model)": whole,
    "DataParallel": lambda n: nn.DataParallel(whole(n)),
    "checkpoint of objects": lambda n: {
        "epoch": 30,
        "model": whole(n),
        "optimizer": torch.optim.SGD(n.parameters(), lr=0.1),
        "criterion": nn.CrossEntropyLoss(),
    },
}


@pytest.mark.parametrize("how", list(WHOLE))
def test_a_whole_pickled_model_gives_its_weights_without_running_its_code(
    tmp_path: Path, how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.save(WHOLE[how](trained()), tmp_path / "model.pt")
    model = Net()
    note = load_state_dict(model, tmp_path / "model.pt", "weights/model.pt")
    assert same_tensors(model, trained())
    assert note is not None and "weights/model.pt holds a whole pickled model (" in note
    assert "save model.state_dict() instead" in note and "\n" not in note
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra",
    [
        {"note": Payload()},
        {"args": argparse.Namespace(lr=0.1, epochs=30)},
    ],
    ids=["plain", "argparse"],
)
def test_objects_beside_the_weights_are_kept_as_data_and_never_run(
    tmp_path: Path, extra: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    torch.save({"model": trained().state_dict(), **extra}, tmp_path / "model.pt")
    model = Net()
    note = load_state_dict(model, tmp_path / "model.pt", "weights/model.pt")
    assert same_tensors(model, trained())
    assert note is not None and "weights/model.pt holds Python objects (" in note
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "saved",
    [
        lambda: {"model": trained().state_dict(), "x": SystemPayload()},  # os is blocked outright
        lambda: {"args": argparse.Namespace(lr=0.1), "note": Payload()},  # no weights at all
        lambda: {"model": trained().state_dict(), "history": np.array([Payload()], dtype=object)},
    ],
    ids=["os.system", "no tensors", "NumPy object array"],
)
def test_a_pickle_that_yields_no_weights_or_needs_more_than_data_is_refused(
    tmp_path: Path, saved: Callable[[], Any], capsys: pytest.CaptureFixture[str]
) -> None:
    torch.save(saved(), tmp_path / "model.pt")
    model = Net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(StageFailure) as caught:
        load_state_dict(model, tmp_path / "model.pt", "weights/model.pt")
    assert "holds a whole pickled model or other Python objects" in caught.value.message
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert "this must never run" not in capsys.readouterr().out


def test_a_missing_file_is_reported_with_the_weight_files_the_submission_holds(tmp_path: Path) -> None:
    submission = tmp_path / "B093040051"
    (submission / "checkpoints").mkdir(parents=True)
    torch.save(trained().state_dict(), submission / "checkpoints" / "best.pth")
    (submission / "model_epoch30.PT").write_bytes(b"")
    (submission / "train.py").write_text("print('hi')\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "other_student.pt").write_bytes(b"")
    (submission / "linked").symlink_to(elsewhere)  # not followed
    with pytest.raises(StageFailure) as caught:
        load_state_dict(Net(), submission / "weights" / "model.pt", "weights/model.pt", submission)
    assert caught.value.message == (
        "weights/model.pt not found in the submission, which holds checkpoints/best.pth, "
        "model_epoch30.PT: name the right one as the task's weights in submission.yaml"
    )
    (submission / "checkpoints" / "best.pth").unlink()
    (submission / "model_epoch30.PT").unlink()
    with pytest.raises(StageFailure) as caught:
        load_state_dict(Net(), submission / "weights" / "model.pt", "weights/model.pt", submission)
    assert "nor any other weight file" in caught.value.message
    assert "torch.save(model.state_dict(), path)" in caught.value.message


def test_modules_nested_deeper_than_python_recurses_are_refused_not_crashed(tmp_path: Path) -> None:
    deep: nn.Module = nn.Linear(2, 2)
    for _ in range(600):
        deep = nn.Sequential(deep)
    limit = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(20_000)  # pickle recurses once per level to write it
        torch.save(deep, tmp_path / "model.pt")
        sys.setrecursionlimit(400)
        with pytest.raises(StageFailure) as caught:
            load_state_dict(nn.Linear(2, 2), tmp_path / "model.pt", "weights/model.pt")
    finally:
        sys.setrecursionlimit(limit)
    assert "holds a whole pickled model or other Python objects" in caught.value.message


def test_a_git_lfs_pointer_is_told_apart_from_the_weights(tmp_path: Path) -> None:
    pointer = (
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        "size 44784347\n"
    )
    (tmp_path / "model.pt").write_text(pointer)
    with pytest.raises(StageFailure) as caught:
        load_state_dict(Net(), tmp_path / "model.pt", "weights/model.pt")
    assert caught.value.message.startswith("weights/model.pt is a Git LFS pointer, not the weights: ")
    assert "git lfs pull" in caught.value.message


def _npz(path: Path) -> None:
    with path.open("wb") as f:  # a file object: given a name, savez would add .npz to it
        np.savez(f, **{k: v.numpy() for k, v in trained().state_dict().items()})


def _npy(path: Path) -> None:
    with path.open("wb") as f:
        np.save(f, trained().conv.weight.detach().numpy())


def _cut_short(path: Path) -> None:
    torch.save(trained().state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# How a file that is no PyTorch weights comes to be handed in, and the words its message starts with.
FOREIGN: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty": (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    "web page": (
        lambda p: p.write_text(
            "\n<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>"
        ),
        "is a web page, not the weights",
    ),
    "Keras HDF5": (
        lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(600)),
        "is an HDF5 file (Keras or h5py",
    ),
    "NumPy .npz": (_npz, "is a NumPy archive (.npz), not PyTorch weights"),
    "NumPy .npy": (_npy, "is a NumPy array (.npy), not PyTorch weights"),
    "cut short": (_cut_short, "is cut short or damaged"),
}


@pytest.mark.parametrize("how", list(FOREIGN))
def test_a_file_that_holds_no_pytorch_weights_is_named_for_what_it_is(tmp_path: Path, how: str) -> None:
    write, words = FOREIGN[how]
    write(tmp_path / "model.pt")
    with pytest.raises(StageFailure) as caught:
        load_state_dict(Net(), tmp_path / "model.pt", "weights/model.pt")
    assert caught.value.message.startswith(f"weights/model.pt {words}"), caught.value.message
    assert "\n" not in caught.value.message
