"""Probe media files, choose frames, and decode them.

* :func:`probe` opens a file's header (PyAV / Pillow; nothing is decoded), checks every declared size against a
  :class:`~emollm.media.MediaLimits` before any decoder allocates, and returns a :class:`MediaInfo`. A header that
  cannot be true for the file's size (a 30 KB file claiming 1e5 s or 2^31 frames) is not trusted: the streams are
  measured by demuxing their packets (no decoding), and frames are then decoded with PyAV, never decord, whose
  native code aborts the process (``std::bad_alloc``) on such headers.
* :func:`sample_frame_indices` is a pure function from a frame count and a policy string to frame indices.
* :func:`read_frames` decodes those frames with decord (fast random access), falling back to PyAV, scaling huge
  frames down inside the decoder so an 8K clip never materialises at full size.
* :func:`read_image` reads a still image (JPEG files are decoded at reduced size directly).

Frame-sampling policies (``policy`` strings):

=================  ====================================================================================
``uniform:N``      N frames at the centres of N equal segments: ``floor((i + 0.5) * C / N)``; frames repeat
                   when ``N > C``. ``middle`` equals ``uniform:1``.
``starts:N``       N frames at the starts of N equal segments, AffectGPT's ``np.arange(0, C, C / N)`` (as
                   integers); a clip shorter than N frames gives all of them, the last repeated up to N.
``first``          frame 0 (what Emotion-LLaMA's released code feeds EVA).
``middle``         frame ``C // 2``.
``peak``           ``argmax(scores)``: the caller's per-frame curve (AU-intensity sum, expression confidence);
                   NaNs are ignored, ties go to the earliest frame. On DFEW: peak > middle > first (REFERENCE §1.8).
``segments:S:K``   Emotion-LLaMA / Former-DFER test-time sampling for VideoMAE (``segments:8:2`` = 16 frames),
                   see :func:`sample_frame_indices`.
``fps:R``          R frames per second (needs ``fps``), at least one frame.
``all``            every frame.
=================  ====================================================================================
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .errors import (
    CorruptMedia,
    EmptyMedia,
    MediaError,
    MediaNotFound,
    MediaTooLarge,
    UnreadableMedia,
    UnsupportedFormat,
)
from .limits import MediaLimits, resolve

__all__ = [
    "AUDIO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "TEXT_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "MediaInfo",
    "MediaKind",
    "probe",
    "read_frames",
    "read_image",
    "sample_frame_indices",
]

logger = logging.getLogger(__name__)

MediaKind = Literal["video", "audio", "image", "text"]

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts"}
)
AUDIO_EXTENSIONS = frozenset({".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
TEXT_EXTENSIONS = frozenset({".txt"})

DEFAULT_MAX_BYTES = MediaLimits.max_bytes
"""Default of ``MediaLimits.max_bytes`` (2 GiB): the most bytes one decode may return; see :class:`MediaTooLarge`."""

MAX_SAMPLED_FRAMES = 10_000
"""Most frames a frame policy may ask for (``uniform:N``, ``segments:S:K``, ``fps:R``); ``all`` is bounded by
``MediaLimits.max_frames``."""

_MIN_BYTES_PER_SECOND = 50  # 400 bit/s: below any real audio or video stream; a header claiming less is not trusted
_MIN_BYTES_PER_FRAME = 4  # a coded frame plus its index entry never takes fewer bytes
_DECORD_MAX_FRAMES = 2**31 - 1  # decord counts frames in an int32 and aborts (std::bad_alloc) past it


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` learns from a file's header.

    Attributes:
        path: The file.
        kind: ``"video"``, ``"audio"``, ``"image"`` or ``"text"``.
        frames: Number of video frames (1 for an image, 0 for audio/text).
        fps: Average frame rate (0.0 when not a video).
        duration: Seconds (longest stream; 0.0 for images and text).
        width: Frame width in pixels (0 when no picture).
        height: Frame height in pixels (0 when no picture).
        has_audio: Whether there is an audio stream.
        sample_rate: Native sample rate of the audio stream (0 when none).
        channels: Channels of the audio stream (0 when none).
        audio_duration: Declared duration of the audio stream in seconds (0.0 when none or unknown).
        header_note: Why the header was not trusted and the streams were measured by demuxing instead (empty when
            the header is plausible); such files are decoded with PyAV only.
    """

    path: str
    kind: MediaKind
    frames: int = 0
    fps: float = 0.0
    duration: float = 0.0
    width: int = 0
    height: int = 0
    has_audio: bool = False
    sample_rate: int = 0
    channels: int = 0
    audio_duration: float = 0.0
    header_note: str = ""

    @property
    def name(self) -> str:
        """The file name without folders."""
        return os.path.basename(self.path)


