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
    wrong = np.flatnonzero(pred != labels)[:shown]
    return Evaluation(
        n_images=n,
        top1=round(100.0 * float((pred == labels).mean()), 2),
        top3=round(100.0 * float(in_top3.mean()), 2),
        per_class=per_class,
        confusion=confusion.tolist(),
        misclassified=[(int(i), int(labels[i]), int(pred[i])) for i in wrong],
        nonfinite_rows=int((~finite).sum()),
    )
