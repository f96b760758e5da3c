"""Probing and decoding video/images: decord vs PyAV, downscaling, error types."""

from __future__ import annotations

import importlib.util
import tracemalloc

import numpy as np
import pytest

from emollm.media import (
    CorruptMedia,
    EmptyMedia,
    MediaError,
    MediaNotFound,
    MediaTooLarge,
    UnsupportedFormat,
    probe,
    read_frames,
    read_image,
)
from emollm.media.fixtures import make_image, make_large_clip

BACKENDS = ["pyav"] + (["decord"] if importlib.util.find_spec("decord") else [])


def test_probe_video(media):
    clip = media["astronaut"]
    info = probe(clip.path)
    assert (info.kind, info.frames, info.fps, info.width, info.height) == ("video", 20, 10.0, 320, 240)
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.has_audio and info.sample_rate == 44100 and info.channels == 1
    assert not probe(media["no_audio"].path).has_audio


@pytest.mark.parametrize(("key", "kind"), [("wav", "audio"), ("mp3", "audio"), ("image", "image"), ("text", "text")])
def test_probe_kinds(media, key, kind):
    item = media[key]
    assert probe(getattr(item, "path", item)).kind == kind


@pytest.mark.parametrize(
    ("key", "error"),
    [("truncated", CorruptMedia), ("garbage", CorruptMedia), ("empty", EmptyMedia), ("unsupported", UnsupportedFormat)],
)
def test_probe_bad_files_name_the_file(media, key, error):
    path = media[key]
    with pytest.raises(error) as exc:
        probe(path)
    assert path.name in str(exc.value) and isinstance(exc.value, MediaError) and isinstance(exc.value, ValueError)
    assert exc.value.path == str(path) and exc.value.fix


def test_missing_file(tmp_path):
    with pytest.raises(MediaNotFound, match="nope.mp4"):
        probe(tmp_path / "nope.mp4")


def test_decord_and_pyav_give_the_same_frames(media):
    pytest.importorskip("decord")
    path = media["astronaut"].path
    idx = [19, 0, 3, 3, 7, 12]  # unordered, repeated
    a = read_frames(path, idx, backend="decord")
    b = read_frames(path, idx, backend="pyav")
    assert a.shape == b.shape == (6, 240, 320, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b).mean() < 0.5
    assert np.array_equal(a[2], a[3]) and not np.array_equal(a[0], a[1])


def test_frames_move_between_indices(media):
    frames = read_frames(media["grace"].path, [0, 5])
    assert np.abs(frames[0].astype(int) - frames[1]).mean() > 1.0  # the face drifts, the background changes


def test_indices_past_the_end_read_the_last_frame(media):
    path = media["short"].path  # 3 frames
    for backend in BACKENDS:
        f = read_frames(path, [0, 2, 5], backend=backend)
        assert np.array_equal(f[1], f[2])


def test_huge_video_is_scaled_in_the_decoder(tmp_path):
    clip = make_large_clip(tmp_path / "uhd.mp4", size=(3840, 2160), frames=2)
    a = read_frames(clip.path, [0, 1], max_side=640, backend=BACKENDS[-1])
    b = read_frames(clip.path, [1], max_side=640, backend="pyav")
    assert a.shape == (2, 360, 640, 3) and b.shape == (1, 360, 640, 3)
    assert np.abs(a[1].astype(int) - b[0]).mean() < 1.0
    with pytest.raises(MediaTooLarge, match="uhd.mp4.*max_side"):
        read_frames(clip.path, [0, 1], max_bytes=10 * 2**20)


def test_8k_image_downscaled_without_full_decode(tmp_path):
    path = tmp_path / "8k.jpg"
    make_image(path, "astronaut", size=(7680, 4320))
    tracemalloc.start()
    img = read_image(path, max_side=1280)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert img.shape == (720, 1280, 3) and img.dtype == np.uint8
    assert peak < 20 * 2**20  # the full-size RGB array would be 100 MB
    assert read_image(path, max_side=None).shape == (4320, 7680, 3)


def test_image_modes(tmp_path):
    from PIL import Image

    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., 0] = 200
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(np.full((40, 60), 7, np.uint16) << 8).save(tmp_path / "g16.png")
    assert read_image(tmp_path / "a.png")[0, 0].tolist() == [200, 0, 0]
    assert read_image(tmp_path / "g16.png")[0, 0].tolist() == [7, 7, 7]


def test_truncated_image(tmp_path, media):
    data = media["image"].path.read_bytes()
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(data[:200])
    with pytest.raises(CorruptMedia, match="cut.jpg"):
        read_image(bad)
