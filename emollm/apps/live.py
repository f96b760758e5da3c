"""Live sessions: timestamped audio and video frames in, one timeline entry per hop out, with bounded work.

A :class:`LiveSession` is transport-free: the service's ``WS /v1/stream`` (:mod:`emollm.apps.serve.stream`) and the
tests drive it. The transport calls :meth:`LiveSession.add_audio` and :meth:`LiveSession.add_frame` as messages
arrive (cheap: a copy into bounded buffers); a worker thread that owns an analyzer calls :meth:`LiveSession.work`,
which analyses the frames waiting and, when a hop is due, the window that ends there.

The clock is the client's: audio chunk and frame timestamps are seconds from the start of the session. With audio,
the audio received so far sets the clock (a hop at ``k * hop_s`` is due once audio up to it has arrived); without
audio, the newest frame does. A hop's latency is measured from the moment the message that made it due was
received to the moment its answer is handed to the transport.

Honest under load, bounded in memory:

- at most ``max_pending_frames`` frames wait for analysis; a newer frame pushes the oldest out (counted as dropped,
  ``busy``), and a waiting frame that is already older than the window being answered is skipped (``late``);
- audio is kept for one window (plus a little), never for the whole session;
- when hops fall due faster than they can be answered, only the newest due window is answered and the others are
  counted as skipped; nothing queues without bound;
- a session ends at ``max_session_s`` seconds of media.

Per hop in clue mode: the window's frames were analysed once as they arrived (by default MediaPipe's landmarker on
the whole frame gives the face box and the AUs in one pass, then the expression CNN reads the crop: ``face_path``);
Praat measures the window's pitch, intensity and voice quality, its HNR frames measured once per new stretch of
audio; Whisper transcribes the window with a shortened encoder context (window + 1 s, its linear layers packed in
bf16, see :meth:`emollm.encoders.text.WhisperTranscriber.transcribe`), skipped when Praat finds no voiced speech in
the window, and its last words reused when the newest hop holds no voice (the hop's ``asr`` says which); the
transcript's emotion and the fusion follow (:func:`emollm.apps.timeline.clue_entry`). Words enter the session's
transcript from the hop whose window holds them nearest its middle (a word is committed once, ``(window - hop) / 2``
seconds after it ends).
"""

from __future__ import annotations

import io
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emollm.apps.timeline import FaceRows, TimelineSettings, clue_entry, timeline_document, words_in

__all__ = ["AUDIO", "VIDEO", "LiveError", "LiveLimit", "LiveSession", "LiveSettings", "decode_image", "pack_media",
           "unpack_media", "warm_up"]  # fmt: skip

SAMPLE_RATE = 16000
AUDIO_FORMATS = {"pcm16": np.dtype("<i2"), "f32": np.dtype("<f4")}
"""Accepted audio sample formats: signed 16-bit and 32-bit float, little-endian, mono."""
IMAGE_MAGIC = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png"}
"""Accepted frame formats (by their first bytes)."""


AUDIO, VIDEO = b"A", b"V"
"""The first byte of a binary media message: an audio chunk or a video frame."""
_HEADER = np.dtype("<f8")  # then the timestamp, float64 little-endian seconds; then the payload


def pack_media(kind: bytes, t: float, payload: bytes) -> bytes:
    """One binary message: ``kind`` (``b"A"`` audio, ``b"V"`` frame), ``t`` as float64 LE seconds, the payload."""
    return kind + np.float64(t).astype(_HEADER).tobytes() + payload


def unpack_media(message: bytes) -> tuple[bytes, float, bytes]:
    """``(kind, t, payload)`` of a binary message.

    Raises:
        LiveError: Shorter than its 9-byte header, or an unknown kind.
    """
    if len(message) < 9:
        raise LiveError(f"a binary message needs a 9-byte header (kind, float64 time), got {len(message)} bytes")
    kind = message[:1]
    if kind not in (AUDIO, VIDEO):
        raise LiveError(f"a binary message starts with b'A' (audio) or b'V' (video frame), got {kind!r}")
    return kind, float(np.frombuffer(message[1:9], dtype=_HEADER)[0]), message[9:]


class LiveError(ValueError):
    """A message the session cannot use (malformed, out of order, oversized); the session goes on."""


class LiveLimit(LiveError):
    """The session reached one of its limits (length); the session ends."""


