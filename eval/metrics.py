"""Classification and regression metrics for emotion recognition, in pure NumPy.

The definitions follow scikit-learn (``zero_division=0``) so numbers can be compared with published results, and the
tests cross-check every function against scikit-learn on random data.

Invalid predictions
    An answer that names no label or several labels is *invalid* (see :mod:`emollm.labels`). It is written as
    :data:`INVALID` (``None`` is accepted too) and is never mapped to a class. It is always wrong:

    - accuracy / WAR: it is in the denominator and never correct;
    - recall, UAR: it is a miss for its gold class (lowers that class's recall);
    - precision: it is nobody's prediction, so no class gets a false positive from it;
    - F1 (per class, macro, weighted): follows from the two lines above (lower recall of the gold class only); the
      weights of weighted F1 are the gold supports, which include the samples with invalid predictions;
    - confusion matrix: it is not a row or column; ``include_invalid=True`` appends one extra column counting the
      invalid predictions of each gold class.

    This equals scikit-learn with the invalid predictions replaced by a dummy label that is left out of ``labels=``.

Labels are strings. Gold labels must belong to ``labels``; a prediction must belong to ``labels`` or be invalid (a
prediction outside ``labels`` raises, since it means the parser and the metric disagree on the label set).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np

__all__ = [
    "INVALID",
    "accuracy",
    "bootstrap_ci",
    "confusion_matrix",
    "invalid_count",
    "is_invalid",
    "macro_f1",
    "mer2023_combined",
    "per_class_recall",
    "precision_recall_f1_support",
    "uar",
    "valence_mse",
    "war",
    "weighted_f1",
    "weighted_precision",
]

INVALID: Final = "<invalid>"
"""Reserved prediction value for an answer that maps to zero or several labels. ``None`` means the same."""

LabelsLike = Sequence[str] | np.ndarray


def is_invalid(value: object) -> bool:
    """Return True if ``value`` is an invalid prediction (:data:`INVALID` or ``None``)."""
    return value is None or value == INVALID


def _as_str_array(values: Sequence[Any] | np.ndarray, name: str) -> np.ndarray:
    """Return ``values`` as a 1-D NumPy string array with ``None`` replaced by :data:`INVALID`."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "U":
        arr = values
    else:
        arr = np.asarray([INVALID if v is None else str(v) for v in values], dtype=str)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _check_labels(labels: LabelsLike) -> np.ndarray:
    arr = np.asarray([str(x) for x in labels], dtype=str)
    if arr.size == 0:
        raise ValueError("labels is empty; pass the list of class names")
    if len(set(arr.tolist())) != arr.size:
        raise ValueError(f"labels contain duplicates: {arr.tolist()}; pass each class once")
    if INVALID in arr.tolist():
        raise ValueError(f"labels must not contain the reserved value {INVALID!r}")
    return arr


