"""Load audio as 16 kHz mono float32 from video containers and audio files.

Decoders, tried in order (``backend="auto"``):

1. **soundfile** for plain audio files it supports (.wav, .flac, .ogg, and .mp3 with libsndfile >= 1.1), then
   :func:`resample` (polyphase, scipy) to the target rate.
2. **PyAV** for everything else (audio tracks of .mp4/.mkv/..., .m4a, .aac, .opus): libswresample resamples
   while decoding.
3. **decord**'s ``AudioReader`` when PyAV is not installed (it wraps the same FFmpeg decoders, so it is not tried
   after PyAV fails to decode a file).

Channels are averaged (as librosa/torchaudio pipelines do) by soundfile and PyAV; libswresample's own stereo->mono
downmix, which decord must use, weights channels by ~0.707 instead (+3 dB on correlated stereo). Decoded tracks are
trimmed to the stream's declared duration: AAC encoders pad the last frame with up to 1023 samples.

Emotion-LLaMA feeds HuBERT 16 kHz mono; DFEW has clips shorter than 1 s, which HuBERT needs padded to 1 s
(REFERENCE §7.3): pass ``min_duration=1.0`` to pad with zeros at the end.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Literal

import numpy as np

from .errors import CorruptMedia, EmptyMedia, MediaError, MediaTooLarge, NoAudioTrack, SilentAudio
from .limits import MediaLimits, resolve
from .video import MediaInfo, probe, short_error

__all__ = ["SOUNDFILE_EXTENSIONS", "is_silent", "load_audio", "resample", "rms_db"]

logger = logging.getLogger(__name__)

SOUNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3"})
"""Extensions read with soundfile first (PyAV handles them too, as the fallback)."""

SAMPLE_RATE_RANGE = (1000, 1_000_000)
"""Declared native sample rates outside this (Hz) are refused as corrupt: a WAV header claiming 1 Hz turns 16 KB
into 8000 s that resample to 128 M samples (2.6 GB of RAM, 17 s of CPU) before anything could notice."""

MAX_CHANNELS = 64


def load_audio(
    path: str | os.PathLike[str],
    *,
    sample_rate: int = 16000,
    min_duration: float | None = None,
    reject_silent: bool = False,
    silence_db: float = -50.0,
    backend: Literal["auto", "soundfile", "pyav", "decord"] = "auto",
    max_bytes: int | None = None,
    info: MediaInfo | None = None,
    limits: MediaLimits | None = None,
) -> np.ndarray:
    """Reads the first audio track of a file as mono float32 in ``[-1, 1]`` at ``sample_rate``.

    Args:
        path: A video container (.mp4, .mkv, ...) or an audio file (.wav, .mp3, .flac, ...).
        sample_rate: Output rate in Hz (HuBERT/Whisper: 16000).
        min_duration: Pad with zeros at the end to at least this many seconds (DFEW: 1.0). ``None``: no padding.
        reject_silent: Raise :class:`SilentAudio` when the RMS level is below ``silence_db`` (checked before padding).
        silence_db: Silence threshold in dBFS for ``reject_silent``.
        backend: ``"auto"`` (soundfile for plain audio files, else PyAV; decord when PyAV is missing) or one decoder.
        max_bytes: Refuse (``MediaTooLarge``) when the decoded wave would exceed this many bytes; ``None``:
            ``limits.max_bytes``.
        info: The file's :class:`MediaInfo` if already probed.
        limits: See :func:`emollm.media.probe`.

    Returns:
        ``float32`` array of shape ``(num_samples,)``.

    Raises:
        NoAudioTrack: The file has no audio stream (a silent video, an image, a text file), or a video's audio
            stream decodes to no samples (only the audio modality is lost).
        SilentAudio: ``reject_silent`` and the audio is silent.
        CorruptMedia: No decoder can read the audio stream, or its header declares an impossible sample rate or
            channel count.
        EmptyMedia: An audio file's stream decodes to no samples.
        MediaTooLarge: The decoded audio would exceed ``max_bytes``.
        MediaNotFound, UnsupportedFormat: See :func:`emollm.media.probe`.
        ValueError: ``min_duration`` is negative, not finite, or would pad past ``max_bytes``.
    """
    limits = resolve(limits)
    max_bytes = limits.max_bytes if max_bytes is None else max_bytes
    if min_duration is not None and (not math.isfinite(min_duration) or min_duration < 0):
        raise ValueError(f"min_duration {min_duration!r}: must be a number of seconds >= 0")
    if min_duration and min_duration * sample_rate * 4 > max_bytes:
        raise ValueError(
            f"min_duration {min_duration:g}: would pad every wave to {min_duration * sample_rate * 4 / 2**20:,.0f} "
            f"MiB (limit {max_bytes / 2**20:.0f} MiB); HuBERT/DFEW use 1.0"
        )
    info = info or probe(path, limits=limits)
    name = os.fspath(path)
    if not info.has_audio:
        kinds = {"image": "an image has no audio", "text": "a text file has no audio"}
        problem = kinds.get(info.kind, "no audio track")
        raise NoAudioTrack(name, problem, "drop the audio modality for this file, or add a soundtrack")
    lo, hi = SAMPLE_RATE_RANGE
    if info.sample_rate and not lo <= info.sample_rate <= hi:
        raise CorruptMedia(
            name,
            f"the header declares an audio sample rate of {info.sample_rate} Hz (real audio: {lo}-{hi} Hz)",
            "the header is broken; re-export the audio with ffmpeg",
        )
    if info.channels > MAX_CHANNELS:
        raise CorruptMedia(
            name, f"the header declares {info.channels} audio channels (at most {MAX_CHANNELS})", "re-export it"
        )
    seconds = info.audio_duration or info.duration
    need = seconds * sample_rate * 4
    if need > max_bytes:
        raise MediaTooLarge(
            name,
            f"{seconds:.0f} s of audio need {need / 2**20:.0f} MiB at {sample_rate} Hz "
            f"(limit {max_bytes / 2**20:.0f} MiB)",
            f"cut the file into utterances first, or raise EMOLLM_MAX_BYTES above {need:.0f}",
        )
    ext = os.path.splitext(name)[1].lower()
    order = {
        "auto": (["soundfile"] if ext in SOUNDFILE_EXTENSIONS else []) + ["pyav", "decord"],
        "soundfile": ["soundfile"],
        "pyav": ["pyav"],
        "decord": ["decord"],
    }[backend]
    errors: list[str] = []
    wave = None
    for b in order:
        if b == "decord" and backend == "auto" and errors and "unavailable" not in errors[-1]:
            break  # PyAV could not decode it: decord wraps the same FFmpeg decoders, it is only a stand-in for PyAV
        try:
            wave = {"soundfile": _load_soundfile, "pyav": _load_pyav, "decord": _load_decord}[b](name, sample_rate)
            break
        except ImportError as e:
            errors.append(f"{b} unavailable ({e})")
        except MediaError:
            raise
        except Exception as e:  # decoder-specific exceptions: soundfile.LibsndfileError, av.FFmpegError, DECORDError
            errors.append(f"{b}: {short_error(e)}")
            logger.debug("%s failed on %s", b, name, exc_info=True)
    if wave is not None and info.audio_duration > 0:
        n = round(info.audio_duration * sample_rate)
        if 0 < n < wave.size:
            wave = wave[:n]  # drop encoder end padding
    if wave is None:
        raise CorruptMedia(name, "cannot decode the audio (" + "; ".join(errors) + ")", "re-encode it with ffmpeg")
    if wave.size == 0:
        if info.kind == "video":  # the pictures are still good: only the audio modality is lost
            raise NoAudioTrack(name, "the audio track holds no samples", "drop the audio modality, or re-export it")
        raise EmptyMedia(name, "the audio stream has no samples", "re-export the file")
    if reject_silent and is_silent(wave, silence_db):
        raise SilentAudio(
            name,
            f"the audio is silent (RMS {rms_db(wave):.0f} dBFS < {silence_db:g} dBFS)",
            "check the recording, or drop the audio modality",
        )
    if min_duration:
        target = math.ceil(min_duration * sample_rate)
        if wave.size < target:
            wave = np.pad(wave, (0, target - wave.size))
    return np.ascontiguousarray(wave, dtype=np.float32)


def _load_soundfile(path: str, sample_rate: int) -> np.ndarray:
    import soundfile as sf

    data, sr = sf.read(path, dtype="float32", always_2d=True)  # (T, C)
    return resample(data.mean(axis=1), sr, sample_rate)


def _load_pyav(path: str, sample_rate: int) -> np.ndarray:
    import av

    chunks: list[np.ndarray] = []
    with av.open(path) as c:
        stream = c.streams.audio[0]
        rs = av.AudioResampler(format="fltp", rate=sample_rate)  # keeps the channel layout; we average below
        for frame in c.decode(stream):
            frame.pts = None  # let the resampler count samples itself (pts jumps in some files break it)
            chunks.extend(f.to_ndarray().mean(axis=0) for f in rs.resample(frame))
        chunks.extend(f.to_ndarray().mean(axis=0) for f in rs.resample(None))
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def _load_decord(path: str, sample_rate: int) -> np.ndarray:
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    # mono=True: decord 0.6.0 returns corrupted channels with mono=False (and garbage at the native rate), so its
    # libswresample downmix (channels weighted ~0.707) is the only reliable way; it is the last-resort backend.
    ar = decord.AudioReader(path, ctx=decord.cpu(0), sample_rate=sample_rate, mono=True)
    return ar[:].asnumpy().reshape(-1).astype(np.float32)


def resample(
    wave: np.ndarray, orig_sr: int, target_sr: int, *, method: Literal["auto", "polyphase", "fft"] = "auto"
) -> np.ndarray:
    """Changes the sample rate of a mono wave.

    ``polyphase`` (``scipy.signal.resample_poly``: Kaiser-windowed FIR anti-aliasing filter, exact rational ratio,
    e.g. 44100 -> 16000 = up 160 / down 441) is used when scipy is installed; ``fft`` (band-limited resampling by
    truncating/zero-padding the spectrum, numpy only) otherwise. Both keep pitch; they differ only near the band
    edge and at the clip boundaries.

    Args:
        wave: ``(T,)`` float array.
        orig_sr: Its sample rate.
        target_sr: The wanted sample rate.
        method: ``"auto"``, ``"polyphase"`` or ``"fft"``.

    Returns:
        ``float32`` array of ``round(T * target_sr / orig_sr)`` samples.

    Raises:
        ValueError: Non-positive sample rates.
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    x = np.asarray(wave, dtype=np.float32).reshape(-1)
    if orig_sr == target_sr or x.size == 0:
        return x
    n_out = round(x.size * target_sr / orig_sr)
    if method in ("auto", "polyphase"):
        try:
            from scipy.signal import resample_poly
        except ImportError:
            if method == "polyphase":
                raise
        else:
            g = math.gcd(int(orig_sr), int(target_sr))
            y = resample_poly(x, target_sr // g, orig_sr // g).astype(np.float32)
            return _fit_length(y, n_out)
    spec = np.fft.rfft(x.astype(np.float64))
    keep = n_out // 2 + 1
    out_spec = np.zeros(keep, dtype=np.complex128)
    m = min(keep, spec.size)
    out_spec[:m] = spec[:m]
    if n_out % 2 == 0 and m == keep and spec.size > keep:
        out_spec[-1] = out_spec[-1].real  # the Nyquist bin of a real signal is real
    y = np.fft.irfft(out_spec, n=n_out) * (n_out / x.size)
    return y.astype(np.float32)


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    return y[:n] if y.size >= n else np.pad(y, (0, n - y.size))


def rms_db(wave: np.ndarray) -> float:
    """Root-mean-square level in dBFS (0 dB = full-scale square wave; ``-inf`` for digital silence).

    Args:
        wave: Float wave in ``[-1, 1]``.

    Returns:
        ``20 * log10(rms)``.
    """
    x = np.asarray(wave, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return float("-inf")
    rms = math.sqrt(float(np.mean(x * x)))
    return 20.0 * math.log10(rms) if rms > 0 else float("-inf")


def is_silent(wave: np.ndarray, threshold_db: float = -50.0) -> bool:
    """Whether a wave's RMS level is below ``threshold_db`` dBFS (-50 dBFS: far below quiet speech, ~ -30 dBFS).

    Args:
        wave: Float wave in ``[-1, 1]``.
        threshold_db: Level in dBFS.

    Returns:
        True for silence (and for an empty wave).
    """
    return rms_db(wave) < threshold_db
