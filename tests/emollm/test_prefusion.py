"""The fused ``multi`` slot (AffectGPT's pre-LLM attention fusion) and AffectGPT's attention pooling over time.

Every expected value is computed here from the released formulas with plain tensor algebra on the modules' weights
(time means, per-source linears, ``fc_att(attention_mlp(concat))`` as unnormalised weights, ``sum_t (w.h_t+b) h_t``),
never by calling the modules under test.
"""

from __future__ import annotations

import pytest
import torch

from emollm.model.configuration import EmoLLMConfig, ModalityConfig, PreFusionConfig, ProjectorConfig
from emollm.model.processing import Sample
from emollm.model.projectors import PreFusion, build_projector
from tests.emollm.conftest import make_tiny

FACE, AUDIO, WIDTH = 16, 24, 20


def fused_modalities(pool: str = "affectgpt_attn_pool") -> dict[str, ModalityConfig]:
    return {
        "face": ModalityConfig(feature_dim=FACE, projector=ProjectorConfig(kind=pool)),
        "audio": ModalityConfig(feature_dim=AUDIO, projector=ProjectorConfig(kind=pool)),
        "multi": ModalityConfig(feature_dim=WIDTH, fuse=PreFusionConfig(sources=["face", "audio"])),
    }


def lin(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ layer.weight.T + layer.bias


# ----------------------------------------------------------------------------------------------------- projectors


def test_affectgpt_attention_pooling_is_the_unnormalised_weighted_sum():
    torch.manual_seed(0)
    proj = build_projector("affectgpt_attn_pool", 6, 5)
    x = torch.randn(2, 4, 6)
    lengths = torch.tensor([4, 2])
    garbage = x.clone()
    garbage[1, 2:] = float("nan")  # padding never leaks, even NaN
    tokens, token_lengths = proj(garbage, lengths)
    assert tokens.shape == (2, 1, 5) and token_lengths.tolist() == [1, 1] and proj.num_tokens(7) == 1
    for b, n in enumerate(lengths.tolist()):
        h = x[b, :n]
        scores = h @ proj.score.weight[0] + proj.score.bias[0]  # (n,): no softmax
        pooled = (scores[:, None] * h).sum(0)
        torch.testing.assert_close(tokens[b, 0], lin(proj.proj, pooled))
    # No normalisation over time: scaling every frame by c scales the pooled vector quadratically (w.h scales by c)
    # once the bias is zero, which a softmax (convex combination) could never do.
    with torch.no_grad():
        proj.score.bias.zero_()
    one = proj(x[:1], lengths[:1])[0] - proj.proj.bias
    three = proj(3 * x[:1], lengths[:1])[0] - proj.proj.bias
    torch.testing.assert_close(three, 9 * one, rtol=1e-4, atol=1e-5)


def test_affectgpt_pool_refuses_merge_and_queries():
    with pytest.raises(ValueError, match="merge=2 applies only"):
        build_projector("affectgpt_attn_pool", 4, 4, merge=2)
    with pytest.raises(ValueError, match="num_queries=2"):
        build_projector("affectgpt_attn_pool", 4, 4, num_queries=2)


def test_prefusion_matches_the_released_formula():
    torch.manual_seed(1)
    fuse = PreFusion({"video": 6, "audio": 8}, 5)
    v, a = torch.randn(3, 4, 6), torch.randn(3, 7, 8)
    lv, la = torch.tensor([4, 1, 3]), torch.tensor([7, 7, 2])
    out = fuse({"video": v, "audio": a}, {"video": lv, "audio": la})
    assert out.shape == (3, 1, 5)
    for b in range(3):
        vp = lin(fuse.embed["video"], v[b, : lv[b]].mean(0))  # multi_video_embs(mean_t V)
        ap = lin(fuse.embed["audio"], a[b, : la[b]].mean(0))  # multi_audio_embs(mean_t A)
        att = lin(fuse.fc_att, lin(fuse.attention_mlp, torch.cat([vp, ap])))  # [a0, a1], no softmax
        torch.testing.assert_close(out[b, 0], att[0] * vp + att[1] * ap)
    # The weights are the raw fc_att outputs: they need not sum to 1 and may be negative.
    with torch.no_grad():
        fuse.fc_att.weight.zero_()
        fuse.fc_att.bias.copy_(torch.tensor([-2.0, 3.0]))
    out = fuse({"video": v, "audio": a}, {"video": lv, "audio": la})
    vp = lin(fuse.embed["video"], v[0, :4].mean(0))
    ap = lin(fuse.embed["audio"], a[0].mean(0))
    torch.testing.assert_close(out[0, 0], -2 * vp + 3 * ap)


def test_prefusion_shapes_are_checked():
    fuse = PreFusion({"video": 6, "audio": 8}, 5)
    with pytest.raises(ValueError, match="source 'audio' must be"):
        fuse({"video": torch.randn(1, 2, 6), "audio": torch.randn(1, 2, 7)}, {"video": torch.tensor([2]),
             "audio": torch.tensor([2])})  # fmt: skip
    with pytest.raises(ValueError, match="two or more"):
        PreFusion({"video": 6}, 5)


# ----------------------------------------------------------------------------------------------------- config


def test_config_rules_for_the_fused_slot():
    text = {"model_type": "llama", "hidden_size": 64}
    with pytest.raises(ValueError, match=r"modalities.multi: the 'multi' slot is computed from other modalities"):
        EmoLLMConfig("llama2", text, {"face": {}, "multi": {}})
    with pytest.raises(ValueError, match=r"modalities.face.fuse: only a fused slot"):
        EmoLLMConfig("llama2", text, {"face": {"fuse": {"sources": ["face", "audio"]}}, "audio": {}})
    with pytest.raises(ValueError, match=r"names 'video', which is not a configured modality"):
        EmoLLMConfig("llama2", text, {"face": {}, "multi": {"fuse": {"sources": ["face", "video"]}}})
    with pytest.raises(ValueError, match=r"two or more different"):
        EmoLLMConfig("llama2", text, {"face": {}, "multi": {"fuse": {"sources": ["face", "face"]}}})
    with pytest.raises(ValueError, match=r"multi.fuse.kind: unknown kind 'qformer'"):
        EmoLLMConfig("llama2", text, {"face": {}, "audio": {}, "multi": {"fuse": {"sources": ["face", "audio"],
                     "kind": "qformer"}}})  # fmt: skip
    with pytest.raises(ValueError, match=r"has no encoder of its own"):
        EmoLLMConfig("llama2", text, {"face": {}, "audio": {}, "multi": {"encoder": "clip",
                     "fuse": {"sources": ["face", "audio"]}}})  # fmt: skip
    cfg = EmoLLMConfig("llama2", text, {"face": {}, "audio": {}, "multi": {"fuse": {"sources": ["face", "audio"]}}})
    assert cfg.modalities["multi"].encoder == "fused" and cfg.fused_sources() == {"multi": ["face", "audio"]}
    again = EmoLLMConfig.from_dict(cfg.to_dict())  # a saved config reloads
    assert again.fused_sources() == {"multi": ["face", "audio"]}


# ----------------------------------------------------------------------------------------------------- the model


def reference_tokens(model, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-slot LLM-width tokens of one sample, by hand from the weights (precomputed towers are identities)."""
    out = {}
    for m in ("face", "audio"):
        p = model.projectors[m]
        h = feats[m]
        pooled = ((h @ p.score.weight[0] + p.score.bias[0])[:, None] * h).sum(0)
        out[m] = lin(p.proj, pooled)
    fuse = model.fusers["multi"]
    fp = lin(fuse.embed["face"], feats["face"].mean(0))
    ap = lin(fuse.embed["audio"], feats["audio"].mean(0))
    att = lin(fuse.fc_att, lin(fuse.attention_mlp, torch.cat([fp, ap])))
    out["multi"] = lin(model.projectors["multi"].proj[1], att[0] * fp + att[1] * ap)
    return out


@pytest.mark.parametrize("backbone", ["llama3", "qwen2"])
def test_multi_token_is_spliced_where_its_marker_is(backbone):
    torch.manual_seed(0)
    model, processor = make_tiny(backbone, fused_modalities(), modality_type_embeddings=False)
    model.eval()
    g = torch.Generator().manual_seed(2)
    feats = {"face": torch.randn(3, FACE, generator=g), "audio": torch.randn(5, AUDIO, generator=g)}
    sample = Sample([{"role": "user", "content": "<multi><audio><face> What is felt?"}], dict(feats))
    batch = processor([sample], add_generation_prompt=True)
    ids = batch.input_ids[0].tolist()
    ph = {m: processor.placeholder_ids[m] for m in ("multi", "audio", "face")}
    pos = {m: ids.index(t) for m, t in ph.items()}
    assert pos["multi"] + 1 == pos["audio"] and pos["audio"] + 1 == pos["face"]  # one token each, in prompt order
    with torch.no_grad():
        embeds = model.embed(batch.input_ids, batch.modality_inputs)
    ref = reference_tokens(model, feats)
    for m in ("multi", "audio", "face"):
        torch.testing.assert_close(embeds[0, pos[m]], ref[m], rtol=1e-5, atol=1e-5)


def test_slot_ablation_keeps_the_fused_token_computable():
    """Only <multi> in the prompt: face and audio features still feed it, but place no tokens of their own; a
    missing source removes the fused slot (no tokens, nothing zero-filled); a source never referenced and not
    needed is refused."""
    torch.manual_seed(0)
    model, processor = make_tiny("llama2", fused_modalities())
    g = torch.Generator().manual_seed(3)
    feats = {"face": torch.randn(2, FACE, generator=g), "audio": torch.randn(4, AUDIO, generator=g)}
    only = Sample([{"role": "user", "content": "<multi> hi"}, {"role": "assistant", "content": "ok"}], dict(feats))
    both = Sample([{"role": "user", "content": "<multi><face> hi"}, {"role": "assistant", "content": "ok"}],
                  {"face": feats["face"], "audio": None})  # fmt: skip
    batch = processor([only, both])
    mi = batch.modality_inputs
    assert mi["multi"].sample_index.tolist() == [0]  # row 1 lacks audio: no fused token there
    assert mi["face"].sample_index.tolist() == [0, 1] and mi["face"].placed.tolist() == [False, True]
    assert mi["audio"].sample_index.tolist() == [0] and mi["audio"].placed.tolist() == [False]
    counts = {m: (batch.input_ids == t).sum(1).tolist() for m, t in processor.placeholder_ids.items()}
    assert counts == {"face": [0, 1], "audio": [0, 0], "multi": [1, 0]}
    out = model(**batch.model_inputs())
    out.loss.backward()
    assert model.fusers["multi"].fc_att.weight.grad.abs().sum() > 0  # the fused path trains
    assert model.projectors["audio"].proj.weight.grad is None  # audio placed nowhere: its projector is unused
    # the fused token in row 0 equals the one computed with face and audio placed too
    model.eval()
    with torch.no_grad():
        alone = model.embed(batch.input_ids[:1], processor([only]).modality_inputs)
        ref = reference_tokens(model, feats)["multi"]
    pos = batch.input_ids[0].tolist().index(processor.placeholder_ids["multi"])
    torch.testing.assert_close(alone[0, pos], ref + model.modality_embedding.weight[-1], rtol=1e-5, atol=1e-5)
    stray = Sample([{"role": "user", "content": "<face> hi"}], dict(feats))  # audio feeds nothing here
    with pytest.raises(ValueError, match=r"has \['audio'\] features but no user turn refers to them"):
        processor([stray])


def test_fused_count_mismatch_raises():
    model, processor = make_tiny("llama2", fused_modalities())
    feats = {"face": torch.randn(2, FACE), "audio": torch.randn(2, AUDIO)}
    batch = processor([Sample([{"role": "user", "content": "<multi><face><audio> hi"}], feats)])
    del batch.modality_inputs["multi"]
    with pytest.raises(ValueError, match="multi placeholder tokens and features do not match: tokens: 1, features: 0"):
        model.embed(batch.input_ids, batch.modality_inputs)


def test_checkpoint_roundtrip_keeps_the_fusion(tmp_path):
    from emollm.checkpoints import load_model, save_checkpoint

    torch.manual_seed(0)
    model, processor = make_tiny("llama2", fused_modalities())
    with torch.no_grad():
        for p in model.fusers.parameters():
            p.add_(0.5)
    save_checkpoint(model, processor, tmp_path / "ckpt")
    loaded, proc2 = load_model(tmp_path / "ckpt")
    for (n, a), (_, b) in zip(model.fusers.state_dict().items(), loaded.fusers.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    feats = {"face": torch.randn(2, FACE), "audio": torch.randn(3, AUDIO)}
    sample = Sample([{"role": "user", "content": "<multi><face><audio> hi"}], feats)
    model.eval()
    with torch.no_grad():
        a = model(**processor([sample]).model_inputs()).logits
        b = loaded(**proc2([sample]).model_inputs()).logits
    torch.testing.assert_close(a, b)
