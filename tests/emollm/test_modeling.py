"""The model contract: splice, parity, count checks, missing modalities, every backbone end to end."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from emollm.backbones import list_backbones
from emollm.model.processing import IGNORE_INDEX, Sample

from .conftest import make_tiny

#: model_type -> the causal-LM class transformers builds for it (every registry family).
FAMILY_CLASS = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def sample(face=True, audio=True, video=True, frames=3, answer="The person looks happy.", name="s"):
    feats = {
        "audio": torch.randn(frames, 24) if audio else None,
        "face": torch.randn(1, 16) if face else None,
        "video": torch.randn(frames + 2, 20) if video else None,
    }
    return Sample(
        messages=[
            {"role": "user", "content": "<video> <face> <audio> The person says: I passed! Which emotion is shown?"},
            {"role": "assistant", "content": answer},
        ],
        features=feats,
        name=name,
    )


@pytest.mark.parametrize("backbone", list_backbones())
def test_every_backbone_trains_and_generates(backbone):
    model, proc = make_tiny(backbone)
    assert type(model.language_model).__name__ == FAMILY_CLASS[model.config.text_config["model_type"]]
    batch = proc([sample(), sample(face=False, frames=5)])
    out = model(**batch.model_inputs())
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for m in ("audio", "face", "video"):
        grads = [p.grad for p in model.projectors[m].parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), m
    gen = proc([sample(), sample(audio=False)], add_generation_prompt=True, padding_side="left")
    new = model.generate(
        gen.input_ids,
        gen.attention_mask,
        gen.modality_inputs,
        max_new_tokens=6,
        do_sample=False,
        eos_token_id=proc.stop_token_ids(),
        pad_token_id=proc.tokenizer.pad_token_id,
    )
    assert new.shape[0] == 2 and 1 <= new.shape[1] <= 6
    assert not set(new.flatten().tolist()) & set(proc.placeholder_ids.values())


def test_text_only_logits_equal_bare_hf_model():
    model, proc = make_tiny("llama2")
    bare = AutoModelForCausalLM.from_config(model.language_model.config)
    bare.load_state_dict(model.language_model.state_dict())
    text = Sample(
        messages=[{"role": "user", "content": "How does she feel?"}, {"role": "assistant", "content": "Sad."}]
    )
    batch = proc([text])
    assert not batch.modality_inputs
    ours = model(batch.input_ids, batch.attention_mask).logits
    ref = bare(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert torch.equal(ours, ref)


def test_placeholder_expansion_counts_and_labels():
    model, proc = make_tiny("llama2")
    s = sample(frames=4)
    batch = proc([s])
    ids = batch.input_ids[0]
    for m, feats in s.features.items():
        n = int((ids == proc.placeholder_ids[m]).sum())
        assert n == model.num_tokens(m, feats.shape[0])
    assert int((ids == proc.placeholder_ids["video"]).sum()) == 2  # attn_pool with 2 queries
    assert int((ids == proc.placeholder_ids["audio"]).sum()) == 4  # linear: one token per frame
    labels = batch.labels[0]
    trained = proc.tokenizer.decode(labels[labels != IGNORE_INDEX])
    assert trained.strip().startswith("The person looks happy.")
    assert (labels[torch.isin(ids, torch.tensor(list(proc.placeholder_ids.values())))] == IGNORE_INDEX).all()


def test_missing_modality_spends_no_tokens():
    model, proc = make_tiny("llama2")
    batch = proc([sample(face=False)])
    assert int((batch.input_ids == proc.placeholder_ids["face"]).sum()) == 0
    assert "face" not in batch.modality_inputs
    assert torch.isfinite(model(**batch.model_inputs()).loss)


def test_mismatched_counts_raise_with_both_counts():
    model, proc = make_tiny("llama2")
    batch = proc([sample()])
    ids = batch.input_ids.clone()
    audio_pos = (ids[0] == proc.placeholder_ids["audio"]).nonzero()[0, 0]
    ids[0, audio_pos] = proc.tokenizer.pad_token_id
    with pytest.raises(ValueError, match=r"audio placeholder tokens and features do not match: tokens: 2, features: 3"):
        model(ids, batch.attention_mask, modality_inputs=batch.modality_inputs)
    no_feats = {k: v for k, v in batch.modality_inputs.items() if k != "face"}
    with pytest.raises(ValueError, match=r"face placeholder tokens and features do not match: tokens: 1, features: 0"):
        model(batch.input_ids, batch.attention_mask, modality_inputs=no_feats)


def test_per_sample_mismatch_is_caught_even_when_totals_agree():
    model, proc = make_tiny("llama2")
    batch = proc([sample(frames=2), sample(frames=4)])
    inputs = batch.modality_inputs["audio"]
    swapped = type(inputs)(inputs.features, inputs.lengths.flip(0), inputs.sample_index)
    mods = dict(batch.modality_inputs, audio=swapped)
    with pytest.raises(ValueError, match="first mismatch in batch row 0"):
        model(batch.input_ids, batch.attention_mask, modality_inputs=mods)


def test_features_without_placeholder_are_an_error():
    _, proc = make_tiny("llama2")
    s = Sample(messages=[{"role": "user", "content": "hello"}], features={"audio": torch.randn(2, 24)}, name="x")
    with pytest.raises(ValueError, match=r"no user turn refers to them; add <audio>"):
        proc([s], add_generation_prompt=True)


def test_batching_does_not_change_a_sample():
    model, proc = make_tiny("qwen2")
    model.eval()
    a, b = sample(frames=2, name="a"), sample(face=False, frames=6, answer="Angry, clearly angry.", name="b")
    alone = proc([a])
    both = proc([b, a])
    la = model(**alone.model_inputs()).logits[0]
    n = alone.input_ids.shape[1]
    lb = model(**both.model_inputs()).logits[1, :n]
    torch.testing.assert_close(la, lb, rtol=1e-4, atol=1e-4)


def test_typed_parts_equal_markers():
    _, proc = make_tiny("llama3")
    feats = {"audio": torch.randn(2, 24)}
    typed = Sample(
        messages=[{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": " Emotion?"}]}],
        features=feats,
    )
    marked = Sample(messages=[{"role": "user", "content": "<audio> Emotion?"}], features=feats)
    assert torch.equal(
        proc([typed], add_generation_prompt=True).input_ids, proc([marked], add_generation_prompt=True).input_ids
    )


def test_fusion_qformer_and_type_embeddings_train():
    from emollm.model.configuration import ModalityConfig, ProjectorConfig

    mods = {
        "audio": ModalityConfig(
            feature_dim=24, projector=ProjectorConfig(kind="qformer", num_queries=3, num_heads=2, hidden_dim=32)
        ),
        "video": ModalityConfig(feature_dim=20, projector=ProjectorConfig(kind="linear", merge=2)),
    }
    model, proc = make_tiny(
        "mistral", modalities=mods, fusion={"pairs": [("audio", "video")], "fusion_dim": 16, "num_heads": 2}
    )
    s = Sample(
        messages=[{"role": "user", "content": "<audio><video> Emotion?"}, {"role": "assistant", "content": "Fear."}],
        features={"audio": torch.randn(7, 24), "video": torch.randn(5, 20)},
    )
    batch = proc([s])
    assert int((batch.input_ids == proc.placeholder_ids["video"]).sum()) == 3  # ceil(5 / 2)
    assert int((batch.input_ids == proc.placeholder_ids["audio"]).sum()) == 3
    out = model(**batch.model_inputs())
    out.loss.backward()
    assert model.fusion is not None and any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in model.fusion.parameters()
    )
    assert model.modality_embedding.weight.grad.abs().sum() > 0


def test_truncation_never_cuts_modality_tokens():
    _, proc = make_tiny("llama2")
    with pytest.raises(ValueError, match="would cut modality tokens"):
        proc([sample(frames=3)], max_length=5)


def test_frozen_towers_stay_in_eval_mode():
    from torch import nn

    from emollm.model.lora import TrainableSpec, set_trainable

    model, _ = make_tiny("llama2")
    model.towers["audio"].probe = nn.Dropout(0.5)  # a parameter-free module: frozen by definition
    model.towers["face"].lin = nn.Linear(2, 2)
    set_trainable(model, TrainableSpec(encoders=False, llm="frozen"))
    model.train()
    assert model.projectors.training and model.language_model.training
    assert not model.towers["face"].training and not model.towers["audio"].training
    set_trainable(model, TrainableSpec(encoders=True, llm="frozen"))
    model.train()
    assert model.towers["face"].training


def test_truncation_that_removes_the_whole_answer_is_an_error():
    _, proc = make_tiny("llama2")
    text_only = Sample(
        messages=[{"role": "user", "content": "word " * 60}, {"role": "assistant", "content": "Sad."}], name="long"
    )
    with pytest.raises(ValueError, match="cuts off its whole answer"):
        proc([text_only], max_length=20)
    assert proc([text_only], add_generation_prompt=False, max_length=400).labels.ne(-100).any()
