"""AU combination -> emotion pseudo-label, and AU -> visual-expression phrases.

The table, thresholds and phrases are data: ``emollm/aus/au_cues.yaml`` (loaded by :func:`load_cue_table`).

An emotion **fires** at the peak row when (MER-Factory's rule, "logic from Emotion-LLaMA"):

1. every ``AUxx_c`` column of its AUs exists in the CSV (otherwise it is rejected as "missing columns");
2. at least ``presence_fraction`` (0.5) of those AUs are present (``AUxx_c == 1``);
3. the mean of its AUs' ``AUxx_r`` that exist is ``>= mean_intensity`` (0.8). AUs without an intensity column
   are left out of the mean: OpenFace 2 has no ``AU28_r``, so "worried" (AU28, AU20) is scored on ``AU20_r``.

A 1e-9 tolerance makes a mean of exactly 0.8 fire despite float rounding. Strength: the highest band of
``strength`` (slight 0.8 / moderate 1.6 / strong 2.4) the mean reaches.

When several emotions fire, ``tie_break`` decides: ``mean_intensity`` (default: highest mean, equal means ->
table order), ``table_order`` (first in the table), or ``abstain`` (no label). No emotion firing gives
``pseu_emotion = None``, i.e. the clip is filtered out of MERR.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from emollm.aus.openface import AUSequence, au_code, read_openface_csv
from emollm.aus.peaks import PEAK_RULES, PeakResult, select_peak

__all__ = [
    "DEFAULT_CUES_PATH",
    "TIE_BREAKS",
    "Candidate",
    "CueResult",
    "CueTable",
    "describe_aus",
    "label_csv",
    "label_from_peak",
    "load_cue_table",
]

DEFAULT_CUES_PATH = Path(__file__).with_name("au_cues.yaml")
TIE_BREAKS: tuple[str, ...] = ("mean_intensity", "table_order", "abstain")
_EPS = 1e-9


@dataclass(frozen=True)
class CueTable:
    """The validated contents of ``au_cues.yaml``."""

    emotions: dict[str, tuple[str, ...]]
    """Emotion -> its AUs (``AUxx``), in table order (the order is the last tie-break)."""
    au_text: dict[str, str]
    """``AUxx`` -> visual-expression phrase."""
    presence_fraction: float = 0.5
    mean_intensity: float = 0.8
    active_intensity: float = 0.8
    strength: dict[str, float] = field(default_factory=lambda: {"slight": 0.8, "moderate": 1.6, "strong": 2.4})
    """Band name -> inclusive lower bound, ascending (sorted on load)."""
    tie_break: str = "mean_intensity"
    peak_rule: str = "paper"
    peak_top_k: int | None = None
    min_confidence: float = 0.8
    source: Path | None = None

    def strength_of(self, score: float) -> str | None:
        """The strongest band whose lower bound ``score`` reaches (None below every band)."""
        reached = [(low, name) for name, low in self.strength.items() if score >= low - _EPS]
        return max(reached)[1] if reached else None


def _err(path: Path, key: str, msg: str) -> ValueError:
    return ValueError(f"{path}: {key}: {msg}")


def _float(path: Path, key: str, value: Any, lo: float = 0.0, hi: float = float("inf")) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise _err(path, key, f"expected a number in [{lo}, {hi}], got {value!r}")
    return float(value)


_TOP_KEYS = {"version", "thresholds", "strength", "tie_break", "peak", "openface", "emotions", "au_text"}


def load_cue_table(path: str | os.PathLike[str] | None = None) -> CueTable:
    """Load and validate an AU cue table (default: ``emollm/aus/au_cues.yaml``).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: bad YAML or a bad value; the message names the file and the key.
    """
    path = Path(path) if path is not None else DEFAULT_CUES_PATH
    if not path.is_file():
        hint = " (pass --cues / load_cue_table(path))" if path == DEFAULT_CUES_PATH else ""
        raise FileNotFoundError(f"{path}: AU cue table not found{hint}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping with keys {sorted(_TOP_KEYS)}, got {type(raw).__name__}")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise _err(path, ", ".join(sorted(map(str, unknown))), f"unknown key(s); allowed: {sorted(_TOP_KEYS)}")

    emotions_raw = raw.get("emotions")
    if not isinstance(emotions_raw, dict) or not emotions_raw:
        raise _err(path, "emotions", "expected a non-empty mapping emotion -> [AUxx, ...]")
    emotions: dict[str, tuple[str, ...]] = {}
    for emo, aus in emotions_raw.items():
        if not isinstance(aus, list) or not aus:
            raise _err(path, f"emotions.{emo}", f"expected a non-empty list of AU codes, got {aus!r}")
        try:
            codes = tuple(au_code(str(a)) for a in aus)
        except ValueError as e:
            raise _err(path, f"emotions.{emo}", str(e)) from None
        if len(set(codes)) != len(codes):
            raise _err(path, f"emotions.{emo}", f"duplicate AU in {list(codes)}")
        emotions[str(emo)] = codes

    au_text_raw = raw.get("au_text") or {}
    if not isinstance(au_text_raw, dict):
        raise _err(path, "au_text", "expected a mapping AUxx -> phrase")
    try:
        au_text = {au_code(str(k)): str(v) for k, v in au_text_raw.items()}
    except ValueError as e:
        raise _err(path, "au_text", str(e)) from None

    th = raw.get("thresholds") or {}
    if not isinstance(th, dict) or set(th) - {"presence_fraction", "mean_intensity", "active_intensity"}:
        raise _err(path, "thresholds", "allowed keys: presence_fraction, mean_intensity, active_intensity")
    presence_fraction = _float(path, "thresholds.presence_fraction", th.get("presence_fraction", 0.5), 0.0, 1.0)
    mean_intensity = _float(path, "thresholds.mean_intensity", th.get("mean_intensity", 0.8), 0.0, 5.0)
    active_intensity = _float(path, "thresholds.active_intensity", th.get("active_intensity", 0.8), 0.0, 5.0)

    strength_raw = raw.get("strength", {"slight": 0.8, "moderate": 1.6, "strong": 2.4})
    if not isinstance(strength_raw, dict) or not strength_raw:
        raise _err(path, "strength", "expected a mapping band -> lower bound")
    strength = {str(k): _float(path, f"strength.{k}", v, 0.0, 5.0) for k, v in strength_raw.items()}
    strength = dict(sorted(strength.items(), key=lambda kv: kv[1]))  # ascending bounds, whatever the YAML order

    tie_break = raw.get("tie_break", "mean_intensity")
    if tie_break not in TIE_BREAKS:
        raise _err(path, "tie_break", f"expected one of {list(TIE_BREAKS)}, got {tie_break!r}")

    peak = raw.get("peak") or {}
    if not isinstance(peak, dict) or set(peak) - {"rule", "top_k"}:
        raise _err(path, "peak", "allowed keys: rule, top_k")
    peak_rule = peak.get("rule", "paper")
    if peak_rule not in PEAK_RULES:
        raise _err(path, "peak.rule", f"expected one of {list(PEAK_RULES)}, got {peak_rule!r}")
    top_k = peak.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise _err(path, "peak.top_k", f"expected null or a positive integer, got {top_k!r}")

    of = raw.get("openface") or {}
    if not isinstance(of, dict) or set(of) - {"min_confidence"}:
        raise _err(path, "openface", "allowed keys: min_confidence")
    min_conf = _float(path, "openface.min_confidence", of.get("min_confidence", 0.8), 0.0, 1.0)

    return CueTable(
        emotions=emotions,
        au_text=au_text,
        presence_fraction=presence_fraction,
        mean_intensity=mean_intensity,
        active_intensity=active_intensity,
        strength=strength,
        tie_break=tie_break,
        peak_rule=peak_rule,
        peak_top_k=top_k,
        min_confidence=min_conf,
        source=path,
    )


@dataclass(frozen=True)
class Candidate:
    """One emotion evaluated at the peak."""

    emotion: str
    fired: bool
    score: float | None
    """Mean ``AUxx_r`` of the emotion's AUs that have intensity columns (None when not computed)."""
    strength: str | None
    present: list[str]
    """The emotion's AUs with ``AUxx_c == 1`` at the peak."""
    scored_aus: list[str]
    """AUs averaged into ``score`` (AUs without an ``AUxx_r`` column, e.g. AU28, are left out)."""
    reason: str
    """Why it fired or not (human-readable)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "emotion": self.emotion,
            "score": None if self.score is None else round(self.score, 4),
            "strength": self.strength,
            "present": self.present,
        }


@dataclass(frozen=True)
class CueResult:
    """Pseudo-label of one clip."""

    pseu_emotion: str | None
    """The chosen emotion, or None (nothing fired, or ``abstain`` with several): filter the clip out."""
    candidates: list[Candidate]
    """Emotions that fired, best first under the table's tie-break."""
    rejected: list[Candidate]
    """Emotions that did not fire, in table order, with the reason."""
    peak_AU_list: list[str]
    """AUs active at the peak (see :meth:`emollm.aus.openface.AUSequence.active_aus`)."""

    @property
    def strength(self) -> str | None:
        """Strength of the chosen emotion."""
        for c in self.candidates:
            if c.emotion == self.pseu_emotion:
                return c.strength
        return None


