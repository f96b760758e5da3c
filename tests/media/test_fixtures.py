"""The generators write what they claim."""

from __future__ import annotations

import pytest

from emollm.media import probe
from emollm.media.fixtures import make_audio_file, make_corrupt_file, make_face_clip, make_image


def test_face_clip_ground_truth(tmp_path):
    clip = make_face_clip(tmp_path / "c.mp4", "grace_hopper", seconds=0.5, fps=8, size=(160, 120), audio="tone")
    info = probe(clip.path)
    assert (info.frames, info.fps, info.width, info.height, info.has_audio) == (4, 8.0, 160, 120, True)
    assert clip.frames == 4 and len(clip.face_boxes) == 4
    assert len(set(clip.face_boxes)) > 1  # the face moves
    for x0, y0, x1, y1 in clip.face_boxes:
        assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 120


def test_image_and_audio_generators(tmp_path):
    img = make_image(tmp_path / "g.png", "grace_hopper", size=(200, 100))
    assert probe(img.path).width == 200 and len(img.face_boxes) == 1
    with pytest.raises(ValueError, match="unsupported suffix '.ogg'"):
        make_audio_file(tmp_path / "a.ogg")
    with pytest.raises(ValueError, match="unknown photo"):
        make_image(tmp_path / "x.png", "mona_lisa")


def test_corrupt_kinds(tmp_path):
    assert make_corrupt_file(tmp_path / "e.mp4", "empty").stat().st_size == 0
    assert make_corrupt_file(tmp_path / "g.mp4", "garbage").stat().st_size == 16384
    with pytest.raises(ValueError, match="unknown corruption"):
        make_corrupt_file(tmp_path / "x.mp4", "melted")
