"""The sample contract: missing modalities are reported, bad files raise MediaError, batches survive."""

from __future__ import annotations

import os

import numpy as np
import pytest

from emollm.media import (
    CorruptMedia,
    EmptyMedia,
    MediaError,
    MediaSample,
    UnsupportedFormat,
    load_many,
    load_sample,
    probe,
)
from emollm.media.fixtures import make_noface_clip


def test_full_clip(media, haar):
    s = load_sample(media["astronaut"].path, face_detector=haar, subtitle="I passed the exam")
    assert s.name == "astronaut" and s.missing == {}
    assert s.available == ["audio", "face", "video", "text"]
    assert s.audio.shape == (32000,) and s.sample_rate == 16000
    assert s.frames.shape == (8, 240, 320, 3) and s.frames.dtype == np.uint8
    assert s.faces.shape == (8, 224, 224, 3) and s.frame_indices == s.face_indices == [1, 3, 6, 8, 11, 13, 16, 18]
    assert s.text == "I passed the exam"


def test_separate_policies_for_frames_and_faces(media, haar):
    s = load_sample(media["grace"].path, frame_policy="middle", face_policy="segments:8:2", face_detector=haar)
    assert s.frames.shape[0] == 1 and s.frame_indices == [5]
    assert s.faces.shape[0] == 16 and s.face_indices == [0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 6, 7, 7, 8, 8, 9]


def test_peak_policy_with_scores(media, haar):
    scores = np.zeros(20)
    scores[13] = 1.0
    s = load_sample(media["astronaut"].path, modalities=("video",), frame_policy="peak", scores=scores)
    assert s.frame_indices == [13]
    with pytest.raises(MediaError, match="astronaut.mp4: frame policy 'peak': got 3 scores for a clip of 20"):
        load_sample(media["astronaut"].path, modalities=("video",), frame_policy="peak", scores=[1, 2, 3])


def test_no_audio_track_is_missing_not_an_error(media, haar):
    s = load_sample(media["no_audio"].path, face_detector=haar)
    assert s.audio is None and "no_audio.mp4" in s.missing["audio"] and "no audio track" in s.missing["audio"]
    assert s.frames is not None and s.faces is not None


def test_silence_is_missing(media, haar):
    s = load_sample(media["silent"].path, face_detector=haar)
    assert s.audio is None and "silent.mp4" in s.missing["audio"] and "silent" in s.missing["audio"]
    kept = load_sample(media["silent"].path, modalities=("audio",), silence_db=None)
    assert kept.audio is not None and not kept.audio.any()


def test_no_face_is_missing(media, haar):
    s = load_sample(media["no_face"].path, face_detector=haar)
    assert s.faces is None and s.face_track is None
    assert "no_face.mp4" in s.missing["face"] and "no face detected" in s.missing["face"]
    assert s.frames is not None and s.audio is not None


def test_short_clip_pads_audio_and_repeats_frames(media, haar):
    s = load_sample(media["short"].path, face_detector=haar, frame_policy="segments:8:2")
    assert s.info.frames == 3 and s.audio.shape == (16000,)
    assert s.frames.shape[0] == 16 and sorted(set(s.frame_indices)) == [0, 1, 2]
    assert s.faces.shape[0] == 16


def test_audio_file(media):
    s = load_sample(media["mp3"].path)
    assert s.available == ["audio"] and s.audio.shape[0] >= 16000
    assert set(s.missing) == {"face", "video"} and "tone.mp3 is an audio file" in s.missing["video"]


def test_image(media, haar):
    s = load_sample(media["image"].path, face_detector=haar)
    assert s.frames.shape == (1, 512, 512, 3) and s.faces.shape == (1, 224, 224, 3)
    assert "astronaut.jpg is an image" in s.missing["audio"]


def test_image_without_face(tmp_path, haar):
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "flat.png")
    s = load_sample(tmp_path / "flat.png", face_detector=haar)
    assert s.frames.shape == (1, 64, 64, 3) and "flat.png" in s.missing["face"]


def test_text_file(media):
    s = load_sample(media["text"], modalities=("audio", "text"))
    assert s.text == "I passed the exam!" and s.available == ["text"]
    assert "subtitle.txt is a text file" in s.missing["audio"]
    assert (
        "no subtitle given for astronaut.mp4"
        in load_sample(media["astronaut"].path, modalities=("text",)).missing["text"]
    )


