"""emollm_merr.filter: contradiction check, dedup, seeded balancing / neutral choice, confidence scores."""

from __future__ import annotations

import pytest

from emollm.apps.reasoning import check_reasoning
from emollm.data.merr_schema import LABELS
from emollm_merr.filter import (
    balance,
    dedup_key,
    label_confidence,
    sample_confidence,
    select_neutral,
)


@pytest.mark.parametrize(
    ("text", "label", "status", "concluded"),
    [
        ("The wide smile shows she is joyful. She feels happy.", "happy", "consistent", ("happy",)),
        ("Her cheeks rise; overall the person is delighted.", "happy", "consistent", ("happy",)),  # synonym
        ("She looks sad at first. In the end she is furious.", "sad", "contradiction", ("angry",)),
        ("She is not angry but happy.", "happy", "mixed", ("angry", "happy")),
        ("The brows are lowered and the voice is loud.", "angry", "missing_label", ()),
        ("He is scared and afraid. Therefore he feels fear.", "fear", "consistent", ("fear",)),
        ("She seems unhappy.", "happy", "missing_label", ("sad",)),  # whole words: unhappy is sad, not happy
        ("   ", "happy", "empty", ()),
    ],
)
def test_check_reasoning(text, label, status, concluded):
    c = check_reasoning(text, label, LABELS)
    assert (c.status, c.concluded) == (status, concluded)
    assert c.ok == (status in ("consistent", "mixed"))


def test_issue_texts():
    assert check_reasoning("He is sad. He is angry.", "sad", LABELS).issue == "contradiction: concludes angry"
    assert check_reasoning("He is happy.", "happy", LABELS).issue == ""
    assert check_reasoning("No clue.", "happy", LABELS).issue == "missing_label"


def test_dedup_key_normalises_case_space_and_punctuation():
    assert dedup_key("She feels HAPPY!  Really.") == dedup_key("she feels happy really") != dedup_key("she feels sad")


def test_balance_and_neutral_choice_are_seeded_and_order_free():
    by_label = {"happy": [f"h{i}" for i in range(10)], "sad": ["s1", "s2"]}
    dropped = balance(by_label, 3, seed=0)
    assert len(dropped) == 7 and not dropped & {"s1", "s2"}
    assert balance({"happy": list(reversed(by_label["happy"])), "sad": ["s2", "s1"]}, 3, seed=0) == dropped
    assert balance(by_label, 3, seed=1) != dropped and balance(by_label, None, 0) == set()
    chosen = select_neutral([f"n{i}" for i in range(20)], 4, seed=0)
    assert chosen == sorted(chosen) and len(chosen) == 4
    assert select_neutral(reversed([f"n{i}" for i in range(20)]), 4, seed=0) == chosen
    assert select_neutral(["a"], 5, 0) == ["a"] and select_neutral(["a"], 0, 0) == []


def test_confidence_formulas():
    one = {"au_source": "openface", "threshold": 0.8, "candidates": [{"score": 2.4}]}
    assert label_confidence(one, "openface") == pytest.approx(1.0)
    close = {"au_source": "openface", "threshold": 0.8, "candidates": [{"score": 1.6}, {"score": 1.5}]}
    assert label_confidence(close, "openface") == pytest.approx(0.5 * 1.6 / 2.4 + 0.5 * 0.1 / 0.8)
    fer = {"au_source": "fer", "fer": {"peak_probs": {"happy": 0.7, "neutral": 0.2, "sad": 0.1}}}
    assert label_confidence(fer, "fer") == pytest.approx(0.5 * 0.7 + 0.5 * 0.5)
    assert label_confidence(one, "review") == 1.0 and label_confidence({}, "neutral_added") == 0.5
    assert sample_confidence(1.0, "consistent", 3) == 1.0
    assert sample_confidence(1.0, "consistent", 0) == 0.7
    assert sample_confidence(1.0, "mixed", 3) == 0.6 and sample_confidence(1.0, "contradiction", 3) == 0.0
    assert sample_confidence(0.5, None, 3) == 0.4  # no reasoning generated


def test_check_quality_flags_loops_and_cut_text():
    from emollm.apps.reasoning import check_quality

    loop = "Inner brow raiser: surprise - Outer brow raiser: surprise. " * 3
    assert check_quality(loop) == "repetitive"
    assert check_quality("The person in the video seems happy. The person in the video seems calm.") is None
    assert check_quality("She smiles, so she feels happy and the emotional") == "truncated"
    assert check_quality('She says "I did it!"') is None and check_quality("Happy (smiling).") is None
