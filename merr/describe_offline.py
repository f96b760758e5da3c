"""The describers that need no model of yours: ``none``, ``<file>.csv`` subtitles, ``measured`` audio tone, ``asr``
(offline Whisper) subtitles. Specs and the registry are in :mod:`emollm_merr.describe`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emollm_merr.audio_measures import ToneThresholds, describe_tone, measure_audio
from emollm_merr.clue import SAMPLE_RATE, ClipContext, Clue, audio_or_unavailable

__all__ = ["ASRSubtitleDescriber", "CSVSubtitles", "MeasuredAudioDescriber", "UnavailableDescriber"]


@dataclass
class UnavailableDescriber:
    """Always empty + marked (``spec: none``): the offline default for the visual objective description."""

    clue: str
    why: str = "no describer configured"
    cacheable: bool = False
    thread_safe: bool = True

    @property
    def id(self) -> str:
        return f"none:{self.clue}"

    def describe(self, clip: ClipContext) -> Clue:
        return Clue.unavailable(self.id, self.why)


class CSVSubtitles:
    """Subtitles from a ``name,sentence`` CSV (Emotion-LLaMA's ``transcription_en_all.csv``).

    Names are compared as strings (DFEW's numeric ids keep their leading zeros). A missing row or an empty sentence
    is an unavailable clue.
    """

    clue = "subtitle"
    cacheable = False
    thread_safe = True

    def __init__(self, path: str | os.PathLike[str]):
        from emollm.data.merr_files import read_transcriptions_csv

        self.path = Path(path)
        self.table = read_transcriptions_csv(self.path)
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
        self.id = f"csv:{self.path.name}:{digest}"

    def describe(self, clip: ClipContext) -> Clue:
        sentence = self.table.get(clip.name)
        if sentence is None:
            return Clue.unavailable(self.id, f"no row for {clip.name!r} in {self.path.name}")
        if not sentence.strip():
            return Clue.unavailable(self.id, f"empty sentence for {clip.name!r} in {self.path.name}")
        return Clue.available(sentence, self.id)


class MeasuredAudioDescriber:
    """Audio tone from the waveform: pitch, loudness, speaking rate, intonation (``spec: measured``)."""

    clue = "audio"
    cacheable = True
    thread_safe = True
    VERSION = 1

    def __init__(self, thresholds: ToneThresholds | None = None):
        self.thresholds = thresholds or ToneThresholds()
        digest = hashlib.sha256(json.dumps(dataclasses.asdict(self.thresholds), sort_keys=True).encode()).hexdigest()
        self.id = f"measured:v{self.VERSION}:{digest[:12]}"

    def describe(self, clip: ClipContext) -> Clue:
        wave, missing = audio_or_unavailable(self.id, clip)
        if missing is not None:
            return missing
        m = measure_audio(wave, SAMPLE_RATE, self.thresholds)
        measures = m.to_dict()
        if m.rms_dbfs < self.thresholds.silence_dbfs:
            return Clue.unavailable(
                self.id, f"silent audio track (RMS below {self.thresholds.silence_dbfs:g} dBFS)", measures
            )
        text = describe_tone(m, self.thresholds)
        if text is None:
            return Clue.unavailable(self.id, "no voiced speech in the audio track", measures)
        return Clue.available(text, self.id, measures)


# ========================================================================================================= ASR


class ASRSubtitleDescriber:
    """Subtitles by offline Whisper (``emollm.encoders.text.WhisperTranscriber``; embedded tiny.en by default).

    Whisper "hears" words in non-speech (``"you"`` in a hum, ``"Beeping"`` in a tone), so nothing is transcribed
    when the track is silent or unvoiced, or when Whisper's own no-speech probability (``<|nocaptions|>`` /
    ``<|nospeech|>`` after ``<|startoftranscript|>``; Whisper's default threshold 0.6) says there is no speech: the
    clue is marked unavailable instead.
    """

    clue = "subtitle"
    cacheable = True
    thread_safe = False

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        transcriber: Any = None,
        no_speech_threshold: float = 0.6,
    ):
        self.path = None if path is None else Path(path)
        self.device = device
        self._asr = transcriber
        self.no_speech_threshold = no_speech_threshold
        where = self.path if self.path is not None else "embedded-tiny.en"
        self.id = f"asr:whisper:{where}" + (f":nospeech{no_speech_threshold:g}" if no_speech_threshold != 0.6 else "")

    def _transcriber(self):
        if self._asr is None:
            from emollm.encoders.text import WhisperTranscriber  # lazy: torch + transformers

            self._asr = WhisperTranscriber(self.path, device=self.device)
        return self._asr

    def no_speech_prob(self, wave: np.ndarray) -> float | None:
        """Whisper's probability that ``wave`` holds no speech (None for a transcriber that does not expose it)."""
        fn = getattr(self._transcriber(), "no_speech_prob", None)
        return None if fn is None else fn(wave, sampling_rate=SAMPLE_RATE)

    def describe(self, clip: ClipContext) -> Clue:
        wave, missing = audio_or_unavailable(self.id, clip)
        if missing is not None:
            return missing
        m = measure_audio(wave)
        if m.rms_dbfs < ToneThresholds().silence_dbfs:
            return Clue.unavailable(self.id, "silent audio track")
        if m.voiced_s == 0:
            return Clue.unavailable(self.id, "no voiced speech to transcribe")
        p = self.no_speech_prob(wave)
        measures = {} if p is None else {"no_speech_prob": round(p, 4)}
        if p is not None and p >= self.no_speech_threshold:
            why = f"Whisper hears no speech (p_no_speech {p:.2f} >= {self.no_speech_threshold:g})"
            return Clue.unavailable(self.id, why, measures)
        text = self._transcriber()(wave, SAMPLE_RATE)
        if not str(text).strip():
            return Clue.unavailable(self.id, "ASR heard no speech", measures)
        return Clue.available(str(text), self.id, measures)
