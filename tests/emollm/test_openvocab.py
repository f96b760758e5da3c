"""emollm.scoring.openvocab: free text -> emotion sets (synonyms, inflections, negation) and set scores."""

import pytest

from emollm.labels import DEFAULT_SYNONYMS, LabelParser
from emollm.scoring.openvocab import (
    OV_SYNONYMS,
    normalize_set,
    ov_scores,
    parse_emotions,
    parse_openset_cell,
    set_scores,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The person looks happy.", {"happy"}),
        ("joyful, delighted and cheerful", {"happy"}),  # synonyms are one group
        ("happiness", {"happy"}),
        ("She feels frustrated and disappointed", {"frustrated", "disappointed"}),
        ("frustration, disappointment", {"frustrated", "disappointed"}),  # inflections grouped
        ("worries and surprises", {"worried", "surprise"}),  # plural inflection
        ("not happy", set()),
        ("He is not very happy", set()),
        ("happy, not sad", {"happy"}),
        ("not happy but sad", {"sad"}),
        ("neither happy nor sad", set()),
        ("She isn't angry at all, just tired", {"tired"}),
        ("There is no sign of anger", set()),
        ("no doubt he is happy", {"happy"}),  # a cue negates one emotion only
        ("unhappy", {"sad"}),  # whole words: never 'happy'
        ("the content of the video", set()),
        ("", set()),
        (None, set()),
    ],
)
def test_parse_emotions(text, expected):
    assert parse_emotions(text) == expected


def test_table_extends_label_synonyms_without_changing_them():
    for surface, label in DEFAULT_SYNONYMS.items():
        assert OV_SYNONYMS[surface] == label
    # LabelParser is untouched: negation stays out of its scope, open-vocabulary words are not labels
    parser = LabelParser(["happy", "sad", "neutral"])
    assert parser.parse("not happy").label == "happy"
    assert parser.parse("excited").label is None


def test_normalize_set_keeps_unknown_items_and_drops_negated_ones():
    assert normalize_set(["Joyful", "wistful", "not sad", " "]) == {"happy", "wistful"}
    assert normalize_set(["happy", "happiness", "glad"]) == {"happy"}
    assert parse_emotions("wistful") == set()  # free text: table words only
    assert parse_emotions("elated", {**OV_SYNONYMS, "elated": "excited"}) == {"excited"}


def test_parse_openset_cell():
    assert parse_openset_cell("['happy', 'calm']") == ["happy", "calm"]
    assert parse_openset_cell("('calm',)") == ["calm"]
    assert parse_openset_cell("happy, calm ,") == ["happy", "calm"]
    assert parse_openset_cell("") == [] and parse_openset_cell("[]") == []
    with pytest.raises(ValueError, match="not a list of strings"):
        parse_openset_cell("[1, 2]")
    with pytest.raises(ValueError, match="not a list of strings"):
        parse_openset_cell("['unclosed'")


def test_set_scores():
    assert set_scores({"happy"}, {"happy"}) == (1.0, 1.0, 1.0)
    assert set_scores({"happy", "excited"}, {"happy"}) == (0.5, 1.0, pytest.approx(2 / 3))
    assert set_scores(set(), {"happy"}) == (0.0, 0.0, 0.0)
    assert set_scores({"sad"}, {"happy"}) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        set_scores({"happy"}, set())


def test_ov_scores_hand_computed():
    golds = [{"happy"}, {"happy", "excited"}, {"sad"}, set()]
    preds = [{"happy", "sad"}, {"excited"}, set(), {"happy"}]
    s = ov_scores(preds, golds)
    # per sample (P, R): (1/2, 1), (1, 1/2), (0, 0); the 4th is skipped (empty reference)
    assert s["n"] == 3 and s["skipped"] == 1 and s["empty_pred"] == 1
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(0.5)
    assert s["f1"] == pytest.approx(0.5)
    assert s["sample_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert s["mer_ov"] == pytest.approx(0.5)
    assert s["hit_rate"] == pytest.approx(2 / 3)
    assert ov_scores([], [])["n"] == 0
    with pytest.raises(ValueError):
        ov_scores([set()], [])
