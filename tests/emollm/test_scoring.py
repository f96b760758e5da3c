"""Label probabilities from answer log-likelihoods."""

from __future__ import annotations

import pytest
import torch

from emollm.model.likelihood import label_log_likelihoods, label_probabilities
from emollm.model.processing import Sample

from .conftest import make_tiny

LABELS = ["happy", "sad", "angry"]


def _question():
    g = torch.Generator().manual_seed(0)
    return Sample(
        messages=[{"role": "user", "content": "<audio><face> Which emotion?"}],
        features={"audio": torch.randn(2, 24, generator=g), "face": torch.randn(1, 16, generator=g)},
    )


def test_scores_equal_the_training_loss_of_each_answer():
    model, proc = make_tiny("llama2")
    model.eval()
    q = _question()
    scores = label_log_likelihoods(model, proc, q, LABELS)
    for label, score in zip(LABELS, scores, strict=True):
        full = Sample(
            messages=[*q.messages, {"role": "assistant", "content": f"The emotion is {label}."}], features=q.features
        )
        batch = proc([full])
        with torch.no_grad():
            loss = model(**batch.model_inputs()).loss  # mean NLL over the answer tokens
        n = int((batch.labels[0, 1:] != -100).sum())
        torch.testing.assert_close(score, -loss * n, rtol=1e-4, atol=1e-4)


def test_probabilities_are_a_distribution_and_follow_the_scores():
    model, proc = make_tiny("qwen2")
    model.eval()
    probs = label_probabilities(model, proc, _question(), LABELS)
    assert list(probs) == LABELS and abs(sum(probs.values()) - 1) < 1e-6
    scores = label_log_likelihoods(model, proc, _question(), LABELS)
    assert max(probs, key=probs.get) == LABELS[int(scores.argmax())]


def test_bad_inputs():
    model, proc = make_tiny("llama2")
    done = Sample(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])
    with pytest.raises(ValueError, match="must end with a user turn"):
        label_probabilities(model, proc, done, LABELS)
    with pytest.raises(ValueError, match="must contain"):
        label_probabilities(model, proc, _question(), LABELS, answer_template="no slot")
