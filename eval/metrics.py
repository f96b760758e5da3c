"""Classification and regression metrics for emotion recognition, in pure NumPy.

The definitions follow scikit-learn (``zero_division=0``) so numbers can be compared with published results, and the
tests cross-check every function against scikit-learn on random data.

How it works
    String labels are encoded **once** (:func:`encode_labels`) into integer codes ``0..K-1``, with the invalid
    prediction as the sentinel code ``K``. One ``np.bincount`` then gives the ``K x (K + 1)`` confusion matrix (last
    column: invalid predictions), and every metric is read off that matrix (:class:`ClassScores`).
    :func:`emollm_eval.classification.classification_report` (used by ``emollm score`` and ``emollm eval``) builds
    the matrix once and derives all metrics from it; its bootstrap (:func:`bootstrap_scores`) resamples *indices* of
    the encoded arrays and builds one matrix per resample.
    The per-metric functions (:func:`uar`, :func:`weighted_f1`, ...) keep their string-label signatures and go
    through the same path.

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

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import numpy as np

__all__ = [
    "INVALID",
    "SCORE_NAMES",
    "ClassScores",
    "EncodedLabels",
    "accuracy",
    "bootstrap_ci",
    "bootstrap_scores",
    "confusion_matrix",
    "encode_labels",
    "invalid_count",
    "is_invalid",
    "macro_f1",
    "mer2023_combined",
    "per_class_recall",
    "precision_recall_f1_support",
    "score_fn",
    "uar",
    "valence_mse",
    "war",
    "weighted_f1",
    "weighted_precision",
]

INVALID: Final = "<invalid>"
"""Reserved prediction value for an answer that maps to zero or several labels. ``None`` means the same."""

LabelsLike = Sequence[str] | np.ndarray
ArrayLike = Sequence[Any] | np.ndarray

SCORE_NAMES: Final = ("accuracy", "war", "uar", "weighted_f1", "macro_f1", "weighted_precision")
"""The scalar metrics of :class:`ClassScores`, by attribute name (what ``ci=`` of the report may name)."""


def is_invalid(value: object) -> bool:
    """Return True if ``value`` is an invalid prediction (:data:`INVALID` or ``None``)."""
    return value is None or value == INVALID


def _as_str_array(values: ArrayLike, name: str) -> np.ndarray:
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


class EncodedLabels(NamedTuple):
    """Gold and predicted labels as integer codes: class ``i`` is ``labels[i]``; ``len(labels)`` is invalid.

    Attributes:
        true: Gold codes, shape ``(N,)``, each in ``0..K-1``.
        pred: Predicted codes, shape ``(N,)``, each in ``0..K`` (``K`` = :attr:`invalid_code`).
        labels: The ``K`` class names in code order.
    """

    true: np.ndarray
    pred: np.ndarray
    labels: tuple[str, ...]

    @property
    def invalid_code(self) -> int:
        """The sentinel code of an invalid prediction (``K``)."""
        return len(self.labels)


def encode_labels(y_true: ArrayLike, y_pred: ArrayLike, labels: LabelsLike | None = None) -> EncodedLabels:
    """Encode gold and predicted labels to integer codes once, for every metric and bootstrap resample.

    Args:
        y_true: Gold labels.
        y_pred: Predicted labels; :data:`INVALID` or ``None`` for invalid answers.
        labels: Class order; defaults to the sorted union of gold and valid predicted labels (as scikit-learn).

    Returns:
        The codes; invalid predictions get the sentinel code ``len(labels)``.

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
    if labels is None:  # scikit-learn's default: the sorted union of gold and (valid) predicted labels
        lab = np.unique(np.concatenate([t, p[p != INVALID]]))
    else:
        lab = _check_labels(labels)
    k = lab.size
    order = np.argsort(lab, kind="stable")
    sorted_lab = lab[order]

    def codes(arr: np.ndarray) -> np.ndarray:
        pos = np.clip(np.searchsorted(sorted_lab, arr), 0, k - 1)
        return np.where(sorted_lab[pos] == arr, order[pos], k).astype(np.int64)

    tc, pc = codes(t), codes(p)
    if np.any(tc == k):
        bad = sorted(set(t[tc == k].tolist()))
        raise ValueError(f"gold labels {bad} are not in labels {lab.tolist()}; add them to labels")
    unknown = (pc == k) & (p != INVALID)
    if np.any(unknown):
        bad = sorted(set(p[unknown].tolist()))
        raise ValueError(
            f"predictions {bad} are not in labels {lab.tolist()}; map them to a label or to INVALID (None) first"
        )
    return EncodedLabels(tc, pc, tuple(lab.tolist()))


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise ``num / den`` with 0 where ``den == 0`` (scikit-learn's ``zero_division=0``)."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _weighted(values: np.ndarray, support: np.ndarray) -> float:
    total = support.sum()
    return float((values * support).sum() / total) if total else 0.0


@dataclass(frozen=True)
class ClassScores:
    """Every classification metric, read off one ``K x (K + 1)`` confusion matrix (last column: invalid).

    Build it with :meth:`from_codes` (or :meth:`from_confusion`). Per-class arrays follow the code order.

    Attributes:
        confusion: Counts, gold on the rows, predictions on the columns, invalid predictions in the last column.
        precision: Per-class precision (0 for a class nobody predicted).
        recall: Per-class recall (0 for a class without gold samples).
        f1: Per-class F1, ``2TP / (2TP + FP + FN)`` (0 when TP = 0).
        support: Gold samples per class, including those with an invalid prediction.
        accuracy: Correct predictions over all samples (invalid = wrong); equals WAR.
        uar: Mean recall over the classes with gold samples.
        weighted_f1: F1 weighted by gold support.
        weighted_precision: Precision weighted by gold support.
        macro_f1: Unweighted mean F1 over the first ``n_report`` classes (all of them by default).
        invalid: Number of invalid predictions.
    """

    confusion: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    accuracy: float
    uar: float
    weighted_f1: float
    weighted_precision: float
    macro_f1: float
    invalid: int

    @property
    def war(self) -> float:
        """Weighted average recall (DFEW WAR): recall weighted by gold support, which is the accuracy."""
        return self.accuracy

    @classmethod
    def from_confusion(cls, confusion: np.ndarray, n_report: int | None = None) -> ClassScores:
        """Derive every metric from a ``K x (K + 1)`` confusion matrix.

        Args:
            confusion: Counts with the invalid predictions in the last column.
            n_report: Macro F1 averages the first ``n_report`` classes (the gold classes, when the rest are extra
                labels a prediction may name); default: all ``K``.
        """
        k = confusion.shape[0]
        valid = confusion[:, :k]
        tp = np.diag(valid).astype(float)
        support = confusion.sum(axis=1)
        predicted = valid.sum(axis=0)
        precision = _safe_div(tp, predicted)
        recall = _safe_div(tp, support)
        # 2TP / (2TP + FP + FN) is scikit-learn's formula; it equals 2PR / (P + R) and is 0 when TP = 0.
        f1 = _safe_div(2 * tp, predicted + support)
        n = int(support.sum())
        return cls(
            confusion=confusion,
            precision=precision,
            recall=recall,
            f1=f1,
            support=support,
            accuracy=float(tp.sum() / n) if n else 0.0,
            uar=float(recall[support > 0].mean()) if n else 0.0,
            weighted_f1=_weighted(f1, support),
            weighted_precision=_weighted(precision, support),
            macro_f1=float(f1[: k if n_report is None else n_report].mean()),
            invalid=int(confusion[:, k].sum()),
        )

    @classmethod
    def from_codes(cls, true: np.ndarray, pred: np.ndarray, n_classes: int, n_report: int | None = None) -> ClassScores:
        """Build the confusion matrix of integer codes with one ``np.bincount`` and derive every metric.

        Args:
            true: Gold codes in ``0..K-1``.
            pred: Predicted codes in ``0..K`` (``K`` = invalid).
            n_classes: ``K``.
            n_report: See :meth:`from_confusion`.
        """
        width = n_classes + 1
        cm = np.bincount(true * width + pred, minlength=n_classes * width).reshape(n_classes, width)
        return cls.from_confusion(cm, n_report)


def _scores(y_true: ArrayLike, y_pred: ArrayLike, labels: LabelsLike | None) -> ClassScores:
    enc = encode_labels(y_true, y_pred, labels)
    return ClassScores.from_codes(enc.true, enc.pred, enc.invalid_code)


def confusion_matrix(
    y_true: ArrayLike, y_pred: ArrayLike, labels: LabelsLike | None = None, *, include_invalid: bool = False
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
    cm = _scores(y_true, y_pred, labels).confusion
    return cm if include_invalid else cm[:, :-1].copy()


def invalid_count(y_pred: ArrayLike) -> int:
    """Number of invalid predictions (:data:`INVALID` or ``None``)."""
    return int(np.sum(_as_str_array(y_pred, "y_pred") == INVALID))


def precision_recall_f1_support(
    y_true: ArrayLike, y_pred: ArrayLike, labels: LabelsLike | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 and gold support, in the order of ``labels``.

    Equals ``sklearn.metrics.precision_recall_fscore_support(..., labels=labels, zero_division=0)``, with invalid
    predictions counted as misses of their gold class and as nobody's prediction (see the module docstring).

    Returns:
        ``(precision, recall, f1, support)``: three float arrays and one integer array, each of length K.
    """
    s = _scores(y_true, y_pred, labels)
    return s.precision, s.recall, s.f1, s.support


def per_class_recall(y_true: ArrayLike, y_pred: ArrayLike, labels: LabelsLike | None = None) -> np.ndarray:
    """Recall of each class in the order of ``labels``; 0 for a class with no gold sample (``zero_division=0``)."""
    return _scores(y_true, y_pred, labels).recall


def uar(y_true: ArrayLike, y_pred: ArrayLike, labels: LabelsLike | None = None) -> float:
    """Unweighted average recall (DFEW UAR): the mean recall over the classes that have gold samples.

    A class of ``labels`` with no gold sample has no recall and is left out of the mean (scikit-learn's
    ``recall_score(labels=labels, average="macro")`` would count it as 0). Where every class has gold samples,
    which is the case on every DFEW fold, the two agree.
    """
    return _scores(y_true, y_pred, labels).uar


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of samples whose prediction equals the gold label; invalid predictions are wrong."""
    return _scores(y_true, y_pred, None).accuracy


def war(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Weighted average recall (DFEW WAR): recall weighted by gold support, which is the accuracy."""
    return accuracy(y_true, y_pred)


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike, labels: LabelsLike | None = None) -> float:
    """Unweighted mean of per-class F1 over ``labels`` (scikit-learn ``average="macro"``, ``zero_division=0``)."""
    return _scores(y_true, y_pred, labels).macro_f1


def weighted_f1(y_true: ArrayLike, y_pred: ArrayLike, labels: LabelsLike | None = None) -> float:
    """Per-class F1 averaged with gold-support weights (MER2023's metric; scikit-learn ``average="weighted"``).

    An invalid prediction lowers the recall (hence F1) of its gold class and changes no class's precision.
    """
    return _scores(y_true, y_pred, labels).weighted_f1


def weighted_precision(y_true: ArrayLike, y_pred: ArrayLike, labels: LabelsLike | None = None) -> float:
    """Per-class precision averaged with gold-support weights (scikit-learn ``average="weighted"``)."""
    return _scores(y_true, y_pred, labels).weighted_precision


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


# --------------------------------------------------------------------------------------------------------------------
# Bootstrap


def _check_bootstrap(n_resamples: int, alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")


def _resamples(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """``n_resamples`` index arrays drawn with replacement from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        yield rng.integers(0, n, size=n)


def _interval(stats: np.ndarray, alpha: float) -> tuple[float, float]:
    low, high = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    y_true: ArrayLike,
    y_pred: ArrayLike,
    n_resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of any ``metric_fn(y_true, y_pred)``.

    Samples are drawn with replacement (the same indices for ``y_true`` and ``y_pred``) ``n_resamples`` times from a
    ``numpy.random.default_rng(seed)``, so the interval is deterministic given the seed. For classification
    metrics, :func:`bootstrap_scores` does the same on encoded labels without re-encoding each resample (and gives
    the same numbers for the same seed).

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
    _check_bootstrap(n_resamples, alpha)
    t = np.asarray(y_true)
    p = np.asarray([INVALID if v is None else v for v in y_pred]) if not isinstance(y_pred, np.ndarray) else y_pred
    if len(t) != len(p):
        raise ValueError(f"y_true and y_pred differ in length: {len(t)} vs {len(p)}")
    if len(t) == 0:
        raise ValueError("no samples to resample: y_true is empty")
    stats = np.asarray([metric_fn(t[idx], p[idx]) for idx in _resamples(len(t), n_resamples, seed)], dtype=float)
    return _interval(stats, alpha)


ScoreFn = Callable[[ClassScores, np.ndarray], float]
"""A bootstrapped statistic: called with the scores of a resample and its indices into the original samples."""


def bootstrap_scores(
    encoded: EncodedLabels,
    stats: Sequence[str] | Mapping[str, ScoreFn],
    n_resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    *,
    n_report: int | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of several statistics, all from the same resamples of encoded labels.

    Each resample draws indices with replacement (as :func:`bootstrap_ci`, so the same seed gives the same
    intervals), builds its confusion matrix with one ``np.bincount`` of the codes, and derives every metric from it.

    Args:
        encoded: The labels, encoded once by :func:`encode_labels`.
        stats: Names of :class:`ClassScores` metrics (``uar``, ``war``, ``accuracy``, ``weighted_f1``,
            ``macro_f1``, ``weighted_precision``), or a mapping of name to ``fn(scores, idx)`` for statistics that
            need more than the labels (e.g. MER2023's combined score, which also resamples valences by ``idx``).
        n_resamples: Number of bootstrap resamples.
        alpha: One minus the confidence level.
        seed: Seed of the random generator.
        n_report: Passed to :meth:`ClassScores.from_confusion` (which classes macro F1 averages).

    Returns:
        ``{name: (low, high)}`` in the order of ``stats``.
    """
    fns: dict[str, ScoreFn] = dict(stats) if isinstance(stats, Mapping) else {name: score_fn(name) for name in stats}
    _check_bootstrap(n_resamples, alpha)
    n = len(encoded.true)
    k = encoded.invalid_code
    values = np.empty((len(fns), n_resamples), dtype=float)
    for i, idx in enumerate(_resamples(n, n_resamples, seed)):
        scores = ClassScores.from_codes(encoded.true[idx], encoded.pred[idx], k, n_report)
        for j, fn in enumerate(fns.values()):
            values[j, i] = fn(scores, idx)
    return {name: _interval(values[j], alpha) for j, name in enumerate(fns)}


def score_fn(name: str) -> ScoreFn:
    """The bootstrap statistic that reads metric ``name`` (one of :data:`SCORE_NAMES`) off a resample's scores.

    Raises:
        ValueError: For an unknown name, listing the known ones.
    """
    if name not in SCORE_NAMES:
        raise ValueError(f"no metric {name!r} to bootstrap; choose from {', '.join(SCORE_NAMES)}")
    return lambda scores, _idx: float(getattr(scores, name))
