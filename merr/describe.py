"""Clue describers (MERR stage 4): the spec registry (:func:`build_describer`), and every describer name re-exported.

Every clue is a :class:`~emollm_merr.clue.Clue`: its text, and ``status`` ``"ok"`` or ``"unavailable"`` with the
reason. A describer never invents: when it cannot measure or describe (no audio track, silence, no describer
configured, a model that returned nothing), the clue is left empty and marked, and the caption/prompt builders
leave it out.

Describers (the :class:`Describer` protocol), chosen per clue by a spec string (:func:`build_describer`):

=================================== ==========================================================================
spec                                describer
=================================== ==========================================================================
``none``                            :class:`UnavailableDescriber` (the offline default for the visual
                                    objective description: empty + marked, never made-up scene text)
``measured`` (audio)                :class:`MeasuredAudioDescriber`: pitch, loudness, speaking rate, intonation
                                    measured on the waveform with numpy; the offline default for audio tone
``asr`` / ``asr:<dir>`` (subtitle)  :class:`ASRSubtitleDescriber`: offline Whisper
                                    (``emollm.encoders.text.WhisperTranscriber``, embedded tiny.en)
``<file>.csv`` (subtitle)           :class:`CSVSubtitles` (``name,sentence``; names kept as strings)
``checkpoint:<dir>``                :class:`CheckpointDescriber`: an emollm checkpoint with a live encoder
``vlm:<path>`` / ``alm:<path>``     :class:`HFMultimodalDescriber`: a local transformers image/audio-text-to-text
                                    model (e.g. LLaVA / Qwen2-VL, Qwen2-Audio); never downloaded
``python:<module>:<factory>``       your own describer: ``factory(clue=..., **options)`` returning a Describer

Modules: :mod:`emollm_merr.clue` (``Clue``, ``ClipContext``, the ``Describer`` protocol),
:mod:`emollm_merr.describe_offline` (``none``, CSV, ``measured``, ``asr``), :mod:`emollm_merr.audio_measures` (the
pitch / loudness / speaking-rate measurement behind ``measured``), :mod:`emollm_merr.describe_models`
(``checkpoint``, ``vlm``, ``alm``), :mod:`emollm_merr.fer` (the FER fallback of stage 1, not a describer).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from emollm_merr.audio_measures import AudioMeasures, ToneThresholds, describe_tone, measure_audio
from emollm_merr.clue import CLUE_KINDS, SAMPLE_RATE, ClipContext, Clue, ClueKind, Describer
from emollm_merr.describe_models import CheckpointDescriber, HFMultimodalDescriber
from emollm_merr.describe_offline import (
    ASRSubtitleDescriber,
    CSVSubtitles,
    MeasuredAudioDescriber,
    UnavailableDescriber,
)
from emollm_merr.fer import FER_ADJECTIVES, FER_TO_MERR, FERFallbackAU, FERResult

__all__ = [
    "CLUE_KINDS",
    "FER_ADJECTIVES",
    "FER_TO_MERR",
    "SAMPLE_RATE",
    "ASRSubtitleDescriber",
    "AudioMeasures",
    "CSVSubtitles",
    "CheckpointDescriber",
    "ClipContext",
    "Clue",
    "ClueKind",
    "Describer",
    "FERFallbackAU",
    "FERResult",
    "HFMultimodalDescriber",
    "MeasuredAudioDescriber",
    "ToneThresholds",
    "UnavailableDescriber",
    "build_describer",
    "describe_tone",
    "load_python_factory",
    "measure_audio",
    "parse_spec",
]


_KINDS = {
    "visual": ("none", "checkpoint", "vlm", "python"),
    "audio": ("none", "measured", "checkpoint", "alm", "python"),
    "subtitle": ("none", "asr", "csv", "python"),
}


def parse_spec(clue: str, spec: str) -> tuple[str, str | None]:
    """Split a describer spec into ``(kind, argument)``; a bare ``*.csv`` path is ``("csv", path)`` for subtitles.

    Raises:
        ValueError: unknown kind for this clue, or a missing argument.
    """
    if clue not in _KINDS:
        raise ValueError(f"unknown clue {clue!r}; expected one of {', '.join(_KINDS)}")
    spec = str(spec).strip()
    allowed = _KINDS[clue]
    if clue == "subtitle" and spec.lower().endswith(".csv") and not spec.startswith(("csv:", "python:")):
        return "csv", spec
    kind, sep, arg = spec.partition(":")
    if kind not in allowed:
        forms = {
            "none": "none",
            "measured": "measured",
            "checkpoint": "checkpoint:<dir>",
            "vlm": "vlm:<path>",
            "alm": "alm:<path>",
            "asr": "asr[:<whisper dir>]",
            "csv": "<file>.csv",
            "python": "python:<module>:<factory>",
        }
        raise ValueError(f"unknown {clue} describer {spec!r}; use one of: {', '.join(forms[k] for k in allowed)}")
    if kind in ("none", "measured") and sep:
        raise ValueError(f"{kind!r} takes no argument, got {spec!r}")
    if kind in ("checkpoint", "vlm", "alm", "csv", "python") and not arg:
        raise ValueError(f"{spec!r} needs an argument ({kind}:...)")
    if kind == "python" and ":" not in arg:
        raise ValueError(f"{spec!r}: expected python:<module>:<factory>")
    return kind, (arg or None)


def load_python_factory(target: str) -> Callable[..., Any]:
    """Import ``<module>:<attr>`` (the part after ``python:``).

    Raises:
        ValueError: malformed target, module or attribute not found.
    """
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected <module>:<factory>, got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import {module_name!r} for python:{target} ({e})") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{module_name!r} has no attribute {attr!r} (python:{target})")
        obj = getattr(obj, part)
    return obj


def build_describer(
    clue: str,
    spec: str,
    *,
    max_new_tokens: int = 64,
    device: str = "cpu",
    face_detector: str = "auto",
    options: dict[str, Any] | None = None,
) -> Describer:
    """The describer of ``clue`` (``visual`` / ``audio`` / ``subtitle``) named by ``spec`` (module docstring)."""
    kind, arg = parse_spec(clue, spec)
    if kind == "none":
        why = {
            "visual": "no visual describer configured (describe.visual: none)",
            "audio": "no audio describer configured (describe.audio: none)",
            "subtitle": "no subtitle source configured (inputs.subtitles: none)",
        }[clue]
        return UnavailableDescriber(clue, why)
    if kind == "measured":
        return MeasuredAudioDescriber()
    if kind == "csv":
        return CSVSubtitles(arg)  # type: ignore[arg-type]
    if kind == "asr":
        return ASRSubtitleDescriber(arg, device=device)
    if kind == "checkpoint":
        return CheckpointDescriber(
            arg,
            clue,
            max_new_tokens=max_new_tokens,
            device=device,  # type: ignore[arg-type]
            face_detector=face_detector,
        )
    if kind in ("vlm", "alm"):
        return HFMultimodalDescriber(arg, clue, max_new_tokens=max_new_tokens, device=device)  # type: ignore[arg-type]
    factory = load_python_factory(arg)  # type: ignore[arg-type]
    describer = factory(clue=clue, **(options or {}))
    missing = [a for a in ("clue", "id", "describe") if not hasattr(describer, a)]
    if missing:
        raise ValueError(
            f"python:{arg} returned {type(describer).__name__}, which lacks {missing} (Describer protocol)"
        )
    return describer
