"""grader/claims.py on the lines students print: which number is their test accuracy."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from grader import claims
from grader.claims import MAX_LINE_CHARS, Claim, last_per_task, parse_accuracy

# What students print after testing, as they print it, with the claim the grader reads.
READ = [
    # the course's own form, with and without a task number
    ("Task 1 Test Accuracy: 80.76%", 80.76),
    ("Test Accuracy : 88.63%", 88.63),
    ("Task 2 without data_augmentation Test Accuracy: 84.11%", 84.11),
    ("Test accuracy (Task 2): 86.69%", 86.69),
    ("Test accuracy: 91.2 %", 91.2),
    ("Test Acc: 88.63%", 88.63),
    ("Accuracy on test set: 88.63 %", 88.63),
    ("Accuracy: 88.63% on the test set", 88.63),
    ("Accuracy of the model: 88.63 (test)", 88.63),
    ("Final test accuracy = 88.6", 88.6),
    ("Final test accuracy is 87 %", 87.0),
    ("The test accuracy is 23.07%", 23.07),
    ("Test accuracy after 30 epochs: 88%", 88.0),
    ("Test accuracy at epoch 30: 88%", 88.0),
    ("Test accuracy: 88.63 (best 89.10 at epoch 45)", 88.63),
    ("\x1b[1mTest accuracy\x1b[0m: 88.63%", 88.63),  # coloured output
    # fractions: a number up to 1 without "%"
    ("Test accuracy: 0.8863", 88.63),
    ("test acc = 0.8076", 80.76),
    ("test_acc=0.886", 88.6),
    ("TestAcc=0.9", 90.0),
    ("Test accuracy: 1.0", 100.0),
    ("Test accuracy: 0.7612 (76.12%)", 76.12),
    ("test accuracy (%): 1", 1.0),  # the unit says percent
    # Keras, PyTorch Lightning, a printed dict
    ("test_accuracy: 0.8863", 88.63),
    ("│         test_acc          │    0.8863000273704529     │", 88.63),
    ("{'test_loss': 0.41, 'test_acc': 0.874}", 87.4),
    # PyTorch's examples and tutorials
    ("Test set: Average loss: 0.4209, Accuracy: 8645/10000 (86%)", 86.45),
    ("Accuracy of the network on the 10000 test images: 54 %", 54.0),
    ("Accuracy on the test set (10,000 images): 88.63%", 88.63),
    ("Test Accuracy (Overall): 76% (7674/10000)", 76.74),
    # epoch logs: the test accuracy among the others
    ("Epoch 10 | train loss 0.41 | test_acc 0.655", 65.5),
    ("Epoch 1/50, Train Loss: 1.6928, Train Acc: 0.4444, Test Loss: 1.4821, Test Acc: 0.5549", 55.49),
    ("val acc 80.1 test acc 79.5", 79.5),
    ("test acc 79.5 val acc 80.1", 79.5),
    ("Epoch [10/10], phase: test, samples: 10000, Loss: 0.0032, Top-1 Accuracy: 94.22%", 94.22),
    ("phase: test, Top-1 Accuracy: 94.22%, Top-3 Accuracy: 99.08%", 94.22),
    # tqdm: the accuracy in the postfix, not the progress
    ("Test: 100%|██████████| 40/40 [00:03<00:00, 12.1it/s, acc=0.874, loss=0.41]", 87.4),
    ("Testing: 100%|██████████| 79/79 [00:02<00:00, 35.20it/s, test_acc=88.1]", 88.1),
    # top-1 and Acc@1
    ("Test: * Acc@1 76.130 Acc@5 92.862", 76.13),
    ("Test Acc@1: 76.13", 76.13),
    ("test_acc1: 0.7613", 76.13),
    ("Test Top-1: 76.13%, Top-5: 92.86%", 76.13),
    ("Top-1 test accuracy: 76.1%", 76.1),
    # the ImageNet example's meters: "value (running average)", the average wins
    ("Test: [39/40]\tLoss 1.0e+00 (9.8e-01)\tAcc@1  78.12 ( 76.13)\tAcc@5  96.88 ( 92.86)", 76.13),
    # Chinese labels
    ("測試準確率: 86.28%", 86.28),
    ("測試準確率：86.28%", 86.28),
    ("测试集准确率：0.8628", 86.28),
    ("任務1 測試準確率：80.76%", 80.76),
]

NOT_READ = [
    # other splits
    ("Train accuracy: 95%", "a training accuracy"),
    ("Epoch 3: train acc 0.91, val acc 0.85", "training and validation"),
    ("Epoch 1/50, Train Loss: 1.6928, Train Acc: 0.4444, Val Loss: 1.4821, Val Acc: 0.5549", "no test"),
    ("Epoch [10/10], phase: val, samples: 6000, Loss: 0.0038, Top-1 Accuracy: 93.55%", "validation"),
    ("訓練準確率：約89%", "a training accuracy in Chinese"),
    ("驗證準確率：約85%", "a validation accuracy in Chinese"),
    # no split named: printed after training or validation as often as after testing
    ("313/313 [==============================] - 2s 5ms/step - loss: 0.3421 - accuracy: 0.8863", "Keras"),
    (" * Acc@1 76.130 Acc@5 92.862", "the ImageNet example's summary"),
    ("Evaluating: 100%|██████████| 40/40 [00:03<00:00, acc=0.874]", "an evaluation bar"),
    ("Accuracy: 88.6%", "no split"),
    ("Accuracy: 95.2% on the training set", "a training accuracy"),
    ("Test loss 0.41, accuracy 95.2% on the training set", "a training accuracy"),
    # per class, top-k, lists
    ("Test Accuracy of  cat: 45% (451/1000)", "one class"),
    ("Accuracy for class: plane is 56.8 %", "one class, no split"),
    ("Test cat_acc=0.45", "one class"),
    ("Test top-5 accuracy: 92.86%", "top-5"),
    ("Top-5 test accuracy: 92.86%", "top-5"),
    ("Test Acc@5: 92.86", "top-5"),
    ("Top-1 Accuracies: ['64.37%', '82.40%'] phase: test", "a list"),
    # other numbers
    ("Epoch 10/100", "an epoch counter"),
    ("loss: 0.45", "a loss"),
    ("test loss: 0.52", "a test loss"),
    ("lr: 0.001", "a learning rate"),
    ("Test error: 11.4%", "an error rate"),
    ("Test accuracy: 180", "over 100"),
    ("Test accuracy: 10000/7674", "a count over its total"),
    ("Variations\tLearning Rate\tScheduler\tTest Accuracy(%)", "a table's header"),
    ("", "nothing"),
]


@pytest.mark.parametrize(("line", "percent"), READ)
def test_printed_test_accuracies_are_read(line: str, percent: float) -> None:
    assert parse_accuracy(line) == percent


@pytest.mark.parametrize(("line", "why"), NOT_READ)
def test_lines_that_are_no_test_accuracy_give_none(line: str, why: str) -> None:
    assert parse_accuracy(line) is None, why


def test_only_the_first_characters_of_a_line_are_read() -> None:
    claim = "Test accuracy: 88.63%"
    assert parse_accuracy(claim + " " * 20_000) == 88.63
    assert parse_accuracy(" " * (MAX_LINE_CHARS - len(claim)) + claim) == 88.63
    assert parse_accuracy(" " * (MAX_LINE_CHARS - len(claim) + 2) + claim) == 88.6  # "3%" is cut off
    assert parse_accuracy(" " * MAX_LINE_CHARS + claim) is None


# --- the last claim per task ------------------------------------------------------------

EPOCHS = [
    (2, "Epoch 1/3, Train Acc: 0.4444, Test Acc: 0.5549"),
    (2, "Epoch 2/3, Train Acc: 0.5948, Test Acc: 0.6431"),
    (2, "Epoch 3/3, Train Acc: 0.6568, Test Acc: 0.6909"),
    (2, "Epoch 3/3, Train Acc: 0.6568, Val Acc: 0.7000"),
    (3, "Saved weights/task1.pt"),
]


def test_the_last_test_accuracy_of_an_epoch_log_is_the_claim() -> None:
    assert last_per_task(EPOCHS, {"task1": 1}) == {
        "task1": Claim(69.09, 2, "Epoch 3/3, Train Acc: 0.6568, Test Acc: 0.6909")
    }


def test_a_later_line_that_gives_nothing_does_not_hide_the_claim() -> None:
    later = [(4, "Test acc: see the table below")] * (claims._RECENT_LINES - 1)
    assert last_per_task([*EPOCHS, *later], {"task1": 1})["task1"].accuracy == 69.09


def test_a_claim_buried_under_too_many_later_test_lines_is_not_read() -> None:
    # Bounded work: lines naming a test accuracy are read back from the last one only so far.
    later = [(4, "Test acc: see the table below")] * claims._RECENT_LINES
    assert last_per_task([*EPOCHS, *later], {"task1": 1}) == {}


def test_lines_go_to_the_task_they_name() -> None:
    lines = [
        (1, "Task 1 Test Accuracy: 70.00%"),
        (1, "Task 2 test acc = 0.81"),
        (2, "Task-1 test accuracy: 75.5%"),
        (2, "Test accuracy: 50.00%"),  # names no task: two tasks share these lines
        (3, "subtask 2 test accuracy: 12%"),  # "subtask" is no task
    ]
    found = last_per_task(lines, {"task1": 1, "task2": 2})
    assert {task: (claim.accuracy, claim.cell) for task, claim in found.items()} == {
        "task1": (75.5, 2),
        "task2": (81.0, 1),
    }
    by_place = last_per_task(lines, {"cnn": 1, "resnet": 2})
    assert {task: claim.accuracy for task, claim in by_place.items()} == {"cnn": 75.5, "resnet": 81.0}


def test_the_line_shown_is_stripped_and_cut_short() -> None:
    line = "   Test accuracy: 88.63%" + " blah" * 100
    (claim,) = last_per_task([(1, line)], {"t": 1}).values()
    assert claim.line.startswith("Test accuracy: 88.63% blah") and len(claim.line) == 160


# --- adversarial lines --------------------------------------------------------------------
# Each is read in linear time: regexes that backtracked took hours of host CPU on a line of
# "test acc" and 20,000 spaces. The bound is generous: this checks against catastrophic
# backtracking, it is no benchmark.

ADVERSARIAL = {
    "spaces": "test acc" + " " * 20_000,
    "spaces before a value": "test acc" + " " * 20_000 + "1",
    "repeated labels": "test acc " * 50_000,
    "repeated labels and colons": "test acc: " * 50_000,
    "repeated top-1": "test top-1 " * 20_000,
    "long filler": ("test accuracy" + " the" * 15 + " ") * 5_000,
    "counts": "test acc " + "1/" * 50_000,
    "digits without end": "test acc " + "9" * 100_000,
    "decimals without end": "test acc 0." + "9" * 100_000,
    "thousands without end": "test acc 1" + ",000" * 30_000,
    "parentheses": "test acc 1 " + "(" * 50_000,
    "a colour code without end": "\x1b[" + "1;" * 50_000 + "test acc 0.5",
    "task and spaces": "task" + " " * 100_000 + "test acc 0.5",
    "repeated tasks": "task " * 50_000 + "test acc 0.5",
    "Chinese": "測試準確率" * 20_000,
    "bars": "Test: " + "█" * 100_000 + " acc=0.5",
}


def quick(read: Callable[[], object]) -> None:
    start = time.perf_counter()
    read()
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("line", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_adversarial_lines_are_read_quickly(line: str) -> None:
    quick(lambda: parse_accuracy(line))
    quick(lambda: last_per_task([(1, line)] * 100, {"task1": 1, "task2": 2}))


@pytest.mark.parametrize("line", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_adversarial_lines_are_read_quickly_uncut(line: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Linear by construction, not only by cutting lines short.
    monkeypatch.setattr(claims, "MAX_LINE_CHARS", 10**9)
    quick(lambda: parse_accuracy(line))
    quick(lambda: last_per_task([(1, line)], {"task1": 1, "task2": 2}))


def test_the_adversarial_lines_that_hold_a_claim_give_it() -> None:
    assert parse_accuracy(ADVERSARIAL["decimals without end"]) == pytest.approx(100.0)
    assert parse_accuracy(ADVERSARIAL["counts"]) == 100.0  # 1/1
    assert parse_accuracy(ADVERSARIAL["spaces before a value"]) is None  # the value is cut off


def test_any_line_gives_a_percentage_or_none() -> None:
    pieces = ["test", "acc", "Accuracy", "top-1", "@", "0123456789", ".", ",", "/", "%", "％", ":", "："]
    pieces += [
        "(",
        ")",
        "[",
        "]",
        "_",
        "-",
        " ",
        "\t",
        "\x1b",
        "測試準確率",
        "task",
        "²",
        "٣",
        "５",
        "é",
        "█",
    ]
    rng = random.Random(0)
    for _ in range(5_000):
        line = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))
        percent = parse_accuracy(line)
        assert percent is None or 0 <= percent <= 100, line