# ----------------------------------------------------------------------------------------------------------- probing
def check_file(path: str | os.PathLike[str]) -> tuple[Path, str]:
    """Checks that ``path`` is a readable, non-empty regular file with a supported extension.

    The reason is always the real one: ``errno`` and the file type are checked before anything is opened, so a
    folder, a FIFO, a broken symlink, a symlink loop or a permission problem is never reported as "no such file" or
    as a truncated file. A FIFO is never opened (that would block).

    Args:
        path: The file.

    Returns:
        The path and its lower-case extension.

    Raises:
        MediaNotFound: No such file, a broken symlink, a symlink loop, or not a regular file (folder, FIFO, ...).
        UnreadableMedia: Permission denied, or an I/O error on the first read.
        EmptyMedia: The file has 0 bytes.
        UnsupportedFormat: The extension is not a known video, audio, image or text extension.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as e:
        raise _stat_error(p, e) from None
    if not stat.S_ISREG(st.st_mode):
        kind = _file_kind(st.st_mode)
        fix = "pass the files inside it" if kind == "folder" else "copy the data into a regular file first"
        raise MediaNotFound(p, f"is a {kind}, not a regular file", fix)
    ext = p.suffix.lower()
    known = VIDEO_EXTENSIONS | AUDIO_EXTENSIONS | IMAGE_EXTENSIONS | TEXT_EXTENSIONS
    if ext not in known:
        raise UnsupportedFormat(
            p,
            f"unsupported file type {ext or '(no extension)'!r}",
            f"convert it with ffmpeg to .mp4/.wav/.jpg; supported: {' '.join(sorted(known))}",
        )
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # nonblocking: a FIFO swapped in cannot hang us
        try:
            os.read(fd, 1)
        finally:
            os.close(fd)
    except OSError as e:
        raise _read_error(p, e) from None
    if st.st_size == 0:
        raise EmptyMedia(p, "the file is empty (0 bytes)", "re-download or re-export it")
    return p, ext


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "FIFO (named pipe)"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def _stat_error(p: Path, e: OSError) -> MediaError:
    if e.errno == errno.ENOENT and os.path.islink(p):
        try:
            target = os.readlink(p)
        except OSError:
            target = "?"
        return MediaNotFound(p, f"broken symlink (it points to {target!r}, which does not exist)", "fix the link")
    if e.errno == errno.ELOOP:
        return MediaNotFound(p, "symlink loop (the link resolves to itself)", "fix or remove the link")
    if e.errno in (errno.EACCES, errno.EPERM):
        return UnreadableMedia(p, "permission denied (a folder on its path cannot be searched)", "check permissions")
    if e.errno == errno.ENOTDIR:
        return MediaNotFound(p, "no such file (a part of its path is a file, not a folder)", "check the path")
    if e.errno == errno.ENOENT:
        return MediaNotFound(p, "no such file", "check the path and the dataset root")
    return UnreadableMedia(p, f"cannot be read ({e.strerror or e})", "check the path and the disk")


def _read_error(p: Path, e: OSError) -> MediaError:
    if e.errno in (errno.EACCES, errno.EPERM):
        return UnreadableMedia(p, "permission denied", "make it readable (chmod a+r) or run as its owner")
    return UnreadableMedia(p, f"cannot be read ({e.strerror or e})", "check the disk; copy the file elsewhere")


def probe(path: str | os.PathLike[str], *, limits: MediaLimits | None = None) -> MediaInfo:
    """Reads a media file's header and reports what it contains, without decoding it.

    Every declared size (container and stream durations, frame count, frame or image size) is checked against
    ``limits`` first. A header that is within the limits but impossible for the file's size is not trusted: the
    streams are measured by demuxing (reading packets, decoding nothing) and ``MediaInfo.header_note`` says so.
    Cost: one header parse, ~1-3 ms for a short clip once PyAV is imported.

    Args:
        path: A video, audio, image or ``.txt`` file.
        limits: The limits; ``None``: :meth:`MediaLimits.from_env` (defaults, raised by ``EMOLLM_MAX_*``).

    Returns:
        The file's :class:`MediaInfo`. A video container with no video stream (an ``.mp4`` holding only audio)
        is reported as ``kind="audio"``.

    Raises:
        MediaNotFound, UnreadableMedia, EmptyMedia, UnsupportedFormat: See :func:`check_file`.
        CorruptMedia: The header cannot be parsed, or the file has no usable stream.
        MediaTooLarge: A declared duration, frame count or pixel count exceeds ``limits`` (the message names the
            value, the limit and the environment variable that raises it).
    """
    p, ext = check_file(path)
    limits = resolve(limits)
    if ext in TEXT_EXTENSIONS:
        read_text(p)  # validates the encoding
        return MediaInfo(str(p), "text")
    if ext in IMAGE_EXTENSIONS:
        w, h = _image_size(p, limits)
        return MediaInfo(str(p), "image", frames=1, width=w, height=h)
    return _probe_av(p, audio_only=ext in AUDIO_EXTENSIONS, limits=limits)


def _too_large(p: Path, what: str, declared: float, unit: str, field: str, limits: MediaLimits) -> MediaTooLarge:
    limit = getattr(limits, field)
    return MediaTooLarge(
        p,
        f"the header declares {what} {declared:,.0f}{unit} (limit {limit:,.0f}{unit}) in a file of "
        f"{_human_bytes(p.stat().st_size)}",
        limits.how_to_raise(field, declared) + "; a small file claiming this is broken: re-mux it with ffmpeg",
    )


def _human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def read_text(path: str | os.PathLike[str]) -> str:
    """Reads a UTF-8 text file (a subtitle / transcript), stripped.

    Args:
        path: The ``.txt`` file.

    Returns:
        The text.

    Raises:
        CorruptMedia: The file is not valid UTF-8.
    """
    try:
        return Path(path).read_text(encoding="utf-8-sig").strip()
    except UnicodeDecodeError as e:
        raise CorruptMedia(path, f"not UTF-8 text ({e.reason} at byte {e.start})", "re-save it as UTF-8") from e


def _probe_av(p: Path, *, audio_only: bool, limits: MediaLimits) -> MediaInfo:
    import av

    size = p.stat().st_size
    try:
        with av.open(str(p)) as c:
            vs = [s for s in c.streams.video if not _is_attached_picture(s)]
            aus = list(c.streams.audio)
            cdur = c.duration / 1e6 if c.duration and c.duration > 0 else 0.0
            a = aus[0] if aus else None
            adur = (_stream_seconds(a) or cdur) if a is not None else 0.0
            v = None if audio_only or not vs else vs[0]
            vdur = fps = 0.0
            header_frames = est_frames = 0
            if v is not None:
                rate = v.average_rate or v.guessed_rate or v.base_rate
                fps = float(rate) if rate and rate > 0 else 0.0
                vdur = _stream_seconds(v) or cdur
                header_frames = max(0, int(v.frames or 0))
                est_frames = math.ceil(vdur * fps) if vdur > 0 and fps > 0 else 0
            # ---- limits, on what the header claims (nothing is allocated from it before this point)
            declared_dur = max(cdur, adur, vdur)
            if declared_dur > limits.max_duration_s:
                raise _too_large(p, "a duration of", declared_dur, " s", "max_duration_s", limits)
            if v is not None:
                declared_frames = max(header_frames, est_frames)
                if declared_frames > limits.max_frames:
                    raise _too_large(p, "a frame count of", declared_frames, "", "max_frames", limits)
                width, height = int(v.codec_context.width or 0), int(v.codec_context.height or 0)
                if width * height > limits.max_pixels:
                    raise _too_large(p, f"{width}x{height} frames:", width * height, " pixels", "max_pixels", limits)
            # ---- plausibility: a header that cannot be true for this file size is measured instead of trusted
            note = ""
            if declared_dur > max(1.0, size / _MIN_BYTES_PER_SECOND):
                note = f"the header claims {declared_dur:g} s in {_human_bytes(size)}"
            elif v is not None and max(header_frames, est_frames) > max(16, size // _MIN_BYTES_PER_FRAME):
                note = f"the header claims {max(header_frames, est_frames)} frames in {_human_bytes(size)}"
            elif v is not None and header_frames and est_frames and abs(header_frames - est_frames) > est_frames + 2:
                note = f"the header claims {header_frames} frames but {vdur:g} s at {fps:g} fps"
            if note:
                streams = [s for s in (v, a) if s is not None]
                measured = _measure_streams(c, streams)
                note += "; measured by demuxing"
                logger.warning("%s: %s", p, note)
                if a is not None:
                    adur = measured[a.index][1]
                if v is not None:
                    header_frames, vdur = measured[v.index]
                    est_frames = header_frames
                    if vdur > 0 and header_frames > 1:
                        fps = header_frames / vdur
                cdur = max(adur, vdur)
            a_info: dict = {}
            if a is not None:
                a_info = dict(
                    has_audio=True, sample_rate=int(a.rate or 0), channels=int(a.channels or 0), audio_duration=adur
                )
            if v is None:
                if a is None:
                    raise CorruptMedia(p, "no audio or video stream in the file", "re-export it with ffmpeg")
                return MediaInfo(str(p), "audio", duration=adur or cdur, header_note=note, **a_info)
            frames = header_frames or est_frames
            if frames <= 0:
                frames = sum(1 for pkt in c.demux(v) if pkt.size)
            if frames <= 0:
                raise EmptyMedia(p, "the video stream has no frames", "re-export the clip")
            if fps <= 0:
                fps = frames / vdur if vdur > 0 else 25.0
            width, height = int(v.codec_context.width or 0), int(v.codec_context.height or 0)
            if width <= 0 or height <= 0:
                raise CorruptMedia(p, "the video stream has no frame size", "re-export the clip")
            return MediaInfo(
                str(p),
                "video",
                frames=frames,
                fps=fps,
                duration=max(vdur, adur),
                width=width,
                height=height,
                header_note=note,
                **a_info,
            )
    except MediaError:
        raise
    except av.error.FFmpegError as e:
        if getattr(e, "errno", None) in (errno.EACCES, errno.EPERM):
            raise UnreadableMedia(p, "permission denied", "make it readable (chmod a+r)") from e
        raise CorruptMedia(p, f"cannot be opened: {_av_reason(e)}", "the file is truncated or not a media file") from e


def _stream_seconds(stream) -> float:
    if stream.duration and stream.duration > 0 and stream.time_base:
        return float(stream.duration * stream.time_base)
    return 0.0


def _measure_streams(container, streams: list) -> dict[int, tuple[int, float]]:
    """Stream index -> (packets with data, seconds from first to last packet end), by demuxing (no decoding)."""
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    count = dict.fromkeys((s.index for s in streams), 0)
    for pkt in container.demux(*streams):
        if not pkt.size or pkt.time_base is None:
            continue
        i = pkt.stream.index
        count[i] += 1
        t = pkt.pts if pkt.pts is not None else pkt.dts
        if t is None:
            continue
        start = float(t * pkt.time_base)
        first[i] = min(first.get(i, start), start)
        last[i] = max(last.get(i, start), start + float((pkt.duration or 0) * pkt.time_base))
    return {i: (n, max(0.0, last.get(i, 0.0) - first.get(i, 0.0))) for i, n in count.items()}


def _is_attached_picture(stream) -> bool:
    """Cover art in mp3/m4a files shows up as a one-frame video stream."""
    try:
        import av

        return bool(stream.disposition & av.stream.Disposition.attached_pic)
    except (AttributeError, TypeError):
        return False


def short_error(e: BaseException, limit: int = 160) -> str:
    """A one-line decoder error: drops decord's ``[hh:mm:ss] file.cc:123:`` prefixes and stack traces."""
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", str(e)).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(("Stack", "[bt]"))]
    line = lines[0] if lines else type(e).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _av_reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e).split(":")[0] or type(e).__name__


