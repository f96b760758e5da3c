"""MERR record schema: Emotion-LLaMA's JSON keys, plus our extras kept apart.

Emotion-LLaMA's ``MERR_coarse_grained.json`` / ``MERR_fine_grained.json`` map a video stem to::

    {"AU_list": [...], "visual_prior_list": [...], "audio_prior_list": "...", "peak_index": "12",
     "peak_AU_list": [...], "pseu_emotion": "happy", "caption": "..."}            # coarse
    {..., "smp_reason_caption": "...", "text": "..."}                              # fine (instead of caption)

``peak_index`` is a **string** in those files; :class:`MERRRecord` holds it as ``int`` and writes it back as a
string. Attributes use Emotion-LLaMA's key names verbatim so the mapping is obvious.

Our own fields (:class:`MERRExtras`: where the AUs came from, frame count, valence, peak rule, ...) are written
only when asked (``include_extras=True``), under the single key ``"emollm"``, so the default export is exactly
Emotion-LLaMA's layout. Keys we do not know (from third-party files) are kept in ``MERRRecord.other`` and written
back unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from emollm.labels import MERR_LABELS as LABELS

__all__ = ["EL_KEYS", "EXTRAS_KEY", "LABELS", "LabelRow", "MERRExtras", "MERRKind", "MERRRecord"]

MERRKind = Literal["coarse", "fine"]

#: Emotion-LLaMA's per-record keys shared by both files, in their order.
EL_KEYS: tuple[str, ...] = (
    "AU_list", "visual_prior_list", "audio_prior_list", "peak_index", "peak_AU_list", "pseu_emotion",
)  # fmt: skip
#: Key of our extras namespace inside a record (written only with ``include_extras=True``).
EXTRAS_KEY = "emollm"


@dataclass
class MERRExtras:
    """Our per-record fields, outside Emotion-LLaMA's keys."""

    au_source: str | None = None
    """Where the AUs came from (e.g. the OpenFace CSV path)."""
    frame_count: int | None = None
    """Frames in the clip (the C column of the N C E V lists)."""
    valence: float | None = None
    """Valence (the V column; ``-10`` is Emotion-LLaMA's placeholder)."""
    peak_rule: str | None = None
    """Peak rule used (``paper`` / ``sum_all``)."""
    peak_frame: int | None = None
    """OpenFace frame number of the peak (``peak_index`` is the 0-based row)."""
    more: dict[str, Any] = field(default_factory=dict)
    """Any other extras (kept on read, written back)."""

    def to_dict(self) -> dict[str, Any]:
        """Non-empty extras as a flat dict (``more`` merged in)."""
        d = {k: v for k, v in asdict(self).items() if k != "more" and v is not None}
        return d | dict(self.more)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MERRExtras:
        """Inverse of :meth:`to_dict` (unknown keys go to ``more``)."""
        known = {f.name for f in fields(cls)} - {"more"}
        return cls(**{k: v for k, v in d.items() if k in known}, more={k: v for k, v in d.items() if k not in known})


@dataclass(frozen=True)
class LabelRow:
    """One line of a whitespace label list: ``N [C] E [V]`` (e.g. ``sample_00000023 35 angry -1.174107``)."""

    name: str
    """Video stem (always a string, even for numeric DFEW ids)."""
    label: str
    frame_count: int | None = None
    valence: float | None = None


def _check_str_list(key: str, value: Any, allow_str: bool) -> list[str] | str:
    if allow_str and isinstance(value, str):
        return value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        kinds = "a list of strings or a string" if allow_str else "a list of strings"
        raise ValueError(f"{key!r} must be {kinds}, got {value!r}")
    return list(value)


