"""Classification report from a confusion matrix: accuracy, UAR, weighted/macro F1, per-class P/R/F1.

Our own NumPy code (the tests cross-check it with scikit-learn). A class with no predictions has precision 0, one
with no support has recall 0 (scikit-learn's ``zero_division=0``); UAR averages recall over the classes that occur
in the gold labels (DFEW's UAR), macro F1 over all classes.

Example:
    >>> cm = confusion_matrix([0, 0, 1, 2], [0, 1, 1, 2], 3)
    >>> r = classification_report(cm, ["a", "b", "c"])
    >>> r["accuracy"], round(r["uar"], 4), r["per_class"]["b"]["precision"]
    (0.75, 0.8333, 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["classification_report", "confusion_matrix"]


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """``cm[i, j]`` = clips of gold class i predicted as j (int64, (C, C))."""
    t, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels, y_pred {p.size}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"labels must be in [0, {n_classes})")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def classification_report(cm: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Metrics of a (C, C) confusion matrix; ``labels`` names the C classes."""
    cm = np.asarray(cm, dtype=np.float64)
    if cm.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix {cm.shape} does not match {len(labels)} labels")
    tp = np.diag(cm)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    precision, recall = _div(tp, predicted), _div(tp, support)
    f1 = _div(2 * precision * recall, precision + recall)
    total = cm.sum()
    present = support > 0
    return {
        "n": int(total),
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "uar": float(recall[present].mean()) if present.any() else 0.0,
        "weighted_f1": float((f1 * support).sum() / total) if total else 0.0,
        "macro_f1": float(f1.mean()) if len(labels) else 0.0,
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "labels": list(labels),
        "confusion_matrix": cm.astype(np.int64).tolist(),
    }