@pytest.mark.parametrize(
    ("key", "error"),
    [("truncated", CorruptMedia), ("garbage", CorruptMedia), ("empty", EmptyMedia), ("unsupported", UnsupportedFormat)],
)
def test_bad_files_raise_media_errors(media, key, error):
    with pytest.raises(error, match=media[key].name):
        load_sample(media[key])


def scramble(src, dst, end: int | None = None):
    """Overwrites the media data of an mp4 with noise, keeping its header and index (moov, written last)."""
    data = bytearray(src.read_bytes())
    end = end or data.rfind(b"moov") - 4
    data[64:end] = np.random.default_rng(1).integers(0, 256, end - 64, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def test_scrambled_video_stream_keeps_the_audio(tmp_path, media, haar):
    # PyAV muxes all video packets before the audio ones: scrambling the first half hits only video
    bad = scramble(media["grace"].path, tmp_path / "scrambled.mp4", end=len(media["grace"].path.read_bytes()) // 2)
    s = load_sample(bad, face_detector=haar)
    assert s.available == ["audio"] and s.audio.shape == (16000,)
    for m in ("video", "face"):
        assert s.missing[m].startswith(f"{bad}: cannot decode frames")
        assert "Stack trace" not in s.missing[m] and "[bt]" not in s.missing[m]


def test_all_streams_scrambled_is_one_error(tmp_path, media, haar):
    bad = scramble(media["grace"].path, tmp_path / "noise.mp4")
    assert probe(bad).kind == "video"  # the header is fine, but nothing decodes
    with pytest.raises(CorruptMedia) as exc:
        load_sample(bad, face_detector=haar)
    assert "noise.mp4: cannot decode the audio" in str(exc.value) and "cannot decode frames" in str(exc.value)


def test_unknown_modality_and_policy(media):
    with pytest.raises(ValueError, match="unknown modalities"):
        load_sample(media["astronaut"].path, modalities=("smell",))
    with pytest.raises(ValueError, match="unknown frame policy"):
        load_sample(media["astronaut"].path, frame_policy="best")


def test_load_many_keeps_order_and_returns_errors(media, haar):
    paths = [media["grace"].path, media["truncated"], media["wav"].path, media["unsupported"], media["image"].path]
    out = list(load_many(paths, workers=2, face_detector=haar))
    assert [p for p, _ in out] == [os.fspath(p) for p in paths]
    kinds = [type(r) for _, r in out]
    assert kinds == [MediaSample, CorruptMedia, MediaSample, UnsupportedFormat, MediaSample]
    assert out[0][1].name == "grace" and out[2][1].name == "tone"
    assert "truncated.mp4" in str(out[1][1])


def test_load_many_with_a_named_detector(media):
    pytest.importorskip("facenet_pytorch")
    paths = [media["two_faces"].path, media["no_face"].path]
    (_, a), (_, b) = load_many(paths, workers=2, face_detector="mtcnn", modalities=("face",), frame_policy="first")
    assert a.faces.shape == (1, 224, 224, 3) and a.face_track.num_tracks == 2
    assert b.faces is None and "by mtcnn" in b.missing["face"]


def _crashing_loader(path, **kwargs):
    if "boom" in os.path.basename(path):
        os._exit(13)  # a decoder segfault, as far as the pool can tell
    if "oops" in os.path.basename(path):
        raise KeyError("bug")
    return load_sample(path, **kwargs)


def test_load_many_survives_unexpected_errors_and_crashes(media, tmp_path):
    boom = make_noface_clip(tmp_path / "boom.mp4", seconds=0.3, audio=None).path
    oops = tmp_path / "oops.wav"
    oops.write_bytes(media["wav"].path.read_bytes())
    paths = [media["wav"].path, boom, oops, media["mp3"].path]
    out = list(load_many(paths, workers=2, executor="process", loader=_crashing_loader, modalities=("audio",)))
    assert [p for p, _ in out] == [os.fspath(p) for p in paths]
    assert isinstance(out[0][1], MediaSample) and isinstance(out[3][1], MediaSample)
    assert isinstance(out[1][1], CorruptMedia) and "crashed" in str(out[1][1]) and "boom.mp4" in str(out[1][1])
    assert type(out[2][1]) is MediaError and "unexpected KeyError" in str(out[2][1])
