"""emollm.scoring.rewards: the GRPO reward registry, each reward's values, reward hacking, weighting."""

import pytest

from emollm.scoring.rewards import REWARDS, RewardSample, combine, extract_answer, list_rewards, register

LABELS = ("neutral", "angry", "happy", "sad", "worried", "surprise")
S = RewardSample(label="happy", labels=LABELS)


def test_registry():
    assert list_rewards() == ["accuracy", "format", "length", "ov_f1"]
    with pytest.raises(ValueError, match="already registered"):
        register("accuracy")(lambda c, s: 0.0)


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("happy", 1.0),
        ("The person feels joyful.", 1.0),  # synonym through LabelParser
        ("<think>she smiles</think><answer>happy</answer>", 1.0),
        ("<think>happy or sad?</think><answer>sad</answer>", 0.0),  # only the answer counts
        ("sad", 0.0),
        ("", 0.0),  # invalid
        ("happy or sad", 0.0),  # invalid: several labels
    ],
)
def test_accuracy(completion, expected):
    assert REWARDS["accuracy"](completion, S) == expected
    assert REWARDS["accuracy"](completion, RewardSample(label=None, labels=LABELS)) == 0.0


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<think>smile, bright voice</think><answer>happy</answer>", 1.0),
        ("  <think>a\nb</think>\n<answer>happy</answer>\n", 1.0),
        ("<think></think><answer>happy</answer>", 0.0),
        ("<think> </think><answer>happy</answer>", 0.0),
        ("<answer>happy</answer>", 0.0),
        ("<think>x</think><answer>happy</answer> and more", 0.0),
        ("happy", 0.0),
    ],
)
def test_format(completion, expected):
    assert REWARDS["format"](completion, S) == expected


def test_length_penalty():
    s = RewardSample(label="happy", labels=LABELS, length_budget=10)
    assert REWARDS["length"]("w " * 10, s) == 0.0
    assert REWARDS["length"]("w " * 15, s) == pytest.approx(-0.5)
    assert REWARDS["length"]("w " * 50, s) == -1.0


def test_ov_f1():
    assert REWARDS["ov_f1"]("happy", S) == 1.0
    assert REWARDS["ov_f1"]("happy and excited", S) == pytest.approx(2 / 3)
    assert REWARDS["ov_f1"]("not happy", S) == 0.0  # negation handled
    s = RewardSample(label="happy", labels=LABELS, openset=("joyful", "excited"))
    assert REWARDS["ov_f1"]("<answer>glad, thrilled</answer>", s) == 1.0


def test_listing_every_label_scores_low():
    hack = ", ".join(LABELS)
    assert REWARDS["accuracy"](hack, S) == 0.0
    assert REWARDS["ov_f1"](hack, S) < 0.3
    assert REWARDS["ov_f1"]("all of them: " + " ".join(LABELS + ("excited", "tired")), S) < 0.25
    weights = {"accuracy": 1.0, "ov_f1": 0.5, "format": 0.2}
    assert combine(hack, S, weights)[0] < combine("<think>x</think><answer>happy</answer>", S, weights)[0] / 4


def test_combine_and_extract():
    total, parts = combine("<think>x</think><answer>sad</answer>", S, {"accuracy": 2.0, "format": 0.5})
    assert parts == {"accuracy": 0.0, "format": 1.0} and total == 0.5
    with pytest.raises(KeyError, match="registered: accuracy"):
        combine("x", S, {"acuracy": 1.0})
    assert extract_answer("<answer>a</answer> <answer>b</answer>") == "b"
    assert extract_answer("plain") == "plain"
