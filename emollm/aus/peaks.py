"""Peak (apex) frame selection from AU intensity curves.

Two rules, both over **valid** rows only (failed / low-confidence frames are never a peak):

``paper`` (Emotion-LLaMA, default)
    1. An AU is *active* in a frame when ``AUxx_r > active_threshold`` (0.8).
    2. Count, per AU, the valid frames where it is active.
    3. Keep the *most frequent* AUs: with ``top_k=None`` (default) every AU whose count equals the maximum count;
       with ``top_k=k`` the k AUs with the highest counts (equal counts ordered by AU number, so the choice is
       deterministic).
    4. Score each frame by the sum of the kept AUs' intensities; the peak is the argmax.
    If no AU is ever active the rule has nothing to count, and it falls back to ``sum_all`` (``PeakResult.rule``
    then reads ``"sum_all"`` and ``fallback`` is True).

``sum_all`` (MER-Factory)
    Score each frame by the sum of all ``AUxx_r``; the peak is the argmax.

Ties: frames whose score is within ``1e-9`` of the best are tied, and the **earliest** one wins (``np.argmax``
semantics), so a flat curve peaks at its first valid frame.

:func:`find_peaks_chronological` reproduces MER-Factory's ``scipy.signal.find_peaks(overall, height=0.8,
distance=20)`` on the sum-of-all-intensities curve, in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from emollm.aus.openface import AUSequence, NoFaceError

__all__ = ["PEAK_RULES", "PeakResult", "PeakRule", "find_peaks", "find_peaks_chronological", "select_peak"]

PeakRule = Literal["paper", "sum_all"]
PEAK_RULES: tuple[str, ...] = ("paper", "sum_all")
_TIE_EPS = 1e-9


@dataclass(frozen=True, eq=False)
class PeakResult:
    """The chosen peak frame of a clip."""

    index: int
    """Row position in the sequence / CSV (0-based); what MERR's ``peak_index`` stores."""
    frame: int
    """OpenFace ``frame`` number at that row (1-based)."""
    timestamp: float
    """Seconds (NaN when the CSV has no timestamps)."""
    active_aus: list[str]
    """AUs active at the peak (``AUxx_r > threshold``, or ``AUxx_c == 1`` for presence-only AUs), AU order."""
    scores: np.ndarray
    """(T,) per-row score under ``rule``; NaN at invalid rows."""
    rule: str
    """The rule that produced the scores (``"sum_all"`` after a paper-rule fallback)."""
    selected_aus: list[str]
    """AUs summed into the score: the most frequent active AUs (paper) or every ``AUxx_r`` (sum_all)."""
    counts: dict[str, int]
    """Valid frames in which each AU is active (every AU with an ``AUxx_r`` column)."""
    fallback: bool = False
    """True when the paper rule found no active AU and fell back to sum_all."""

    @property
    def score(self) -> float:
        """Score of the peak row."""
        return float(self.scores[self.index])


def _intensity_matrix(seq: AUSequence, aus: list[str]) -> np.ndarray:
    return np.stack([seq.intensity[a] for a in aus], axis=0)  # (A, T)


def _argmax_earliest(scores: np.ndarray, valid: np.ndarray) -> int:
    masked = np.where(valid, scores, -np.inf)
    best = masked.max()
    return int(np.flatnonzero(masked >= best - _TIE_EPS)[0])


