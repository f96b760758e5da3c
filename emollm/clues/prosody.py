"""Speech prosody measured with standard tools: Praat (through parselmouth) and, optionally, openSMILE eGeMAPS.

:func:`measure_prosody` takes a mono float waveform (16 kHz by default; Praat works at any rate) and returns a
:class:`Prosody` with:

* **pitch (F0)** from Praat's autocorrelation tracker (``To Pitch (ac)``, 10 ms steps) in two passes, as De Looze &
  Hirst (2008) propose for speaker-independent settings: a first pass over 50-700 Hz, then a second pass over
  ``[0.75 * q25, 1.5 * q75]`` of the first pass' F0 (q25/q75: quartiles). One fixed 75 Hz floor (Praat's default)
  loses very low voices: espeak-ng at ``-p 10`` (~71 Hz) read as 134 Hz with octave errors. Reported: mean, standard
  deviation, 5th-95th percentile range, in Hz and in semitones (re 100 Hz, Praat's semitone scale);
* **intensity** (Praat ``To Intensity``, dB re 2e-5, the wave taken as Pascal: a full-scale sine is ~91 dB) over the
  voiced frames: energy mean and standard deviation, and the mean as dBFS (``mean_db - 93.98``; 0 dBFS = RMS 1.0,
  as :func:`emollm.media.rms_db`);
* **voice quality**: local jitter and local shimmer (Praat's defaults: periods 0.1-20 ms, factor 1.3, amplitude
  factor 1.6) and mean harmonics-to-noise ratio (``To Harmonicity (cc)``, voiced frames only);
* **timing**: the voiced fraction of the clip, and a speaking-rate proxy: voiced segments (runs of >= 30 ms of
  voiced frames) per second of the speech span (first to last voiced frame). Faster speech has more segments per
  second (espeak-ng, same sentence: 2.0 at ``-s 100``, 3.4 at 175, 4.7 at 300 words per minute).

Silent, unvoiced or too-short input gives ``Prosody(has_speech=False, reason=...)`` with every measure None (never
NaN); Praat's NaN answers (too few periods for jitter, say) become None too.

:func:`describe_prosody` turns the numbers into a short phrase ("low, monotone pitch; loud; fast") with the
thresholds of :class:`ProsodyThresholds`. :func:`egemaps_functionals` gives openSMILE's eGeMAPSv02 functionals (88
values, the standard feature set of speech-emotion baselines). For files, :func:`prosody_from_file` decodes with
:func:`emollm.media.load_audio` (any container, resampled to 16 kHz mono).

References: Boersma & Weenink, Praat; De Looze & Hirst (2008), "Detecting changes in key and range for the automatic
modelling and coding of intonation", Speech Prosody; Eyben et al. (2016), "The Geneva Minimalistic Acoustic
Parameter Set (GeMAPS)", IEEE TAC.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from emollm.clues._deps import import_optional
from emollm.media import is_silent, load_audio

__all__ = [
    "SAMPLE_RATE",
    "Prosody",
    "ProsodyThresholds",
    "ProsodyTrack",
    "describe_prosody",
    "egemaps_functionals",
    "harmonicity_frames",
    "measure_prosody",
    "prosody_from_file",
    "prosody_track",
]

SAMPLE_RATE = 16000
"""Default sample rate of the input waveforms (emollm's audio rate)."""
_TIME_STEP = 0.01  # s, pitch and intensity frames
_DB_SPL_TO_DBFS = 20 * math.log10(1 / 2e-5)  # 93.98: Praat's dB (re 2e-5 Pa) of an RMS-1.0 signal
_PRAAT = "praat-parselmouth==0.4.7"


@dataclass(frozen=True)
class ProsodyThresholds:
    """Word thresholds of :func:`describe_prosody` (lower bound exclusive, upper inclusive where it matters).

    Pitch levels use the usual adult ranges (men ~85-155 Hz, women ~165-255 Hz), so "low"/"high" partly reflect the
    speaker's sex: compare a speaker with themselves where you can. The variability bounds are the F0 standard
    deviation in semitones (read speech: ~2-3 st; espeak-ng's synthetic voice: ~1.3 st). The loudness bounds are
    dBFS of the voiced frames (broadcast speech sits near -20 dBFS). The rate bounds are voiced segments per
    second, calibrated on espeak-ng (2.0 / 3.4 / 4.7 at 100 / 175 / 300 words per minute); natural speech may
    differ. Jitter > 1.04 % and shimmer > 3.81 % are Praat's manual's pathology thresholds; espeak-ng's voice exceeds
    the shimmer one, so voice quality is only mentioned when both are exceeded and HNR is below ``rough_hnr_db``.
    """

    low_pitch_hz: float = 140.0
    high_pitch_hz: float = 240.0
    monotone_st: float = 1.5
    variable_st: float = 4.0
    quiet_dbfs: float = -35.0
    loud_dbfs: float = -18.0
    slow_rate: float = 2.5
    fast_rate: float = 4.0
    rough_jitter: float = 0.0104
    rough_shimmer: float = 0.0381
    rough_hnr_db: float = 7.0


@dataclass(frozen=True)
class Prosody:
    """Prosodic measures of one utterance; every measure is None when it cannot be measured.

    Attributes:
        has_speech: Whether voiced speech was found.
        reason: Why not (None when ``has_speech``).
        duration_s: Length of the input.
        voiced_fraction: Voiced 10 ms frames / all frames.
        pitch_mean_hz: Mean F0 over voiced frames.
        pitch_std_hz: Standard deviation of F0.
        pitch_min_hz: 5th percentile of F0.
        pitch_max_hz: 95th percentile of F0.
        pitch_mean_st: Mean F0 in semitones re 100 Hz.
        pitch_std_st: Standard deviation of F0 in semitones.
        pitch_range_st: 5th-95th percentile range in semitones.
        intensity_mean_db: Energy mean of the voiced frames' intensity (Praat dB).
        intensity_std_db: Standard deviation of the voiced frames' intensity.
        loudness_dbfs: ``intensity_mean_db`` as dBFS.
        jitter_local: Praat's local jitter (fraction, 0.01 = 1 %).
        shimmer_local: Praat's local shimmer (fraction).
        hnr_db: Mean harmonics-to-noise ratio over voiced frames.
        voiced_segments: Runs of >= 30 ms of voiced frames.
        speech_span_s: First to last voiced frame.
        rate_segments_per_s: ``voiced_segments / speech_span_s`` (speaking-rate proxy).
        pitch_floor_hz: Pitch floor of the final pass.
        pitch_ceiling_hz: Pitch ceiling of the final pass.
    """

    has_speech: bool
    reason: str | None
    duration_s: float
    voiced_fraction: float | None = None
    pitch_mean_hz: float | None = None
    pitch_std_hz: float | None = None
    pitch_min_hz: float | None = None
    pitch_max_hz: float | None = None
    pitch_mean_st: float | None = None
    pitch_std_st: float | None = None
    pitch_range_st: float | None = None
    intensity_mean_db: float | None = None
    intensity_std_db: float | None = None
    loudness_dbfs: float | None = None
    jitter_local: float | None = None
    shimmer_local: float | None = None
    hnr_db: float | None = None
    voiced_segments: int | None = None
    speech_span_s: float | None = None
    rate_segments_per_s: float | None = None
    pitch_floor_hz: float | None = None
    pitch_ceiling_hz: float | None = None

    def to_dict(self, ndigits: int = 4) -> dict[str, Any]:
        """JSON-ready measures, floats rounded to ``ndigits`` (None stays None)."""
        return {k: round(v, ndigits) if isinstance(v, float) else v for k, v in asdict(self).items()}

    def phrase(self, thresholds: ProsodyThresholds | None = None) -> str:
        """Short description; see :func:`describe_prosody`."""
        return describe_prosody(self, thresholds)


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _semitones(hz: np.ndarray) -> np.ndarray:
    return 12.0 * np.log2(hz / 100.0)


def _pitch(snd: Any, floor: float, ceiling: float) -> tuple[Any, np.ndarray]:
    pitch = snd.to_pitch_ac(time_step=_TIME_STEP, pitch_floor=floor, pitch_ceiling=ceiling)
    return pitch, pitch.selected_array["frequency"]  # (frames,) Hz, 0 = unvoiced


def measure_prosody(
    wave: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    *,
    pitch_floor: float = 50.0,
    pitch_ceiling: float = 700.0,
    two_pass: bool = True,
    silence_db: float = -50.0,
    min_duration: float = 0.1,
    min_voiced_frames: int = 3,
) -> Prosody:
    """Measures pitch, intensity, voice quality and timing of one utterance with Praat.

    The same numbers as ``prosody_track(wave, ...).window(0, duration)``: use :func:`prosody_track` to measure many
    stretches of one recording (a timeline) without running Praat again.

    Args:
        wave: Mono float waveform in ``[-1, 1]``, shape ``(T,)``.
        sample_rate: Its rate in Hz.
        pitch_floor: First-pass pitch floor in Hz.
        pitch_ceiling: First-pass pitch ceiling in Hz.
        two_pass: Re-track pitch within ``[0.75 q25, 1.5 q75]`` of the first pass (De Looze & Hirst 2008).
        silence_db: Below this RMS level (dBFS) the clip is silent.
        min_duration: Shorter clips (seconds) are "too short" (Praat needs a few pitch periods).
        min_voiced_frames: Fewer voiced 10 ms frames means "no voiced speech".

    Returns:
        The measures; ``has_speech=False`` with a ``reason`` for silence, unvoiced sound or too-short input.

    Raises:
        ValueError: ``wave`` is not 1-D, or holds NaN/inf.
        MissingClueDependency: praat-parselmouth is not installed.

    Example:
        >>> p = measure_prosody(wave)  # doctest: +SKIP
        >>> p.pitch_mean_hz, p.phrase()  # doctest: +SKIP
        (101.1, 'low, monotone pitch; moderately loud; moderately paced')
    """
    track = prosody_track(
        wave, sample_rate, pitch_floor=pitch_floor, pitch_ceiling=pitch_ceiling, two_pass=two_pass,
        silence_db=silence_db, min_duration=min_duration, min_voiced_frames=min_voiced_frames,
    )  # fmt: skip
    return track.window(0.0, track.duration_s)


@dataclass
class ProsodyTrack:
    """Praat's frame-level analyses of one recording, computed once; :meth:`window` measures any stretch of it.

    A timeline asks for many overlapping windows of one clip: Praat runs once over the whole recording (pitch in two
    passes, intensity, harmonicity, glottal pulses) and each window takes the frames inside it. The two-pass pitch
    range comes from the whole recording, so a window's F0 is tracked within the speaker's range.

    Attributes:
        duration_s: Length of the recording.
        sample_rate: Its rate in Hz.
        times: Centres of the 10 ms pitch frames (seconds from the start).
        f0: F0 per pitch frame in Hz, 0 where unvoiced.
        intensity_db: Praat intensity (dB) at each pitch frame (NaN where undefined).
        hnr_times: Centres of the harmonicity frames.
        hnr_db: Harmonics-to-noise ratio per frame (Praat's -200 marks unvoiced frames).
        pitch_floor_hz: Floor of the final pitch pass.
        pitch_ceiling_hz: Ceiling of the final pitch pass.
        reason: Why the whole recording has no speech (too short, silent, unvoiced); None when it has.
    """

    duration_s: float
    sample_rate: int
    times: np.ndarray
    f0: np.ndarray
    intensity_db: np.ndarray
    hnr_times: np.ndarray
    hnr_db: np.ndarray
    pitch_floor_hz: float | None = None
    pitch_ceiling_hz: float | None = None
    reason: str | None = None
    silence_db: float = -50.0
    min_duration: float = 0.1
    min_voiced_frames: int = 3
    wave: np.ndarray | None = field(default=None, repr=False)
    sound: Any = field(default=None, repr=False)
    points: Any = field(default=None, repr=False)

    def window(self, start: float, end: float) -> Prosody:
        """The measures of ``[start, end)`` seconds (clipped to the recording), from the frames inside it.

        Jitter and shimmer are Praat's own over the window's glottal pulses (its time-range arguments); the whole
        recording gives exactly :func:`measure_prosody`'s numbers.
        """
        start, end = max(0.0, float(start)), min(self.duration_s, float(end))
        duration = max(0.0, end - start)
        if duration < self.min_duration:
            reason = f"too short for pitch analysis ({duration:.3f} s < {self.min_duration:g} s)"
            return Prosody(False, reason, duration)
        if self.reason is not None:  # the whole recording has no speech: no stretch of it has
            return Prosody(False, self.reason, duration)
        whole = start <= 0.0 and end >= self.duration_s
        if not whole and self.wave is not None:
            a, b = round(start * self.sample_rate), round(end * self.sample_rate)
            if is_silent(self.wave[a:b], self.silence_db):
                return Prosody(False, f"silent (RMS below {self.silence_db:g} dBFS)", duration)
        sel = (self.times >= start) & (self.times < end)
        f0 = self.f0[sel]
        voiced = f0 > 0
        n_voiced = int(voiced.sum())
        if n_voiced < self.min_voiced_frames:
            return Prosody(False, f"no voiced speech ({n_voiced} voiced frames)", duration)
        hz = f0[voiced]
        st = _semitones(hz)
        p5, p95 = np.percentile(hz, [5, 95])
        db = self.intensity_db[sel][voiced]
        db = db[np.isfinite(db)]
        mean_db = 10 * math.log10(float(np.mean(10 ** (db / 10)))) if db.size else None

        parselmouth = import_optional("parselmouth", _PRAAT, "speech prosody (Praat)")
        call = parselmouth.praat.call
        t0, t1 = (0.0, 0.0) if whole else (start, end)  # Praat: 0, 0 = the whole recording
        jitter = _finite(call(self.points, "Get jitter (local)", t0, t1, 0.0001, 0.02, 1.3))
        shimmer = _finite(call([self.sound, self.points], "Get shimmer (local)", t0, t1, 0.0001, 0.02, 1.3, 1.6))
        hv = self.hnr_db[(self.hnr_times >= start) & (self.hnr_times < end)]
        hv = hv[hv > -200]  # Praat marks unvoiced frames -200 dB
        hnr = float(hv.mean()) if hv.size else None

        edges = np.diff(np.r_[0, voiced.astype(np.int8), 0])
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        segments = int(np.sum(ends - starts >= 3))  # runs of >= 3 frames (30 ms)
        span = float(ends[-1] - starts[0]) * _TIME_STEP
        return Prosody(
            has_speech=True,
            reason=None,
            duration_s=duration,
            voiced_fraction=n_voiced / f0.size,
            pitch_mean_hz=float(hz.mean()),
            pitch_std_hz=float(hz.std()),
            pitch_min_hz=float(p5),
            pitch_max_hz=float(p95),
            pitch_mean_st=float(st.mean()),
            pitch_std_st=float(st.std()),
            pitch_range_st=float(12 * math.log2(p95 / p5)),
            intensity_mean_db=mean_db,
            intensity_std_db=float(db.std()) if db.size else None,
            loudness_dbfs=None if mean_db is None else mean_db - _DB_SPL_TO_DBFS,
            jitter_local=jitter,
            shimmer_local=shimmer,
            hnr_db=hnr,
            voiced_segments=segments,
            speech_span_s=span,
            rate_segments_per_s=segments / span if span > 0 else None,
            pitch_floor_hz=self.pitch_floor_hz,
            pitch_ceiling_hz=self.pitch_ceiling_hz,
        )


def prosody_track(
    wave: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    *,
    pitch_floor: float = 50.0,
    pitch_ceiling: float = 700.0,
    two_pass: bool = True,
    silence_db: float = -50.0,
    min_duration: float = 0.1,
    min_voiced_frames: int = 3,
    harmonicity: tuple[np.ndarray, np.ndarray] | None = None,
) -> ProsodyTrack:
    """Runs Praat once over a recording; :meth:`ProsodyTrack.window` then measures any stretch of it.

    Arguments as :func:`measure_prosody`, and ``harmonicity``: the recording's HNR frames ``(times, dB)`` already
    measured (:func:`harmonicity_frames`, e.g. piece by piece as a live stream arrives), instead of measuring them
    here: Praat's harmonicity is most of the cost of a short window, and each frame depends only on ~60 ms of audio.

    Raises:
        ValueError: ``wave`` is not 1-D, or holds NaN/inf.
        MissingClueDependency: praat-parselmouth is not installed.
    """
    x = np.asarray(wave, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a mono 1-D waveform, got shape {x.shape} (average the channels first)")
    if not np.all(np.isfinite(x)):
        raise ValueError("the waveform holds NaN or inf samples")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    duration = x.size / sample_rate
    empty = np.zeros(0)
    settings = {"silence_db": silence_db, "min_duration": min_duration, "min_voiced_frames": min_voiced_frames}
    none = ProsodyTrack(duration, sample_rate, empty, empty, empty, empty, empty, **settings)  # type: ignore[arg-type]
    if duration < min_duration:
        none.reason = f"too short for pitch analysis ({duration:.3f} s < {min_duration:g} s)"
        return none
    if is_silent(x, silence_db):
        none.reason = f"silent (RMS below {silence_db:g} dBFS)"
        return none

    parselmouth = import_optional("parselmouth", _PRAAT, "speech prosody (Praat)")
    call = parselmouth.praat.call
    snd = parselmouth.Sound(x, sampling_frequency=float(sample_rate))
    floor, ceiling = pitch_floor, pitch_ceiling
    pitch, f0 = _pitch(snd, floor, ceiling)
    if two_pass and np.count_nonzero(f0) >= min_voiced_frames:
        q25, q75 = np.percentile(f0[f0 > 0], [25, 75])
        floor, ceiling = max(40.0, 0.75 * float(q25)), max(1.5 * float(q75), 0.75 * float(q25) + 50.0)
        pitch, f0 = _pitch(snd, floor, ceiling)
    times = np.asarray(pitch.xs(), dtype=np.float64)
    if np.count_nonzero(f0) < min_voiced_frames:
        none.reason = f"no voiced speech ({int(np.count_nonzero(f0))} voiced frames)"
        return none
    # Intensity at the pitch frames' times (the voiced ones are the ones used).
    intensity = snd.to_intensity(minimum_pitch=floor, time_step=_TIME_STEP)
    db = np.interp(times, intensity.xs(), intensity.values[0])
    points = call([snd, pitch], "To PointProcess (cc)")
    hnr_times, hnr_db = harmonicity if harmonicity is not None else harmonicity_frames(snd, floor=floor)
    return ProsodyTrack(
        duration, sample_rate, times, f0, db, np.asarray(hnr_times, dtype=np.float64), np.asarray(hnr_db),
        float(floor), float(ceiling), None, wave=x, sound=snd, points=points, **settings,  # type: ignore[arg-type]
    )  # fmt: skip


def harmonicity_frames(
    wave: Any, sample_rate: int = SAMPLE_RATE, *, floor: float = 75.0, offset_s: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Praat's harmonics-to-noise ratio per 10 ms frame (``To Harmonicity (cc)``; -200 dB marks unvoiced frames).

    Args:
        wave: A mono waveform, or a ``parselmouth.Sound``.
        sample_rate: Its rate (for a waveform).
        floor: Minimum pitch in Hz (sets Praat's analysis window, 4.5 periods of it).
        offset_s: Added to the frame times (the wave's place in a longer recording).

    Returns:
        ``(times, dB)``, both ``(frames,)``.
    """
    parselmouth = import_optional("parselmouth", _PRAAT, "speech prosody (Praat)")
    snd = wave if isinstance(wave, parselmouth.Sound) else parselmouth.Sound(
        np.asarray(wave, dtype=np.float64), sampling_frequency=float(sample_rate))  # fmt: skip
    harm = snd.to_harmonicity_cc(time_step=_TIME_STEP, minimum_pitch=floor)
    return np.asarray(harm.xs(), dtype=np.float64) + offset_s, harm.values[0].copy()


def prosody_from_file(path: str | os.PathLike[str], **kwargs: Any) -> Prosody:
    """Measures prosody of an audio file or of a video's soundtrack.

    Args:
        path: Anything :func:`emollm.media.load_audio` reads (.wav, .mp3, .mp4, ...).
        **kwargs: Passed to :func:`measure_prosody`.

    Returns:
        The measures.

    Raises:
        MediaError: The file cannot be read, or has no audio track (see :func:`emollm.media.load_audio`).
    """
    return measure_prosody(load_audio(path, sample_rate=SAMPLE_RATE), SAMPLE_RATE, **kwargs)


def describe_prosody(p: Prosody, thresholds: ProsodyThresholds | None = None) -> str:
    """A short phrase for the measures, e.g. ``"high, variable pitch; loud; fast"``.

    Parts: pitch level (low / medium / high mean F0) and variability (monotone / variable F0 std in semitones,
    nothing in between); loudness (quiet / moderately loud / loud, dBFS); rate (slow / moderately paced / fast,
    voiced segments per second); "rough voice" when jitter, shimmer and HNR all cross their thresholds. See
    :class:`ProsodyThresholds` for the numbers.

    Args:
        p: Measures from :func:`measure_prosody`.
        thresholds: Word thresholds (defaults when None).

    Returns:
        The phrase, or ``"no voiced speech"`` when ``p.has_speech`` is False.
    """
    th = thresholds or ProsodyThresholds()
    if not p.has_speech or p.pitch_mean_hz is None:
        return "no voiced speech"
    level = "low" if p.pitch_mean_hz < th.low_pitch_hz else "high" if p.pitch_mean_hz > th.high_pitch_hz else "medium"
    pitch = level
    if p.pitch_std_st is not None and p.pitch_std_st < th.monotone_st:
        pitch += ", monotone"
    elif p.pitch_std_st is not None and p.pitch_std_st > th.variable_st:
        pitch += ", variable"
    parts = [pitch + " pitch"]
    if p.loudness_dbfs is not None:
        d = p.loudness_dbfs
        parts.append("quiet" if d < th.quiet_dbfs else "loud" if d > th.loud_dbfs else "moderately loud")
    if p.rate_segments_per_s is not None:
        r = p.rate_segments_per_s
        parts.append("slow" if r < th.slow_rate else "fast" if r > th.fast_rate else "moderately paced")
    rough = (
        p.jitter_local is not None
        and p.shimmer_local is not None
        and p.hnr_db is not None
        and p.jitter_local > th.rough_jitter
        and p.shimmer_local > th.rough_shimmer
        and p.hnr_db < th.rough_hnr_db
    )
    if rough:
        parts.append("rough voice")
    return "; ".join(parts)


@lru_cache(maxsize=2)
def _smile(feature_set: str) -> Any:
    opensmile = import_optional("opensmile", "opensmile==2.6.0", "eGeMAPS features (openSMILE)")
    return opensmile.Smile(
        feature_set=getattr(opensmile.FeatureSet, feature_set), feature_level=opensmile.FeatureLevel.Functionals
    )


def egemaps_functionals(
    wave: np.ndarray, sample_rate: int = SAMPLE_RATE, *, feature_set: str = "eGeMAPSv02"
) -> dict[str, float]:
    """openSMILE's eGeMAPS functionals of one utterance (88 values for eGeMAPSv02).

    Args:
        wave: Mono float waveform in ``[-1, 1]``, shape ``(T,)``.
        sample_rate: Its rate in Hz.
        feature_set: An ``opensmile.FeatureSet`` name (``"eGeMAPSv02"``, ``"GeMAPSv01b"``, ``"ComParE_2016"``).

    Returns:
        Feature name (``"F0semitoneFrom27.5Hz_sma3nz_amean"``, ...) -> value, in openSMILE's order. Unvoiced input
        gives zeros for the F0-based features (openSMILE's convention), not NaN.

    Raises:
        ValueError: ``wave`` is not 1-D or is empty.
        MissingClueDependency: opensmile is not installed.
    """
    x = np.asarray(wave, dtype=np.float32)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected a non-empty mono 1-D waveform, got shape {x.shape}")
    frame = _smile(feature_set).process_signal(x, sample_rate)  # pandas DataFrame (1, n_features)
    return {str(k): float(v) for k, v in frame.iloc[0].items()}
