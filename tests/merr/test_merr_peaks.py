"""emollm.aus.peaks: the paper's and MER-Factory's peak rules, ties, invalid frames, chronological peaks."""

from __future__ import annotations

import numpy as np
import pytest

from emollm.aus.openface import NoFaceError, read_openface_csv
from emollm.aus.peaks import find_peaks, find_peaks_chronological, select_peak

from .openface_gen import Plant, write_openface_csv

SURPRISE = {"AU01": 2.0, "AU02": 2.0, "AU05": 2.0, "AU26": 2.0}


def _seq(tmp_path, n=60, plants=(), **kw):
    return read_openface_csv(write_openface_csv(tmp_path / "clip.csv", n, plants, **kw))


@pytest.mark.parametrize("rule", ["paper", "sum_all"])
def test_planted_peak_found(tmp_path, rule):
    seq = _seq(tmp_path, plants=[Plant(SURPRISE, 37)])
    peak = select_peak(seq, rule)
    assert peak.index == 37 and peak.frame == 38
    assert peak.timestamp == pytest.approx(37 / 25)
    assert peak.active_aus == ["AU01", "AU02", "AU05", "AU26"]
    assert peak.rule == rule and not peak.fallback


def test_paper_rule_details(tmp_path):
    # AU05/AU26 wide bumps (13 active frames each), AU12 narrow (5 active frames): the paper rule sums AU05+AU26 only.
    seq = _seq(tmp_path, plants=[Plant({"AU05": 1.6, "AU26": 1.6}, 20, width=12), Plant({"AU12": 2.0}, 45, width=3)])
    peak = select_peak(seq, "paper")
    assert peak.selected_aus == ["AU05", "AU26"]
    assert peak.counts["AU05"] == peak.counts["AU26"] == 13 and peak.counts["AU12"] == 5
    assert peak.counts["AU01"] == 0
    np.testing.assert_allclose(peak.scores, seq.intensity["AU05"] + seq.intensity["AU26"])
    assert peak.index == 20 and peak.score == pytest.approx(3.2)
    # top_k=3 adds the next most frequent AU (AU12); the peak stays at 20 (3.2 + noise vs 2.0 + noise at 45).
    peak3 = select_peak(seq, "paper", top_k=3)
    assert peak3.selected_aus == ["AU05", "AU12", "AU26"]
    assert peak3.index == 20
    with pytest.raises(ValueError, match="top_k"):
        select_peak(seq, "paper", top_k=0)


def test_rules_disagree(tmp_path):
    # A sustained AU05+AU26 expression (paper's "most frequent AUs") vs a one-frame burst of seven other AUs.
    burst = {au: 1.5 for au in ("AU04", "AU07", "AU09", "AU10", "AU15", "AU17", "AU23")}
    seq = _seq(tmp_path, plants=[Plant({"AU05": 1.6, "AU26": 1.6}, 20, width=12), Plant(burst, 45, width=0)])
    assert select_peak(seq, "paper").index == 20
    peak = select_peak(seq, "sum_all")
    assert peak.index == 45 and peak.selected_aus == list(seq.intensity)


def test_ties_pick_earliest_frame(tmp_path):
    seq = _seq(tmp_path, plants=[Plant(SURPRISE, 40), Plant(SURPRISE, 12)])
    assert select_peak(seq, "paper").index == 12  # identical planted sums; noise is not among the summed AUs
    seq = _seq(tmp_path, plants=[Plant(SURPRISE, 40), Plant(SURPRISE, 12)], noise=0.0)
    assert select_peak(seq, "sum_all").index == 12
    flat = _seq(tmp_path, n=10, noise=0.0, success={0: 0})
    peak = select_peak(flat, "sum_all")
    assert peak.index == 1  # all-zero curve: first *valid* frame


def test_tied_au_counts_all_selected(tmp_path):
    seq = _seq(tmp_path, plants=[Plant({"AU06": 2.0, "AU12": 2.0}, 10), Plant({"AU04": 2.0}, 40)])
    peak = select_peak(seq, "paper")
    assert peak.counts["AU06"] == peak.counts["AU12"] == peak.counts["AU04"]
    assert peak.selected_aus == ["AU04", "AU06", "AU12"]  # every AU tied at the max count
    assert peak.index == 10  # AU06+AU12 = 4.0 beats AU04 = 2.0


