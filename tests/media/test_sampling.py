"""Frame-sampling policies (pure function)."""

from __future__ import annotations

import numpy as np
import pytest

from emollm.media import sample_frame_indices


def test_uniform_segment_centres():
    assert sample_frame_indices(100, "uniform:4") == [12, 37, 62, 87]
    assert sample_frame_indices(20, "uniform:8") == [1, 3, 6, 8, 11, 13, 16, 18]


def test_uniform_repeats_on_short_clips():
    idx = sample_frame_indices(3, "uniform:8")  # a 0.3 s clip at 10 fps
    assert len(idx) == 8 and set(idx) == {0, 1, 2} and idx == sorted(idx)


def test_first_middle():
    assert sample_frame_indices(10, "first") == [0]
    assert sample_frame_indices(10, "middle") == [5]
    assert sample_frame_indices(1, "middle") == [0]
    assert sample_frame_indices(9, "middle") == sample_frame_indices(9, "uniform:1")


def test_peak_uses_scores():
    scores = np.zeros(30)
    scores[17] = 3.0
    scores[3] = np.nan
    assert sample_frame_indices(30, "peak", scores=scores) == [17]
    assert sample_frame_indices(3, "peak", scores=[1.0, 2.0, 2.0]) == [1]  # ties: earliest


@pytest.mark.parametrize(
    ("scores", "match"), [(None, "needs `scores`"), ([1.0, 2.0], "2 scores for a clip of 5"), ([np.nan] * 5, "NaN")]
)
def test_peak_errors(scores, match):
    with pytest.raises(ValueError, match=match):
        sample_frame_indices(5, "peak", scores=scores)


def test_segments_matches_emotion_llama_rule():
    # C=100, S=8, K=2: tick = 99/8 = 12.375; starts int(6.1875 + 12.375 s)
    idx = sample_frame_indices(100, "segments:8:2")
    starts = [6, 18, 30, 43, 55, 68, 80, 92]
    assert idx == [p + k for p in starts for k in (0, 1)]
    assert len(sample_frame_indices(1000, "segments:8:2")) == 16


def test_segments_short_clips():
    # C <= S: starts 0..C-1, edge-padded; the K-th frame is clamped to the last frame
    assert sample_frame_indices(3, "segments:8:2") == [0, 1, 1, 2, 2, 2] + [2, 2] * 5
    assert sample_frame_indices(1, "segments:4:2") == [0] * 8
    # S < C <= S + K - 1 (the original crashes in np.pad here): first S starts
    assert sample_frame_indices(9, "segments:8:2") == [p + k for p in range(8) for k in (0, 1)]
    for c in range(1, 40):
        idx = sample_frame_indices(c, "segments:8:2")
        assert len(idx) == 16 and min(idx) >= 0 and max(idx) < c and idx == sorted(idx)


def test_fps_and_all():
    assert sample_frame_indices(50, "fps:2", fps=25.0) == [6, 18, 31, 43]
    assert sample_frame_indices(5, "fps:1", fps=25.0) == [2]  # at least one frame
    assert sample_frame_indices(4, "all") == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="needs the clip's fps"):
        sample_frame_indices(50, "fps:2")


@pytest.mark.parametrize("policy", ["uniform", "uniform:0", "uniform:x", "segments:8", "best", "first:3"])
def test_bad_policies(policy):
    with pytest.raises(ValueError, match="frame policy"):
        sample_frame_indices(10, policy)


def test_zero_frames():
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        sample_frame_indices(0, "first")
