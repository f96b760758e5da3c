"""What a clue describer works with: :class:`Clue` (one clue of one clip), :class:`ClipContext` (what it may look
at), the :class:`Describer` protocol, and :func:`audio_or_unavailable` (a clip's wave, or the unavailable clue that
says why there is none).

Every clue is its text, and ``status`` ``"ok"`` or ``"unavailable"`` with the reason. A describer never invents:
when it cannot measure or describe (no audio track, silence, no describer configured, a model that returned
nothing), the clue is left empty and marked, and the caption/prompt builders leave it out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "CLUE_KINDS",
    "SAMPLE_RATE",
    "ClipContext",
    "Clue",
    "ClueKind",
    "Describer",
    "audio_or_unavailable",
]

ClueKind = Literal["visual", "audio", "subtitle"]
CLUE_KINDS: tuple[str, ...] = ("visual", "audio", "subtitle")
SAMPLE_RATE = 16000
"""Rate of the wave :meth:`ClipContext.audio` decodes (emollm's audio rate)."""


@dataclass(frozen=True)
class Clue:
    """One clue of one clip."""

    text: str
    """The description ("" when unavailable)."""
    status: Literal["ok", "unavailable"]
    source: str
    """Id of the describer that produced it."""
    reason: str = ""
    """Why it is unavailable (``"unavailable: no audio track"``); "" when ok."""
    measures: dict[str, Any] = field(default_factory=dict)
    """Numbers behind the words (measured audio), JSON-ready."""

    @property
    def ok(self) -> bool:
        """True when the clue has text."""
        return self.status == "ok"

    @classmethod
    def available(cls, text: str, source: str, measures: dict[str, Any] | None = None) -> Clue:
        """An ok clue; empty text becomes unavailable (a describer that returned nothing)."""
        text = " ".join(str(text).split())
        if not text:
            return cls.unavailable(source, "the describer returned no text")
        return cls(text, "ok", source, "", dict(measures or {}))

    @classmethod
    def unavailable(cls, source: str, why: str, measures: dict[str, Any] | None = None) -> Clue:
        """An empty clue marked with the reason."""
        return cls("", "unavailable", source, f"unavailable: {why}", dict(measures or {}))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "text": self.text,
            "status": self.status,
            "source": self.source,
            "reason": self.reason,
            "measures": self.measures,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Clue:
        """Inverse of :meth:`to_dict`."""
        return cls(d["text"], d["status"], d["source"], d.get("reason", ""), dict(d.get("measures") or {}))


@dataclass
class ClipContext:
    """What a describer may look at for one clip."""

    name: str
    path: Path
    """The video file."""
    info: Any = None
    """Its ``emollm.media.MediaInfo`` (probed once by the pipeline); None: probe on demand."""
    peak_index: int | None = None
    """0-based frame index of the emotional peak (stage 2), when known."""
    _audio: Any = field(default=None, repr=False)

    def media_info(self):
        """The clip's MediaInfo (probed now if not given)."""
        if self.info is None:
            from emollm.media import probe

            self.info = probe(self.path)
        return self.info

    def audio(self) -> np.ndarray:
        """The 16 kHz mono wave, decoded once (raises ``emollm.media`` errors: NoAudioTrack, CorruptMedia, ...)."""
        if self._audio is None:
            from emollm.media import load_audio

            try:
                self._audio = load_audio(self.path, sample_rate=SAMPLE_RATE, info=self.media_info())
            except Exception as e:  # remember the failure too: a second describer gets the same answer
                self._audio = e
        if isinstance(self._audio, BaseException):
            raise self._audio
        return self._audio


@runtime_checkable
class Describer(Protocol):
    """Produces one kind of clue for a clip.

    Attributes:
        clue: ``"visual"``, ``"audio"`` or ``"subtitle"``.
        id: Stable identity including every setting that changes the output; cached clues are keyed by it.
        cacheable: Whether results are worth caching on disk (False for instant lookups).
        thread_safe: Whether ``describe`` may run in several threads at once.
    """

    clue: str
    id: str
    cacheable: bool
    thread_safe: bool

    def describe(self, clip: ClipContext) -> Clue:
        """The clue of ``clip`` (unavailable and marked when it cannot be produced)."""
        ...


def audio_or_unavailable(source: str, clip: ClipContext) -> tuple[np.ndarray | None, Clue | None]:
    """The clip's wave, or an unavailable clue saying why there is none.

    Args:
        source: Id of the describer asking (the clue's ``source``).
        clip: The clip.

    Returns:
        ``(wave, None)``, or ``(None, clue)`` when there is no audio track or it cannot be decoded.
    """
    from emollm.media import MediaError, NoAudioTrack

    try:
        return clip.audio(), None
    except NoAudioTrack:
        return None, Clue.unavailable(source, "no audio track")
    except MediaError as e:
        return None, Clue.unavailable(source, f"audio not usable ({e.problem})")
