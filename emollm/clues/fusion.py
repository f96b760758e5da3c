"""Late fusion of clue-mode voters into one label distribution (weights in ``fusion.yaml``, a data file).

Each voter (face expression CNN, MERR's AU-combination table, transcript emotion) gives a distribution over its own
labels; :func:`map_distribution` carries it onto the requested label set through a small alias table, and
:func:`fuse` takes the weighted mean of the voters that are present (a linear opinion pool). A missing modality is
never zero-filled: its voter is simply absent, and the other weights are renormalised. With no voter there is no
label.

Example:
    >>> cfg = FusionConfig(weights={"a": 1.0, "b": 1.0})
    >>> fused = fuse([Vote("a", {"happy": 1.0, "sad": 0.0}), Vote("b", {"happy": 0.5, "sad": 0.5})], ["happy", "sad"], cfg)
    >>> fused.probabilities
    {'happy': 0.75, 'sad': 0.25}
"""  # noqa: E501

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from emollm.utils import typed_config

__all__ = ["DEFAULT_FUSION_CONFIG", "Fused", "FusionConfig", "Vote", "fuse", "load_fusion_config", "map_distribution"]

DEFAULT_FUSION_CONFIG = Path(__file__).with_name("fusion.yaml")
"""The packaged default weights."""


@dataclass
class FusionConfig:
    """The contents of a fusion YAML file."""

    version: int = 1
    """Format version."""
    weights: dict[str, float] = field(default_factory=dict)
    """Voter name -> weight (>= 0; 0 keeps the voter's evidence in the output but out of the vote)."""
    aliases: dict[str, list[str]] = field(default_factory=dict)
    """Voter label -> requested labels that may take its mass, in order of preference."""
    au_confidence: dict[str, float] = field(default_factory=dict)
    """MERR strength band (slight/moderate/strong) -> the AU voter's confidence in the label that fires."""

    def __post_init__(self) -> None:
        for name, w in self.weights.items():
            if not (isinstance(w, int | float) and math.isfinite(w) and w >= 0):
                raise ValueError(f"weights.{name}: must be a finite number >= 0, got {w!r}")
        for band, c in self.au_confidence.items():
            if not 0.0 < c <= 1.0:
                raise ValueError(f"au_confidence.{band}: must be in (0, 1], got {c!r}")


def load_fusion_config(path: str | os.PathLike[str] | None = None) -> FusionConfig:
    """Read and check a fusion YAML (default: the packaged one).

    Raises:
        ValueError: Naming the file and the key (unknown keys, wrong types, negative weights).
    """
    path = Path(path) if path is not None else DEFAULT_FUSION_CONFIG
    data = typed_config.load_yaml_mapping(path, error=ValueError, expected="a fusion config (see fusion.yaml)")
    try:
        return typed_config.convert(FusionConfig, data, "", error=ValueError)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


@dataclass
class Vote:
    """One voter's distribution over the requested labels.

    Attributes:
        source: Voter name (a key of ``FusionConfig.weights``).
        distribution: Requested label -> probability (sums to 1).
        note: How the voter got there, for the report.
        unmapped: Probability mass of voter labels with no counterpart in the label set (dropped).
    """

    source: str
    distribution: dict[str, float]
    note: str = ""
    unmapped: float = 0.0


@dataclass
class Fused:
    """The fused outcome: ``label`` is None when no voter took part."""

    label: str | None
    probabilities: dict[str, float]
    weights: dict[str, float]
    """The normalised weight each voter got (0 for voters present with weight 0)."""


def map_distribution(
    scores: Mapping[str, float], labels: Sequence[str], aliases: Mapping[str, Sequence[str]] | None = None
) -> tuple[dict[str, float] | None, float]:
    """Carry a distribution over a voter's labels onto ``labels``.

    A voter label goes to itself when it is in ``labels`` (ignoring case), else to its first alias that is. Mass of
    labels with no counterpart is dropped and the rest renormalised.

    Returns:
        ``(distribution, unmapped_mass)``; the distribution is None when nothing maps (or all mass is zero).
    """
    by_key = {lab.lower(): lab for lab in labels}
    out = {lab: 0.0 for lab in labels}
    unmapped = 0.0
    total = sum(max(0.0, float(v)) for v in scores.values())
    if total <= 0:
        return None, 0.0
    for src, value in scores.items():
        p = max(0.0, float(value)) / total
        key = str(src).lower()
        target = by_key.get(key)
        if target is None:
            for alias in (aliases or {}).get(key, ()):
                target = by_key.get(alias.lower())
                if target is not None:
                    break
        if target is None:
            unmapped += p
        else:
            out[target] += p
    kept = sum(out.values())
    if kept <= 1e-12:
        return None, unmapped
    return {lab: v / kept for lab, v in out.items()}, unmapped


def fuse(votes: Sequence[Vote], labels: Sequence[str], config: FusionConfig) -> Fused:
    """Weighted mean of the votes' distributions (voters without a weight in ``config`` count with weight 0).

    Returns:
        The fused distribution; ``label`` is the argmax (first label in ``labels`` order on a tie), or None with an
        empty distribution when no voter has a positive weight.
    """
    raw = {v.source: float(config.weights.get(v.source, 0.0)) for v in votes}
    total = sum(raw.values())
    if total <= 0:
        return Fused(None, {}, {name: 0.0 for name in raw})
    probs = {lab: 0.0 for lab in labels}
    for v in votes:
        w = raw[v.source] / total
        for lab in labels:
            probs[lab] += w * v.distribution.get(lab, 0.0)
    best = max(labels, key=lambda lab: probs[lab])
    return Fused(best, {lab: round(p, 6) for lab, p in probs.items()}, {k: w / total for k, w in raw.items()})
