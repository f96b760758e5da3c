"""Generate small, real media files for tests, benchmarks and demos (no downloads).

Faces come from real photos shipped in installed packages: scikit-image's ``astronaut`` (Eileen Collins, smiling)
and matplotlib's ``grace_hopper.jpg``. Speech comes from ``espeak-ng`` (Debian package); tones and silence are
synthetic. Videos are written with PyAV (H.264 via libx264 when available, else MPEG-4 Part 2) with an AAC track.

The face drifts a few pixels from frame to frame so that tracking is exercised, and every generator returns the
ground truth (face boxes per frame, frame count, duration) as a :class:`FixtureClip`.

Example:
    >>> from emollm.media.fixtures import make_face_clip
    >>> clip = make_face_clip("/tmp/a.mp4", photo="grace_hopper", audio="tone")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "PHOTO_FACE_BOXES",
    "FixtureClip",
    "load_photo",
    "make_audio_file",
    "make_corrupt_file",
    "make_face_clip",
    "make_fixture_set",
    "make_image",
    "make_large_clip",
    "make_noface_clip",
    "make_two_face_clip",
    "synth_wave",
]

Photo = Literal["astronaut", "grace_hopper"]
AudioKind = Literal["speech", "tone", "silence", "sine"]

PHOTO_FACE_BOXES: dict[str, tuple[int, int, int, int]] = {
    "astronaut": (178, 62, 270, 172),
    "grace_hopper": (165, 110, 360, 340),
}
"""Face box ``(x0, y0, x1, y1)`` in each original photo (astronaut 512x512, grace_hopper 512 wide x 600 high),
the consensus of MTCNN and the Haar cascade on the unscaled photo."""


@dataclass
class FixtureClip:
    """What a generator wrote, with ground truth.

    Attributes:
        path: The file.
        frames: Video frames (0 for audio files, 1 for images).
        fps: Frame rate.
        duration: Seconds.
        has_audio: Whether an audio track was written.
        face_boxes: Main face box ``(x0, y0, x1, y1)`` per frame (empty when there is no face).
        other_boxes: Secondary face box per frame (two-face clips).
        size: ``(width, height)``.
    """

    path: Path
    frames: int = 0
    fps: float = 0.0
    duration: float = 0.0
    has_audio: bool = False
    face_boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    other_boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)


def load_photo(photo: Photo) -> np.ndarray:
    """Loads a real face photo shipped with scikit-image or matplotlib.

    Args:
        photo: ``"astronaut"`` (scikit-image) or ``"grace_hopper"`` (matplotlib sample data).

    Returns:
        ``uint8`` RGB array.

    Raises:
        ValueError: Unknown photo name.
        ImportError: The package that ships it is not installed.
    """
    if photo == "astronaut":
        import skimage.data

        return np.ascontiguousarray(skimage.data.astronaut()[..., :3])
    if photo == "grace_hopper":
        import matplotlib.cbook
        from PIL import Image

        with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
            return np.asarray(im.convert("RGB")).copy()
    raise ValueError(f"unknown photo {photo!r}; use 'astronaut' or 'grace_hopper'")


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2

    interp = cv2.INTER_AREA if w < img.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)


def _background(w: int, h: int, t: float) -> np.ndarray:
    """A soft, slowly changing colour gradient (no face-like structure)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 90 + 60 * np.sin(x / w * math.pi + t)
    g = 110 + 50 * np.cos(y / h * math.pi - 0.5 * t)
    b = 140 + 40 * np.sin((x + y) / (w + h) * 2 * math.pi + 0.3 * t)
    return np.stack([r, g, b], axis=-1).clip(0, 255).astype(np.uint8)


def _paste(canvas: np.ndarray, img: np.ndarray, x: int, y: int) -> None:
    h, w = img.shape[:2]
    H, W = canvas.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = img[y0 - y : y1 - y, x0 - x : x1 - x]


def _face_box(photo: Photo, scale: float, x: int, y: int) -> tuple[float, float, float, float]:
    a, b, c, d = PHOTO_FACE_BOXES[photo]
    return (x + a * scale, y + b * scale, x + c * scale, y + d * scale)