@dataclass(frozen=True)
class LiveSettings:
    """Limits and windows of one live session; every check names the field.

    Attributes:
        window_s: Window length in seconds.
        hop_s: Seconds between answers.
        max_session_s: Most seconds of media in one session.
        max_pending_frames: Frames that may wait for analysis; more push the oldest out (dropped, counted).
        max_frame_bytes: Largest frame message.
        max_frame_pixels: Largest frame (width x height), checked from the image header before decoding.
        analyse_side: Frames are analysed with their longer side at most this (face boxes are reported in the
            frame's own pixels).
        max_chunk_s: Longest audio message, in seconds.
        max_lead_s: How far a frame's timestamp may run ahead of the audio clock.
        asr: Transcribe each window (Whisper with a shortened context).
        context_pad_s: Whisper's encoder context beyond the window.
        asr_precision: Whisper's linear layers for windows: ``auto`` (bf16 packed once for oneDNN where the CPU
            has native bf16, :func:`emollm.model.packed_linear.pack_linears`: 1.6x faster here, the same words on our
            test sentences, word times within 0.08 s), ``bf16`` or ``fp32``. Only the shortened-context copy is
            packed; the whole-file transcription keeps fp32.
        face_path: ``landmarker`` (default): MediaPipe's face landmarker on the whole frame finds the face (the box
            of its landmarks; IoU 0.85-0.89 with MTCNN's box on our clips) and gives the AUs in the same pass, and
            the expression CNN reads a crop of that box; ``detector``: the file path (the clue mode's face detector,
            then the landmarker on the crop), one more model per frame.
    """

    window_s: float = 3.0
    hop_s: float = 1.0
    max_session_s: float = 120.0
    max_pending_frames: int = 4
    max_frame_bytes: int = 2 * 1024 * 1024
    max_frame_pixels: int = 1920 * 1080
    analyse_side: int = 640
    max_chunk_s: float = 2.0
    max_lead_s: float = 5.0
    asr: bool = True
    context_pad_s: float = 1.0
    asr_precision: str = "auto"
    face_path: str = "landmarker"

    def __post_init__(self) -> None:
        if self.face_path not in ("landmarker", "detector"):
            raise ValueError(f"face_path must be 'landmarker' or 'detector', got {self.face_path!r}")
        if self.asr_precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"asr_precision must be 'auto', 'bf16' or 'fp32', got {self.asr_precision!r}")
        TimelineSettings(self.window_s, self.hop_s)  # the same checks as --window/--hop
        for name in ("max_session_s", "max_chunk_s", "max_lead_s"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {v!r}")
        for name in ("max_pending_frames", "max_frame_bytes", "max_frame_pixels", "analyse_side"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")

    @property
    def whisper_context_s(self) -> float:
        """Whisper's encoder context for a window."""
        return min(30.0, self.window_s + self.context_pad_s)


def decode_image(data: bytes, max_pixels: int, max_side: int) -> tuple[np.ndarray, float]:
    """A JPEG or PNG frame as RGB ``uint8 (H, W, 3)``, shrunk to ``max_side``, and the factor back to the sender's
    pixels. The header's size is checked before the pixels are decoded.

    Raises:
        LiveError: Not a JPEG/PNG, a broken image, or larger than ``max_pixels``.
    """
    from PIL import Image, UnidentifiedImageError

    kind = next((k for magic, k in IMAGE_MAGIC.items() if data.startswith(magic)), None)
    if kind is None:
        raise LiveError("a frame must be a JPEG or PNG image (its first bytes are neither)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise LiveError(f"a {w}x{h} frame is larger than the limit of {max_pixels} pixels: send smaller frames")
            im.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale when it is much larger
            rgb = np.asarray(im.convert("RGB"))
    except LiveError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise LiveError(f"the {kind} frame cannot be decoded ({e})") from None
    scale = max(rgb.shape[:2]) / max_side if max(rgb.shape[:2]) > max_side else 1.0
    if scale > 1.0:
        import cv2

        rgb = cv2.resize(rgb, (round(rgb.shape[1] / scale), round(rgb.shape[0] / scale)), interpolation=cv2.INTER_AREA)
    back = w / rgb.shape[1]  # analysed pixels -> the sender's pixels
    return np.ascontiguousarray(rgb), back


@dataclass
class _Frame:
    t: float
    seq: int
    data: bytes
    received: float


@dataclass
class _Counts:
    received: int = 0
    analysed: int = 0
    dropped_busy: int = 0
    dropped_late: int = 0
    rejected: int = 0
    no_face: int = 0

    def to_dict(self) -> dict[str, Any]:
        dropped = self.dropped_busy + self.dropped_late
        return {
            "received": self.received, "analysed": self.analysed, "dropped": dropped,
            "dropped_busy": self.dropped_busy, "dropped_late": self.dropped_late, "rejected": self.rejected,
            "no_face": self.no_face, "dropped_share": round(dropped / self.received, 4) if self.received else 0.0,
        }  # fmt: skip


@dataclass
class _FaceLog:
    """Analysed frames of the session (a few numbers each): times, ids, probabilities, AUs, boxes."""

    times: list[float] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)
    aus: list[Any] = field(default_factory=list)
    boxes: list[Any] = field(default_factory=list)

    def rows(self, start: float = -math.inf, end: float = math.inf) -> FaceRows | None:
        keep = [i for i, t in enumerate(self.times) if start <= t < end]
        if not keep:
            return None
        return FaceRows(
            np.asarray([self.times[i] for i in keep]), [self.ids[i] for i in keep],
            np.stack([self.probs[i] for i in keep]), [self.aus[i] for i in keep], [self.boxes[i] for i in keep],
        )  # fmt: skip


class LiveSession:
    """One live stream (see the module docstring).

    Args:
        labels: The analyzer's label set (for the saved timeline).
        settings: :class:`LiveSettings`.
        audio: ``{"format": "pcm16"|"f32", "sample_rate": 8000..48000}``, or None for a video-only session.
    """

    def __init__(self, labels: tuple[str, ...], settings: LiveSettings, audio: dict[str, Any] | None) -> None:
        self.labels, self.settings = tuple(labels), settings
        self.audio_format: np.dtype | None = None
        self.audio_rate = SAMPLE_RATE
        if audio is not None:
            fmt = audio.get("format", "pcm16")
            if fmt not in AUDIO_FORMATS:
                raise LiveError(f"audio.format must be one of {', '.join(AUDIO_FORMATS)}, got {fmt!r}")
            rate = audio.get("sample_rate", SAMPLE_RATE)
            if isinstance(rate, bool) or not isinstance(rate, int) or not 8000 <= rate <= 48000:
                raise LiveError(f"audio.sample_rate must be a whole number of Hz in 8000..48000, got {rate!r}")
            self.audio_format, self.audio_rate = AUDIO_FORMATS[fmt], rate
        self._lock = threading.Lock()
        self._wave = np.zeros(0, dtype=np.float32)  # the last window (+ margin) of audio at 16 kHz
        self._wave_start = 0  # sample index of _wave[0]
        self._keep = round((settings.window_s + 2.0) * SAMPLE_RATE)  # samples of audio kept
        self._audio_end = 0  # samples received (the clock, with audio)
        self._audio_gaps = 0
        self._pending: deque[_Frame] = deque()
        self._frame_seq = 0
        self._last_frame_t = -math.inf
        self._clock = 0.0
        self._due_at: float | None = None  # when the newest due hop became due
        self._answered_end = 0.0
        self._seq = 0
        self.counts = _Counts()
        self.skipped_hops = 0
        self.faces = _FaceLog()
        self._prev_box: Any = None
        self.entries: list[dict[str, Any]] = []
        self.words: list[Any] = []  # the committed transcript
        self._committed_until = 0.0
        self._text_cache: dict[str, Any] = {}
        self._hnr_t, self._hnr_v, self._hnr_until = np.zeros(0), np.zeros(0), 0.0  # HNR frames of recent audio
        self._heard: list[Any] | None = None  # the words of the last transcription (absolute times)
        self._tones: list[str] = []
        self.ended: str | None = None  # why the session stopped taking media
        self.started = time.monotonic()
        self.latencies_ms: list[float] = []
        self.work_s: dict[str, float] = {}  # seconds of work per stage, all jobs (frames-only ones too)
        self.jobs = 0
        self._new_words: list[Any] = []

    # ------------------------------------------------------------------------------------------------ intake
    @property
    def clock(self) -> float:
        """Seconds of media received (the audio with audio, else the newest frame)."""
        return self._clock

    def add_audio(self, t: float, payload: bytes) -> None:
        """Append one audio chunk that starts ``t`` seconds into the session.

        Raises:
            LiveError: No audio was declared, a bad timestamp or size, or a chunk that starts before the end of the
                audio already received (out of order). The chunk is not used; the session goes on.
            LiveLimit: The session reached ``max_session_s``.
        """
        if self.audio_format is None:
            raise LiveError("this session declared no audio in its start message ('audio': {...})")
        _check_time(t)
        width = self.audio_format.itemsize
        if len(payload) % width:
            raise LiveError(f"an audio chunk must hold whole {width}-byte samples, got {len(payload)} bytes")
        seconds = len(payload) / width / self.audio_rate
        if seconds > self.settings.max_chunk_s:
            raise LiveError(
                f"an audio chunk of {seconds:.2f} s is longer than the limit of {self.settings.max_chunk_s:g} s"
            )
        x = np.frombuffer(payload, dtype=self.audio_format).astype(np.float32)
        if self.audio_format.kind == "i":
            x /= 32768.0
        elif not np.all(np.isfinite(x)):
            raise LiveError("the audio chunk holds NaN or inf samples")
        if self.audio_rate != SAMPLE_RATE and x.size:
            from emollm.media import resample

            x = resample(x, self.audio_rate, SAMPLE_RATE)
        with self._lock:
            start, end = round(t * SAMPLE_RATE), self._audio_end
            tol = round(0.02 * SAMPLE_RATE)
            if start < end - tol:
                raise LiveError(
                    f"audio chunk at t={t:.3f} s starts before the end of the audio received so far "
                    f"({end / SAMPLE_RATE:.3f} s): out of order, dropped"
                )
            if start > end + tol:  # a gap (lost messages, a paused microphone): silence, counted
                self._audio_gaps += 1
                fill = min(start - end, self._keep)
                if fill < start - end:  # everything kept is older than the buffer reaches
                    self._wave, self._wave_start = np.zeros(0, dtype=np.float32), start - fill
                x = np.concatenate([np.zeros(fill, dtype=np.float32), x])
            elif start < end:  # a small overlap: keep only what continues the audio
                x = x[end - start :]
            self._append(x)
            self._audio_end = self._wave_start + self._wave.size
            self._advance(self._audio_end / SAMPLE_RATE)

    def _append(self, x: np.ndarray) -> None:
        wave = np.concatenate([self._wave, x]) if self._wave.size else x.astype(np.float32, copy=True)
        if wave.size > self._keep:
            self._wave_start += wave.size - self._keep
            wave = wave[-self._keep :]
        self._wave = wave

    def add_frame(self, t: float, data: bytes) -> None:
        """Queue one JPEG/PNG frame taken ``t`` seconds into the session (checked now, decoded by :meth:`work`).

        Raises:
            LiveError: A bad timestamp, too many bytes, not a JPEG/PNG, or a frame older than the previous one.
            LiveLimit: The session reached ``max_session_s``.
        """
        _check_time(t)
        if len(data) > self.settings.max_frame_bytes:
            with self._lock:
                self.counts.rejected += 1
            raise LiveError(
                f"a frame of {len(data)} bytes is larger than the limit of {self.settings.max_frame_bytes} bytes"
            )
        if not any(data.startswith(m) for m in IMAGE_MAGIC):
            with self._lock:
                self.counts.rejected += 1
            raise LiveError("a frame must be a JPEG or PNG image (its first bytes are neither)")
        with self._lock:
            if t < self._last_frame_t - 1e-6:
                self.counts.rejected += 1
                raise LiveError(f"frame at t={t:.3f} s is older than the previous frame ({self._last_frame_t:.3f} s)")
            if self.audio_format is not None and t > self._clock + self.settings.max_lead_s:
                self.counts.rejected += 1
                raise LiveError(
                    f"frame at t={t:.3f} s runs {t - self._clock:.1f} s ahead of the audio received "
                    f"({self._clock:.3f} s; at most {self.settings.max_lead_s:g} s)"
                )
            self._last_frame_t = t
            self.counts.received += 1
            self._frame_seq += 1
            self._pending.append(_Frame(t, self._frame_seq, data, time.monotonic()))
            while len(self._pending) > self.settings.max_pending_frames:
                self._pending.popleft()
                self.counts.dropped_busy += 1
            if self.audio_format is None:
                self._advance(t)

    def _advance(self, clock: float) -> None:
        """Move the clock (lock held); note when a new hop became due; stop at the session limit."""
        limit = self.settings.max_session_s
        if clock > limit + 1e-6:
            clock = limit
            self.ended = self.ended or f"the session reached the server's limit of {limit:g} s of media"
        if clock > self._clock:
            before = math.floor(self._clock / self.settings.hop_s + 1e-9)
            self._clock = clock
            if math.floor(clock / self.settings.hop_s + 1e-9) > before:
                self._due_at = time.monotonic()
        if self.ended:
            raise LiveLimit(self.ended)

    # ------------------------------------------------------------------------------------------------ state
    def due_end(self) -> float | None:
        """The end of the newest hop that is due and not answered, if any."""
        with self._lock:
            return self._due_end()

    def _due_end(self) -> float | None:
        hop = self.settings.hop_s
        k = math.floor(self._clock / hop + 1e-9)
        end = round(k * hop, 6)
        return end if end > self._answered_end + 1e-9 else None

    def has_work(self) -> bool:
        """Frames wait for analysis or a hop is due."""
        with self._lock:
            return bool(self._pending) or self._due_end() is not None

    def stats(self) -> dict[str, Any]:
        """Frame counts, skipped hops, audio gaps, hops answered, latency percentiles so far."""
        with self._lock:
            lat = sorted(self.latencies_ms)
        pct = (lambda q: round(lat[min(len(lat) - 1, math.ceil(q * len(lat)) - 1)], 1)) if lat else (lambda q: None)
        return {
            "frames": self.counts.to_dict(),
            "skipped_hops": self.skipped_hops,
            "audio_gaps": self._audio_gaps,
            "work_s": {k: round(v, 4) for k, v in self.work_s.items()},
            "jobs": self.jobs,
            "hops": len(self.entries),
            "media_s": round(self._clock, 3),
            "latency_ms": {"p50": pct(0.5), "p95": pct(0.95), "max": lat[-1] if lat else None},
        }

    # ------------------------------------------------------------------------------------------------ work
    def work(self, analyzer: Any, *, final: bool = False) -> list[dict[str, Any]]:
        """Analyse the waiting frames and answer the newest due hop (on the analyzer's worker thread).

        Args:
            analyzer: A :class:`~emollm.apps.clue_mode.ClueAnalyzer` (the service's worker's own).
            final: Also answer a last, partial hop at the end of the media (the session is stopping).

        Returns:
            Hop messages (``type``, ``seq``, the timeline entry's fields, ``due_at``, ``frames``, ...), at most one.
        """
        _check_analyzer(analyzer)
        t_start, cpu_start = time.perf_counter(), time.process_time()
        with self._lock:
            end = self._due_end()
            if final and end is None and self._clock - self._answered_end >= 0.5 * self.settings.hop_s:
                end = round(self._clock, 6)
            frames = list(self._pending)
            self._pending.clear()
            due_at = self._due_at or time.monotonic()
            if end is not None:
                skipped = max(0, round((end - self._answered_end) / self.settings.hop_s) - 1)
                self.skipped_hops += skipped if not final else 0
                self._answered_end = end
                start = max(0.0, end - self.settings.window_s)
                a = max(0, round(start * SAMPLE_RATE) - self._wave_start)
                b = max(0, round(end * SAMPLE_RATE) - self._wave_start)
                wave = self._wave[a:b].copy() if self.audio_format is not None else None
        timings: dict[str, float] = {}
        horizon = (end if end is not None else self._clock) - self.settings.window_s
        self._analyse_frames(analyzer, frames, horizon, timings)
        if end is None:
            self._account(timings, t_start, cpu_start)
            return []
        entry = self._hop(analyzer, start, end, wave, timings)
        with self._lock:
            self._seq += 1
            self.entries.append(entry)
            seq = self._seq
        self._account(timings, t_start, cpu_start)
        return [{
            "type": "hop", "seq": seq, **entry, "due_at": due_at, "timings": timings,
            "frames": self.counts.to_dict(), "skipped_hops": self.skipped_hops, "media_s": round(self._clock, 3),
        }]  # fmt: skip

    def _account(self, timings: dict[str, float], t_start: float, cpu_start: float) -> None:
        """Close a job's timings and add them to the session's work per stage (``stats()["work_s"]``). ``cpu`` is the
        process' CPU time during the job: on a busy machine the job's work apart from the waiting for a core (with
        one worker and one session; other workers' CPU counts too)."""
        timings["total"] = round(time.perf_counter() - t_start, 4)
        timings["cpu"] = round(time.process_time() - cpu_start, 4)
        with self._lock:
            self.jobs += 1
            for k, v in timings.items():
                self.work_s[k] = self.work_s.get(k, 0.0) + v

    def _analyse_frames(self, analyzer: Any, frames: list[_Frame], horizon: float, timings: dict[str, float]) -> None:
        """Each frame once: find the face, cut the FER crop, expression probabilities and AUs (see ``face_path``)."""
        from emollm.apps.clue_mode import _Timer
        from emollm.encoders.face import classify_faces
        from emollm.media import Box, FaceTrack, crop_faces
        from emollm.media.faces import cached_face_detector

        late = [f for f in frames if f.t < horizon]
        frames = [f for f in frames if f.t >= horizon]
        crops, kept, aus = [], [], []
        landmarks = self.settings.face_path == "landmarker"
        finder = analyzer._model("landmarker") if landmarks else cached_face_detector(analyzer.settings.face_detector)
        t = time.perf_counter()
        for f in frames:
            try:
                rgb, back = decode_image(f.data, self.settings.max_frame_pixels, self.settings.analyse_side)
            except LiveError:
                with self._lock:
                    self.counts.rejected += 1
                continue
            if landmarks:  # one pass: the face's landmarks (its box) and its blendshape AUs
                found = finder.from_images([rgb])[0]
                box = found.box
            else:
                box = _pick_face(finder.detect(rgb), self._prev_box, rgb.shape[1], rgb.shape[0])
            if box is None:
                with self._lock:
                    self.counts.no_face += 1
                    self.counts.analysed += 1
                continue
            self._prev_box = box
            crops.append(crop_faces(rgb[None], FaceTrack([box], [True]), size=224, margin=0.2)[0])
            kept.append((f, Box(box.x0 * back, box.y0 * back, box.x1 * back, box.y1 * back, box.score)))
            if landmarks:
                aus.append(found)
        timings["face_landmarks" if landmarks else "face_detection"] = round(time.perf_counter() - t, 4)
        if crops:
            timer = _Timer()
            if landmarks:
                t = time.perf_counter()
                probs = classify_faces(np.stack(crops)).numpy()  # (M, 224, 224, 3) -> (M, 7)
                timer("face_expression", t)
            else:  # the file path: the expression CNN and the landmarker on the crops
                probs, aus = analyzer.face_frames(np.stack(crops), timer)
            for k, v in timer.timings.items():
                timings[k] = round(timings.get(k, 0.0) + v, 4)
            with self._lock:
                for (f, box), p, a in zip(kept, probs, aus, strict=True):
                    self.faces.times.append(f.t)
                    self.faces.ids.append(f.seq)
                    self.faces.probs.append(p)
                    self.faces.aus.append(a)
                    self.faces.boxes.append(box)
                self.counts.analysed += len(kept)
        with self._lock:
            self.counts.dropped_late += len(late)

    def _hop(self, analyzer: Any, start: float, end: float, wave: np.ndarray | None, timings: dict[str, float]) -> dict:
        from emollm.apps.clue_mode import _Timer
        from emollm.clues.prosody import prosody_track

        timer = _Timer()
        self._new_words: list[Any] = []
        prosody, words, missing_words, asr = None, None, None, "off"
        if wave is not None:
            t = time.perf_counter()
            track = None
            if wave.size:
                hnr = self._harmonicity(wave, start, end)
                track = prosody_track(wave, SAMPLE_RATE, harmonicity=hnr)
                prosody = track.window(0.0, wave.size / SAMPLE_RATE)
            timer("prosody", t)
            if prosody is not None and prosody.has_speech:
                self._tones.append(prosody.phrase())
            hop_from = wave.size / SAMPLE_RATE - self.settings.hop_s  # the newest hop, in the window's time
            voiced_now = track is not None and np.count_nonzero(track.f0[track.times >= hop_from]) >= 3
            if prosody is None or not prosody.has_speech:
                missing_words, asr = "no voiced speech in this window", "skipped: no voiced speech"
            elif not (self.settings.asr and analyzer.settings.asr):
                missing_words = "transcription is off"
            elif not voiced_now and self._heard is not None:  # nothing said since the last transcription
                words, asr = words_in(self._heard, start, end), "reused: no voice in the newest hop"
                self._commit(self._heard, end)
            else:
                t = time.perf_counter()
                heard = analyzer._model("whisper").transcribe(
                    wave, SAMPLE_RATE, words=True, no_speech_threshold=analyzer.settings.no_speech_threshold,
                    context_s=self.settings.whisper_context_s, offset_s=start,
                )  # fmt: skip
                timer("asr", t)
                self._heard, asr = heard.words, "run"
                words = words_in(heard.words, start, end)
                self._commit(heard.words, end)
        with self._lock:
            face = self.faces.rows(start, end)
        text = _CachedText(analyzer, self._text_cache)
        t, before = time.perf_counter(), timer.timings.get("text", 0.0)
        entry = clue_entry(
            analyzer, start, end, face=face, prosody=prosody, words=words, text=text, timer=timer,
            missing_words=missing_words,
        )  # fmt: skip
        if face is None and self.counts.received:
            entry["missing"]["face"] = "no analysed face frame in this window"
        # "fusion": the window's aggregation (mean expression, AU peak and table) and the fusion, the text vote apart
        timer.timings["fusion"] = round(time.perf_counter() - t - (timer.timings.get("text", 0.0) - before), 4)
        timings.update(timer.timings)
        entry["transcript_new"] = [w.to_dict() for w in self._new_words]
        entry["asr"] = asr
        return entry

    def _harmonicity(self, wave: np.ndarray, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
        """The window's HNR frames (times from the window's start): each stretch of audio is measured once, when its
        hop arrives (Praat's default 75 Hz floor, 0.1 s of context before it), and kept while a window needs it."""
        from emollm.clues.prosody import harmonicity_frames

        new_from = max(self._hnr_until, start)
        if end - new_from > 0.05:
            a = max(0, round((new_from - 0.1 - start) * SAMPLE_RATE))
            times, values = harmonicity_frames(wave[a:], SAMPLE_RATE, offset_s=start + a / SAMPLE_RATE)
            keep, old = times >= new_from, self._hnr_t >= start  # new frames; kept ones a window still needs
            self._hnr_t = np.concatenate([self._hnr_t[old], times[keep]])
            self._hnr_v = np.concatenate([self._hnr_v[old], values[keep]])
            self._hnr_until = end
        sel = (self._hnr_t >= start) & (self._hnr_t < end)
        return self._hnr_t[sel] - start, self._hnr_v[sel]

    def _commit(self, heard: list[Any], end: float) -> None:
        """Words that end in ``[committed_until, end - lag)`` join the session transcript (each once)."""
        lag = 0.5 * (self.settings.window_s - self.settings.hop_s)
        upto = end - lag
        new = [w for w in heard if self._committed_until <= w.end < upto]
        self._new_words = new
        with self._lock:
            self.words += new
            self._committed_until = max(self._committed_until, upto)

    def flush_words(self) -> list[Any]:
        """At the end: the last window's words not yet committed (they will not be centred in a later one)."""
        last = self.entries[-1] if self.entries else None
        if last is None:
            return []
        from emollm.encoders.text import Word

        tail = [Word(w["word"], w["start"], w["end"]) for w in (last.get("evidence") or {}).get("words") or []]
        new = [w for w in tail if w.end >= self._committed_until]
        with self._lock:
            self.words += new
            self._committed_until = math.inf
        return new

    # ------------------------------------------------------------------------------------------------ end
    def summary(self, analyzer: Any, *, rationale: bool = False) -> dict[str, Any]:
        """The whole session: the face of every analysed frame and the emotion of the whole transcript, fused; with
        ``rationale``, the analyzer's written rationale (the LLM runs here only, never per hop)."""
        from emollm.apps.clue_mode import _Timer
        from emollm.clues.fusion import fuse

        _check_analyzer(analyzer)
        timer = _Timer()
        with self._lock:
            face = self.faces.rows()
        votes, evidence, phrase = [], {}, None
        if face is not None:
            votes, ev, phrase = analyzer._face(_view(face), timer, frames=(face.probs, face.aus))
            evidence["face"] = {"frames": len(face.ids), "expression_scores": ev["expression_scores"],
                                "aus": ev.get("aus"), "au_label": ev.get("au_label")}  # fmt: skip
        transcript = " ".join(w.text for w in self.words) or None
        if transcript:
            vote, ev = _CachedText(analyzer, self._text_cache)(transcript, timer)
            evidence["text"] = {"label": ev.get("label"), "distribution": ev.get("distribution")}
            if vote is not None:
                votes.append(vote)
        fused = fuse(votes, analyzer.labels, analyzer.fusion)
        tone = max(set(self._tones), key=self._tones.count) if self._tones else None
        out: dict[str, Any] = {
            "type": "summary", "label": fused.label, "probabilities": fused.probabilities,
            "voters": {k: round(w, 4) for k, w in fused.weights.items() if w > 0}, "evidence": evidence,
            "transcript": transcript, "tone": tone, "ended": self.ended or "the client stopped", **self.stats(),
        }  # fmt: skip
        if rationale:
            clues = {"visual_expression": phrase, "visual": None, "audio": tone, "subtitle": transcript}
            out["reasoning"], out["reasoning_source"] = analyzer._reason(fused.label, clues, timer)
        out["timeline"] = self.timeline(analyzer)
        return out

    def timeline(self, analyzer: Any) -> dict[str, Any]:
        """The session as the timeline JSON of ``emollm analyze --timeline`` (``source: "stream"``)."""
        with self._lock:
            entries = [{k: v for k, v in e.items() if k not in ("transcript_new", "asr")} for e in self.entries]
            words = list(self.words)
        doc = timeline_document(
            entries, TimelineSettings(self.settings.window_s, self.settings.hop_s), source="stream",
            duration=self._clock, labels=self.labels, words=words, frames=self.counts.analysed,
            extra={"stream": self.stats(), "produced_by": analyzer.produced_by()},
        )  # fmt: skip
        media_s = max(self._clock, 1e-9)
        doc["fps"] = round(self.counts.received / media_s, 3)  # as received (the client chose the rate)
        return doc

    def close(self) -> None:
        """Free the buffers (the transport calls this on every exit path)."""
        with self._lock:
            self._pending.clear()
            self._wave = np.zeros(0, dtype=np.float32)


def warm_up(analyzer: Any, settings: LiveSettings) -> dict[str, Any]:
    """Load every model a hop uses (face detector, expression CNN, landmarker, Whisper with the window's encoder
    context, its linear layers packed per ``asr_precision``, text model), so that a session's first hop is not a cold
    start. Returns ``{"warm_up_s": seconds (0 when already warm), "asr_kernels": what Whisper's window model runs}``."""
    from emollm.apps.clue_mode import _Timer
    from emollm.media.faces import cached_face_detector

    _check_analyzer(analyzer)
    s = settings
    key = (s.whisper_context_s, s.asr and analyzer.settings.asr, s.face_path, s.asr_precision)
    if getattr(analyzer, "_live_warm", None) == key:
        return {"warm_up_s": 0.0, "asr_kernels": getattr(analyzer, "_live_kernels", None)}
    t = time.perf_counter()
    timer = _Timer()
    if settings.face_path == "detector":
        cached_face_detector(analyzer.settings.face_detector).detect(np.zeros((96, 96, 3), dtype=np.uint8))
    analyzer.face_frames(np.zeros((1, 224, 224, 3), dtype=np.uint8), timer)  # the CNN and the landmarker
    if key[1]:
        from emollm.model.packed_linear import pack_linears

        whisper = analyzer._model("whisper")
        short = whisper.context_model(settings.whisper_context_s)
        if short is not whisper.model and not hasattr(short, "emollm_kernels"):  # pack once, never the 30 s model
            short.emollm_kernels = pack_linears(short, settings.asr_precision)
        analyzer._live_kernels = getattr(short, "emollm_kernels", "fp32")
        quiet = np.zeros(SAMPLE_RATE, dtype=np.float32)
        whisper.transcribe(quiet, SAMPLE_RATE, context_s=settings.whisper_context_s, words=True)
    analyzer._text("warming up", timer)
    analyzer._model("cues")  # MERR's AU table, read by the first window's aggregation
    from emollm.clues.prosody import prosody_track

    tone = (0.2 * np.sin(2 * np.pi * 150 * np.arange(SAMPLE_RATE // 2) / SAMPLE_RATE)).astype(np.float32)
    prosody_track(tone, SAMPLE_RATE).window(0.0, 0.5)  # Praat's first call
    analyzer._live_warm = key
    return {"warm_up_s": round(time.perf_counter() - t, 3), "asr_kernels": getattr(analyzer, "_live_kernels", None)}


# ------------------------------------------------------------------------------------------------ helpers
def _check_time(t: float) -> None:
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
        raise LiveError(f"a timestamp must be a finite number of seconds >= 0, got {t!r}")


def _check_analyzer(analyzer: Any) -> None:
    if not (hasattr(analyzer, "face_frames") and hasattr(analyzer, "_face")):
        raise LiveError(
            f"this server's analyzer ({type(analyzer).__name__}) cannot analyse a live stream: run the server in "
            "clue mode (without --checkpoint)"
        )


class _CachedText:
    def __init__(self, analyzer: Any, cache: dict[str, Any]) -> None:
        self.analyzer, self.cache = analyzer, cache

    def __call__(self, text: str, timer: Any) -> tuple[Any, dict[str, Any]]:
        if text not in self.cache:
            if len(self.cache) > 256:
                self.cache.clear()
            self.cache[text] = self.analyzer._text(text, timer)
        return self.cache[text]


def _view(face: FaceRows) -> Any:
    from emollm.apps.timeline import _FaceView, _Info
    from emollm.media import FaceTrack

    return _FaceView(face.ids, _Info(None), FaceTrack(face.boxes, [True] * len(face.boxes)))


def _pick_face(boxes: list[Any], prev: Any, width: int, height: int) -> Any:
    """The main face of one frame: the box that overlaps the previous main face most (IoU >= 0.3), else the most
    prominent one (area, discounted away from the centre, as :func:`emollm.media.track_main_face`)."""
    if not boxes:
        return None
    if prev is not None:
        best = max(boxes, key=prev.iou)
        if prev.iou(best) >= 0.3:
            return best
    half = 0.5 * math.hypot(width, height)

    def prominence(b: Any) -> float:
        cx, cy = b.center
        return b.area * (1.0 - 0.5 * min(1.0, math.hypot(cx - width / 2, cy - height / 2) / half))

    return max(boxes, key=prominence)
