"""Logits from the sandbox → metrics, on the host, where the labels live."""

from __future__ import annotations

import numpy as np

from grader.results import Evaluation


def evaluate(logits: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], shown: int) -> Evaluation:
    """Top-1/top-3, per-class accuracy and confusion; rows with NaN/Inf count as wrong."""
    n, k = logits.shape  # (N, classes)
    finite = np.isfinite(logits).all(axis=1)
    safe = np.where(finite[:, None], logits, -np.inf)
    pred = np.where(finite, safe.argmax(axis=1), -1)
    top3 = np.argsort(-safe, axis=1)[:, : min(3, k)]
    in_top3 = (top3 == labels[:, None]).any(axis=1) & finite
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels[finite], pred[finite]), 1)
    per_class = {}
    for index, name in enumerate(classes):
        mask = labels == index
        per_class[name] = round(100.0 * float((pred[mask] == index).mean()), 2) if mask.any() else 0.0
    wrong = confident_mistakes(confidence(safe, finite), labels, pred, shown)
    return Evaluation(
        n_images=n,
        top1=round(100.0 * float((pred == labels).mean()), 2),
        top3=round(100.0 * float(in_top3.mean()), 2),
        per_class=per_class,
        confusion=confusion.tolist(),
        misclassified=[(int(i), int(labels[i]), int(pred[i])) for i in wrong],
        nonfinite_rows=int((~finite).sum()),
    )


def confidence(logits: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """The softmax probability of each row's predicted class; -inf for a row that is not finite."""
    out = np.full(len(logits), -np.inf)
    rows = logits[finite].astype(np.float64)  # (M, classes)
    # max_j softmax(x)_j = 1 / sum_j exp(x_j - max x), with no overflow
    out[finite] = 1.0 / np.exp(rows - rows.max(axis=1, keepdims=True)).sum(axis=1)
    return out


def confident_mistakes(
    confidence: np.ndarray, labels: np.ndarray, pred: np.ndarray, shown: int
) -> np.ndarray:
    """Up to ``shown`` wrongly classified rows, spread over the true classes that have mistakes.

    The test split is ordered by class, so its first mistakes are all of one class. Instead,
    each class's mistakes are ranked by confidence, and rows are taken rank by rank (every
    class's most confident mistake, then every class's second, ...; within a rank the more
    confident first). The result is grouped by true class, most confident first.
    """
    wrong = np.flatnonzero(pred != labels)
    by_class = wrong[np.lexsort((-confidence[wrong], labels[wrong]))]  # class, then confidence
    _, starts, sizes = np.unique(labels[by_class], return_index=True, return_counts=True)
    rank = np.arange(len(by_class)) - np.repeat(starts, sizes)  # 0 for each class's most confident
    picked = by_class[np.lexsort((-confidence[by_class], rank))][: max(shown, 0)]
    return picked[np.lexsort((-confidence[picked], labels[picked]))]