# ------------------------------------------------------------------------------------------------------------ audio
def synth_wave(
    kind: AudioKind,
    seconds: float,
    sample_rate: int,
    *,
    text: str = "I passed the exam",
    freq: float = 440.0,
    voice: dict[str, Any] | None = None,
) -> np.ndarray:
    """Makes a mono float32 wave.

    Args:
        kind: ``"speech"`` (espeak-ng reading ``text``), ``"tone"`` (a voiced, syllable-modulated 180 Hz harmonic
            tone), ``"sine"`` (pure ``freq`` Hz), or ``"silence"`` (zeros).
        seconds: Length; speech is padded with silence or cut to it.
        sample_rate: Sample rate in Hz.
        text: What espeak-ng says.
        freq: Frequency of ``"sine"``.
        voice: espeak-ng prosody for ``"speech"``: ``pitch`` (0-99), ``speed`` (words per minute), ``amplitude``
            (0-200) and ``speaker`` (an espeak-ng voice such as ``en-us`` or ``en+f3``); None: espeak's defaults at
            150 words per minute.

    Returns:
        ``float32`` array of ``round(seconds * sample_rate)`` samples in ``[-1, 1]``.

    Raises:
        RuntimeError: ``kind="speech"`` and espeak-ng is not installed (``apt-get install espeak-ng``).
    """
    n = max(1, round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    if kind == "silence":
        return np.zeros(n, np.float32)
    if kind == "sine":
        return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    if kind == "tone":
        voice = sum(np.sin(2 * np.pi * 180 * k * t) / k for k in range(1, 6))
        envelope = 0.5 * (1 - np.cos(2 * np.pi * 4 * t))  # 4 "syllables" per second
        return (0.25 * voice * envelope).astype(np.float32)
    if kind == "speech":
        return _fit(_espeak(text, sample_rate, voice), n)
    raise ValueError(f"unknown audio kind {kind!r}; use 'speech', 'tone', 'sine' or 'silence'")


def _espeak(text: str, sample_rate: int, voice: dict[str, Any] | None = None) -> np.ndarray:
    import soundfile as sf

    from .audio import resample

    exe = shutil.which("espeak-ng") or shutil.which("espeak")
    if exe is None:
        raise RuntimeError(
            "audio='speech' needs espeak-ng, which is not installed: `apt-get install espeak-ng` (or use audio='tone')"
        )
    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "speech.wav")
        v = voice or {}
        args = [exe, "-s", str(int(v.get("speed", 150))), "-w", wav]
        if "pitch" in v:
            args += ["-p", str(int(v["pitch"]))]
        if "amplitude" in v:
            args += ["-a", str(int(v["amplitude"]))]
        if "speaker" in v:
            args += ["-v", str(v["speaker"])]
        subprocess.run([*args, text], check=True, capture_output=True, timeout=60)
        data, sr = sf.read(wav, dtype="float32", always_2d=True)
    return resample(data.mean(axis=1), sr, sample_rate)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    return x[:n].astype(np.float32) if x.size >= n else np.pad(x, (0, n - x.size)).astype(np.float32)