def _default_labels(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """scikit-learn's default: the sorted union of gold and (valid) predicted labels."""
    valid = y_pred[y_pred != INVALID]
    return np.unique(np.concatenate([y_true, valid]))


def _encode(
    y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray, labels: LabelsLike | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map gold and predicted labels to codes ``0..K-1`` (``-1`` = invalid prediction).

    Returns:
        ``(true_codes, pred_codes, labels)``.

    Raises:
        ValueError: On a length mismatch, an empty input, a gold label that is invalid or not in ``labels``, or a
            prediction that is neither in ``labels`` nor invalid.
    """
    t = _as_str_array(y_true, "y_true")
    p = _as_str_array(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    if t.size == 0:
        raise ValueError("no samples to score: y_true is empty")
    if np.any(t == INVALID):
        raise ValueError("y_true contains an invalid value (None or '<invalid>'); every gold sample needs a label")
    lab = _default_labels(t, p) if labels is None else _check_labels(labels)
    order = np.argsort(lab, kind="stable")
    sorted_lab = lab[order]

    def codes(arr: np.ndarray) -> np.ndarray:
        pos = np.clip(np.searchsorted(sorted_lab, arr), 0, sorted_lab.size - 1)
        hit = sorted_lab[pos] == arr
        return np.where(hit, order[pos], -1)

    tc, pc = codes(t), codes(p)
    if np.any(tc < 0):
        bad = sorted(set(t[tc < 0].tolist()))
        raise ValueError(f"gold labels {bad} are not in labels {lab.tolist()}; add them to labels")
    unknown = (pc < 0) & (p != INVALID)
    if np.any(unknown):
        bad = sorted(set(p[unknown].tolist()))
        raise ValueError(
            f"predictions {bad} are not in labels {lab.tolist()}; map them to a label or to INVALID (None) first"
        )
    return tc, pc, lab


def _counts(tc: np.ndarray, pc: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the K x K confusion matrix of valid predictions and the per-gold-class count of invalid ones."""
    valid = pc >= 0
    cm = np.bincount(tc[valid] * k + pc[valid], minlength=k * k).reshape(k, k)
    inv = np.bincount(tc[~valid], minlength=k)
    return cm, inv


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise ``num / den`` with 0 where ``den == 0`` (scikit-learn's ``zero_division=0``)."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)
    return out


def confusion_matrix(
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    labels: LabelsLike | None = None,
    *,
    include_invalid: bool = False,
) -> np.ndarray:
    """Confusion matrix with gold labels on the rows and predictions on the columns, in the order of ``labels``.

    Args:
        y_true: Gold labels.
        y_pred: Predicted labels; :data:`INVALID` or ``None`` for invalid answers.
        labels: Class order; defaults to the sorted union of gold and valid predicted labels (as scikit-learn).
        include_invalid: Append a last column with the number of invalid predictions per gold class.

    Returns:
        Integer array of shape ``(K, K)``, or ``(K, K + 1)`` with ``include_invalid``. Without it, the matrix equals
        ``sklearn.metrics.confusion_matrix(y_true, y_pred, labels=labels)`` and its rows sum to less than the
        support where there are invalid predictions.
    """
    tc, pc, lab = _encode(y_true, y_pred, labels)
    cm, inv = _counts(tc, pc, lab.size)
    return np.concatenate([cm, inv[:, None]], axis=1) if include_invalid else cm


def invalid_count(y_pred: Sequence[Any] | np.ndarray) -> int:
    """Number of invalid predictions (:data:`INVALID` or ``None``)."""
    return int(np.sum(_as_str_array(y_pred, "y_pred") == INVALID))


def precision_recall_f1_support(
    y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray, labels: LabelsLike | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 and gold support, in the order of ``labels``.

    Equals ``sklearn.metrics.precision_recall_fscore_support(..., labels=labels, zero_division=0)``, with invalid
    predictions counted as misses of their gold class and as nobody's prediction (see the module docstring).

    Returns:
        ``(precision, recall, f1, support)``: three float arrays and one integer array, each of length K.
    """
    tc, pc, lab = _encode(y_true, y_pred, labels)
    cm, inv = _counts(tc, pc, lab.size)
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1) + inv
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    # 2TP / (2TP + FP + FN) is scikit-learn's formula; it equals 2PR / (P + R) and is 0 when TP = 0.
    f1 = _safe_div(2 * tp, predicted + support)
    return precision, recall, f1, support


def per_class_recall(
    y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray, labels: LabelsLike | None = None
) -> np.ndarray:
    """Recall of each class in the order of ``labels``; 0 for a class with no gold sample (``zero_division=0``)."""
    return precision_recall_f1_support(y_true, y_pred, labels)[1]


def uar(
    y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray, labels: LabelsLike | None = None
) -> float:
    """Unweighted average recall (DFEW UAR): the mean recall over the classes that have gold samples.

    A class of ``labels`` with no gold sample has no recall and is left out of the mean (scikit-learn's
    ``recall_score(labels=labels, average="macro")`` would count it as 0). Where every class has gold samples,
    which is the case on every DFEW fold, the two agree.
    """
    _, recall, _, support = precision_recall_f1_support(y_true, y_pred, labels)
    return float(recall[support > 0].mean())


def accuracy(y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray) -> float:
    """Fraction of samples whose prediction equals the gold label; invalid predictions are wrong."""
    t = _as_str_array(y_true, "y_true")
    p = _as_str_array(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    if t.size == 0:
        raise ValueError("no samples to score: y_true is empty")
    if np.any(t == INVALID):
        raise ValueError("y_true contains an invalid value (None or '<invalid>'); every gold sample needs a label")
    return float(np.mean(t == p))


def war(y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray) -> float:
    """Weighted average recall (DFEW WAR): recall weighted by gold support, which is the accuracy."""
    return accuracy(y_true, y_pred)


def macro_f1(
    y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray, labels: LabelsLike | None = None
) -> float:
    """Unweighted mean of per-class F1 over ``labels`` (scikit-learn ``average="macro"``, ``zero_division=0``)."""
    return float(precision_recall_f1_support(y_true, y_pred, labels)[2].mean())


def _weighted(values: np.ndarray, support: np.ndarray) -> float:
    total = support.sum()
    return float((values * support).sum() / total) if total else 0.0


def weighted_f1(
    y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray, labels: LabelsLike | None = None
) -> float:
    """Per-class F1 averaged with gold-support weights (MER2023's metric; scikit-learn ``average="weighted"``).

    An invalid prediction lowers the recall (hence F1) of its gold class and changes no class's precision.
    """
    _, _, f1, support = precision_recall_f1_support(y_true, y_pred, labels)
    return _weighted(f1, support)


def weighted_precision(
    y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray, labels: LabelsLike | None = None
) -> float:
    """Per-class precision averaged with gold-support weights (scikit-learn ``average="weighted"``)."""
    precision, _, _, support = precision_recall_f1_support(y_true, y_pred, labels)
    return _weighted(precision, support)


def valence_mse(y_true: Sequence[float] | np.ndarray, y_pred: Sequence[float] | np.ndarray) -> float:
    """Mean squared error between gold and predicted valence.

    Raises:
        ValueError: On a length mismatch, no samples, or a value that is not a finite number.
    """
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"valence arrays must be 1-D and of equal length, got shapes {t.shape} and {p.shape}")
    if t.size == 0:
        raise ValueError("no samples to score: the valence arrays are empty")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
        raise ValueError("valence values must be finite numbers; fill in or drop the NaN/inf entries")
    return float(np.mean((t - p) ** 2))


def mer2023_combined(f1: float, mse: float) -> float:
    """MER2023 MER-MULTI / MER-NOISE score: ``weighted F1 - 0.25 * valence MSE``."""
    return float(f1 - 0.25 * mse)


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    n_resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``metric_fn(y_true, y_pred)``.

    Samples are drawn with replacement (the same indices for ``y_true`` and ``y_pred``) ``n_resamples`` times from a
    ``numpy.random.default_rng(seed)``, so the interval is deterministic given the seed.

    Args:
        metric_fn: Called as ``metric_fn(y_true[idx], y_pred[idx])`` with NumPy arrays; returns a float.
        y_true: Gold values (labels, valences, or anything NumPy can index, e.g. sample indices).
        y_pred: Predicted values, aligned with ``y_true``; ``None`` entries are passed on as :data:`INVALID`.
        n_resamples: Number of bootstrap resamples.
        alpha: One minus the confidence level (0.05 gives a 95% interval).
        seed: Seed of the random generator.

    Returns:
        ``(low, high)``: the ``alpha/2`` and ``1 - alpha/2`` percentiles of the resampled metric.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    t = np.asarray(y_true)
    p = np.asarray([INVALID if v is None else v for v in y_pred]) if not isinstance(y_pred, np.ndarray) else y_pred
    if len(t) != len(p):
        raise ValueError(f"y_true and y_pred differ in length: {len(t)} vs {len(p)}")
    if len(t) == 0:
        raise ValueError("no samples to resample: y_true is empty")
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples, dtype=float)
    for i in range(n_resamples):
        idx = rng.integers(0, len(t), size=len(t))
        stats[i] = metric_fn(t[idx], p[idx])
    low, high = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)