def _evaluate(seq: AUSequence, index: int, emotion: str, aus: tuple[str, ...], table: CueTable) -> Candidate:
    missing = [f"{a}_c" for a in aus if a not in seq.presence]
    if missing:
        return Candidate(emotion, False, None, None, [], [], f"missing column(s) {', '.join(missing)}")
    present = [a for a in aus if seq.presence[a][index] >= 0.5]
    need = table.presence_fraction * len(aus)
    if len(present) < need - _EPS:
        return Candidate(emotion, False, None, None, present, [], f"{len(present)}/{len(aus)} AUs present")
    scored = [a for a in aus if a in seq.intensity]
    if not scored:
        return Candidate(emotion, False, None, None, present, [], "no AUxx_r column for any of its AUs")
    score = float(np.mean([seq.intensity[a][index] for a in scored]))
    if score < table.mean_intensity - _EPS:
        reason = f"mean intensity {score:.3f} < {table.mean_intensity}"
        return Candidate(emotion, False, score, None, present, scored, reason)
    strength = table.strength_of(score)
    return Candidate(emotion, True, score, strength, present, scored, f"{len(present)}/{len(aus)} present")


def label_from_peak(seq: AUSequence, peak: PeakResult | int, table: CueTable | None = None) -> CueResult:
    """Pseudo-label ``seq`` from the AU combination at its peak row.

    Args:
        seq: AUs of one clip.
        peak: the peak (a :class:`~emollm.aus.peaks.PeakResult` or a row index).
        table: the cue table (default: :func:`load_cue_table`).
    """
    table = table if table is not None else load_cue_table()
    index = peak.index if isinstance(peak, PeakResult) else int(peak)
    if not 0 <= index < seq.n_frames:
        raise IndexError(f"peak index {index} outside 0..{seq.n_frames - 1} ({seq.describe_source()})")
    evaluated = [_evaluate(seq, index, emo, aus, table) for emo, aus in table.emotions.items()]
    fired = [c for c in evaluated if c.fired]
    rejected = [c for c in evaluated if not c.fired]
    if table.tie_break == "mean_intensity":
        fired.sort(key=lambda c: -(c.score or 0.0))  # stable: equal means stay in table order
    if not fired or (table.tie_break == "abstain" and len(fired) > 1):
        label = None
    else:
        label = fired[0].emotion
    return CueResult(
        pseu_emotion=label,
        candidates=fired,
        rejected=rejected,
        peak_AU_list=seq.active_aus(index, table.active_intensity),
    )


def describe_aus(aus: list[str] | tuple[str, ...], table: CueTable | None = None) -> list[str]:
    """Visual-expression phrases for AUs (``"AU05"`` -> ``"upper lid raiser"``), in the given order.

    AU names may carry ``_r``/``_c``; AUs missing from the table's ``au_text`` are kept as their code.
    """
    table = table if table is not None else load_cue_table()
    out = []
    for a in aus:
        code = au_code(a)
        out.append(table.au_text.get(code, code))
    return out


def label_csv(
    path: str | os.PathLike[str],
    table: CueTable | None = None,
    *,
    rule: str | None = None,
    min_confidence: float | None = None,
) -> tuple[AUSequence, PeakResult, CueResult]:
    """Read an OpenFace CSV, choose its peak and pseudo-label it (what ``emollm merr au-label`` does).

    ``rule`` and ``min_confidence`` default to the table's ``peak.rule`` and ``openface.min_confidence``.
    """
    table = table if table is not None else load_cue_table()
    seq = read_openface_csv(path, table.min_confidence if min_confidence is None else min_confidence)
    peak = select_peak(seq, rule or table.peak_rule, table.active_intensity, top_k=table.peak_top_k)
    return seq, peak, label_from_peak(seq, peak, table)