def _encode_audio(container, stream, wave: np.ndarray, sample_rate: int) -> None:
    import av

    chunk = 1024
    for i in range(0, wave.size, chunk):
        frame = av.AudioFrame.from_ndarray(wave[None, i : i + chunk].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = i
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


# ------------------------------------------------------------------------------------------------------------ video
def _video_codec() -> str:
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _write_video(
    path: str | os.PathLike[str],
    frames: list[np.ndarray] | np.ndarray,
    fps: int,
    wave: np.ndarray | None,
    sample_rate: int,
    *,
    fast: bool = False,
    lossless: bool = False,
) -> None:
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        codec = _video_codec()
        vs = c.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.thread_count = 1  # any encoder: the bits must not depend on the machine's cores
        if codec == "libx264":
            # threads=1: x264's output depends on its thread count, which it takes from the CPUs it sees, so the
            # same clip came out differently on a 1- and a 2-core run (the demo's data must be the same bits)
            # lossless (qp 0): the decoded frames are the input exactly, whatever the encoder decides; its lossy
            # output is not the same bits from run to run on a loaded machine (8 of 48 demo clips differed)
            quality = {"qp": "0"} if lossless else {"crf": "20"}
            vs.options = {"preset": "ultrafast" if fast else "veryfast", "threads": "1", **quality}
        aus = None if wave is None else c.add_stream("aac", rate=sample_rate, layout="mono")  # all streams first
        for f in frames:
            for packet in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(packet)
        for packet in vs.encode(None):
            c.mux(packet)
        if aus is not None:
            _encode_audio(c, aus, wave, sample_rate)


def make_face_clip(
    path: str | os.PathLike[str],
    photo: Photo = "astronaut",
    seconds: float = 2.0,
    fps: int = 10,
    size: tuple[int, int] = (320, 240),
    audio: AudioKind | None = "speech",
    text: str = "I passed the exam",
    sample_rate: int = 44100,
    voice: dict[str, Any] | None = None,
    lossless: bool = False,
) -> FixtureClip:
    """Writes an mp4 of a real face photo drifting slowly over a gradient, with an optional audio track.

    Args:
        path: Output ``.mp4``.
        photo: ``"astronaut"`` or ``"grace_hopper"``.
        seconds: Clip length (0.3 makes a DFEW-style short clip).
        fps: Frame rate.
        size: ``(width, height)``, even numbers.
        audio: ``"speech"`` (espeak-ng says ``text``), ``"tone"``, ``"sine"``, ``"silence"``, or ``None`` for no
            audio track.
        text: What the speaker says.
        sample_rate: Rate of the AAC track (44.1 kHz by default, so loaders must resample to 16 kHz).
        voice: espeak-ng prosody of the speech (see :func:`synth_wave`).
        lossless: Encode losslessly (H.264 qp 0, ~4x larger): decoding gives these exact frames on every run and
            machine (the demo's data; a lossy encode's pixels may differ from run to run).

    Returns:
        The :class:`FixtureClip` with the true face box in every frame.
    """
    w, h = size
    img = load_photo(photo)
    scale = h / img.shape[0]
    face = _resize(img, round(img.shape[1] * scale), h)
    n = max(1, round(seconds * fps))
    frames, boxes = [], []
    for i in range(n):
        phase = 2 * math.pi * i / max(n, 8)
        x = (w - face.shape[1]) // 2 + round(8 * math.sin(phase))
        y = round(4 * math.cos(phase)) - 4
        canvas = _background(w, h, i / fps)
        _paste(canvas, face, x, y)
        frames.append(canvas)
        boxes.append(_face_box(photo, scale, x, y))
    wave = None if audio is None else synth_wave(audio, n / fps, sample_rate, text=text, voice=voice)
    _write_video(path, frames, fps, wave, sample_rate, lossless=lossless)
    return FixtureClip(Path(path), n, float(fps), n / fps, audio is not None, boxes, size=size)


def make_two_face_clip(
    path: str | os.PathLike[str],
    main: Photo = "grace_hopper",
    other: Photo = "astronaut",
    seconds: float = 1.0,
    fps: int = 10,
    size: tuple[int, int] = (480, 270),
    audio: AudioKind | None = "tone",
) -> FixtureClip:
    """Writes an mp4 with a large, central main face and a smaller bystander near the right edge.

    Args:
        path: Output ``.mp4``.
        main: Photo of the main (large, central) face.
        other: Photo of the bystander (about 60% of the main face's size, near the right edge).
        seconds: Clip length.
        fps: Frame rate.
        size: ``(width, height)``.
        audio: Audio track kind, or ``None``.

    Returns:
        The :class:`FixtureClip`; ``face_boxes`` is the main face, ``other_boxes`` the bystander.
    """
    w, h = size
    big, small = load_photo(main), load_photo(other)
    s_main = h / big.shape[0]
    big = _resize(big, round(big.shape[1] * s_main), h)
    main_face_h = (PHOTO_FACE_BOXES[main][3] - PHOTO_FACE_BOXES[main][1]) * s_main
    s_other = 0.6 * main_face_h / (PHOTO_FACE_BOXES[other][3] - PHOTO_FACE_BOXES[other][1])
    small = _resize(small, round(small.shape[1] * s_other), round(small.shape[0] * s_other))
    n = max(1, round(seconds * fps))
    frames, mains, others = [], [], []
    for i in range(n):
        dx = round(6 * math.sin(2 * math.pi * i / max(n, 8)))
        canvas = _background(w, h, i / fps)
        mx = (w - big.shape[1]) // 2 - w // 10 + dx
        ox = w - small.shape[1] + round(PHOTO_FACE_BOXES[other][0] * s_other * 0.5) - dx
        oy = h // 2 - small.shape[0] // 2
        _paste(canvas, big, mx, 0)
        _paste(canvas, small, ox, oy)
        frames.append(canvas)
        mains.append(_face_box(main, s_main, mx, 0))
        others.append(_face_box(other, s_other, ox, oy))
    wave = None if audio is None else synth_wave(audio, n / fps, 44100)
    _write_video(path, frames, fps, wave, 44100)
    return FixtureClip(Path(path), n, float(fps), n / fps, audio is not None, mains, others, size=size)


def make_noface_clip(
    path: str | os.PathLike[str],
    seconds: float = 1.0,
    fps: int = 10,
    size: tuple[int, int] = (320, 240),
    audio: AudioKind | None = "tone",
    seed: int = 0,
) -> FixtureClip:
    """Writes an mp4 of a moving gradient with smooth noise: no face anywhere.

    Args:
        path: Output ``.mp4``.
        seconds: Clip length.
        fps: Frame rate.
        size: ``(width, height)``.
        audio: Audio track kind, or ``None``.
        seed: Noise seed.

    Returns:
        The :class:`FixtureClip` (no face boxes).
    """
    import cv2

    w, h = size
    rng = np.random.default_rng(seed)
    n = max(1, round(seconds * fps))
    frames = []
    for i in range(n):
        noise = cv2.GaussianBlur(rng.normal(0, 25, (h, w, 3)).astype(np.float32), (0, 0), 3)
        frames.append((_background(w, h, i / fps) + noise).clip(0, 255).astype(np.uint8))
    wave = None if audio is None else synth_wave(audio, n / fps, 44100)
    _write_video(path, frames, fps, wave, 44100)
    return FixtureClip(Path(path), n, float(fps), n / fps, audio is not None, size=size)


def make_large_clip(
    path: str | os.PathLike[str], size: tuple[int, int] = (7680, 4320), frames: int = 2, photo: Photo = "astronaut"
) -> FixtureClip:
    """Writes a very high resolution clip (8K by default, a few frames, no audio) to test downscaling.

    Args:
        path: Output ``.mp4``.
        size: ``(width, height)``.
        frames: Number of frames.
        photo: The face in the middle.

    Returns:
        The :class:`FixtureClip`.
    """
    w, h = size
    img = load_photo(photo)
    scale = h / img.shape[0]
    face = _resize(img, round(img.shape[1] * scale), h)
    canvas = np.full((h, w, 3), 96, np.uint8)
    x = (w - face.shape[1]) // 2
    _paste(canvas, face, x, 0)
    _write_video(path, [canvas] * frames, 5, None, 0, fast=True)
    return FixtureClip(Path(path), frames, 5.0, frames / 5, False, [_face_box(photo, scale, x, 0)] * frames, size=size)


# --------------------------------------------------------------------------------------------------- other files
def make_audio_file(
    path: str | os.PathLike[str],
    kind: AudioKind = "tone",
    seconds: float = 1.0,
    sample_rate: int = 44100,
    *,
    freq: float = 440.0,
    channels: int = 1,
    text: str = "I passed the exam",
) -> FixtureClip:
    """Writes a ``.wav`` (PCM 16), ``.flac`` (soundfile) or ``.mp3`` (PyAV + LAME) file; the suffix picks the format.

    Args:
        path: Output file.
        kind: ``"speech"``, ``"tone"``, ``"sine"`` or ``"silence"`` (see :func:`synth_wave`).
        seconds: Length.
        sample_rate: Sample rate.
        freq: Frequency of ``"sine"``.
        channels: 1, or 2 for a stereo file (the same wave on both channels, right one at half level).
        text: What espeak-ng says for ``"speech"``.

    Returns:
        The :class:`FixtureClip`.

    Raises:
        ValueError: Unsupported suffix.
    """
    import soundfile as sf

    p = Path(path)
    wave = synth_wave(kind, seconds, sample_rate, text=text, freq=freq)
    data = wave[:, None] if channels == 1 else np.stack([wave, 0.5 * wave], axis=1)
    fmt = p.suffix.lower()
    if fmt in (".wav", ".flac"):
        sf.write(str(p), data, sample_rate, subtype="PCM_16")
    elif fmt == ".mp3":
        if channels != 1:
            raise ValueError("make_audio_file writes mono mp3 only")
        import av

        with av.open(str(p), "w", format="mp3") as c:
            codec = "libmp3lame" if "libmp3lame" in av.codecs_available else "mp3"
            _encode_audio(c, c.add_stream(codec, rate=sample_rate, layout="mono"), wave, sample_rate)
    else:
        raise ValueError(f"make_audio_file: unsupported suffix {fmt!r} (use .wav, .flac or .mp3)")
    return FixtureClip(p, 0, 0.0, wave.size / sample_rate, True)


def make_image(
    path: str | os.PathLike[str], photo: Photo = "astronaut", size: tuple[int, int] | None = None, quality: int = 90
) -> FixtureClip:
    """Writes a face photo as ``.jpg`` or ``.png``, optionally resized (e.g. ``(7680, 4320)`` for an 8K test).

    The photo is scaled to the target height and centred on a grey canvas of ``size``.

    Args:
        path: Output file; the suffix picks the format.
        photo: ``"astronaut"`` or ``"grace_hopper"``.
        size: ``(width, height)``; ``None`` keeps the photo's size.
        quality: JPEG quality.

    Returns:
        The :class:`FixtureClip` (``frames=1``) with the face box.
    """
    from PIL import Image

    img = load_photo(photo)
    if size is None:
        out, scale, x = img, 1.0, 0
        size = (img.shape[1], img.shape[0])
    else:
        w, h = size
        scale = h / img.shape[0]
        face = _resize(img, round(img.shape[1] * scale), h)
        out = np.full((h, w, 3), 128, np.uint8)
        x = (w - face.shape[1]) // 2
        _paste(out, face, x, 0)
    jpeg = str(path).lower().endswith((".jpg", ".jpeg"))
    Image.fromarray(out).save(str(path), **({"quality": quality} if jpeg else {}))
    return FixtureClip(Path(path), 1, 0.0, 0.0, False, [_face_box(photo, scale, x, 0)], size=size)


def make_corrupt_file(
    path: str | os.PathLike[str], kind: Literal["truncated", "garbage", "empty"] = "truncated", seed: int = 0
) -> Path:
    """Writes a broken media file.

    Args:
        path: Output file (its suffix is kept, e.g. ``.mp4``).
        kind: ``"truncated"`` (the first 40% of a valid mp4: its index, written last, is missing), ``"garbage"``
            (random bytes), or ``"empty"`` (0 bytes).
        seed: Random seed for ``"garbage"``.

    Returns:
        The path.
    """
    p = Path(path)
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "garbage":
        p.write_bytes(np.random.default_rng(seed).integers(0, 256, 16384, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        with tempfile.TemporaryDirectory() as tmp:
            good = Path(tmp) / "good.mp4"
            make_face_clip(good, seconds=1.0, audio="tone")
            data = good.read_bytes()
        p.write_bytes(data[: int(len(data) * 0.4)])
    else:
        raise ValueError(f"unknown corruption {kind!r}; use 'truncated', 'garbage' or 'empty'")
    return p


def make_fixture_set(folder: str | os.PathLike[str], *, speech: bool | None = None) -> dict[str, FixtureClip | Path]:
    """Writes the standard set of test media into ``folder`` (about 0.5 MB, a couple of seconds).

    Args:
        folder: Output folder (created).
        speech: Use espeak-ng speech for the main clip; ``None``: when espeak-ng is installed.

    Returns:
        Name -> :class:`FixtureClip` (or ``Path`` for broken files). Names: ``astronaut`` (2 s, speech or tone),
        ``grace`` (1 s, tone), ``two_faces``, ``no_face``, ``no_audio``, ``silent``, ``short`` (0.3 s),
        ``wav``, ``flac``, ``mp3``, ``image``, ``truncated``, ``garbage``, ``empty``, ``unsupported``, ``text``.
    """
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    if speech is None:
        speech = shutil.which("espeak-ng") is not None
    out: dict[str, FixtureClip | Path] = {
        "astronaut": make_face_clip(d / "astronaut.mp4", "astronaut", audio="speech" if speech else "tone"),
        "grace": make_face_clip(d / "grace.mp4", "grace_hopper", seconds=1.0, audio="tone"),
        "two_faces": make_two_face_clip(d / "two_faces.mp4"),
        "no_face": make_noface_clip(d / "no_face.mp4"),
        "no_audio": make_face_clip(d / "no_audio.mp4", "grace_hopper", seconds=1.0, audio=None),
        "silent": make_face_clip(d / "silent.mp4", "astronaut", seconds=1.0, audio="silence"),
        "short": make_face_clip(d / "short.mp4", "grace_hopper", seconds=0.3, audio="tone"),
        "wav": make_audio_file(d / "tone.wav", "sine", seconds=1.0, sample_rate=44100),
        "flac": make_audio_file(d / "tone.flac", "sine", seconds=1.0, sample_rate=22050, channels=2),
        "mp3": make_audio_file(d / "tone.mp3", "sine", seconds=1.0, sample_rate=44100),
        "image": make_image(d / "astronaut.jpg", "astronaut"),
        "truncated": make_corrupt_file(d / "truncated.mp4", "truncated"),
        "garbage": make_corrupt_file(d / "garbage.mp4", "garbage"),
        "empty": make_corrupt_file(d / "empty.mp4", "empty"),
    }
    unsupported = d / "clip.xyz"
    unsupported.write_bytes(b"not a media file\n")
    text = d / "subtitle.txt"
    text.write_text("I passed the exam!\n", encoding="utf-8")
    out["unsupported"], out["text"] = unsupported, text
    return out
