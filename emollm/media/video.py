"""Probe media files, choose frames, and decode them.

* :func:`probe` opens a file's header (PyAV / Pillow; nothing is decoded) and returns a :class:`MediaInfo`.
* :func:`sample_frame_indices` is a pure function from a frame count and a policy string to frame indices.
* :func:`read_frames` decodes those frames with decord (fast random access), falling back to PyAV, scaling huge
  frames down inside the decoder so an 8K clip never materialises at full size.
* :func:`read_image` reads a still image (JPEG files are decoded at reduced size directly).

Frame-sampling policies (``policy`` strings):

=================  ====================================================================================
``uniform:N``      N frames at the centres of N equal segments: ``floor((i + 0.5) * C / N)``; frames repeat
                   when ``N > C``. ``middle`` equals ``uniform:1``.
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

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .errors import CorruptMedia, EmptyMedia, MediaError, MediaNotFound, MediaTooLarge, UnsupportedFormat

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

DEFAULT_MAX_BYTES = 2 << 30
"""Refuse to decode more than this many bytes of RGB frames at once (2 GiB); see :class:`MediaTooLarge`."""

_MAX_IMAGE_PIXELS = 400_000_000  # beyond this even a reduced JPEG decode is unreasonable; Pillow's own limit is 179M


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

    @property
    def name(self) -> str:
        """The file name without folders."""
        return os.path.basename(self.path)


# ----------------------------------------------------------------------------------------------------------- probing
def check_file(path: str | os.PathLike[str]) -> tuple[Path, str]:
    """Checks that ``path`` is a non-empty regular file with a supported extension.

    Args:
        path: The file.

    Returns:
        The path and its lower-case extension.

    Raises:
        MediaNotFound: No such file.
        EmptyMedia: The file has 0 bytes.
        UnsupportedFormat: The extension is not a known video, audio, image or text extension.
    """
    p = Path(path)
    if not p.is_file():
        raise MediaNotFound(p, "no such file", "check the path and the dataset root")
    ext = p.suffix.lower()
    known = VIDEO_EXTENSIONS | AUDIO_EXTENSIONS | IMAGE_EXTENSIONS | TEXT_EXTENSIONS
    if ext not in known:
        raise UnsupportedFormat(
            p,
            f"unsupported file type {ext or '(no extension)'!r}",
            f"convert it with ffmpeg to .mp4/.wav/.jpg; supported: {' '.join(sorted(known))}",
        )
    if p.stat().st_size == 0:
        raise EmptyMedia(p, "the file is empty (0 bytes)", "re-download or re-export it")
    return p, ext


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Reads a media file's header and reports what it contains, without decoding it.

    Args:
        path: A video, audio, image or ``.txt`` file.

    Returns:
        The file's :class:`MediaInfo`. A video container with no video stream (an ``.mp4`` holding only audio)
        is reported as ``kind="audio"``.

    Raises:
        MediaNotFound, EmptyMedia, UnsupportedFormat: See :func:`check_file`.
        CorruptMedia: The header cannot be parsed, or the file has no usable stream.
        MediaTooLarge: An image with an absurd pixel count.
    """
    p, ext = check_file(path)
    if ext in TEXT_EXTENSIONS:
        read_text(p)  # validates the encoding
        return MediaInfo(str(p), "text")
    if ext in IMAGE_EXTENSIONS:
        w, h = _image_size(p)
        return MediaInfo(str(p), "image", frames=1, width=w, height=h)
    return _probe_av(p, audio_only=ext in AUDIO_EXTENSIONS)


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


def _probe_av(p: Path, *, audio_only: bool) -> MediaInfo:
    import av

    try:
        with av.open(str(p)) as c:
            vs = [s for s in c.streams.video if not _is_attached_picture(s)]
            aus = list(c.streams.audio)
            cdur = c.duration / 1e6 if c.duration else 0.0
            a_info: dict = {}
            if aus:
                a = aus[0]
                adur = float(a.duration * a.time_base) if a.duration and a.time_base else cdur
                a_info = dict(
                    has_audio=True, sample_rate=int(a.rate or 0), channels=int(a.channels or 0), audio_duration=adur
                )
            else:
                adur = 0.0
            if audio_only or not vs:
                if not aus:
                    raise CorruptMedia(p, "no audio or video stream in the file", "re-export it with ffmpeg")
                return MediaInfo(str(p), "audio", duration=adur or cdur, **a_info)
            v = vs[0]
            rate = v.average_rate or v.guessed_rate or v.base_rate
            fps = float(rate) if rate else 0.0
            vdur = float(v.duration * v.time_base) if v.duration and v.time_base else cdur
            frames = int(v.frames or 0)
            if frames <= 0 and vdur > 0 and fps > 0:
                frames = max(1, round(vdur * fps))
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
                **a_info,
            )
    except MediaError:
        raise
    except av.error.FFmpegError as e:
        raise CorruptMedia(p, f"cannot be opened: {_av_reason(e)}", "the file is truncated or not a media file") from e


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


