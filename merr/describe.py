"""Clue describers (MERR stage 4) and the FER fallback for stage 1.

Every clue is a :class:`Clue`: its text, and ``status`` ``"ok"`` or ``"unavailable"`` with the reason. A describer
never invents: when it cannot measure or describe (no audio track, silence, no describer configured, a model that
returned nothing), the clue is left empty and marked, and the caption/prompt builders leave it out.

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
=================================== ==========================================================================

Measured audio tone (:func:`measure_audio`, thresholds in :class:`ToneThresholds`): the wave (16 kHz mono) is cut
into 64 ms frames every 10 ms. *Active* frames are louder than ``-50 dBFS`` and within 30 dB of the loudest frame;
*voiced* frames are active frames where YIN (de Cheveigné & Kawahara 2002; cumulative-mean-normalised difference
below 0.15, searched over 60-500 Hz, parabolic refinement) finds a period. Then

* pitch = median F0 of voiced frames: ``< 150 Hz`` low-pitched, ``> 260 Hz`` high-pitched, else medium-pitched
  (adult speaking F0 is roughly 85-155 Hz for men and 165-255 Hz for women);
* intonation = F0 spread (10th-90th percentile) in semitones: ``< 1.5`` flat/monotone, ``> 8`` strongly varied;
* loudness = energy mean of active frames in dBFS: ``>= -18`` loud, ``< -35`` quiet, else moderately loud
  (relative to full scale, so it depends on the recording gain; broadcast speech sits around -20 to -30 dBFS);
* speaking rate = syllable nuclei per second of active audio, nuclei being voiced local maxima of the frame
  energy separated by dips of at least 2 dB (a simplified de Jong & Wempe 2009): ``< 3`` slow, ``> 6`` fast, else
  moderately paced (articulation rates of conversational speech are about 4-6 syllables/s). With fewer than two
  nuclei the rate is not reported.

The words read ``"high-pitched, loud and fast, with flat, monotone intonation"``; the numbers go to
``Clue.measures``. No audio track, an undecodable track, silence (RMS < -50 dBFS) or no voiced frame gives an
unavailable clue naming the reason.

FER fallback (:class:`FERFallbackAU`): with no OpenFace CSV, face crops of ``uniform:16`` frames are classified by
the FER2013 mini-Xception (``emollm.encoders.face.classify_faces``). The *dominant* expression is the most frequent
per-frame top class other than neutral (ties: higher mean probability, then FER order); neutral only when every
frame's top class is neutral. Its per-frame probability is the intensity curve; the peak is its earliest maximum.
The pseudo-label maps FER2013 -> MERR vocabulary by name (:data:`FER_TO_MERR`: angry, fear, happy, sad, surprise,
neutral; ``disgust`` -> no label, as MERR excludes disgust). The record says ``au_source: "fer"``, ``AU_list`` and
``peak_AU_list`` are empty, and the visual expression clue is ``"<adjective> facial expression"``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "FER_ADJECTIVES",
    "FER_TO_MERR",
    "ASRSubtitleDescriber",
    "AudioMeasures",
    "CSVSubtitles",
    "CheckpointDescriber",
    "ClipContext",
    "Clue",
    "ClueKind",
    "Describer",
    "FERFallbackAU",
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

ClueKind = Literal["visual", "audio", "subtitle"]
CLUE_KINDS: tuple[str, ...] = ("visual", "audio", "subtitle")
SAMPLE_RATE = 16000


# ================================================================================================ data types


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


def _audio_unavailable(source: str, clip: ClipContext) -> tuple[np.ndarray | None, Clue | None]:
    """The clip's wave, or an unavailable clue saying why there is none (no track, undecodable, ...)."""
    from emollm.media import MediaError, NoAudioTrack

    try:
        return clip.audio(), None
    except NoAudioTrack:
        return None, Clue.unavailable(source, "no audio track")
    except MediaError as e:
        return None, Clue.unavailable(source, f"audio not usable ({e.problem})")


# ============================================================================================ simple describers


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


# ============================================================================================== measured audio


