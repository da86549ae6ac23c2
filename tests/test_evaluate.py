"""grader/evaluate.py against the same metrics computed with explicit loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from grader.data import CIFAR10_CLASSES
from grader.evaluate import evaluate

K = len(CIFAR10_CLASSES)


def by_loops(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Reference metrics, one image at a time; a row with any NaN/Inf is wrong everywhere."""
    n = len(labels)
    top1 = top3 = 0
    confusion = [[0] * K for _ in range(K)]
    correct = [0] * K
    seen = [0] * K
    wrong = []
    for i in range(n):
        row, y = logits[i], int(labels[i])
        seen[y] += 1
        if not all(np.isfinite(v) for v in row):
            wrong.append(i)
            continue
        order = sorted(range(K), key=lambda c: -row[c])
        pred = order[0]
        confusion[y][pred] += 1
        top1 += pred == y
        correct[y] += pred == y
        top3 += y in order[:3]
        if pred != y:
            wrong.append(i)
    return {
        "top1": round(100 * top1 / n, 2),
        "top3": round(100 * top3 / n, 2),
        "confusion": confusion,
        "per_class": {
            c: round(100 * correct[k] / seen[k], 2) if seen[k] else 0.0 for k, c in enumerate(CIFAR10_CLASSES)
        },
        "wrong": wrong,
    }


def random_case(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, size=n)
    logits = rng.normal(size=(n, K)).astype(np.float32)
    logits[np.arange(n), labels] += 1.0  # better than chance, so every metric is away from its bounds
    return logits, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_the_loop_computation(seed: int) -> None:
    logits, labels = random_case(500, seed)
    ev = evaluate(logits, labels, CIFAR10_CLASSES, shown=10_000)
    ref = by_loops(logits, labels)
    assert ev.n_images == 500
    assert (ev.top1, ev.top3) == (ref["top1"], ref["top3"])
    assert 10 < ev.top1 < ev.top3 < 100
    assert ev.confusion == ref["confusion"]
    assert ev.per_class == ref["per_class"]
    assert sorted(i for i, _, _ in ev.misclassified) == ref["wrong"]  # shown is more than there are
    assert all(labels[i] == y and y != p for i, y, p in ev.misclassified)
    assert ev.nonfinite_rows == 0


def test_nonfinite_rows_count_as_wrong() -> None:
    logits, labels = random_case(300, 7)
    logits[5, 0] = np.nan
    logits[17, :] = np.nan
    logits[42, labels[42]] = np.inf  # would win the argmax, but the row is not finite
    logits[99, 3] = -np.inf
    ev = evaluate(logits, labels, CIFAR10_CLASSES, shown=10_000)
    ref = by_loops(logits, labels)
    assert ev.nonfinite_rows == 4
    assert (ev.top1, ev.top3) == (ref["top1"], ref["top3"])
    assert ev.per_class == ref["per_class"]
    assert ev.confusion == ref["confusion"]
    assert sum(map(sum, ev.confusion)) == 300 - 4
    assert {5, 17, 42, 99} <= {i for i, _, _ in ev.misclassified}
    assert {p for i, _, p in ev.misclassified if i in (5, 17, 42, 99)} == {-1}


def test_all_rows_nan_scores_zero() -> None:
    labels = np.arange(20) % K
    ev = evaluate(np.full((20, K), np.nan, dtype=np.float32), labels, CIFAR10_CLASSES, shown=5)
    assert (ev.top1, ev.top3, ev.nonfinite_rows) == (0.0, 0.0, 20)
    assert set(ev.per_class.values()) == {0.0}


def softmax_top(row: np.ndarray) -> float:
    """The largest softmax probability of one row, the long way."""
    exps = [math.exp(float(v)) for v in row]
    return max(exps) / sum(exps)


def picked_by_hand(logits: np.ndarray, labels: np.ndarray, shown: int) -> list[int]:
    """Each class's mistakes, most confident first; then one round after another across classes."""
    wrong = by_loops(logits, labels)["wrong"]
    queues = {y: [i for i in wrong if labels[i] == y] for y in range(K)}
    for queue in queues.values():
        queue.sort(key=lambda i: -softmax_top(logits[i]))
    picked: list[int] = []
    while len(picked) < shown and any(queues.values()):
        heads = [queue.pop(0) for queue in queues.values() if queue]
        picked += sorted(heads, key=lambda i: -softmax_top(logits[i]))
    return picked[:shown]


@pytest.mark.parametrize("shown", [0, 1, 16])
def test_misclassified_list_is_capped(shown: int) -> None:
    logits, labels = random_case(400, 3)
    ev = evaluate(logits, labels, CIFAR10_CLASSES, shown=shown)
    assert len(ev.misclassified) == shown
    assert sorted(i for i, _, _ in ev.misclassified) == sorted(picked_by_hand(logits, labels, shown))