def test_invalid_frames_never_peak_and_keep_indices(tmp_path):
    big = {au: 4.5 for au in ("AU01", "AU02", "AU05", "AU26")}
    seq = _seq(
        tmp_path,
        plants=[Plant(SURPRISE, 50), Plant(big, 20, width=0), Plant(big, 30, width=0)],
        success={20: 0} | dict.fromkeys(range(5), 0),
        confidence={30: 0.4},
    )
    for rule in ("paper", "sum_all"):
        peak = select_peak(seq, rule)
        assert peak.index == 50 and peak.frame == 51
        assert np.isnan(peak.scores[20]) and np.isnan(peak.scores[30]) and np.isnan(peak.scores[0])
    assert select_peak(seq, "paper").counts["AU01"] == 7  # the invalid bursts are not counted


def test_no_active_au_falls_back_to_sum_all(tmp_path):
    seq = _seq(tmp_path, n=30, noise=0.5)
    peak = select_peak(seq, "paper")
    assert peak.fallback and peak.rule == "sum_all"
    assert peak.index == select_peak(seq, "sum_all").index
    assert peak.active_aus == []


def test_errors(tmp_path):
    seq = _seq(tmp_path, n=10)
    with pytest.raises(ValueError, match="unknown peak rule"):
        select_peak(seq, "median")
    no_r = read_openface_csv(write_openface_csv(tmp_path / "c.csv", 10, drop=[f"{a}_r" for a in seq.intensity]))
    with pytest.raises(ValueError, match=r"c\.csv: no AU intensity columns"):
        select_peak(no_r, "paper")
    import dataclasses

    dead = dataclasses.replace(seq, valid=np.zeros(10, dtype=bool))
    with pytest.raises(NoFaceError):
        select_peak(dead)


# ------------------------------------------------------------------------------------------- chronological peaks


def test_find_peaks_basic_semantics():
    x = np.array([0, 1, 0, 2, 2, 2, 0, 3, 3, 0, 5])
    assert list(find_peaks(x)) == [1, 4, 7]  # plateau middle (rounded down); last sample never a peak
    assert list(find_peaks(x, height=2)) == [4, 7]
    assert list(find_peaks(x, distance=4)) == [1, 7]  # 7 (height 3) suppresses 4; 1 is 6 away from 7
    assert list(find_peaks([1.0, 2.0, 1.0, 2.0, 1.0], distance=3)) == [1]  # equal heights: earlier kept
    assert find_peaks(np.array([])).size == 0 and find_peaks(np.array([1.0])).size == 0


def test_find_peaks_matches_scipy():
    signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(0)
    for trial in range(200):
        x = rng.random(int(rng.integers(3, 200))) * 3
        rounded = trial % 2 == 0
        if rounded:
            x = np.round(x, 1)  # plateaus and equal-height peaks
        for h, d in ((None, None), (0.8, None), (0.8, 20), (None, 5), (2.0, 3)):
            ours = find_peaks(x, height=h, distance=d)
            if rounded and d is not None:
                cand = find_peaks(x, height=h)
                if len(np.unique(x[cand])) != len(cand):
                    continue  # equal heights under `distance`: scipy's priority order is unspecified
            theirs, _ = signal.find_peaks(x, height=h, distance=d)
            np.testing.assert_array_equal(ours, theirs)


def test_find_peaks_chronological(tmp_path):
    seq = _seq(tmp_path, n=120, plants=[Plant(SURPRISE, 15), Plant(SURPRISE, 25), Plant(SURPRISE, 80)], noise=0.0)
    peaks = find_peaks_chronological(seq, height=0.8, distance=20)
    assert list(peaks) == [15, 80]  # 25 is within 20 frames of 15 (equal height: earlier kept)
    assert list(find_peaks_chronological(seq, distance=5)) == [15, 25, 80]