@dataclass(frozen=True)
class ToneThresholds:
    """Word thresholds of :class:`MeasuredAudioDescriber` (see the module docstring for where they come from)."""

    silence_dbfs: float = -50.0
    relative_floor_db: float = 30.0
    low_pitch_hz: float = 150.0
    high_pitch_hz: float = 260.0
    flat_semitones: float = 1.5
    varied_semitones: float = 8.0
    loud_dbfs: float = -18.0
    quiet_dbfs: float = -35.0
    slow_rate: float = 3.0
    fast_rate: float = 6.0
    fmin_hz: float = 60.0
    fmax_hz: float = 500.0
    yin_threshold: float = 0.15
    nucleus_dip_db: float = 2.0


@dataclass(frozen=True)
class AudioMeasures:
    """What :func:`measure_audio` found (None where not measurable)."""

    duration_s: float
    rms_dbfs: float
    active_s: float
    voiced_s: float
    pitch_hz: float | None = None
    pitch_range_st: float | None = None
    loudness_dbfs: float | None = None
    nuclei: int = 0
    rate_syll_per_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Rounded, JSON-ready numbers (rounding keeps cached files stable)."""
        out = {}
        for k, v in dataclasses.asdict(self).items():
            out[k] = None if v is None else (round(float(v), 2) if isinstance(v, float) else v)
            if isinstance(out[k], float) and math.isinf(out[k]):
                out[k] = None
        return out


_FRAME = 1024  # 64 ms at 16 kHz (the YIN window also serves as the energy window, like Praat's intensity)
_HOP = 160  # 10 ms


def _frame_signal(x: np.ndarray, frame: int, hop: int) -> np.ndarray:
    if x.size < frame:
        x = np.pad(x, (0, frame - x.size))
    return np.lib.stride_tricks.sliding_window_view(x, frame)[::hop]  # (N, frame)


def _yin(frames: np.ndarray, sr: int, fmin: float, fmax: float, threshold: float) -> np.ndarray:
    """Per-frame F0 in Hz by YIN (NaN where no period is found). ``frames``: (N, L) float64."""
    n, length = frames.shape
    tau_max = min(int(sr / fmin), length // 2)
    tau_min = max(2, int(sr / fmax))
    w = length - tau_max
    nfft = 1 << int(math.ceil(math.log2(length + w)))
    fa = np.fft.rfft(frames[:, :w], nfft)
    fb = np.fft.rfft(frames, nfft)
    r = np.fft.irfft(np.conj(fa) * fb, nfft)[:, : tau_max + 1]  # (N, tau_max+1): sum_j x_j x_{j+tau}
    cs = np.concatenate([np.zeros((n, 1)), np.cumsum(frames * frames, axis=1)], axis=1)  # (N, L+1)
    taus = np.arange(tau_max + 1)
    d = cs[:, [w]] + (cs[:, taus + w] - cs[:, taus]) - 2.0 * r  # difference function (N, tau_max+1)
    d = np.maximum(d, 0.0)
    cm = np.ones_like(d)
    cum = np.cumsum(d[:, 1:], axis=1)
    cm[:, 1:] = d[:, 1:] * taus[1:] / np.maximum(cum, 1e-12)  # cumulative-mean-normalised difference
    f0 = np.full(n, np.nan)
    below = cm[:, tau_min:] < threshold
    for i in np.flatnonzero(below.any(axis=1)):
        t = tau_min + int(np.argmax(below[i]))
        while t + 1 <= tau_max and cm[i, t + 1] < cm[i, t]:
            t += 1  # walk down to the local minimum
        if t <= tau_min or t >= tau_max:
            shift = 0.0
        else:
            a, b, c = cm[i, t - 1], cm[i, t], cm[i, t + 1]
            den = a - 2 * b + c
            shift = 0.5 * (a - c) / den if den > 0 else 0.0
        f0[i] = sr / (t + shift)
    return f0


def measure_audio(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, th: ToneThresholds | None = None) -> AudioMeasures:
    """Pitch, loudness and speaking rate of a mono wave in [-1, 1] (see the module docstring)."""
    th = th or ToneThresholds()
    x = np.asarray(wave, dtype=np.float64).reshape(-1)
    if sample_rate != SAMPLE_RATE:
        from emollm.media import resample

        x = np.asarray(resample(x.astype(np.float32), sample_rate, SAMPLE_RATE), dtype=np.float64)
    sr = SAMPLE_RATE
    duration = x.size / sr
    total = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    rms_dbfs = 20 * math.log10(total) if total > 0 else -math.inf
    if rms_dbfs < th.silence_dbfs:
        return AudioMeasures(duration, rms_dbfs, 0.0, 0.0)
    frames = _frame_signal(x, _FRAME, _HOP)  # (N, 1024)
    energy = np.mean(frames * frames, axis=1)  # (N,)
    db = 10 * np.log10(np.maximum(energy, 1e-20))
    active = (db > th.silence_dbfs) & (db > db.max() - th.relative_floor_db)
    f0 = np.full(len(frames), np.nan)
    if active.any():
        f0[active] = _yin(frames[active], sr, th.fmin_hz, th.fmax_hz, th.yin_threshold)
    voiced = active & ~np.isnan(f0)
    active_s = float(active.sum() * _HOP / sr)
    voiced_s = float(voiced.sum() * _HOP / sr)
    loudness = float(10 * math.log10(energy[active].mean())) if active.any() else None
    if not voiced.any():
        return AudioMeasures(duration, rms_dbfs, active_s, voiced_s, loudness_dbfs=loudness)
    fv = f0[voiced]
    pitch = float(np.median(fv))
    p10, p90 = np.percentile(fv, [10, 90])
    spread = float(12 * math.log2(p90 / p10)) if p10 > 0 else 0.0
    # Syllable nuclei: voiced local maxima of the energy curve, consecutive ones separated by a >= dip_db dip.
    nuclei: list[int] = []
    for i in range(1, len(db) - 1):
        if not (voiced[i] and db[i] >= db[i - 1] and db[i] > db[i + 1]):
            continue
        if nuclei:
            prev = nuclei[-1]
            dip = db[prev : i + 1].min()
            if min(db[prev], db[i]) - dip < th.nucleus_dip_db:
                if db[i] > db[prev]:
                    nuclei[-1] = i  # same syllable: keep the higher maximum
                continue
        nuclei.append(i)
    rate = len(nuclei) / active_s if len(nuclei) >= 2 and active_s > 0 else None
    return AudioMeasures(duration, rms_dbfs, active_s, voiced_s, pitch, spread, loudness, len(nuclei), rate)


def _join_words(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def describe_tone(m: AudioMeasures, th: ToneThresholds | None = None) -> str | None:
    """Words for measured audio (``"high-pitched, loud and fast, with flat, monotone intonation"``); None when
    there is no voiced speech to describe."""
    th = th or ToneThresholds()
    if m.pitch_hz is None or m.loudness_dbfs is None:
        return None
    pitch = (
        "low-pitched"
        if m.pitch_hz < th.low_pitch_hz
        else "high-pitched"
        if m.pitch_hz > th.high_pitch_hz
        else ("medium-pitched")
    )
    loud = (
        "loud"
        if m.loudness_dbfs >= th.loud_dbfs
        else "quiet"
        if m.loudness_dbfs < th.quiet_dbfs
        else ("moderately loud")
    )
    words = [pitch, loud]
    if m.rate_syll_per_s is not None:
        r = m.rate_syll_per_s
        words.append("slow" if r < th.slow_rate else "fast" if r > th.fast_rate else "moderately paced")
    text = _join_words(words)
    if m.pitch_range_st is not None:
        if m.pitch_range_st < th.flat_semitones:
            text += ", with flat, monotone intonation"
        elif m.pitch_range_st > th.varied_semitones:
            text += ", with strongly varied intonation"
    return text


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
        wave, missing = _audio_unavailable(self.id, clip)
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
        wave, missing = _audio_unavailable(self.id, clip)
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


# ================================================================================================ model-based


def _file_digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        if p.is_file():
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


_QUESTIONS = {
    "visual": "Describe objectively what is visible in this frame: the person's surroundings, gestures and posture. "
    "Answer in one sentence, without guessing emotions.",
    "audio": "Describe the speaker's tone of voice (pitch, loudness, pace) in one sentence.",
}


def _peak_frame(clip: ClipContext) -> np.ndarray:
    from emollm.media import read_frames

    info = clip.media_info()
    index = 0 if clip.peak_index is None else min(max(int(clip.peak_index), 0), max(info.frames - 1, 0))
    return read_frames(clip.path, [index], max_side=1280, info=info)  # (1, H, W, 3) uint8


class CheckpointDescriber:
    """Visual or audio clue from an emollm checkpoint (``spec: checkpoint:<dir>``).

    Visual: the peak frame goes to the checkpoint's ``video`` tower (or its ``face`` tower as a face crop) when that
    tower is a live encoder; audio: the waveform goes to its live ``audio`` tower. Checkpoints trained on
    precomputed features cannot look at raw media and are refused with a message saying so.
    """

    cacheable = True
    thread_safe = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        clue: str,
        *,
        max_new_tokens: int = 64,
        device: str = "cpu",
        question: str | None = None,
        face_detector: str = "auto",
    ):
        if clue not in ("visual", "audio"):
            raise ValueError(f"checkpoint describers give 'visual' or 'audio' clues, not {clue!r}")
        from emollm.checkpoint import read_checkpoint_meta
        from emollm.configuration import EmoLLMConfig

        self.path = Path(path)
        read_checkpoint_meta(self.path)  # fails early with a clear message when it is not a checkpoint
        towers = {m: c.encoder for m, c in EmoLLMConfig.load(self.path / "emollm_config.json").modalities.items()}
        wanted = ("video", "face") if clue == "visual" else ("audio",)
        modality = next((m for m in wanted if towers.get(m, "precomputed") != "precomputed"), None)
        if modality is None:
            raise ValueError(
                f"checkpoint {self.path} has no live {' or '.join(wanted)} encoder (its towers: {towers}); a "
                f"{clue} clue from raw clips needs one (precomputed-feature towers cannot look at a clip): "
                "use another describer"
            )
        self.clue = clue
        self.modality = modality
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.face_detector = face_detector
        self.question = question or _QUESTIONS[clue]
        q = hashlib.sha256(self.question.encode()).hexdigest()[:8]
        digest = _file_digest(
            self.path / "checkpoint.json", self.path / "projectors.safetensors", self.path / "adapter_model.safetensors"
        )
        self.id = f"checkpoint:{self.path.resolve()}:{digest}:{clue}:{modality}:{q}:{max_new_tokens}"
        self._loaded: tuple[Any, Any] | None = None

    def _model(self):
        if self._loaded is None:
            from emollm.checkpoint import load_model

            self._loaded = load_model(self.path, device=self.device)
        return self._loaded

    def _inputs(self, clip: ClipContext, modality: str):
        import torch

        if modality == "audio":
            wave, missing = _audio_unavailable(self.id, clip)
            return (None, missing) if missing is not None else (torch.from_numpy(np.ascontiguousarray(wave)), None)
        if modality == "video":
            return torch.from_numpy(_peak_frame(clip)), None
        from emollm.media import load_sample

        info = clip.media_info()
        scores = np.zeros(max(info.frames, 1))
        scores[min(clip.peak_index or 0, len(scores) - 1)] = 1.0
        sample = load_sample(
            clip.path,
            modalities=("face",),
            face_policy="peak",
            frame_policy="peak",
            scores=scores,
            face_detector=self.face_detector,
        )
        if sample.faces is None:
            return None, Clue.unavailable(self.id, f"no face at the peak frame ({sample.missing.get('face', '')})")
        return torch.from_numpy(sample.faces), None

    def describe(self, clip: ClipContext) -> Clue:
        from emollm.generation import chat
        from emollm.processing import MARKERS, Sample

        model, processor = self._model()
        modality = self.modality
        features, missing = self._inputs(clip, modality)
        if missing is not None:
            return missing
        sample = Sample(
            messages=[{"role": "user", "content": f"{MARKERS[modality]} {self.question}"}],
            features={modality: features},
            name=clip.name,
        )
        answer = chat(model, processor, [sample], max_new_tokens=self.max_new_tokens, do_sample=False)[0]
        return Clue.available(answer, self.id)


class HFMultimodalDescriber:
    """Visual (``vlm:<path>``) or audio (``alm:<path>``) clue from a local transformers multimodal LLM.

    Loads ``AutoProcessor`` + ``AutoModelForMultimodalLM`` (else ``AutoModelForImageTextToText``) from the folder,
    never from the network, and asks :data:`_QUESTIONS` with the peak frame (as a PIL image) or the 16 kHz wave
    through the processor's chat template. Greedy decoding. This is the slot for the MiniGPT-v2 / Qwen-Audio
    describers of the MERR paper; tested here only through its error paths (no such weights ship offline).
    """

    cacheable = True
    thread_safe = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        clue: str,
        *,
        max_new_tokens: int = 64,
        device: str = "cpu",
        question: str | None = None,
    ):
        if clue not in ("visual", "audio"):
            raise ValueError(f"vlm/alm describers give 'visual' or 'audio' clues, not {clue!r}")
        self.path = Path(path).expanduser()
        if not (self.path / "config.json").is_file():
            kind = "vlm" if clue == "visual" else "alm"
            raise FileNotFoundError(
                f"{kind}:{self.path}: expected a local transformers model folder with config.json "
                "(weights are never downloaded)"
            )
        self.clue = clue
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.question = question or _QUESTIONS[clue]
        q = hashlib.sha256(self.question.encode()).hexdigest()[:8]
        kind = "vlm" if clue == "visual" else "alm"
        digest = _file_digest(self.path / "config.json")
        self.id = f"{kind}:{self.path.resolve()}:{digest}:{q}:{max_new_tokens}"
        self._loaded: tuple[Any, Any] | None = None

    def _model(self):
        if self._loaded is None:
            import transformers

            processor = transformers.AutoProcessor.from_pretrained(self.path)
            errors = []
            for name in ("AutoModelForMultimodalLM", "AutoModelForImageTextToText"):
                auto = getattr(transformers, name, None)
                if auto is None:
                    continue
                try:
                    model = auto.from_pretrained(self.path).to(self.device).eval()
                    break
                except (ValueError, KeyError) as e:
                    errors.append(f"{name}: {e}")
            else:
                raise ValueError(f"{self.path}: not a multimodal LLM transformers can load ({'; '.join(errors)})")
            self._loaded = (processor, model)
        return self._loaded

    def describe(self, clip: ClipContext) -> Clue:
        import torch

        processor, model = self._model()
        if self.clue == "visual":
            from PIL import Image

            part: dict[str, Any] = {"type": "image", "image": Image.fromarray(_peak_frame(clip)[0])}
        else:
            wave, missing = _audio_unavailable(self.id, clip)
            if missing is not None:
                return missing
            part = {"type": "audio", "audio": wave}
        messages = [{"role": "user", "content": [part, {"type": "text", "text": self.question}]}]
        inputs = processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        inputs = inputs.to(self.device)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1] :]
        text = processor.batch_decode(new, skip_special_tokens=True)[0]
        return Clue.available(text, self.id)


# ============================================================================================= FER fallback

#: FER2013 class -> MERR label (None: no MERR label; MERR excludes disgust).
FER_TO_MERR: dict[str, str | None] = {
    "angry": "angry",
    "disgust": None,
    "fear": "fear",
    "happy": "happy",
    "sad": "sad",
    "surprise": "surprise",
    "neutral": "neutral",
}
#: FER2013 class -> the adjective of the visual-expression clue (``"happy facial expression"``).
FER_ADJECTIVES: dict[str, str] = {
    "angry": "angry",
    "disgust": "disgusted",
    "fear": "fearful",
    "happy": "happy",
    "sad": "sad",
    "surprise": "surprised",
    "neutral": "neutral",
}


@dataclass(frozen=True)
class FERResult:
    """Per-frame FER2013 probabilities of one clip and what the fallback makes of them."""

    labels: tuple[str, ...]
    frame_indices: list[int]
    probs: np.ndarray
    """(K, C) probabilities, one row per scored frame."""
    dominant: str
    peak_pos: int
    """Row of ``probs`` at the peak."""

    @property
    def peak_index(self) -> int:
        """0-based video frame of the peak."""
        return int(self.frame_indices[self.peak_pos])

    @property
    def pseu_emotion(self) -> str | None:
        """MERR label of the dominant expression (None for disgust)."""
        return FER_TO_MERR.get(self.dominant)

    @property
    def peak_probs(self) -> dict[str, float]:
        """Class -> probability at the peak."""
        return {lab: round(float(p), 4) for lab, p in zip(self.labels, self.probs[self.peak_pos], strict=True)}


class FERFallbackAU:
    """Stage-1 fallback without OpenFace: FER2013 expression probabilities as the intensity curve.

    Args:
        frame_policy: Frames to score (``emollm.media.sample_frame_indices`` policy).
        face_detector: ``auto`` / ``mtcnn`` / ``haar``.
        classify: ``crops (N, H, W, 3) -> probs (N, C)``; default ``emollm.encoders.face.classify_faces``.
        labels: Class names of ``classify``'s columns; default ``emollm.encoders.face.FER_LABELS``.
    """

    VERSION = 1

    def __init__(
        self,
        frame_policy: str = "uniform:16",
        face_detector: str = "auto",
        classify: Callable[[np.ndarray], Any] | None = None,
        labels: tuple[str, ...] | None = None,
    ):
        self.frame_policy = frame_policy
        self.face_detector = face_detector
        self._classify = classify
        self._labels = labels
        self._lock = threading.Lock()
        self.id = f"fer:mini_xception:v{self.VERSION}:{frame_policy}:{face_detector}"

    def _model(self) -> tuple[Callable[[np.ndarray], Any], tuple[str, ...]]:
        if self._classify is None:
            from emollm.encoders.face import FER_LABELS, classify_faces  # lazy: torch

            self._classify, self._labels = classify_faces, tuple(FER_LABELS)
        return self._classify, tuple(self._labels or ())

    def analyze(self, clip: ClipContext) -> FERResult:
        """Score the clip's faces.

        Raises:
            emollm_merr.au.NoFaceError: no face in any scored frame.
            emollm.media.MediaError: the video cannot be decoded.
        """
        from emollm_merr.au import NoFaceError

        from emollm.media import load_sample

        sample = load_sample(
            clip.path,
            modalities=("face",),
            frame_policy=self.frame_policy,
            face_detector=self.face_detector,
            min_audio_duration=None,
        )
        if sample.faces is None:
            raise NoFaceError(f"{clip.path}: no face detected for the FER fallback ({sample.missing.get('face', '')})")
        classify, labels = self._model()
        with self._lock:
            probs = classify(sample.faces)
        probs = np.asarray(probs.detach().cpu().numpy() if hasattr(probs, "detach") else probs, dtype=np.float64)
        if probs.ndim != 2 or probs.shape[1] != len(labels):
            raise ValueError(f"FER classifier returned shape {probs.shape}, expected (frames, {len(labels)})")
        probs = np.round(probs, 6)  # stable across BLAS thread counts in the cached record
        return self._decide(labels, list(sample.face_indices), probs)

    @staticmethod
    def _decide(labels: tuple[str, ...], indices: list[int], probs: np.ndarray) -> FERResult:
        top = probs.argmax(axis=1)
        neutral = labels.index("neutral") if "neutral" in labels else -1
        counts = np.bincount(top, minlength=len(labels))
        mean = probs.mean(axis=0)
        expressive = [c for c in range(len(labels)) if c != neutral and counts[c] > 0]
        if expressive:
            dom = min(expressive, key=lambda c: (-counts[c], -mean[c], c))
        else:
            dom = neutral if neutral >= 0 else int(np.argmax(mean))
        curve = probs[:, dom]
        peak = int(np.flatnonzero(curve >= curve.max() - 1e-9)[0])
        return FERResult(labels, indices, probs, labels[dom], peak)


# ============================================================================================== spec parsing


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