@dataclass
class MERRRecord:
    """One MERR sample (one video clip)."""

    name: str
    """Video stem, the JSON key (``sample_00000023``); a string even when numeric."""
    AU_list: list[str] = field(default_factory=list)
    visual_prior_list: list[str] | str = field(default_factory=list)
    audio_prior_list: list[str] | str = ""
    peak_index: int | None = None
    """Peak row (0-based); a string in the JSON."""
    peak_AU_list: list[str] = field(default_factory=list)
    pseu_emotion: str | None = None
    caption: str | None = None
    """Coarse-grained caption (``MERR_coarse_grained.json``)."""
    smp_reason_caption: str | None = None
    """Fine-grained reasoning (``MERR_fine_grained.json``)."""
    text: str | None = None
    """Subtitle (fine-grained)."""
    extras: MERRExtras = field(default_factory=MERRExtras)
    other: dict[str, Any] = field(default_factory=dict)
    """Unknown keys read from a file, written back unchanged."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"MERRRecord.name must be a non-empty string (video stem), got {self.name!r}")

    def to_emotion_llama(self, kind: MERRKind, *, include_extras: bool = False) -> dict[str, Any]:
        """The record as Emotion-LLaMA writes it (without the name, which is the dict key).

        Raises:
            ValueError: a field the file needs is missing (message names the record and the fix).
        """
        if kind not in ("coarse", "fine"):
            raise ValueError(f"kind must be 'coarse' or 'fine', got {kind!r}")
        if self.peak_index is None:
            raise ValueError(f"record {self.name!r} has no peak_index; run the AU/peak stage before exporting")
        if self.pseu_emotion is None:
            raise ValueError(f"record {self.name!r} has no pseu_emotion (filtered out); drop it before exporting")
        d: dict[str, Any] = {
            "AU_list": list(self.AU_list),
            "visual_prior_list": self.visual_prior_list,
            "audio_prior_list": self.audio_prior_list,
            "peak_index": str(int(self.peak_index)),
            "peak_AU_list": list(self.peak_AU_list),
            "pseu_emotion": self.pseu_emotion,
        }
        if kind == "coarse":
            if self.caption is None:
                raise ValueError(f"record {self.name!r} has no caption; coarse export needs one (or export 'fine')")
            d["caption"] = self.caption
        else:
            if self.smp_reason_caption is None:
                raise ValueError(
                    f"record {self.name!r} has no smp_reason_caption; fine export needs one (or export 'coarse')"
                )
            d["smp_reason_caption"] = self.smp_reason_caption
            d["text"] = self.text if self.text is not None else ""
        d |= {k: v for k, v in self.other.items() if k not in d and k != EXTRAS_KEY}
        if include_extras and (extras := self.extras.to_dict()):
            d[EXTRAS_KEY] = extras
        return d

    @classmethod
    def from_emotion_llama(cls, name: str, d: dict[str, Any]) -> MERRRecord:
        """Build a record from one Emotion-LLaMA JSON entry (missing list/str keys default to empty).

        Raises:
            ValueError: a value has the wrong type (message names the key and the value).
        """
        if not isinstance(d, dict):
            raise ValueError(f"record must be a JSON object, got {type(d).__name__}")
        peak = d.get("peak_index")
        if peak is not None:
            if isinstance(peak, bool) or not (
                isinstance(peak, int) or (isinstance(peak, str) and peak.strip().isdigit())
            ):
                raise ValueError(f"'peak_index' must be a non-negative integer or a string of digits, got {peak!r}")
            peak = int(peak)
        emotion = d.get("pseu_emotion")
        if emotion is not None and not isinstance(emotion, str):
            raise ValueError(f"'pseu_emotion' must be a string, got {emotion!r}")
        texts = {}
        for key in ("caption", "smp_reason_caption", "text"):
            v = d.get(key)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"{key!r} must be a string, got {v!r}")
            texts[key] = v
        extras_raw = d.get(EXTRAS_KEY, {})
        if not isinstance(extras_raw, dict):
            raise ValueError(f"{EXTRAS_KEY!r} must be an object, got {extras_raw!r}")
        known = set(EL_KEYS) | {"caption", "smp_reason_caption", "text", EXTRAS_KEY}
        return cls(
            name=name,
            AU_list=_check_str_list("AU_list", d.get("AU_list", []), allow_str=False),  # type: ignore[arg-type]
            visual_prior_list=_check_str_list("visual_prior_list", d.get("visual_prior_list", []), allow_str=True),
            audio_prior_list=_check_str_list("audio_prior_list", d.get("audio_prior_list", ""), allow_str=True),
            peak_index=peak,
            peak_AU_list=_check_str_list("peak_AU_list", d.get("peak_AU_list", []), allow_str=False),  # type: ignore[arg-type]
            pseu_emotion=emotion,
            extras=MERRExtras.from_dict(extras_raw),
            other={k: v for k, v in d.items() if k not in known},
            **texts,
        )

    def label_row(self) -> LabelRow:
        """This record as a TXT list row (label = ``pseu_emotion``; C and V from the extras)."""
        if self.pseu_emotion is None:
            raise ValueError(f"record {self.name!r} has no pseu_emotion; it cannot go in a label list")
        return LabelRow(self.name, self.pseu_emotion, self.extras.frame_count, self.extras.valence)
