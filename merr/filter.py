"""MERR step 7 filtering: deduplication, class balancing, neutral samples, confidence.

The contradiction and degenerate-text checks are library code (:func:`emollm.apps.reasoning.check_reasoning`,
:func:`emollm.apps.reasoning.check_quality`), shared with the clue mode of ``emollm analyze``.

**Deduplication** (:func:`dedup_key`): reasonings are compared after lower-casing and collapsing everything but
letters/digits to single spaces; the first sample in name order keeps it.

**Class balancing** (:func:`seeded_rank`, :func:`balance`): at most ``max_per_class`` samples per label; which ones
is decided by ``sha256(seed:name)``, so the choice does not depend on processing order or on other samples.

**Neutral samples** (:func:`select_neutral`): clips where no AU combination fired and at most
``max_active_aus`` AUs are active at the peak are candidates; ``count`` of them (default: the mean size of the
labelled emotion classes) are taken by the same seeded rank and labelled ``neutral``.

**Confidence** (:func:`label_confidence`, :func:`sample_confidence`), in [0, 1], for the review export::

    label_conf  AU label:       0.5 * min(1, best / 2.4) + 0.5 * min(1, (best - max(second, threshold)) / 0.8)
                                (best, second: mean intensities of the two strongest firing combinations;
                                 2.4 = "strong" band, 0.8 = firing threshold)
                FER label:      0.5 * p_top + 0.5 * (p_top - p_second)     (probabilities at the peak frame)
                neutral added:  0.5
                reviewer label: 1.0
    reason      consistent 1.0, mixed 0.6, not generated 0.8,
                missing_label / contradiction / empty / repetitive / truncated 0.0
    clues       0.7 + 0.3 * (available clues among visual, audio, subtitle) / 3
    confidence = label_conf * reason * clues      (rounded to 4 decimals)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "balance",
    "dedup_key",
    "label_confidence",
    "sample_confidence",
    "seeded_rank",
    "select_neutral",
]

_NON_WORD = re.compile(r"[^\w]+|_+")


def dedup_key(text: str) -> str:
    """Hash of the normalised text (lower case, runs of non-letters/digits -> one space, trimmed)."""
    norm = _NON_WORD.sub(" ", text.lower()).strip()
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()


def seeded_rank(seed: int, name: str) -> str:
    """Order key of a sample for seeded choices (independent of processing order)."""
    return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()


def balance(names_by_label: Mapping[str, Iterable[str]], max_per_class: int | None, seed: int) -> set[str]:
    """Names dropped so that each label keeps at most ``max_per_class`` (lowest seeded ranks are kept)."""
    if max_per_class is None:
        return set()
    dropped: set[str] = set()
    for names in names_by_label.values():
        ranked = sorted(names, key=lambda n: seeded_rank(seed, n))
        dropped.update(ranked[max_per_class:])
    return dropped


def select_neutral(candidates: Iterable[str], count: int, seed: int) -> list[str]:
    """``count`` neutral samples among ``candidates`` by seeded rank, returned in name order."""
    ranked = sorted(set(candidates), key=lambda n: seeded_rank(seed, f"neutral:{n}"))
    return sorted(ranked[: max(0, count)])


def label_confidence(au: Mapping[str, Any], label_source: str) -> float:
    """Confidence in the label itself (module docstring), from a stage-1 record."""
    if label_source == "review":
        return 1.0
    if label_source == "neutral_added":
        return 0.5
    if au.get("au_source") == "fer":
        probs = sorted((au.get("fer") or {}).get("peak_probs", {}).values(), reverse=True)
        if not probs:
            return 0.0
        top, second = probs[0], probs[1] if len(probs) > 1 else 0.0
        return 0.5 * top + 0.5 * (top - second)
    scores = [c["score"] for c in au.get("candidates", []) if c.get("score") is not None]
    if not scores:
        return 0.0
    best = scores[0]
    second = max(scores[1] if len(scores) > 1 else 0.0, float(au.get("threshold", 0.8)))
    return 0.5 * min(1.0, best / 2.4) + 0.5 * min(1.0, max(0.0, best - second) / 0.8)


_REASON_FACTOR = {"consistent": 1.0, "mixed": 0.6, None: 0.8}


def sample_confidence(label_conf: float, consistency: str | None, clues_available: int, clues_total: int = 3) -> float:
    """The review confidence (module docstring); ``consistency`` None when no reasoning was generated."""
    reason = _REASON_FACTOR.get(consistency, 0.0)
    clues = 0.7 + 0.3 * (clues_available / clues_total if clues_total else 0.0)
    return round(max(0.0, min(1.0, label_conf)) * reason * clues, 4)