def select_peak(
    seq: AUSequence,
    rule: PeakRule | str = "paper",
    active_threshold: float = 0.8,
    *,
    top_k: int | None = None,
) -> PeakResult:
    """Choose the peak frame of ``seq`` (see the module docstring for the exact rules).

    Args:
        seq: AUs of one clip.
        rule: ``"paper"`` (most frequent active AUs) or ``"sum_all"`` (all intensities).
        active_threshold: intensity above which an AU is active.
        top_k: paper rule only; None keeps every AU tied at the highest count, k keeps the k most frequent.

    Raises:
        ValueError: unknown rule, bad ``top_k``, or no ``AUxx_r`` columns.
        NoFaceError: no valid frame.
    """
    if rule not in PEAK_RULES:
        raise ValueError(f"unknown peak rule {rule!r}; choose one of {list(PEAK_RULES)}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    if not seq.intensity:
        raise ValueError(
            f"{seq.describe_source()}: no AU intensity columns (AUxx_r); peak selection needs intensities "
            "(run OpenFace FeatureExtraction with -aus)"
        )
    if not seq.valid.any():
        raise NoFaceError(f"{seq.describe_source()}: no face detected: no valid frame to choose a peak from")

    aus = list(seq.intensity)
    mat = _intensity_matrix(seq, aus)  # (A, T)
    active = (mat > active_threshold) & seq.valid[None, :]  # (A, T)
    count_arr = active.sum(axis=1)  # (A,)
    counts = {a: int(c) for a, c in zip(aus, count_arr, strict=True)}

    fallback = False
    if rule == "paper" and count_arr.max() > 0:
        order = sorted(range(len(aus)), key=lambda i: (-count_arr[i], i))  # most frequent first, then AU order
        if top_k is None:
            chosen = [i for i in order if count_arr[i] == count_arr.max()]
        else:
            chosen = [i for i in order[:top_k] if count_arr[i] > 0]
        chosen.sort()
        selected = [aus[i] for i in chosen]
        scores = mat[chosen].sum(axis=0)  # (T,)
        used_rule = "paper"
    else:
        fallback = rule == "paper"
        selected = aus
        scores = mat.sum(axis=0)  # (T,)
        used_rule = "sum_all"

    scores = np.where(seq.valid, scores, np.nan)
    index = _argmax_earliest(scores, seq.valid)
    return PeakResult(
        index=index,
        frame=int(seq.frames[index]),
        timestamp=float(seq.timestamps[index]),
        active_aus=seq.active_aus(index, active_threshold),
        scores=scores,
        rule=used_rule,
        selected_aus=selected,
        counts=counts,
        fallback=fallback,
    )


def _local_maxima(x: np.ndarray) -> np.ndarray:
    """Indices of local maxima (scipy ``_local_maxima_1d`` semantics: flat tops give their middle, rounded down;
    the first and last samples are never maxima)."""
    peaks: list[int] = []
    n = len(x)
    i = 1
    while i < n - 1:
        if x[i - 1] < x[i]:
            ahead = i + 1
            while ahead < n - 1 and x[ahead] == x[i]:
                ahead += 1
            if x[ahead] < x[i]:
                peaks.append((i + ahead - 1) // 2)
                i = ahead
                continue
        i += 1
    return np.asarray(peaks, dtype=np.int64)


def find_peaks(x: np.ndarray, height: float | None = None, distance: int | None = None) -> np.ndarray:
    """Minimal numpy port of ``scipy.signal.find_peaks(x, height=, distance=)``.

    Local maxima (plateaus give their middle sample), at least ``height`` tall, then greedily thinned from the
    tallest so kept peaks are ``>= distance`` samples apart. Equal heights keep the earlier peak (scipy leaves
    this order unspecified).

    Returns:
        Sorted peak indices (int64).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"find_peaks expects a 1-D curve, got shape {x.shape}")
    if distance is not None and distance < 1:
        raise ValueError(f"distance must be >= 1, got {distance}")
    peaks = _local_maxima(x)
    if height is not None and peaks.size:
        peaks = peaks[x[peaks] >= height]
    if distance is not None and distance > 1 and peaks.size > 1:
        keep = np.ones(peaks.size, dtype=bool)
        order = sorted(range(peaks.size), key=lambda j: (-x[peaks[j]], peaks[j]))  # tallest first, then earliest
        for j in order:
            if not keep[j]:
                continue
            near = np.abs(peaks - peaks[j]) < distance
            near[j] = False
            keep &= ~near
        peaks = peaks[keep]
    return peaks


def find_peaks_chronological(seq: AUSequence, height: float = 0.8, distance: int = 20) -> np.ndarray:
    """MER-Factory's chronological emotion peaks: peaks of the sum of all ``AUxx_r`` per frame.

    Invalid rows count as 0 intensity (OpenFace itself writes zeros there), so they can't be peaks.

    Returns:
        Row indices (0-based, ascending) of the peaks.
    """
    if not seq.intensity:
        raise ValueError(f"{seq.describe_source()}: no AU intensity columns (AUxx_r) to find peaks in")
    overall = _intensity_matrix(seq, list(seq.intensity)).sum(axis=0)  # (T,)
    overall = np.where(seq.valid, overall, 0.0)
    return find_peaks(overall, height=height, distance=distance)
