"""Printed results: the test accuracy a line of output reports.

A notebook's saved outputs hold what its author printed; the last test accuracy printed for
a task is the claim the grader compares with the accuracy it measures. A line is read as
words, numbers and marks, left to right. An accuracy label is a word such as ``acc``,
``accuracy``, ``test_acc``, ``Acc@1``, ``top-1``, ``準確率`` or ``准确率``; its value is the
first number after it, past filler such as ``:``, ``=``, ``(%)``, ``is`` or ``on the 10000
test images``. The rules, each with its reason:

  * Only the test split counts. A label belongs to the split named in its filler ("accuracy
    on the test set") or right after its value ("88.6% on the test set"), else to the
    nearest split named before it ("Test: … acc=0.874", "val acc 80.1 test acc 79.5").
    A line that names no split is not read: Keras' ``- accuracy: 0.88``, tqdm's
    ``Evaluating: … acc=0.87`` and the ImageNet example's `` * Acc@1 76.130`` are printed
    after training or validation as often as after testing, and a line is read without the
    lines around it. A student whose notebook prints no "test" says the number in
    submission.yaml.
  * A count such as ``7674/10000`` gives the exact percentage and wins over a rounded one
    beside it (``76% (7674/10000)``); so does a plain decimal in parentheses after a plain
    value, the running average of the ImageNet example's meters (``Acc@1  78.12 ( 76.13)``).
  * A number up to 1 without ``%`` is a fraction (0.8863 is 88.63%); over 100 is no accuracy.
  * Top-k for k > 1 (``Acc@5``, ``Top-3 Accuracy``) and per-class accuracies (``Test
    Accuracy of cat: 45%``) are not the claim; a list (``Accuracies: ['64.37%', ...]``)
    has no single value.
  * The first test accuracy on a line is its claim; over many lines the last one wins.

Linear time by construction: a line is cut to MAX_LINE_CHARS and split into tokens by one
regex whose quantifiers are possessive (nothing is matched twice); a label reads at most
_LOOKAHEAD tokens and stops at the next label, and a line gets at most _MAX_LABELS labels.
Lines that do not name both the test split and an accuracy are passed over by substring
tests, and of those that do, a task's last _RECENT_LINES are kept: a notebook of any size
costs at most that many readings per task.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from grader.data import CIFAR10_CLASSES

# A printed result is read by a person: tqdm bars with their postfix, and epoch logs with a
# dozen metrics, stay under ~300 characters. Past 1,000 a line is data (an array, a base64
# blob), and the cap keeps the work per line small whatever a student's output holds.
MAX_LINE_CHARS = 1_000
_SHOWN_CHARS = 160  # of the line a claim was read from, in the report
_LOOKAHEAD = 16  # tokens from a label to its value: "of the network on the 10000 test images:"
# Train, val and test, top-1 and top-5 of each: a result line has a few accuracies, not dozens.
_MAX_LABELS = 8
# A task's lines that name a test accuracy are read from the last one back until one gives
# a value. Those printed after the claim that give none are few (a table's header, a note).
_RECENT_LINES = 2_000

_TOKEN = re.compile(
    r"[0-9]++(?:,[0-9]{3}(?![0-9]))*+(?:\.[0-9]++)?+|\.[0-9]++"  # 88.63, 10,000, .87
    r"|[A-Za-z]++(?:[0-9](?![0-9.]))?+"  # a Latin word, with the rank of acc1 or top5
    r"|[^\W\d_A-Za-z]++"  # a run of other letters: 測試準確率
    r"|\S"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*+[A-Za-z]?")  # colours and styles of coloured output
# On lowered text, Chinese 任務/任务 made "task": a literal first lets the search skip ahead.
_TASK_NAME = re.compile(r"task(?<![a-z]task)[\s_#-]*+([0-9]++)")

_SPLITS = {
    "test": "test", "testing": "test", "testset": "test",
    "train": "train", "training": "train", "trainset": "train",
    "val": "val", "valid": "val", "validation": "val", "valset": "val", "dev": "val",
}  # fmt: skip
_LABELS = {"acc", "accuracy"}
_GLUED = {split + label: name for split, name in _SPLITS.items() for label in _LABELS}  # testAcc
_CJK_SPLITS = {"測試": "test", "测试": "test", "訓練": "train", "训练": "train", "驗證": "val", "验证": "val"}
_CJK_LABELS = ("準確率", "准确率", "正確率", "正确率", "準確度", "准确度", "精度")
_DIGITS = set("0123456789")
_PERCENT = {"%", "％"}
_JOINERS = {"-", "_"}  # top-1, top_1
_FILLER_MARKS = {":", "：", "=", "(", ")", "[", "]", "'", '"', "|", "│", "┃", *_PERCENT, *_JOINERS}
_PREPOSITIONS = {"on", "of", "for", "in", "("}  # 88.6% on the test set
_OTHER_METRICS = {"loss", "error", "err", "lr"}  # named after a label: the label has no value
_COUNTERS = {"epoch", "epochs", "step", "iter", "iteration", "batch", "task", "fold", "run", "seed", "top"}
_COUNTED = {"images", "image", "imgs", "samples", "examples", "pictures", "epochs", "iterations", "steps"}
_CLASS_NAMES = {*CIFAR10_CLASSES, "plane", "car", "class"}  # the tutorial says plane and car


@dataclass(frozen=True)
class Claim:
    """A test accuracy a notebook printed: the value, its cell and its line (cut short)."""

    accuracy: float  # percent
    cell: int
    line: str


class _Meaning(NamedTuple):
    """What a token says to this reader."""

    kind: str  # "number", "word" or "mark"
    lowered: str
    split: str | None = None  # "test", "train" or "val"
    label: bool = False  # acc, accuracy, testAcc, 準確率
    top: bool = False  # top, top1, top5
    rank: int | None = None  # the k of acc1 or top5


def last_per_task(lines: Iterable[tuple[int, str]], positions: dict[str, int]) -> dict[str, Claim]:
    """The last test accuracy printed for each task, from (cell, line) pairs in order.

    ``positions`` holds the tasks that printed these lines with their 1-based place in the
    rubric. A line naming "task N" goes to the task whose id holds the number N, else to the
    task at place N; a line naming no task counts only if there is a single task.
    """
    recent: dict[str, deque[tuple[int, str]]] = {task: deque(maxlen=_RECENT_LINES) for task in positions}
    for cell, line in lines:
        text = _visible(line)
        if _may_claim(text):
            for task_id in _owners(text, positions):
                recent[task_id].append((cell, text))
    found: dict[str, Claim] = {}
    for task_id, candidates in recent.items():
        for cell, text in reversed(candidates):
            accuracy = _read(text)
            if accuracy is not None:
                found[task_id] = Claim(accuracy, cell, text.strip()[:_SHOWN_CHARS])
                break
    return found


def parse_accuracy(line: str) -> float | None:
    """The test accuracy a printed line reports, in percent (see the module's rules)."""
    text = _visible(line)
    return _read(text) if _may_claim(text) else None


def _read(text: str) -> float | None:
    """parse_accuracy on a line already cut short and stripped of colour codes."""
    tokens: list[str] = _TOKEN.findall(text)
    split: str | None = None
    rank: int | None = None  # of a "top-k" waiting for its label: Top-1 Accuracy
    labels = 0
    for i, token in enumerate(tokens):
        meaning = _meaning(token)
        split = meaning.split or split
        if not (meaning.label or meaning.top):
            continue
        labels += 1
        if labels > _MAX_LABELS:
            return None
        start, rank = _label(tokens, i, meaning, rank)
        if start is None or _class_named_before(tokens, i):
            continue
        reading = _reading(tokens, start)
        if reading is not None and (reading[0] or split) == "test":
            return reading[1]
    return None


def _visible(line: str) -> str:
    """The line as a terminal shows it, up to MAX_LINE_CHARS."""
    text = line[:MAX_LINE_CHARS]
    return _ANSI.sub("", text) if "\x1b" in text else text


def _may_claim(text: str) -> bool:
    """Whether the line names the test split and an accuracy: most lines do not."""
    lowered = text.lower()
    tested = "test" in lowered or "測試" in text or "测试" in text
    return tested and ("acc" in lowered or "top" in lowered or any(label in text for label in _CJK_LABELS))


@lru_cache(maxsize=4096)
def _meaning(token: str) -> _Meaning:
    if token[:1] in _DIGITS or (token[:1] == "." and len(token) > 1):  # as _TOKEN cuts numbers
        return _Meaning("number", token)
    if not token[:1].isalpha():
        return _Meaning("mark", token)
    if not token.isascii():
        return _cjk_meaning(token)
    lowered = token.lower()
    word, rank = (lowered[:-1], int(lowered[-1])) if lowered[-1].isdigit() else (lowered, None)
    if word == "top":
        return _Meaning("word", lowered, top=True, rank=rank)
    if word in _GLUED:
        return _Meaning("word", lowered, _GLUED[word], label=True, rank=rank)
    return _Meaning("word", lowered, _SPLITS.get(word), label=word in _LABELS, rank=rank)


def _cjk_meaning(text: str) -> _Meaning:
    """測試準確率, 测试集准确率为: the split named before the label in a run of characters."""
    found = [i for label in _CJK_LABELS if (i := text.find(label)) >= 0]
    end = min(found) if found else len(text)
    named = [(i, name) for split, name in _CJK_SPLITS.items() if (i := text.rfind(split, 0, end)) >= 0]
    return _Meaning("word", text, max(named)[1] if named else None, label=bool(found))


def _label(tokens: list[str], i: int, meaning: _Meaning, rank: int | None) -> tuple[int | None, int | None]:
    """Where the value of the label at ``i`` may start (None: not a top-1 or plain accuracy
    label), and the rank of a "top-k" there waiting for the label that follows it."""
    if meaning.top:
        top = _top(tokens, i)
        if top is None:
            return None, None
        top_rank, end = top
        if _label_follows(tokens, end):
            return None, top_rank
        return (end if top_rank == 1 else None), None
    end = i + 1
    if meaning.rank is not None:  # acc1
        rank = meaning.rank
    elif _at(tokens, end) == "@" and (k := _integer(_at(tokens, end + 1))) is not None:  # Acc@1
        rank, end = k, end + 2
    return (end if rank in (None, 1) else None), None


def _class_named_before(tokens: list[str], i: int) -> bool:
    """A per-class accuracy: "cat acc: 0.45", "cat_acc=0.45"."""
    before = i - 2 if _at(tokens, i - 1) in _JOINERS else i - 1
    return _meaning(_at(tokens, before)).lowered in _CLASS_NAMES


def _top(tokens: list[str], i: int) -> tuple[int, int] | None:
    """The k of "top1", "top-1" or "Top_5" at ``i``, and the index after it."""
    rank = _meaning(tokens[i]).rank
    if rank is not None:
        return rank, i + 1
    j = i + 2 if _at(tokens, i + 1) in _JOINERS else i + 1
    k = _integer(_at(tokens, j))
    return None if k is None else (k, j + 1)


def _label_follows(tokens: list[str], j: int) -> bool:
    """Whether an accuracy label comes next, past joiners and split names (top-1 test acc)."""
    for token in tokens[j : j + 3]:
        meaning = _meaning(token)
        if meaning.label:
            return True
        if token not in _JOINERS and meaning.split is None:
            return False
    return False


def _reading(tokens: list[str], start: int) -> tuple[str | None, float | None] | None:
    """The split named between a label and its value, and the value in percent (None when it
    is out of range); None when the label has no value of its own."""
    split: str | None = None
    percent = ranked = False
    for j in range(start, min(start + _LOOKAHEAD, len(tokens))):
        meaning = _meaning(tokens[j])
        if meaning.kind == "number" and not _counter(tokens, j) and not _quantity(tokens, j):
            return split or _split_after(tokens, j), _value(tokens, j, percent)
        if meaning.top:  # "accuracy (top-1): 76.1", once
            top = _top(tokens, j)
            if ranked or top is None or top[0] != 1:
                return None
            ranked = True
        elif meaning.label or meaning.lowered in _OTHER_METRICS or meaning.lowered in _CLASS_NAMES:
            return None
        if meaning.kind == "mark" and meaning.lowered not in _FILLER_MARKS:
            return None
        split = split or meaning.split
        percent = percent or meaning.lowered in _PERCENT
    return None


def _split_after(tokens: list[str], j: int) -> str | None:
    """The split named right after the value at ``j``: "88.6% on the test set", "88.6 (test)"."""
    after = j + 2 if _at(tokens, j + 1) in _PERCENT else j + 1
    if _meaning(_at(tokens, after)).lowered not in _PREPOSITIONS:
        return None
    after += 2 if _meaning(_at(tokens, after + 1)).lowered == "the" else 1
    return _meaning(_at(tokens, after)).split


def _counter(tokens: list[str], j: int) -> bool:
    """A number counting something, not a value: "epoch 30", "(Task 2)", "top-1"."""
    before = j - 2 if _at(tokens, j - 1) in _JOINERS else j - 1
    return _meaning(_at(tokens, before)).lowered in _COUNTERS


def _quantity(tokens: list[str], j: int) -> bool:
    """A whole number of things: "on the 10000 test images", "after 30 epochs"."""
    if "." in tokens[j]:
        return False
    after = j + 2 if _meaning(_at(tokens, j + 1)).split else j + 1
    return _meaning(_at(tokens, after)).lowered in _COUNTED


def _value(tokens: list[str], j: int, percent: bool) -> float | None:
    """The number at ``j`` in percent (``percent``: a "%" came before it), None if over 100."""
    count = _count(tokens, j)
    if count is not None:
        return _in_range(count)
    after = j + 1
    if _at(tokens, after) in _PERCENT:
        percent, after = True, after + 1
    raw = _float(tokens[j])
    value = _percent(raw, percent)
    if _at(tokens, after) == "(":
        value = _refined(tokens, after + 1, value, None if percent else raw)
    return _in_range(value)


def _refined(tokens: list[str], j: int, value: float, plain: float | None) -> float:
    """``value`` made exact by what follows it in parentheses: a count (76% (7674/10000)) or,
    after a ``plain`` number (no %), the running average of the ImageNet example's meters
    (78.12 ( 76.13)), on the same scale and with decimals as they print it."""
    count = _count(tokens, j)
    if count is not None:
        return count if _at(tokens, j + 3) == ")" and abs(count - value) < 1 else value
    inside = _at(tokens, j)
    if plain is None or _meaning(inside).kind != "number" or "." not in inside or _at(tokens, j + 1) != ")":
        return value
    average = _float(inside)
    return _percent(average, False) if (average > 1) == (plain > 1) else value


def _count(tokens: list[str], j: int) -> float | None:
    """A count such as 7674/10000 at ``j``, in percent (over 100 when it counts more than
    there were)."""
    right, slash, total = _at(tokens, j), _at(tokens, j + 1), _at(tokens, j + 2)
    if slash != "/" or _meaning(right).kind != "number" or _meaning(total).kind != "number":
        return None
    of = _float(total)
    return 100 * _float(right) / of if of > 0 else math.inf


def _percent(value: float, percent: bool) -> float:
    return value if percent or value > 1 else value * 100


def _in_range(value: float) -> float | None:
    return round(value, 4) if 0 <= value <= 100 else None


def _float(number: str) -> float:
    return float(number.replace(",", ""))


def _integer(token: str) -> int | None:
    """A small whole number, such as a rank."""
    return int(token) if token.isdigit() and token.isascii() and len(token) < 4 else None


def _at(tokens: list[str], j: int) -> str:
    return tokens[j] if 0 <= j < len(tokens) else ""


def _owners(line: str, positions: dict[str, int]) -> list[str]:
    named = _TASK_NAME.search(line.lower().replace("任務", "task").replace("任务", "task"))
    if named is None:
        return list(positions) if len(positions) == 1 else []
    number = int(named[1])
    by_id = [task_id for task_id in positions if number in {int(d) for d in re.findall(r"[0-9]+", task_id)}]
    return by_id or [task_id for task_id, place in positions.items() if place == number]