def _image_size(p: Path, limits: MediaLimits | None = None) -> tuple[int, int]:
    """(width, height) from the image header only (Pillow's lazy open decodes nothing)."""
    from PIL import Image, UnidentifiedImageError

    limits = resolve(limits)
    try:
        with Image.open(p) as im:
            w, h = im.size
    except UnidentifiedImageError as e:
        raise CorruptMedia(p, "not a readable image", "the file is truncated or not an image") from e
    except Image.DecompressionBombError as e:  # Pillow's own limit, checked inside open() before any decoding
        m = re.search(r"\((\d+) pixels\)", str(e))
        declared = int(m.group(1)) if m else 0
        pil_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise MediaTooLarge(
            p,
            f"the header declares an image of {declared:,} pixels (Pillow's decompression-bomb limit {pil_limit:,})",
            "if it really is that large, raise PIL.Image.MAX_IMAGE_PIXELS and EMOLLM_MAX_PIXELS; else re-export it",
        ) from e
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            raise UnreadableMedia(p, "permission denied", "make it readable (chmod a+r)") from e
        raise CorruptMedia(p, f"cannot read the image header ({e})", "re-export the image") from e
    if w * h > limits.max_pixels:
        raise MediaTooLarge(
            p,
            f"the header declares a {w}x{h} image ({w * h:,} pixels; limit {limits.max_pixels:,})",
            limits.how_to_raise("max_pixels", w * h),
        )
    return w, h