def _image_size(p: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            w, h = im.size
    except UnidentifiedImageError as e:
        raise CorruptMedia(p, "not a readable image", "the file is truncated or not an image") from e
    except Image.DecompressionBombError as e:
        raise MediaTooLarge(p, f"image too large to open ({e})", "downscale it before loading") from e
    except OSError as e:
        raise CorruptMedia(p, f"cannot read the image header ({e})", "re-export the image") from e
    if w * h > _MAX_IMAGE_PIXELS:
        raise MediaTooLarge(p, f"image is {w}x{h} pixels", f"downscale it below {_MAX_IMAGE_PIXELS} pixels first")
    return w, h


# ---------------------------------------------------------------------------------------------------------- sampling
_POLICIES = "uniform:N, first, middle, peak, segments:S:K, fps:R, all"


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
        ValueError: Unknown or malformed policy, ``num_frames < 1``, or missing/mis-sized ``scores`` for ``peak``.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1 to sample frames with policy {policy!r}, got {num_frames}")
    name, *args = policy.strip().lower().split(":")
    try:
        nums = [float(a) if name == "fps" else int(a) for a in args]
    except ValueError:
        raise ValueError(f"malformed frame policy {policy!r}: arguments must be numbers ({_POLICIES})") from None
    expected = {"uniform": 1, "first": 0, "middle": 0, "peak": 0, "segments": 2, "fps": 1, "all": 0}
    if name not in expected:
        raise ValueError(f"unknown frame policy {policy!r}; use one of: {_POLICIES}")
    if len(nums) != expected[name] or any(n <= 0 for n in nums):
        raise ValueError(f"malformed frame policy {policy!r}: expected {_POLICIES} with positive numbers")
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
    max_bytes: int = DEFAULT_MAX_BYTES,
    info: MediaInfo | None = None,
) -> np.ndarray:
    """Decodes the given frames of a video as RGB.

    Indices past the last decodable frame (headers sometimes over-count by a frame or two) read the last frame.

    Args:
        path: The video file.
        indices: Frame indices (any order, repeats allowed), e.g. from :func:`sample_frame_indices`.
        max_side: Scale frames inside the decoder so that the longer side is at most this (``None``: full size).
        backend: ``"decord"`` (random access), ``"pyav"`` (sequential decode), or ``"auto"``: decord, then PyAV
            when decord is not installed or fails.
        max_bytes: Refuse (``MediaTooLarge``) when the output would exceed this many bytes.
        info: The file's :class:`MediaInfo` if already probed.

    Returns:
        ``uint8`` array of shape ``(len(indices), H, W, 3)``.

    Raises:
        CorruptMedia: Neither backend can decode the frames.
        MediaTooLarge: The output would exceed ``max_bytes``.
        UnsupportedFormat: The file has no video stream.
        ValueError: Empty or negative ``indices``.
    """
    info = info or probe(path)
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
            "sample fewer frames or pass a smaller max_side",
        )
    errors: list[str] = []
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


def read_image(path: str | os.PathLike[str], *, max_side: int | None = None) -> np.ndarray:
    """Reads a still image as RGB, shrinking it while decoding when it is larger than ``max_side``.

    JPEGs are decoded directly at 1/2, 1/4 or 1/8 scale (Pillow's draft mode), so an 8K photo never exists at full
    size in memory. EXIF orientation is applied; alpha, palette, grey and 16-bit images become 8-bit RGB.

    Args:
        path: A ``.jpg``/``.png``/... file.
        max_side: Longest side of the result (``None``: full size).

    Returns:
        ``uint8`` array of shape ``(H, W, 3)``.

    Raises:
        CorruptMedia: The image cannot be decoded (truncated, garbage).
        MediaTooLarge: The image has an absurd pixel count.
    """
    from PIL import Image, ImageOps

    p = Path(path)
    _image_size(p)
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
