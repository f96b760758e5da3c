"""The one classification report of ``emollm score`` and ``emollm eval``, from one confusion matrix.

Both commands call :func:`classification_report`, so a prediction file scored by ``emollm score`` and the same
predictions produced by ``emollm eval`` report the same fields with the same values. The metric definitions
(scikit-learn's, with invalid answers always wrong) are in :mod:`emollm_eval.metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from emollm_eval.metrics import ArrayLike, ClassScores, LabelsLike, ScoreFn, bootstrap_scores, encode_labels

__all__ = ["classification_report", "reason_group"]


def reason_group(reason: str) -> str:
    """Group a parse reason for the report: ``several labels: a, b`` -> ``several labels``, blank -> ``empty answer``.

    Args:
        reason: :attr:`emollm.labels.ParseResult.reason` (or a caller's own, e.g. ``missing from PRED``).
    """
    if reason.startswith("several labels"):
        return "several labels"
    if "empty" in reason:
        return "empty answer"
    return reason


def classification_report(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    labels: LabelsLike,
    *,
    extra_labels: LabelsLike = (),
    reasons: Sequence[str] | None = None,
    ci: Sequence[str] | Mapping[str, ScoreFn] = (),
    n_resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Every classification metric of a prediction set, read off one confusion matrix.

    The labels are encoded once (:func:`~emollm_eval.metrics.encode_labels`) and the ``K x (K + 1)`` confusion
    matrix is built once; every value is derived from it. Bootstrap intervals resample the encoded labels
    (:func:`~emollm_eval.metrics.bootstrap_scores`), all from the same resamples.

    Args:
        y_true: Gold labels, each in ``labels``.
        y_pred: Predicted labels (in ``labels`` or ``extra_labels``), or :data:`~emollm_eval.metrics.INVALID` /
            ``None`` for an invalid answer.
        labels: The gold classes, in report order (rows of the confusion matrix, keys of the per-class values).
        extra_labels: Labels the prompt offered besides the gold classes (Emotion-LLaMA lists nine labels for
            6-class MER2023): a valid answer naming one is a wrong prediction. They are extra confusion-matrix
            columns; having no gold samples, they weigh nothing in UAR and weighted F1, and macro F1 averages the
            gold classes only.
        reasons: The parse reason of each sample (:class:`emollm.labels.ParseResult`); those of the invalid
            predictions are counted per :func:`reason_group` (``invalid_reasons``). None: no ``invalid_reasons``.
        ci: Metrics to give percentile bootstrap intervals (``<name>_ci``): names from
            :data:`~emollm_eval.metrics.SCORE_NAMES`, or a mapping of name to ``fn(scores, idx)`` for statistics
            that need more than the labels. Empty: no intervals.
        n_resamples: Bootstrap resamples.
        alpha: One minus the confidence level of the intervals.
        seed: Bootstrap seed.

    Returns:
        A JSON-ready dict with, in order: ``n``, ``uar``, ``war``, ``weighted_f1``, ``accuracy``, ``macro_f1``; the
        ``<name>_ci`` intervals with ``n_bootstrap`` and ``bootstrap_seed`` (when ``ci``); ``invalid``,
        ``invalid_rate``, ``invalid_reasons`` (when ``reasons``); ``labels``; ``prediction_labels`` (``labels`` +
        ``extra_labels``: the confusion-matrix columns); ``per_class_recall`` (null for a class without gold
        samples: its recall is undefined and UAR leaves it out); ``per_class_precision`` and ``per_class_f1`` (0 when
        undefined, as scikit-learn's ``zero_division=0``); ``support``; ``confusion_matrix`` (gold classes x
        ``prediction_labels``, invalid column left out) and ``invalid_by_class``.

    Raises:
        ValueError: As :func:`~emollm_eval.metrics.encode_labels`; on an unknown ``ci`` name or a ``reasons``
            length mismatch.
    """
    gold_labels = [str(x) for x in labels]
    all_labels = [*gold_labels, *[str(x) for x in extra_labels if str(x) not in gold_labels]]
    enc = encode_labels(y_true, y_pred, all_labels)
    k, n = len(gold_labels), len(enc.true)
    if reasons is not None and len(reasons) != n:
        raise ValueError(f"reasons and y_pred differ in length: {len(reasons)} vs {n}")
    s = ClassScores.from_codes(enc.true, enc.pred, enc.invalid_code, n_report=k)
    out: dict[str, Any] = {
        "n": n,
        "uar": s.uar,
        "war": s.war,
        "weighted_f1": s.weighted_f1,
        "accuracy": s.accuracy,
        "macro_f1": s.macro_f1,
    }
    if ci:
        intervals = bootstrap_scores(enc, ci, n_resamples, alpha, seed, n_report=k)
        out.update({f"{name}_ci": list(bounds) for name, bounds in intervals.items()})
        out.update(n_bootstrap=n_resamples, bootstrap_seed=seed)
    out.update(invalid=s.invalid, invalid_rate=s.invalid / n)
    if reasons is not None:
        groups: dict[str, int] = {}
        for code, reason in zip(enc.pred.tolist(), reasons, strict=True):
            if code == enc.invalid_code:
                groups[reason_group(reason)] = groups.get(reason_group(reason), 0) + 1
        out["invalid_reasons"] = groups
    support = s.support[:k]

    def per_class(values: Any) -> dict[str, float]:
        return {lab: float(v) for lab, v in zip(gold_labels, values[:k], strict=True)}

    out.update(
        labels=gold_labels,
        prediction_labels=all_labels,
        per_class_recall={
            lab: float(r) if c else None for lab, r, c in zip(gold_labels, s.recall[:k], support, strict=True)
        },
        per_class_precision=per_class(s.precision),
        per_class_f1=per_class(s.f1),
        support={lab: int(c) for lab, c in zip(gold_labels, support, strict=True)},
        confusion_matrix=s.confusion[:k, :-1].tolist(),
        invalid_by_class={lab: int(c) for lab, c in zip(gold_labels, s.confusion[:k, -1], strict=True)},
    )
    return out