# ---------------------------------------------------------------------------------------------------------- sampling
_POLICIES = "uniform:N, starts:N, first, middle, peak, segments:S:K, fps:R, all"


def sample_frame_indices(
    num_frames: int,
    policy: str,
    *,
    scores: Sequence[float] | np.ndarray | None = None,
    fps: float | None = None,
) -> list[int]:
    """Chooses which frames of a clip to decode.

    ``segments:S:K`` reproduces Emotion-LLaMA's VideoMAE input (16 frames = ``segments:8:2``; issue #49; the
    test-time rule of Former-DFER's ``VideoDataset``, which Emotion-LLaMA uses). With ``C = num_frames``:

    1. If ``C > S + K - 1``: ``tick = (C - K + 1) / S`` and segment ``s`` starts at ``int(tick / 2 + tick * s)``
       (the middle of each of S equal parts of the first ``C - K + 1`` frames).
       Otherwise the starts are ``0, 1, ..., min(C, S) - 1`` padded with the last one to S values (the original
       code does the same when ``C <= S`` and crashes in ``np.pad`` when ``S < C <= S + K - 1``).
    2. Each start ``p`` contributes K consecutive frames ``p, p + 1, ...``, never past ``C - 1`` (the last frame
       repeats), so the result always has ``S * K`` indices in segment order.

    Example: ``C=100, segments:8:2`` gives starts ``6, 18, 30, 43, 55, 68, 80, 92`` and the frames
    ``6, 7, 18, 19, ..., 92, 93``.

    Args:
        num_frames: Frames in the clip (``C``), at least 1.
        policy: One of ``uniform:N``, ``first``, ``middle``, ``peak``, ``segments:S:K``, ``fps:R``, ``all``
            (see the module docstring).
        scores: Per-frame curve for ``peak`` (length ``num_frames``); higher is more expressive.
        fps: The clip's frame rate, needed by ``fps:R``.

    Returns:
        Frame indices in ``[0, num_frames)``, in temporal order, possibly repeated (short clips).

    Raises:
        ValueError: Unknown or malformed policy, one asking for more than :data:`MAX_SAMPLED_FRAMES` frames,
            ``num_frames < 1``, or missing/mis-sized ``scores`` for ``peak``.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1 to sample frames with policy {policy!r}, got {num_frames}")
    name, *args = policy.strip().lower().split(":")
    try:
        nums = [float(a) if name == "fps" else int(a) for a in args]
    except ValueError:
        raise ValueError(f"malformed frame policy {policy!r}: arguments must be numbers ({_POLICIES})") from None
    expected = {"uniform": 1, "starts": 1, "first": 0, "middle": 0, "peak": 0, "segments": 2, "fps": 1, "all": 0}
    if name not in expected:
        raise ValueError(f"unknown frame policy {policy!r}; use one of: {_POLICIES}")
    if len(nums) != expected[name] or any(not n > 0 or math.isinf(n) for n in nums):
        raise ValueError(f"malformed frame policy {policy!r}: expected {_POLICIES} with positive numbers")
    asked = 0.0
    if name in ("uniform", "starts"):
        asked = nums[0]
    elif name == "segments":
        asked = nums[0] * nums[1]
    elif name == "fps" and fps and fps > 0:
        asked = num_frames / fps * nums[0]
    if asked > MAX_SAMPLED_FRAMES:
        raise ValueError(
            f"frame policy {policy!r} asks for {asked:.0f} frames of one clip; at most {MAX_SAMPLED_FRAMES} "
            "(use fewer, e.g. uniform:16)"
        )
    c = num_frames
    if name == "first":
        return [0]
    if name == "middle":
        return [c // 2]
    if name == "all":
        return list(range(c))
    if name == "uniform":
        (n,) = nums
        return [min(c - 1, int((i + 0.5) * c / n)) for i in range(n)]
    if name == "starts":  # AffectGPT's load_video: arange over min(N, C) segments, then the last index repeated
        (n,) = nums
        idx = np.arange(0, c, c / min(n, c)).astype(int).tolist()
        return idx + [idx[-1]] * (int(n) - len(idx))
    if name == "fps":
        if not fps or fps <= 0:
            raise ValueError(f"frame policy {policy!r} needs the clip's fps")
        n = max(1, int(c / fps * nums[0]))
        return [min(c - 1, int((i + 0.5) * c / n)) for i in range(n)]
    if name == "peak":
        if scores is None:
            raise ValueError(
                "frame policy 'peak' needs `scores`: one value per frame (e.g. AU-intensity sums or expression "
                "confidence); use 'middle' when you have none"
            )
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if s.size != c:
            raise ValueError(f"frame policy 'peak': got {s.size} scores for a clip of {c} frames (one per frame)")
        if np.isnan(s).all():
            raise ValueError("frame policy 'peak': every score is NaN")
        return [int(np.nanargmax(s))]
    seg, dur = nums  # segments:S:K
    if c > seg + dur - 1:
        tick = (c - dur + 1) / float(seg)
        starts = [int(tick / 2.0 + tick * s) for s in range(seg)]
    else:
        starts = list(range(min(c, seg)))
        starts += [starts[-1]] * (seg - len(starts))
    return [min(p + k, c - 1) for p in starts for k in range(dur)]


# ----------------------------------------------------------------------------------------------------------- reading
def fit_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Scales ``(width, height)`` so that the longer side is at most ``max_side`` (aspect kept, never upscaled).

    Args:
        width: Source width.
        height: Source height.
        max_side: Longest allowed side; ``None`` keeps the size.

    Returns:
        ``(width, height)`` after scaling, each at least 1 and even when scaled (video scalers prefer even sizes).
    """
    if not max_side or max(width, height) <= max_side:
        return width, height
    s = max_side / max(width, height)
    return max(2, 2 * round(width * s / 2)), max(2, 2 * round(height * s / 2))


