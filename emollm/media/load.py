"""One call from a file to everything the encoders need: :func:`load_sample` and :func:`load_many`.

Contract:

* A file that cannot be used at all (missing, unreadable, empty, corrupt, unsupported, or declaring more than the
  :class:`~emollm.media.MediaLimits` allow, checked on the header before any decoder allocates) raises the matching
  :class:`~emollm.media.MediaError` subclass, whose message names the file and the fix.
* A modality that is absent or unusable in an otherwise good file (no audio track, silence, no face, an audio-only
  file asked for frames, a corrupt audio stream beside good video) **never raises**: it is left ``None`` and
  ``MediaSample.missing[modality]`` says why, naming the file. The processor then omits that modality's
  placeholder tokens instead of feeding zeros (Emotion-LLaMA's demo zero-fills two of its four feature tokens,
  REFERENCE §1.10.5; we do not).
* :func:`load_many` turns every per-file failure, even an unexpected exception or a decoder crash, into an error
  object in the output stream, in input order, so one bad file never kills a batch.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .audio import load_audio
from .errors import CorruptMedia, EmptyMedia, MediaError, MissingModality
from .faces import FaceDetector, FaceTrack, cached_face_detector, crop_faces, detect_faces, track_main_face
from .limits import MediaLimits, resolve
from .video import MediaInfo, probe, read_frames, read_image, read_text, sample_frame_indices

__all__ = ["MODALITIES", "MediaSample", "Modality", "load_many", "load_sample"]

logger = logging.getLogger(__name__)

Modality = Literal["audio", "face", "video", "text"]
MODALITIES: tuple[str, ...] = ("audio", "face", "video", "text")


@dataclass
class MediaSample:
    """Decoded inputs of one utterance/clip.

    Attributes:
        name: Sample id: the file name without extension (MERR/MER2023/DFEW key their labels by it).
        info: What :func:`~emollm.media.probe` found.
        audio: Mono float32 wave at ``sample_rate`` (padded to ``min_audio_duration``), or ``None``.
        sample_rate: Rate of ``audio`` in Hz.
        frames: Video frames for the global/temporal visual encoders, ``uint8 (N, H, W, 3)``, or ``None``.
        frame_indices: Indices (in the source clip) of ``frames``.
        faces: Square crops of the main face, ``uint8 (M, S, S, 3)``, or ``None``.
        face_indices: Indices (in the source clip) of ``faces``.
        face_track: The main-face track the crops come from.
        text: Subtitle/transcript, or ``None``.
        missing: Modality -> human-readable reason it is absent (naming the file).
    """

    name: str
    info: MediaInfo
    audio: np.ndarray | None = None
    sample_rate: int = 16000
    frames: np.ndarray | None = None
    frame_indices: list[int] = field(default_factory=list)
    faces: np.ndarray | None = None
    face_indices: list[int] = field(default_factory=list)
    face_track: FaceTrack | None = None
    text: str | None = None
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def available(self) -> list[str]:
        """Modalities that were loaded, in :data:`MODALITIES` order."""
        have = {"audio": self.audio, "face": self.faces, "video": self.frames, "text": self.text}
        return [m for m in MODALITIES if have[m] is not None]

    def has(self, modality: str) -> bool:
        """Whether ``modality`` was loaded."""
        return modality in self.available


def load_sample(
    path: str | os.PathLike[str],
    *,
    modalities: Sequence[str] = ("audio", "face", "video"),
    frame_policy: str = "uniform:8",
    face_policy: str | None = None,
    scores: Sequence[float] | np.ndarray | None = None,
    face_detector: str | FaceDetector = "auto",
    face_size: int = 224,
    face_margin: float = 0.2,
    min_audio_duration: float | None = 1.0,
    sample_rate: int = 16000,
    silence_db: float | None = -50.0,
    subtitle: str | None = None,
    max_side: int | None = 1280,
    backend: Literal["auto", "decord", "pyav"] = "auto",
    limits: MediaLimits | None = None,
) -> MediaSample:
    """Loads a video, audio, image or ``.txt`` file into a :class:`MediaSample`.

    Args:
        path: The file.
        modalities: Which of ``"audio"``, ``"face"``, ``"video"``, ``"text"`` to load. Text is also returned
            whenever ``subtitle`` is given or the file is ``.txt``.
        frame_policy: Frames for ``video`` (see :func:`~emollm.media.sample_frame_indices`), e.g. ``"middle"``
            for a single global frame or ``"segments:8:2"`` for VideoMAE.
        face_policy: Frames to crop faces from; ``None``: the same as ``frame_policy``.
        scores: Per-frame curve for the ``peak`` policy (e.g. AU-intensity sums), one value per frame.
        face_detector: ``"auto"``, ``"mtcnn"``, ``"haar"``, or a :class:`~emollm.media.FaceDetector` instance.
        face_size: Side of the face crops.
        face_margin: Context around the face box, as a fraction of its side.
        min_audio_duration: Pad audio with zeros to at least this many seconds (HuBERT/DFEW: 1.0); ``None``: off.
        sample_rate: Audio rate in Hz.
        silence_db: Audio whose RMS level is below this (dBFS) is marked missing as silent; ``None``: keep it.
        subtitle: The utterance's transcript, returned as ``text``.
        max_side: Decode frames (and images) with the longer side at most this; bounds memory on 4K/8K input.
        backend: Video decoder (``"auto"``: decord, then PyAV; PyAV only when the header was not trusted).
        limits: Largest declared duration/frames/pixels and decoded bytes (``None``: defaults, raised by the
            ``EMOLLM_MAX_*`` environment variables; see :class:`~emollm.media.MediaLimits`).

    Returns:
        The sample; absent modalities are ``None`` with a reason in ``missing``.

    Raises:
        MediaNotFound, UnreadableMedia, EmptyMedia, CorruptMedia, UnsupportedFormat, MediaTooLarge: The file
            cannot be used (for a video with a corrupt stream, only when no requested modality could be loaded).
        MediaError: ``scores`` do not fit the clip (``peak`` policy).
        ValueError: Unknown modality, malformed frame policy, or a ``min_audio_duration`` that is negative or
            would pad past ``limits.max_bytes``.
        ImportError: The requested face detector is not installed.
    """
    unknown = set(modalities) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {MODALITIES}")
    for policy in (frame_policy, face_policy):
        if policy is not None:
            sample_frame_indices(1, policy, scores=[0.0], fps=1.0)  # validate the string before decoding anything
    limits = resolve(limits)
    check_min_audio_duration(min_audio_duration, sample_rate, limits)
    info = probe(path, limits=limits)
    fname = Path(path).name
    sample = MediaSample(name=Path(path).stem, info=info, sample_rate=sample_rate)
    failures: list[MediaError] = []  # modality-level decode failures; raised only if nothing else loads

    # ---- text
    if info.kind == "text":
        sample.text = read_text(path)
        if not sample.text:
            sample.text = None
            sample.missing["text"] = f"{fname} is empty"
    elif subtitle is not None:
        sample.text = subtitle
    elif "text" in modalities:
        sample.missing["text"] = f"no subtitle given for {fname}"

    # ---- audio
    if "audio" in modalities:
        if info.kind in ("text", "image"):
            sample.missing["audio"] = f"{fname} is {'a text file' if info.kind == 'text' else 'an image'}: no audio"
        else:
            try:
                sample.audio = load_audio(
                    path,
                    sample_rate=sample_rate,
                    min_duration=min_audio_duration,
                    reject_silent=silence_db is not None,
                    silence_db=silence_db if silence_db is not None else -50.0,
                    info=info,
                    limits=limits,
                )
            except MissingModality as e:
                sample.missing["audio"] = str(e)
            except MediaError as e:
                if info.kind == "audio":
                    raise
                sample.missing["audio"] = str(e)
                failures.append(e)

    # ---- frames and faces
    want_video, want_face = "video" in modalities, "face" in modalities
    if want_video or want_face:
        if info.kind in ("audio", "text"):
            reason = f"{fname} is {'an audio' if info.kind == 'audio' else 'a text'} file: no frames"
            for m in ("video", "face"):
                if m in modalities:
                    sample.missing[m] = reason
        else:
            try:
                _load_visual(
                    sample, path, info, video=want_video, face=want_face, frame_policy=frame_policy,
                    face_policy=face_policy, scores=scores, max_side=max_side, backend=backend,
                    face_detector=face_detector, face_size=face_size, face_margin=face_margin, limits=limits,
                )  # fmt: skip
            except (CorruptMedia, EmptyMedia) as e:  # an undecodable video stream; audio may still be good
                for m in ("video", "face"):
                    if m in modalities:
                        sample.missing[m] = str(e)
                failures.append(e)

    if failures and not (set(sample.available) & set(modalities)):
        if len(failures) == 1:
            raise failures[0]
        raise CorruptMedia(path, "; ".join(f.problem for f in failures), failures[0].fix) from failures[-1]
    return sample


def check_min_audio_duration(
    seconds: float | None, sample_rate: int, limits: MediaLimits | None = None, *, name: str = "min_audio_duration"
) -> None:
    """Raises ``ValueError`` (naming ``name``) for a padding length that is negative, not finite, or would pad past
    ``limits.max_bytes``."""
    if seconds is None:
        return
    limits = resolve(limits)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} {seconds!r}: must be a number of seconds >= 0 (HuBERT/DFEW use 1.0)")
    most = limits.max_bytes / (4 * sample_rate)
    if seconds > most:
        raise ValueError(
            f"{name} {seconds:g}: would pad every wave past the {limits.max_bytes / 2**20:.0f} MiB limit "
            f"(at most {most:.0f} s at {sample_rate} Hz; HuBERT/DFEW use 1.0)"
        )


def _load_visual(
    sample: MediaSample,
    path: str | os.PathLike[str],
    info: MediaInfo,
    *,
    video: bool,
    face: bool,
    frame_policy: str,
    face_policy: str | None,
    scores: Sequence[float] | np.ndarray | None,
    max_side: int | None,
    backend: Literal["auto", "decord", "pyav"],
    face_detector: str | FaceDetector,
    face_size: int,
    face_margin: float,
    limits: MediaLimits,
) -> None:
    fname = Path(path).name
    if info.kind == "image":
        image = read_image(path, max_side=max_side, limits=limits)[None]
        vid_idx = [0] if video else []
        face_idx = [0] if face else []
        decoded = {0: image[0]}
    else:
        try:
            vid_idx = sample_frame_indices(info.frames, frame_policy, scores=scores, fps=info.fps) if video else []
            face_idx = (
                sample_frame_indices(info.frames, face_policy or frame_policy, scores=scores, fps=info.fps)
                if face
                else []
            )
        except ValueError as e:
            raise MediaError(path, str(e), "give one score per frame of this clip") from e
        union = sorted(set(vid_idx) | set(face_idx))
        arr = read_frames(path, union, max_side=max_side, backend=backend, info=info, limits=limits)
        decoded = dict(zip(union, arr, strict=True))
    if video:
        sample.frames = np.stack([decoded[i] for i in vid_idx])
        sample.frame_indices = vid_idx
    if face:
        face_frames = np.stack([decoded[i] for i in face_idx])
        detector = cached_face_detector(face_detector) if isinstance(face_detector, str) else face_detector
        boxes = detect_faces(detector, face_frames)
        try:
            track = track_main_face(boxes, (face_frames.shape[2], face_frames.shape[1]), source=str(path))
        except MissingModality as e:
            sample.missing["face"] = f"{fname}: {e.problem} by {getattr(detector, 'name', 'the detector')} ({e.fix})"
            return
        sample.faces = crop_faces(face_frames, track, size=face_size, margin=face_margin)
        sample.face_indices = face_idx
        sample.face_track = track


# ------------------------------------------------------------------------------------------------------- batches
def _safe_load(path: str, loader: Callable[..., MediaSample], kwargs: dict) -> MediaSample | MediaError:
    """Runs ``loader`` and returns (never raises) a MediaError for any per-file failure."""
    try:
        return loader(path, **kwargs)
    except MediaError as e:
        logger.warning("skipping %s", e)
        return e
    except Exception as e:  # a decoder bug or an unforeseen input: report it, keep the batch going
        logger.warning("skipping %s: unexpected %s", path, type(e).__name__, exc_info=True)
        err = MediaError(path, f"unexpected {type(e).__name__} while loading: {e}", "please report this file")
        err.__cause__ = e
        return err


def load_many(
    paths: Iterable[str | os.PathLike[str]],
    *,
    workers: int = 2,
    executor: Literal["thread", "process"] = "thread",
    loader: Callable[..., MediaSample] = load_sample,
    **kwargs,
) -> Iterator[tuple[str, MediaSample | MediaError]]:
    """Loads many files in parallel, yielding ``(path, sample_or_error)`` in input order.

    Every failure becomes a :class:`~emollm.media.MediaError` object in the stream (logged as a warning); nothing
    raises for a bad file. At most ``2 * workers`` files are in flight, so memory stays bounded on long lists.

    ``executor="thread"`` (default) shares one face detector and needs no start-up; decoders release the GIL.
    ``executor="process"`` isolates decoders in spawned processes: if a worker dies (a decoder segfault on a
    malformed file), the files in flight are retried one by one in fresh processes and the one that kills its
    process is reported as :class:`~emollm.media.CorruptMedia`.

    Args:
        paths: Files to load.
        workers: Parallel workers (1 loads sequentially in a worker).
        executor: ``"thread"`` or ``"process"``.
        loader: The per-file function (``load_sample``; must be importable by name for ``"process"``).
        **kwargs: Passed to ``loader`` (e.g. ``modalities``, ``frame_policy``, ``face_detector``).

    Yields:
        ``(path, MediaSample)`` or ``(path, MediaError)`` per input, in order.

    Raises:
        ImportError: The requested face detector cannot be built (checked once, before any file is read).
    """
    paths = [os.fspath(p) for p in paths]
    det = kwargs.get("face_detector", "auto")
    if isinstance(det, str) and "face" in kwargs.get("modalities", ("audio", "face", "video")):
        if executor == "thread":
            kwargs["face_detector"] = cached_face_detector(det)  # built once, shared (detectors lock internally)
    window = max(1, 2 * workers)
    if executor == "thread":
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="emollm-media") as pool:
            yield from _ordered(paths, lambda p: pool.submit(_safe_load, p, loader, kwargs), window)
    elif executor == "process":
        yield from _process_pool(paths, workers, window, loader, kwargs)
    else:
        raise ValueError(f"executor must be 'thread' or 'process', got {executor!r}")


def _ordered(
    paths: list[str], submit: Callable[[str], Future], window: int
) -> Iterator[tuple[str, MediaSample | MediaError]]:
    pending: deque[tuple[str, Future]] = deque()
    for p in paths:
        pending.append((p, submit(p)))
        if len(pending) >= window:
            q, f = pending.popleft()
            yield q, f.result()
    while pending:
        q, f = pending.popleft()
        yield q, f.result()


def _process_pool(
    paths: list[str], workers: int, window: int, loader: Callable[..., MediaSample], kwargs: dict
) -> Iterator[tuple[str, MediaSample | MediaError]]:
    ctx = multiprocessing.get_context("spawn")  # fork after torch/decord threads start can deadlock
    pools = [ProcessPoolExecutor(max_workers=workers, mp_context=ctx)]  # pools[-1] is live; older ones broke

    def renew(broken: ProcessPoolExecutor) -> None:
        if broken is pools[-1]:
            broken.shutdown(wait=True, cancel_futures=True)
            pools.append(ProcessPoolExecutor(max_workers=workers, mp_context=ctx))

    def submit(p: str) -> tuple[ProcessPoolExecutor, Future]:
        pool = pools[-1]
        try:
            return pool, pool.submit(_safe_load, p, loader, kwargs)
        except BrokenProcessPool:
            renew(pool)
            return pools[-1], pools[-1].submit(_safe_load, p, loader, kwargs)

    def finish(p: str, pool: ProcessPoolExecutor, f: Future) -> MediaSample | MediaError:
        try:
            return f.result()
        except BrokenProcessPool:  # some file in flight killed a worker: retry this one alone
            renew(pool)
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as alone:
                try:
                    return alone.submit(_safe_load, p, loader, kwargs).result()
                except BrokenProcessPool:
                    err = CorruptMedia(p, "the decoder crashed its worker process", "check it with ffprobe; re-encode")
                    logger.warning("skipping %s", err)
                    return err

    pending: deque[tuple[str, ProcessPoolExecutor, Future]] = deque()
    try:
        for p in paths:
            pending.append((p, *submit(p)))
            if len(pending) >= window:
                q, pool, f = pending.popleft()
                yield q, finish(q, pool, f)
        while pending:
            q, pool, f = pending.popleft()
            yield q, finish(q, pool, f)
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
