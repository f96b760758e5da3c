"""emollm.labels: free-text answers -> one label, or invalid; the label sets."""

import pytest

from emollm.labels import DEFAULT_SYNONYMS, LabelParser, ParseResult

DFEW = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]
MER2023 = ["neutral", "angry", "happy", "sad", "worried", "surprise"]
MERR = ["neutral", "angry", "happy", "sad", "worried", "surprise", "fear", "contempt", "doubt"]


@pytest.fixture(scope="module")
def dfew() -> LabelParser:
    return LabelParser(DFEW)


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("happy", "happy"),
        ("The emotion is happy.", "happy"),  # Emotion-LLaMA's answer form
        ("  HAPPY!!! ", "happy"),
        ("Happy", "happy"),
        ("the person feels joy", "happy"),
        ("Joyful", "happy"),
        ("happiness", "happy"),
        ("He is very angry, shouting.", "angry"),
        ("anger", "angry"),
        ("mad", "angry"),
        ("sorrow", "sad"),
        ("She looks unhappy", "sad"),  # "unhappy" is a word of its own, a synonym of sad, never "happy"
        ("surprised", "surprise"),
        ("astonished!", "surprise"),
        ("scared", "fear"),
        ("afraid", "fear"),
        ("fearful", "fear"),
        ("disgusted", "disgust"),
        ("calm", "neutral"),
        ("emotion: [neutral]", "neutral"),
        ('"sad"', "sad"),
        ("happy, happy and joyful", "happy"),  # one label mentioned several times is still one label
        ("not happy", "happy"),  # negation is out of scope (documented)
    ],
)
def test_valid_answers(dfew: LabelParser, text: str, label: str) -> None:
    result = dfew.parse(text)
    assert result == ParseResult(label, (label,), "ok")
    assert result.valid


@pytest.mark.parametrize(
    ("text", "candidates"),
    [
        ("happy or sad", ("happy", "sad")),
        ("Sad, but also a bit angry.", ("sad", "angry")),
        ("joy and anger", ("happy", "angry")),
        ("surprised and scared and sad", ("surprise", "fear", "sad")),
    ],
)
def test_several_labels_are_invalid(dfew: LabelParser, text: str, candidates: tuple[str, ...]) -> None:
    result = dfew.parse(text)
    assert result.label is None and not result.valid
    assert result.candidates == candidates
    assert result.reason == "several labels: " + ", ".join(candidates)


@pytest.mark.parametrize("text", ["", "   ", None, "...", "\n"])
def test_empty_answer_is_invalid(dfew: LabelParser, text: str | None) -> None:
    result = dfew.parse(text)
    assert result.label is None and result.candidates == ()
    assert result.reason.startswith("no label")


@pytest.mark.parametrize("text", ["I cannot tell.", "happyish", "unhappyness", "sadden", "surprises", "feared"])
def test_no_label_is_invalid(dfew: LabelParser, text: str) -> None:
    assert dfew.parse(text) == ParseResult(None, (), "no label")


def test_word_boundaries_do_not_match_inside_words(dfew: LabelParser) -> None:
    assert dfew.parse("madness").label is None  # not "mad"
    assert dfew.parse("saddle").label is None  # not "sad"
    assert dfew.parse("happy-go-lucky").label == "happy"  # hyphens separate words


def test_synonyms_of_labels_outside_the_set_are_ignored() -> None:
    mer = LabelParser(MER2023)
    assert mer.parse("fear").label is None  # not a MER2023 class, and not forced onto "worried"
    assert mer.parse("scared").reason == "no label"
    assert mer.parse("anxious").label == "worried"
    assert mer.parse("disgusted").label is None
    merr = LabelParser(MERR)
    assert merr.parse("doubtful").label == "doubt"
    assert merr.parse("contemptuous").label == "contempt"
    assert merr.parse("scared").label == "fear"


def test_label_spelling_and_case_are_kept() -> None:
    parser = LabelParser(["Happy", "Sad"])
    assert parser.parse("joy").label == "Happy"
    assert parser.parse("SAD").label == "Sad"


def test_custom_and_multiword_synonyms() -> None:
    parser = LabelParser(["happy", "sad"], synonyms={**DEFAULT_SYNONYMS, "on cloud nine": "happy", "blue": "sad"})
    assert parser.parse("She is on cloud nine.").label == "happy"
    assert parser.parse("feeling blue").label == "sad"
    assert parser.parse("cloud").label is None
    only = LabelParser(["happy", "sad"], synonyms={"glad": "happy"})  # replaces the default table
    assert only.parse("glad").label == "happy"
    assert only.parse("joy").label is None
    assert only("sad").label == "sad"  # __call__
    assert [r.label for r in only.parse_many(["glad", "x"])] == ["happy", None]


@pytest.mark.parametrize(
    ("labels", "synonyms", "match"),
    [
        ([], None, "at least one label"),
        (["happy", "HAPPY"], None, "duplicate label"),
        (["..."], None, "no letters"),
        (["happy", "sad"], {"sad": "happy"}, "clashes with label 'sad'"),
        (["happy"], {"!!": "happy"}, "no letters"),
    ],
)
def test_bad_configuration_raises(labels: list[str], synonyms: dict | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LabelParser(labels, synonyms)


def test_default_table_targets_known_labels_and_has_no_label_surface_forms() -> None:
    known = set(MERR) | set(DFEW)
    assert set(DEFAULT_SYNONYMS.values()) <= known
    assert not set(DEFAULT_SYNONYMS) & known
    assert all(s == s.lower().strip() for s in DEFAULT_SYNONYMS)
    LabelParser(sorted(known))  # no clashes