def test_mistakes_shown_spread_over_the_classes_most_confident_first() -> None:
    # Ordered by class, as the test split is: the first 16 mistakes would all be airplanes.
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(K), 100)
    logits = rng.normal(size=(len(labels), K)).astype(np.float32)
    logits[np.arange(len(labels)), labels] += 1.5
    ev = evaluate(logits, labels, CIFAR10_CLASSES, shown=16)
    shown = [i for i, _, _ in ev.misclassified]
    assert all(labels[i] == 0 for i in by_loops(logits, labels)["wrong"][:16])
    assert sorted(shown) == sorted(picked_by_hand(logits, labels, 16))
    per_class = np.bincount([y for _, y, _ in ev.misclassified], minlength=K)
    assert sorted(per_class.tolist()) == [1] * 4 + [2] * 6  # 16 over 10 classes
    # Grouped by true class, the most confident mistake of each class first.
    assert [y for _, y, _ in ev.misclassified] == sorted(y for _, y, _ in ev.misclassified)
    for y in range(K):
        mine = [i for i, t, _ in ev.misclassified if t == y]
        theirs = sorted((i for i in by_loops(logits, labels)["wrong"] if labels[i] == y),
                        key=lambda i: -softmax_top(logits[i]))  # fmt: skip
        assert mine == theirs[: len(mine)]


def test_mistakes_of_one_class_fill_the_grid_when_no_other_has_any() -> None:
    labels = np.repeat(np.arange(K), 10)
    logits = np.zeros((len(labels), K), dtype=np.float32)
    logits[np.arange(len(labels)), labels] = 5.0
    logits[:10, 0], logits[:10, 3] = 0.0, np.arange(10, dtype=np.float32)  # all airplanes called cats
    logits[0, 3] = np.nan  # not finite: shown last
    ev = evaluate(logits, labels, CIFAR10_CLASSES, shown=16)
    assert ev.misclassified == [(i, 0, 3) for i in range(9, 0, -1)] + [(0, 0, -1)]


def test_class_without_images_scores_zero_and_others_are_exact() -> None:
    labels = np.array([0, 0, 1, 1, 1, 2])
    logits = np.full((6, K), -1.0, dtype=np.float32)
    logits[[0, 1, 2, 3, 4, 5], [0, 5, 1, 1, 2, 2]] = 1.0
    ev = evaluate(logits, labels, CIFAR10_CLASSES, shown=16)
    assert ev.per_class["airplane"] == 50.0
    assert ev.per_class["automobile"] == 66.67
    assert ev.per_class["bird"] == 100.0
    assert ev.per_class["truck"] == 0.0
    assert ev.top1 == round(100 * 4 / 6, 2)
    assert ev.misclassified == [(1, 0, 5), (4, 1, 2)]


def softmax(logits: np.ndarray) -> np.ndarray:
    exps = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (exps / exps.sum(axis=1, keepdims=True)).astype(np.float32)


def test_what_the_outputs_are_is_told_from_their_values() -> None:
    logits, labels = random_case(300, 11)
    probabilities = softmax(logits)
    log_probabilities = np.log(probabilities)
    kinds = [
        evaluate(x, labels, CIFAR10_CLASSES, 16).outputs for x in (logits, probabilities, log_probabilities)
    ]
    assert kinds == ["logits", "probabilities", "log-probabilities"]
    # The same predictions whatever the form: accuracy is unaffected.
    tops = {evaluate(x, labels, CIFAR10_CLASSES, 16).top1 for x in (logits, probabilities, log_probabilities)}
    assert tops == {by_loops(logits, labels)["top1"]}
    # Rows of NaN do not hide it; logits that only look small are still logits.
    log_probabilities[3] = np.nan
    assert evaluate(log_probabilities, labels, CIFAR10_CLASSES, 16).outputs == "log-probabilities"
    assert evaluate(logits / 1000, labels, CIFAR10_CLASSES, 16).outputs == "logits"
    assert evaluate(np.abs(logits) / 100, labels, CIFAR10_CLASSES, 16).outputs == "logits"


def test_one_row_off_the_simplex_makes_them_logits() -> None:
    logits, labels = random_case(50, 12)
    probabilities = softmax(logits)
    probabilities[7] *= 1.1
    assert evaluate(probabilities, labels, CIFAR10_CLASSES, 16).outputs == "logits"


def test_probabilities_pick_the_same_confident_mistakes_as_their_logits() -> None:
    logits, labels = random_case(400, 13)
    picked = evaluate(logits, labels, CIFAR10_CLASSES, 16).misclassified
    assert evaluate(softmax(logits), labels, CIFAR10_CLASSES, 16).misclassified == picked


def test_probabilities_computed_in_bfloat16_are_still_told() -> None:
    """The test pass runs in bfloat16 where the hardware has it: a softmax there is off by far
    more than float32's 1e-7, and is still a softmax."""
    import torch

    logits, labels = random_case(300, 14)
    low = torch.from_numpy(logits).bfloat16()
    probabilities = torch.softmax(low, dim=1).float().numpy()
    log_probabilities = torch.log_softmax(low, dim=1).float().numpy()
    assert np.abs(probabilities.sum(axis=1) - 1).max() > 1e-4  # bfloat16's error, well above float32's
    kinds = [evaluate(x, labels, CIFAR10_CLASSES, 16).outputs for x in (probabilities, log_probabilities)]
    assert kinds == ["probabilities", "log-probabilities"]


def test_without_top3_only_top1_is_read() -> None:
    """A rubric that shows top-1 only: the sandbox kept top-3 sets as the fast pass left them."""
    labels = np.arange(40) % K
    logits = np.random.default_rng(0).normal(size=(40, K)).astype(np.float32)
    both, top1_only = (evaluate(logits, labels, CIFAR10_CLASSES, 16, top3=top3) for top3 in (True, False))
    assert top1_only.top3 is None and both.top3 is not None
    assert (top1_only.top1, top1_only.confusion) == (both.top1, both.confusion)
