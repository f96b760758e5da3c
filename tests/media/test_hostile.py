"""Hostile inputs: headers that lie about their size, and paths that are not files. Each one costs one file, with
the real reason, and never the process."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from emollm.media import (
    CorruptMedia,
    MediaLimits,
    MediaNotFound,
    MediaTooLarge,
    UnreadableMedia,
    load_many,
    load_sample,
    probe,
    read_frames,
    sample_frame_indices,
)
from emollm.media import video as video_mod

from .hostile import clip_with_empty_audio, jpeg_with_size, mkv_with_duration, mp4_with_frame_count, wav_with_header


@pytest.fixture(scope="module")
def good_mkv(tmp_path_factory):
    from emollm.media import fixtures

    path = tmp_path_factory.mktemp("good") / "good.mkv"
    fixtures.make_face_clip(path, seconds=1.0, audio="tone")
    return path


# ------------------------------------------------------------------------------------------- declared sizes
def test_mkv_claiming_1e9_seconds_is_refused_before_decoding(good_mkv, tmp_path):
    bad = mkv_with_duration(tmp_path / "huge.mkv", 1e9, good=good_mkv)
    with pytest.raises(MediaTooLarge) as e:
        probe(bad)
    msg = str(e.value)
    assert "huge.mkv" in msg and "1,000,000,000 s" in msg and "limit 10,800 s" in msg
    assert "EMOLLM_MAX_DURATION_S=" in msg  # how to raise it


def test_raised_limit_measures_the_lying_mkv_and_never_hands_it_to_decord(good_mkv, tmp_path, monkeypatch):
    bad = mkv_with_duration(tmp_path / "huge.mkv", 1e9, good=good_mkv)
    # the hazard: decord itself aborts the whole process on this file (SIGABRT, std::bad_alloc)
    code = f"import decord; decord.VideoReader({str(bad)!r}, num_threads=1)"
    crash = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert crash.returncode != 0 and b"bad_alloc" in crash.stderr
    monkeypatch.setenv("EMOLLM_MAX_DURATION_S", "1e10")
    monkeypatch.setenv("EMOLLM_MAX_FRAMES", "1e11")
    info = probe(bad)
    assert info.frames == 10 and info.duration < 2 and "measured by demuxing" in info.header_note
    sample = load_sample(bad, modalities=["audio", "video"], frame_policy="uniform:4")
    assert sample.frames.shape == (4, 240, 320, 3) and sample.frame_indices == [1, 3, 6, 8]
    assert sample.audio is not None and 0.9 < sample.audio.size / 16000 < 1.2


def test_explicit_limits_object_overrides_the_environment(good_mkv, tmp_path, monkeypatch):
    bad = mkv_with_duration(tmp_path / "long.mkv", 1e5, good=good_mkv)
    with pytest.raises(MediaTooLarge, match="100,000 s"):
        probe(bad)
    info = probe(bad, limits=MediaLimits(max_duration_s=2e5, max_frames=10**7))
    assert info.frames == 10 and info.header_note
    assert read_frames(bad, [0, 9], info=info).shape == (2, 240, 320, 3)  # PyAV, not decord
    monkeypatch.setenv("EMOLLM_MAX_FRAMES", "lots")
    with pytest.raises(ValueError, match="EMOLLM_MAX_FRAMES='lots'"):
        MediaLimits.from_env()
    with pytest.raises(ValueError, match="max_frames"):
        MediaLimits(max_frames=0)


def test_mp4_claiming_2e9_frames_is_refused(tmp_path, monkeypatch):
    bad = mp4_with_frame_count(tmp_path / "frames.mp4")
    with pytest.raises(MediaTooLarge, match=r"frame count of 2,147,483,632 \(limit 1,000,000\).*EMOLLM_MAX_FRAMES"):
        probe(bad)
    monkeypatch.setenv("EMOLLM_MAX_FRAMES", "1e10")
    info = probe(bad)
    assert info.frames == 10 and "frames" in info.header_note
    assert load_sample(bad, modalities=["video"], frame_policy="uniform:2").frames.shape[0] == 2


def test_wav_claiming_4gb_reads_what_is_there(tmp_path):
    bad = wav_with_header(tmp_path / "huge.wav", data_size=0xFFFFFF00)
    info = probe(bad)
    assert info.kind == "audio" and info.duration < 1
    sample = load_sample(bad, modalities=["audio"])
    assert sample.audio is not None and sample.audio.size == 16000  # 0.5 s padded to 1 s


def test_wav_claiming_1_hz_is_refused_before_resampling(tmp_path):
    """16 KB at a declared 1 Hz = 8000 s, which resampled to 16 kHz used 2.6 GB and 17 s before the fix."""
    bad = wav_with_header(tmp_path / "rate1.wav", sample_rate=1)
    t = time.perf_counter()
    with pytest.raises(CorruptMedia, match="sample rate of 1 Hz"):
        load_sample(bad, modalities=["audio"])
    assert time.perf_counter() - t < 5


def test_jpeg_claiming_60000_squared_is_refused(tmp_path, monkeypatch):
    bad = jpeg_with_size(tmp_path / "huge.jpg")
    with pytest.raises(MediaTooLarge, match=r"huge\.jpg: the header declares an image of 3,600,000,000 pixels"):
        probe(bad)
    ok = jpeg_with_size(tmp_path / "big.jpg", 12000, 12000)  # 144 M: under Pillow's limit, over ours when lowered
    monkeypatch.setenv("EMOLLM_MAX_PIXELS", "1e8")
    with pytest.raises(MediaTooLarge, match=r"12000x12000 image .*EMOLLM_MAX_PIXELS="):
        probe(ok)


def test_policy_and_padding_bombs_are_refused_up_front(media):
    with pytest.raises(ValueError, match="asks for 1000000000 frames"):
        sample_frame_indices(10, "uniform:1000000000")
    with pytest.raises(ValueError, match="positive"):
        sample_frame_indices(10, "uniform:0")
    with pytest.raises(ValueError, match="min_audio_duration 1e\\+12: would pad"):
        load_sample(media["wav"].path, modalities=["audio"], min_audio_duration=1e12)


# ----------------------------------------------------------------------------------------- modality-level loss
def test_empty_audio_track_loses_only_the_audio(tmp_path):
    clip = clip_with_empty_audio(tmp_path / "noaud.mkv")
    assert probe(clip).has_audio
    both = load_sample(clip, modalities=["audio", "video"], frame_policy="uniform:2")
    assert both.available == ["video"] and "holds no samples" in both.missing["audio"]
    audio_only = load_sample(clip, modalities=["audio"])  # features extract for an audio encoder: missing, not failed
    assert audio_only.available == [] and "holds no samples" in audio_only.missing["audio"]


def test_silent_wav_stays_missing_as_silent(tmp_path):
    from emollm.media import fixtures

    wav = fixtures.make_audio_file(tmp_path / "quiet.wav", "silence", seconds=1.0).path
    sample = load_sample(wav, modalities=["audio"])
    assert sample.audio is None and "silent" in sample.missing["audio"]


# ---------------------------------------------------------------------------------------- not-a-file reasons
def test_reasons_name_the_real_problem(tmp_path, media):
    folder = tmp_path / "clip.mp4"
    folder.mkdir()
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop.name)
    broken = tmp_path / "gone.mp4"
    broken.symlink_to("nowhere.mp4")
    cases = {
        folder: (MediaNotFound, "is a folder, not a regular file"),
        fifo: (MediaNotFound, "is a FIFO (named pipe), not a regular file"),  # and probing it did not block
        loop: (MediaNotFound, "symlink loop"),
        broken: (MediaNotFound, "broken symlink (it points to 'nowhere.mp4'"),
        tmp_path / "absent.mp4": (MediaNotFound, "no such file"),
    }
    for path, (cls, text) in cases.items():
        with pytest.raises(cls) as e:
            probe(path)
        assert text in str(e.value) and str(path) in str(e.value), str(e.value)
    # in a batch each one is one error in the stream, and the good file still loads
    paths = [*cases, media["wav"].path]
    out = list(load_many(paths, workers=2, modalities=["audio"]))
    assert [type(r).__name__ for _, r in out] == ["MediaNotFound"] * 5 + ["MediaSample"]


def test_permission_denied_is_reported_as_such_even_as_root(tmp_path, media, monkeypatch):
    """The same check without relying on file modes (root bypasses them): the first read fails with EACCES."""
    locked = tmp_path / "locked.mp4"
    locked.write_bytes(media["grace"].path.read_bytes())
    real_open = os.open

    def deny(path, flags, *args, **kwargs):
        if os.fspath(path) == str(locked):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(video_mod.os, "open", deny)
    with pytest.raises(UnreadableMedia) as e:
        probe(locked)
    assert "permission denied" in str(e.value) and "truncated" not in str(e.value)


def test_probe_cost_is_a_few_milliseconds(media):
    probe(media["grace"].path)  # imports
    t = time.perf_counter()
    for _ in range(10):
        probe(media["grace"].path)
    per_file = (time.perf_counter() - t) / 10
    assert per_file < 0.1, per_file
    assert np.isfinite(per_file)