def read_frames(
    path: str | os.PathLike[str],
    indices: Sequence[int],
    *,
    max_side: int | None = None,
    backend: Literal["auto", "decord", "pyav"] = "auto",
    max_bytes: int | None = None,
    info: MediaInfo | None = None,
    limits: MediaLimits | None = None,
) -> np.ndarray:
    """Decodes the given frames of a video as RGB.

    Indices past the last decodable frame (headers sometimes over-count by a frame or two) read the last frame.
    ``"auto"`` never hands decord a file whose header was not trusted (``MediaInfo.header_note``): decord's native
    code aborts the whole process on some such headers, PyAV raises a Python error or reads what is there.

    Args:
        path: The video file.
        indices: Frame indices (any order, repeats allowed), e.g. from :func:`sample_frame_indices`.
        max_side: Scale frames inside the decoder so that the longer side is at most this (``None``: full size).
        backend: ``"decord"`` (random access), ``"pyav"`` (sequential decode), or ``"auto"``: decord, then PyAV
            when decord is not installed or fails; PyAV only for files whose header was not trusted.
        max_bytes: Refuse (``MediaTooLarge``) when the output would exceed this many bytes; ``None``:
            ``limits.max_bytes``.
        info: The file's :class:`MediaInfo` if already probed.
        limits: See :func:`probe`.

    Returns:
        ``uint8`` array of shape ``(len(indices), H, W, 3)``.

    Raises:
        CorruptMedia: Neither backend can decode the frames.
        MediaTooLarge: The output would exceed ``max_bytes``.
        UnsupportedFormat: The file has no video stream.
        ValueError: Empty or negative ``indices``.
    """
    limits = resolve(limits)
    max_bytes = limits.max_bytes if max_bytes is None else max_bytes
    info = info or probe(path, limits=limits)
    if info.kind != "video":
        raise UnsupportedFormat(path, f"has no video stream (it is {info.kind})", "pass a video file")
    idx = [int(i) for i in indices]
    if not idx or min(idx) < 0:
        raise ValueError(f"read_frames({path}): indices must be a non-empty list of frame numbers >= 0, got {idx}")
    w, h = fit_size(info.width, info.height, max_side)
    need = len(idx) * w * h * 3
    if need > max_bytes:
        raise MediaTooLarge(
            path,
            f"{len(idx)} frames of {w}x{h} need {need / 2**20:.0f} MiB (limit {max_bytes / 2**20:.0f} MiB)",
            f"sample fewer frames, pass a smaller max_side, or raise EMOLLM_MAX_BYTES above {need}",
        )
    errors: list[str] = []
    if backend == "auto" and (info.header_note or info.frames >= _DECORD_MAX_FRAMES):
        logger.debug("%s: header not trusted (%s); decoding with PyAV, not decord", path, info.header_note)
        backend = "pyav"
    if backend in ("auto", "decord"):
        try:
            return _read_decord(str(path), idx, (w, h), (info.width, info.height))
        except ImportError as e:
            if backend == "decord":
                raise
            errors.append(f"decord unavailable ({e})")
        except Exception as e:  # decord raises RuntimeError / DECORDError with ffmpeg messages
            errors.append(f"decord: {short_error(e)}")
            if backend == "decord":
                raise CorruptMedia(path, f"cannot decode frames ({errors[-1]})", "re-encode it with ffmpeg") from e
            logger.debug("decord failed on %s, trying PyAV", path, exc_info=True)
    try:
        return _read_pyav(str(path), idx, (w, h), (info.width, info.height))
    except MediaError:
        raise
    except Exception as e:
        errors.append(f"PyAV: {_av_reason(e)}")
        raise CorruptMedia(path, "cannot decode frames (" + "; ".join(errors) + ")", "re-encode it with ffmpeg") from e


