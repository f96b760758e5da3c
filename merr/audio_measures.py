"""Audio tone measured on a waveform with numpy: pitch (YIN), loudness, speaking rate, intonation, and its words.

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

This is the measurement behind MERR's ``measured`` audio describer
(:class:`emollm_merr.describe_offline.MeasuredAudioDescriber`), kept in the recipe on purpose: the library's speech
prosody (:mod:`emollm.clues.prosody`, Praat-based) is the general tool, while this one must stay bit-for-bit stable
because MERR caches and exports its words and numbers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SAMPLE_RATE", "AudioMeasures", "ToneThresholds", "describe_tone", "measure_audio"]

SAMPLE_RATE = 16000
"""The rate :func:`measure_audio` works at (other rates are resampled)."""


@dataclass(frozen=True)
class ToneThresholds:
    """Measurement settings and word thresholds (see the module docstring for where they come from)."""

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
