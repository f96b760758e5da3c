"""Emotion probabilities from a generative model: score every candidate answer, normalise over the label set.

Free text is what the model writes; probabilities are what a classifier user wants. For a question whose answer
template is e.g. ``"The emotion is {label}."``, the model's log-likelihood of each filled-in answer (summed over the
answer tokens, end-of-turn included) is a score per label; a softmax over the labels turns the scores into a
distribution. One batched forward pass per sample (one row per label), through the same processor and merge routine
as training and generation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from emollm.model.modeling import EmoLLMForCausalLM
from emollm.model.processing import IGNORE_INDEX, EmoProcessor, Sample

DEFAULT_ANSWER = "The emotion is {label}."


@torch.no_grad()
def label_log_likelihoods(
    model: EmoLLMForCausalLM,
    processor: EmoProcessor,
    sample: Sample,
    labels: Sequence[str],
    *,
    answer_template: str = DEFAULT_ANSWER,
) -> torch.Tensor:
    """Summed log-probability of each label's answer given ``sample`` (whose conversation ends in a user turn).

    Returns:
        (L,) tensor, one entry per label.
    """
    if not sample.messages or sample.messages[-1]["role"] != "user":
        raise ValueError("the conversation to score must end with a user turn")
    if "{label}" not in answer_template:
        raise ValueError(f"answer_template must contain '{{label}}', got {answer_template!r}")
    rows = [
        Sample(
            messages=[*sample.messages, {"role": "assistant", "content": answer_template.format(label=label)}],
            features=sample.features,
            name=sample.name,
        )
        for label in labels
    ]
    batch = processor(rows).to(model.get_input_embeddings().weight.device)
    logits = model(batch.input_ids, batch.attention_mask, modality_inputs=batch.modality_inputs).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (L, T-1, V): position t predicts token t+1
    targets = batch.labels[:, 1:]  # (L, T-1)
    mask = targets != IGNORE_INDEX
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (L, T-1)
    return (picked * mask).sum(dim=1)


def label_probabilities(
    model: EmoLLMForCausalLM,
    processor: EmoProcessor,
    sample: Sample,
    labels: Sequence[str],
    *,
    answer_template: str = DEFAULT_ANSWER,
) -> dict[str, float]:
    """``{label: probability}`` over ``labels`` (sums to 1), from the answers' log-likelihoods."""
    scores = label_log_likelihoods(model, processor, sample, labels, answer_template=answer_template)
    probs = torch.softmax(scores, dim=0)
    return {label: float(p) for label, p in zip(labels, probs, strict=True)}