def _read_decord(path: str, idx: list[int], size: tuple[int, int], full: tuple[int, int]) -> np.ndarray:
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    kwargs = {"width": size[0], "height": size[1]} if size != full else {}
    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1, **kwargs)
    try:
        n = len(vr)
        if n <= 0:
            raise EmptyMedia(path, "the video stream has no frames", "re-export the clip")
        clamped = [min(i, n - 1) for i in idx]
        uniq = sorted(set(clamped))  # decord seeks forward most reliably with sorted unique indices
        batch = vr.get_batch(uniq).asnumpy()
    finally:
        del vr
    pos = {i: k for k, i in enumerate(uniq)}
    return np.ascontiguousarray(batch[[pos[i] for i in clamped]])


def _read_pyav(path: str, idx: list[int], size: tuple[int, int], full: tuple[int, int]) -> np.ndarray:
    import av

    def rgb(frame) -> np.ndarray:
        if size != full:  # scale and convert in one swscale pass, as decord does (bilinear; matches it to ~0.1 level)
            return frame.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray()
        return frame.to_ndarray(format="rgb24")

    wanted, last = set(idx), max(idx)
    got: dict[int, np.ndarray] = {}
    final = None
    with av.open(path) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for n, frame in enumerate(c.decode(stream)):
            final = frame
            if n in wanted:
                got[n] = rgb(frame)
            if n >= last:
                break
        if final is None:
            raise CorruptMedia(path, "no decodable video frame", "re-encode it with ffmpeg")
        tail = rgb(final)  # the clip ended before some wanted index: those read its last frame
    return np.stack([got.get(i, tail) for i in idx])


