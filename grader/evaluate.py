"""Logits from the sandbox → metrics, on the host, where the labels live."""

from __future__ import annotations

import numpy as np

from grader.results import Evaluation, OutputKind

# How far a row may be from a probability distribution (sum 1) or from log-probabilities
# (log-sum-exp 0) and still count as one: float32 softmax is off by about 1e-7, but the test
# pass computes in bfloat16 where the hardware has it (8-bit mantissa), which leaves a softmax
# row's sum up to about 1e-2 from 1. Real logits are nowhere near this on every row.
TOLERANCE = 3e-2


def evaluate(
    logits: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], shown: int, top3: bool = True
) -> Evaluation:
    """Top-1 (and with ``top3``, top-3), per-class accuracy and confusion; rows with NaN/Inf
    count as wrong. Also what the outputs are (``output_kind``) and the mistakes the report
    shows. Without ``top3`` the sandbox kept only top-1 float32's, so top-3 is not read."""
    n, k = logits.shape  # (N, classes)
    finite = np.isfinite(logits).all(axis=1)
    safe = np.where(finite[:, None], logits, -np.inf)
    pred = np.where(finite, safe.argmax(axis=1), -1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels[finite], pred[finite]), 1)
    per_class = {}
    for index, name in enumerate(classes):
        mask = labels == index
        per_class[name] = round(100.0 * float((pred[mask] == index).mean()), 2) if mask.any() else 0.0
    outputs = output_kind(logits, finite)
    wrong = confident_mistakes(confidence(safe, finite, outputs), labels, pred, shown)
    return Evaluation(
        n_images=n,
        top1=round(100.0 * float((pred == labels).mean()), 2),
        top3=_top3_accuracy(safe, finite, labels) if top3 else None,
        per_class=per_class,
        confusion=confusion.tolist(),
        misclassified=[(int(i), int(labels[i]), int(pred[i])) for i in wrong],
        nonfinite_rows=int((~finite).sum()),
        outputs=outputs,
    )


def _top3_accuracy(safe: np.ndarray, finite: np.ndarray, labels: np.ndarray) -> float:
    """Percent of rows whose label is among their three highest logits; non-finite rows are wrong."""
    best3 = np.argsort(-safe, axis=1)[:, :3]  # fewer columns where there are fewer classes
    return round(100.0 * float(((best3 == labels[:, None]).any(axis=1) & finite).mean()), 2)


def output_kind(outputs: np.ndarray, finite: np.ndarray) -> OutputKind:
    """``"probabilities"`` when every finite row is non-negative and sums to 1 (the model ends
    in softmax), ``"log-probabilities"`` when every finite row's log-sum-exp is 0 (log_softmax),
    else ``"logits"``, what the contract asks for."""
    rows = outputs[finite].astype(np.float64)  # (M, classes)
    if len(rows) == 0:
        return "logits"
    if (rows >= -TOLERANCE).all() and (np.abs(rows.sum(axis=1) - 1.0) <= TOLERANCE).all():
        return "probabilities"
    if (np.abs(_logsumexp(rows)) <= TOLERANCE).all():
        return "log-probabilities"
    return "logits"


def outputs_note(kind: OutputKind) -> str | None:
    """What a report says about outputs that are not logits; None for logits."""
    if kind == "probabilities":
        return (
            "the model returns probabilities (it ends in softmax), not logits; accuracy is "
            "unaffected, but a cross-entropy loss computed from them is wrong (it applies softmax "
            "a second time, and its gradients nearly vanish): end the model with its last layer"
        )
    if kind == "log-probabilities":
        return (
            "the model returns log-probabilities (it ends in log_softmax), not the logits the "
            "assignment asks for; accuracy and cross-entropy are unaffected (log-probabilities "
            "are logits shifted by a constant per image), but end the model with its last layer"
        )
    return None


def _logsumexp(rows: np.ndarray) -> np.ndarray:
    top = rows.max(axis=1)
    return top + np.log(np.exp(rows - top[:, None]).sum(axis=1))


def confidence(logits: np.ndarray, finite: np.ndarray, kind: OutputKind = "logits") -> np.ndarray:
    """The probability of each row's predicted class; -inf for a row that is not finite."""
    out = np.full(len(logits), -np.inf)
    rows = logits[finite].astype(np.float64)  # (M, classes)
    if kind == "probabilities":
        out[finite] = rows.max(axis=1)
    else:  # max_j softmax(x)_j = 1 / sum_j exp(x_j - max x), with no overflow
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
