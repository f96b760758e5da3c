"""emollm.aus.cues: the AU table, pseudo-labels for every emotion, tie-breaks, missing columns, AU phrases."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from emollm.aus.cues import DEFAULT_CUES_PATH, describe_aus, label_csv, label_from_peak, load_cue_table
from emollm.aus.openface import read_openface_csv
from emollm.aus.peaks import select_peak

from .openface_gen import Plant, write_openface_csv

TABLE = load_cue_table()

# Planted intensities per emotion. Equal amplitudes recover every emotion except fear, whose AUs contain all of
# surprise's: fear needs its non-surprise AUs (AU04, AU07) stronger so its mean intensity beats surprise's. AU20 stays
# at 2.0, else "worried" (scored on AU20_r alone) would win. AU28 (worried) has no _r: the generator plants AU28_c.
PLANTS = {
    "happy": {"AU06": 2.0, "AU12": 2.0, "AU14": 2.0},
    "sad": {"AU01": 2.0, "AU04": 2.0, "AU15": 2.0, "AU14": 2.0},
    "surprise": {"AU01": 2.0, "AU02": 2.0, "AU05": 2.0, "AU26": 2.0},
    "fear": {"AU01": 2.0, "AU02": 2.0, "AU04": 2.6, "AU05": 2.0, "AU07": 2.6, "AU20": 2.0, "AU26": 2.0},
    "angry": {"AU04": 2.0, "AU05": 2.0, "AU07": 2.0, "AU23": 2.0, "AU10": 2.0, "AU17": 2.0},
    "contempt": {"AU12": 2.0, "AU10": 2.0, "AU14": 2.0, "AU17": 2.0},
    "worried": {"AU28": 2.0, "AU20": 2.0},
    "disgust": {"AU09": 2.0, "AU15": 2.0},
}


def _clip(tmp_path, plants, n=60, **kw):
    return read_openface_csv(write_openface_csv(tmp_path / "clip.csv", n, plants, **kw))


def test_default_table_contents():
    assert list(TABLE.emotions) == ["happy", "sad", "surprise", "fear", "angry", "contempt", "worried", "disgust"]
    assert TABLE.emotions["fear"] == ("AU01", "AU02", "AU04", "AU05", "AU07", "AU20", "AU26")
    assert TABLE.emotions["worried"] == ("AU28", "AU20")
    assert (TABLE.presence_fraction, TABLE.mean_intensity, TABLE.active_intensity) == (0.5, 0.8, 0.8)
    assert TABLE.strength == {"slight": 0.8, "moderate": 1.6, "strong": 2.4}
    assert TABLE.tie_break == "mean_intensity" and TABLE.peak_rule == "paper" and TABLE.peak_top_k is None
    assert len(TABLE.au_text) == 18 and TABLE.au_text["AU12"] == "lip corner puller (smile)"
    assert TABLE.source == DEFAULT_CUES_PATH
    assert set(PLANTS) == set(TABLE.emotions)


@pytest.mark.parametrize("emotion", list(PLANTS))
@pytest.mark.parametrize("rule", ["paper", "sum_all"])
def test_every_emotion_recovered_at_planted_peak(tmp_path, emotion, rule):
    # sum_all adds every AU's noise, so a one-AU emotion (worried: AU20_r) needs quiet background to peak exactly.
    seq = _clip(tmp_path, [Plant(PLANTS[emotion], 33)], noise=0.3 if rule == "paper" else 0.05)
    peak = select_peak(seq, rule)
    assert peak.index == 33
    res = label_from_peak(seq, peak, TABLE)
    assert res.pseu_emotion == emotion
    assert res.candidates[0].emotion == emotion
    expected_active = sorted(PLANTS[emotion])
    assert res.peak_AU_list == expected_active  # includes AU28 via AU28_c for worried
    best = res.candidates[0]
    assert best.strength == "moderate"  # means 2.0 .. 2.17
    assert set(best.present) == set(TABLE.emotions[emotion])


def test_overlapping_emotions_recorded_as_candidates(tmp_path):
    seq = _clip(tmp_path, [Plant(PLANTS["happy"], 20)])
    res = label_from_peak(seq, 20, TABLE)
    fired = [c.emotion for c in res.candidates]
    assert fired[0] == "happy" and "contempt" in fired  # AU12+AU14 = 2/4 present, mean ~1.1
    contempt = next(c for c in res.candidates if c.emotion == "contempt")
    assert contempt.score < res.candidates[0].score and contempt.strength == "slight"
    reasons = {c.emotion: c.reason for c in res.rejected}
    assert reasons["sad"] == "1/4 AUs present"


def test_tie_breaks(tmp_path):
    # All seven fear AUs at 2.0: fear and surprise both have mean 2.0 -> table order (surprise first).
    seq = _clip(tmp_path, [Plant(dict.fromkeys(TABLE.emotions["fear"], 2.0), 30)])
    res = label_from_peak(seq, 30, TABLE)
    assert [c.emotion for c in res.candidates][:3] == ["surprise", "fear", "worried"]
    assert res.candidates[0].score == res.candidates[1].score == 2.0
    assert res.pseu_emotion == "surprise"
    # Documented consequence of AU28 having no _r: fear with a dominant AU20 reads as worried.
    strong20 = dict.fromkeys(TABLE.emotions["fear"], 2.0) | {"AU20": 3.0}
    seq20 = _clip(tmp_path, [Plant(strong20, 30)])
    assert label_from_peak(seq20, 30, TABLE).pseu_emotion == "worried"
    # table_order: first firing emotion in the table, whatever the intensities.
    happy = _clip(tmp_path, [Plant(PLANTS["happy"], 20)])
    contempt_first = dataclasses.replace(
        TABLE, tie_break="table_order", emotions={"contempt": TABLE.emotions["contempt"]} | TABLE.emotions
    )
    assert label_from_peak(happy, 20, contempt_first).pseu_emotion == "contempt"
    assert label_from_peak(happy, 20, dataclasses.replace(TABLE, tie_break="table_order")).pseu_emotion == "happy"
    # abstain: several fired -> no label, but candidates kept.
    res = label_from_peak(happy, 20, dataclasses.replace(TABLE, tie_break="abstain"))
    assert res.pseu_emotion is None and len(res.candidates) == 2
    only = label_from_peak(
        _clip(tmp_path, [Plant(PLANTS["disgust"], 20)]), 20, dataclasses.replace(TABLE, tie_break="abstain")
    )
    assert only.pseu_emotion == "disgust"


def test_neutral_clip_has_no_label(tmp_path):
    seq = _clip(tmp_path, [])
    peak = select_peak(seq)
    res = label_from_peak(seq, peak, TABLE)
    assert res.pseu_emotion is None and res.candidates == [] and res.peak_AU_list == []
    assert res.strength is None
    # single AU, no combination
    seq = _clip(tmp_path, [Plant({"AU45": 3.0}, 10)])
    res = label_from_peak(seq, select_peak(seq), TABLE)
    assert res.pseu_emotion is None and res.peak_AU_list == ["AU45"]


def test_threshold_edges(tmp_path):
    # Present but weak: mean 0.79 < 0.8 does not fire; exactly 0.80 fires (slight).
    for amp, fired in ((0.79, False), (0.80, True)):
        cols_plant = Plant({"AU09": amp, "AU15": amp}, 10, width=0)
        seq = _clip(tmp_path, [cols_plant], noise=0.0)
        seq.presence["AU09"][10] = seq.presence["AU15"][10] = 1.0  # present despite the low intensity
        res = label_from_peak(seq, 10, TABLE)
        assert (res.pseu_emotion == "disgust") is fired
        if fired:
            assert res.strength == "slight"
    # Strength bands.
    for amp, band in ((1.59, "slight"), (1.6, "moderate"), (2.4, "strong"), (5.0, "strong")):
        seq = _clip(tmp_path, [Plant({"AU09": amp, "AU15": amp}, 10)], noise=0.0)
        assert label_from_peak(seq, 10, TABLE).strength == band
    # Presence fraction: 1 of 2 present is >= 0.5 and fires on intensity.
    seq = _clip(tmp_path, [Plant({"AU09": 2.0, "AU15": 2.0}, 10)], noise=0.0)
    seq.presence["AU15"][10] = 0.0
    assert label_from_peak(seq, 10, TABLE).pseu_emotion == "disgust"


def test_missing_columns(tmp_path):
    # An emotion needs every one of its _c columns: without AU14_c happy is rejected even though AU06+AU12 fire.
    p = write_openface_csv(tmp_path / "c.csv", 40, [Plant({"AU06": 2.0, "AU12": 2.0}, 20)], drop=["AU14_c"])
    seq = read_openface_csv(p)
    res = label_from_peak(seq, select_peak(seq), TABLE)
    assert res.pseu_emotion is None
    reasons = {c.emotion: c.reason for c in res.rejected}
    assert reasons["happy"] == "missing column(s) AU14_c"
    # Worried without AU28_c: rejected; AU28 itself has no _r in OpenFace, so worried is scored on AU20_r only.
    p = write_openface_csv(tmp_path / "w.csv", 40, [Plant(PLANTS["worried"], 20)], drop=["AU28_c"])
    res = label_from_peak(read_openface_csv(p), 20, TABLE)
    assert res.pseu_emotion is None
    assert {c.emotion: c.reason for c in res.rejected}["worried"] == "missing column(s) AU28_c"
    seq = _clip(tmp_path, [Plant(PLANTS["worried"], 20)])
    worried = label_from_peak(seq, 20, TABLE).candidates[0]
    assert worried.scored_aus == ["AU20"] and worried.score == pytest.approx(2.0)
    # A missing _r column (here AU15_r) is left out of the mean.
    p = write_openface_csv(tmp_path / "d.csv", 40, [Plant(PLANTS["disgust"], 20)], drop=["AU15_r"])
    res = label_from_peak(read_openface_csv(p), 20, TABLE)
    assert res.pseu_emotion == "disgust" and res.candidates[0].scored_aus == ["AU09"]


def test_low_confidence_burst_does_not_label(tmp_path):
    seq = _clip(
        tmp_path,
        [Plant(PLANTS["happy"], 15), Plant(PLANTS["angry"] | {"AU04": 4.0}, 40, width=0)],
        confidence={40: 0.3},
        noise=0.05,
    )
    peak = select_peak(seq, "sum_all")
    assert peak.index == 15
    assert label_from_peak(seq, peak, TABLE).pseu_emotion == "happy"


def test_label_csv_uses_table_defaults(tmp_path):
    p = write_openface_csv(tmp_path / "c.csv", 40, [Plant(PLANTS["sad"], 25)], confidence={25: 0.85})
    seq, peak, res = label_csv(p, TABLE)
    assert peak.rule == "paper" and peak.index == 25 and res.pseu_emotion == "sad"
    _, peak, _ = label_csv(p, TABLE, min_confidence=0.9)
    assert peak.index != 25
    _, peak, _ = label_csv(p, dataclasses.replace(TABLE, peak_rule="sum_all"))
    assert peak.rule == "sum_all"


def test_describe_aus():
    assert describe_aus(["AU05", "AU26"], TABLE) == ["upper lid raiser", "jaw drop"]
    assert describe_aus(["AU12_r", "AU28_c", "AU99"]) == ["lip corner puller (smile)", "lip suck", "AU99"]
    assert describe_aus([], TABLE) == []


def _write_yaml(tmp_path, data):
    p = tmp_path / "cues.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def test_custom_table_and_validation(tmp_path):
    base = yaml.safe_load(DEFAULT_CUES_PATH.read_text())
    custom = base | {"emotions": {"joy": ["AU6", "au12"]}, "tie_break": "abstain", "peak": {"rule": "sum_all"}}
    t = load_cue_table(_write_yaml(tmp_path, custom))
    assert t.emotions == {"joy": ("AU06", "AU12")} and t.tie_break == "abstain" and t.peak_rule == "sum_all"
    # strength bands are ordered by their bounds, whatever the YAML order
    t = load_cue_table(_write_yaml(tmp_path, base | {"strength": {"strong": 2.4, "slight": 0.8, "moderate": 1.6}}))
    assert list(t.strength) == ["slight", "moderate", "strong"] and t.strength_of(2.0) == "moderate"
    bad = [
        (base | {"colour": 1}, r"colour: unknown key"),
        (base | {"emotions": {"joy": ["smile"]}}, r"emotions\.joy: not an action unit name"),
        (base | {"emotions": {"joy": []}}, r"emotions\.joy: expected a non-empty list"),
        (base | {"emotions": {"joy": ["AU06", "AU06"]}}, r"emotions\.joy: duplicate AU"),
        (base | {"thresholds": {"presence_fraction": 1.5}}, r"thresholds\.presence_fraction: expected a number in"),
        (base | {"thresholds": {"mean_intensity": "high"}}, r"thresholds\.mean_intensity"),
        (base | {"strength": {"slight": -1}}, r"strength\.slight: expected a number"),
        (base | {"tie_break": "random"}, r"tie_break: expected one of"),
        (base | {"peak": {"rule": "median"}}, r"peak\.rule"),
        (base | {"peak": {"rule": "paper", "top_k": 0}}, r"peak\.top_k"),
        ([1, 2], r"expected a mapping"),
    ]
    for data, pattern in bad:
        with pytest.raises(
            ValueError, match=r"cues\.yaml: " + pattern if not pattern.startswith("expected") else pattern
        ):
            load_cue_table(_write_yaml(tmp_path, data))
    (tmp_path / "broken.yaml").write_text("emotions: [unclosed")
    with pytest.raises(ValueError, match=r"broken\.yaml: invalid YAML"):
        load_cue_table(tmp_path / "broken.yaml")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_cue_table(tmp_path / "missing.yaml")
