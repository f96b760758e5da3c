"""Batched (left-padded) generation equals one-by-one; streaming equals batched; stop at end of turn."""

from __future__ import annotations

import torch

from emollm.model.generation import chat, stream_chat
from emollm.model.processing import Sample

from .conftest import make_tiny


def _questions(n):
    g = torch.Generator().manual_seed(7)
    out = []
    for i in range(n):
        feats = {
            "audio": torch.randn(1 + i % 4, 24, generator=g),
            "face": torch.randn(1, 16, generator=g),
            "video": None if i % 3 == 0 else torch.randn(2 + i, 20, generator=g),
        }
        text = "<audio><face><video> " + "Which emotion? " * (1 + i % 3)
        out.append(Sample(messages=[{"role": "user", "content": text}], features=feats, name=f"q{i}"))
    return out


def test_batched_equals_sequential_and_stream():
    model, proc = make_tiny("llama3")
    model.eval()
    qs = _questions(5)
    batched = chat(model, proc, qs, max_new_tokens=8, batch_size=5)
    single = [chat(model, proc, [q], max_new_tokens=8)[0] for q in qs]
    assert batched == single
    streamed = "".join(stream_chat(model, proc, qs[1], max_new_tokens=8)).strip()
    assert streamed == single[1]


def test_generation_stops_at_end_of_turn():
    from transformers import LogitsProcessor, LogitsProcessorList

    model, proc = make_tiny("smollm2")
    model.eval()
    eot = proc.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert eot in proc.stop_token_ids()

    class ForceAfterTwo(LogitsProcessor):  # two free tokens, then the end-of-turn token
        def __call__(self, input_ids, scores):
            if input_ids.shape[1] >= 2:
                scores = torch.full_like(scores, -float("inf"))
                scores[:, eot] = 0
            return scores

    batch = proc(_questions(2), add_generation_prompt=True, padding_side="left")
    new = model.generate(
        batch.input_ids,
        batch.attention_mask,
        batch.modality_inputs,
        max_new_tokens=10,
        eos_token_id=proc.stop_token_ids(),
        pad_token_id=proc.tokenizer.pad_token_id,
        logits_processor=LogitsProcessorList([ForceAfterTwo()]),
    )
    assert new.shape[1] == 3 and (new[:, -1] == eot).all()


def test_placeholder_ids_are_never_generated():
    from transformers import LogitsProcessor, LogitsProcessorList

    model, proc = make_tiny("llama2")
    model.eval()
    ids = sorted(proc.placeholder_ids.values())

    class PreferPlaceholders(LogitsProcessor):  # without suppression, every step would pick a placeholder
        def __call__(self, input_ids, scores):
            scores[:, ids] += 1e4
            return scores

    batch = proc(_questions(3), add_generation_prompt=True, padding_side="left")
    new = model.generate(
        batch.input_ids,
        batch.attention_mask,
        batch.modality_inputs,
        max_new_tokens=5,
        do_sample=False,
        pad_token_id=proc.tokenizer.pad_token_id,
        logits_processor=LogitsProcessorList([PreferPlaceholders()]),
    )
    assert new.numel() and not set(new.flatten().tolist()) & set(ids)