def read_image(
    path: str | os.PathLike[str], *, max_side: int | None = None, limits: MediaLimits | None = None
) -> np.ndarray:
    """Reads a still image as RGB, shrinking it while decoding when it is larger than ``max_side``.

    JPEGs are decoded directly at 1/2, 1/4 or 1/8 scale (Pillow's draft mode), so an 8K photo never exists at full
    size in memory. EXIF orientation is applied; alpha, palette, grey and 16-bit images become 8-bit RGB.

    Args:
        path: A ``.jpg``/``.png``/... file.
        max_side: Longest side of the result (``None``: full size).
        limits: See :func:`probe`; the decode (after JPEG draft reduction) must fit ``limits.max_bytes``.

    Returns:
        ``uint8`` array of shape ``(H, W, 3)``.

    Raises:
        CorruptMedia: The image cannot be decoded (truncated, garbage).
        MediaTooLarge: The header declares more pixels than ``limits.max_pixels``, or the decode would exceed
            ``limits.max_bytes``.
    """
    from PIL import Image, ImageOps

    p = Path(path)
    limits = resolve(limits)
    w, h = _image_size(p, limits)
    reduce = 1
    if max_side and p.suffix.lower() in (".jpg", ".jpeg"):  # draft mode decodes at 1/2, 1/4 or 1/8 scale
        while reduce < 8 and max(w, h) // (reduce * 2) >= max_side:
            reduce *= 2
    need = math.ceil(w / reduce) * math.ceil(h / reduce) * 4
    if need > limits.max_bytes:
        raise MediaTooLarge(
            p,
            f"decoding this {w}x{h} image needs {need / 2**20:.0f} MiB (limit {limits.max_bytes / 2**20:.0f} MiB)",
            f"downscale it first, or raise EMOLLM_MAX_BYTES above {need}",
        )
    try:
        with Image.open(p) as im:
            if max_side and max(im.size) > max_side:
                im.draft("RGB", fit_size(*im.size, max_side))  # JPEG: decode at a reduced scale; no-op otherwise
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I;16"):  # 16-bit grey PNG: keep the high byte
                im = Image.fromarray((np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8))
            if im.mode != "RGB":
                im = im.convert("RGB")  # palette, grey, alpha (dropped), CMYK
            if max_side and max(im.size) > max_side:
                im = im.resize(fit_size(*im.size, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
            return np.asarray(im, dtype=np.uint8).copy()
    except MediaError:
        raise
    except (OSError, ValueError, SyntaxError) as e:
        raise CorruptMedia(p, f"cannot decode the image ({e})", "the file is truncated; re-export it") from e
