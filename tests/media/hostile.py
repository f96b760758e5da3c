"""Hostile media crafted in a few milliseconds from good generated files: headers that lie about their size.

Each helper writes a small file whose header claims something huge; the body is a real, tiny clip, so a reader that
measures instead of trusting the header can still decode it.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from emollm.media import fixtures


def mkv_with_duration(path: Path, seconds: float, *, good: Path | None = None) -> Path:
    """A 1 s Matroska clip (10 frames, tone) whose Segment Info ``Duration`` element claims ``seconds``."""
    if good is None:
        good = path.with_name(f".good-{path.name}")
        fixtures.make_face_clip(good, seconds=1.0, audio="tone")
    data = bytearray(good.read_bytes())
    # EBML id of Duration (0x4489), then its size (0x88: float64, 0x84: float32), in TimecodeScale units (1 ms)
    i = data.find(b"\x44\x89\x88")
    if i > 0:
        data[i + 3 : i + 11] = struct.pack(">d", seconds * 1000)
    else:
        i = data.find(b"\x44\x89\x84")
        assert i > 0, "no Duration element"
        data[i + 3 : i + 7] = struct.pack(">f", seconds * 1000)
    path.write_bytes(bytes(data))
    return path


def mp4_with_frame_count(path: Path, frames: int = 0x7FFFFFF0) -> Path:
    """A 1 s MP4 (10 frames) whose ``stts`` box claims ``frames`` samples: decord aborts with std::bad_alloc."""
    good = path.with_name(f".good-{path.name}")
    fixtures.make_face_clip(good, seconds=1.0, audio="tone")
    data = bytearray(good.read_bytes())
    k = data.find(b"stts")  # version/flags (4), entry count (4), then (sample_count, sample_delta) pairs
    data[k + 12 : k + 16] = struct.pack(">I", frames)
    path.write_bytes(bytes(data))
    return path


def wav_with_header(path: Path, *, data_size: int | None = None, sample_rate: int | None = None) -> Path:
    """A 0.5 s 16 kHz WAV whose RIFF/data sizes and/or sample rate are rewritten (e.g. 4 GB, 1 Hz)."""
    fixtures.make_audio_file(path, "sine", seconds=0.5, sample_rate=16000)
    data = bytearray(path.read_bytes())
    if data_size is not None:
        data[4:8] = struct.pack("<I", min(data_size + 36, 0xFFFFFFFF))
        j = data.find(b"data")
        data[j + 4 : j + 8] = struct.pack("<I", data_size)
    if sample_rate is not None:
        data[24:28] = struct.pack("<I", sample_rate)
        data[28:32] = struct.pack("<I", sample_rate * 2)  # byte rate of 16-bit mono
    path.write_bytes(bytes(data))
    return path


def jpeg_with_size(path: Path, width: int = 60000, height: int = 60000) -> Path:
    """A small JPEG whose SOF0 header claims ``width`` x ``height``."""
    from PIL import Image

    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(path, quality=90)
    data = bytearray(path.read_bytes())
    k = data.find(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height (2), width (2)
    data[k + 5 : k + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def clip_with_empty_audio(path: Path) -> Path:
    """A 1 s Matroska clip with a video stream and an AAC audio stream that holds no packets."""
    from emollm.media.fixtures import _write_video

    frames = [np.full((64, 64, 3), 100, np.uint8)] * 10
    _write_video(path, frames, 10, np.zeros(0, np.float32), 44100)
    return path
