"""Projectors, modality type embedding and cross-modal fusion: shapes, token counts, padding invariance, errors."""

import math

import pytest
import torch

from emollm.model.projectors import PROJECTOR_KINDS, CrossModalFusion, ModalityTypeEmbedding, build_projector

OUT = 32

# (id, kind, in_dim, kwargs); every kind, with merge (incl. partial last groups) and multi-query variants.
CASES = [
    ("identity", "identity", 32, {}),
    ("identity-merge2", "identity", 16, {"merge": 2}),
    ("linear", "linear", 24, {}),
    ("linear-merge4", "linear", 16, {"merge": 4}),
    ("mlp2x_gelu", "mlp2x_gelu", 48, {}),
    ("mlp2x_gelu-merge3", "mlp2x_gelu", 24, {"merge": 3, "hidden_dim": 40}),
    ("attn_pool", "attn_pool", 24, {"num_heads": 1}),
    ("attn_pool-4q", "attn_pool", 40, {"num_queries": 4, "num_heads": 4}),
    ("affectgpt_attn_pool", "affectgpt_attn_pool", 24, {}),  # sum_t (w.h_t + b) h_t, no softmax -> 1 token
    ("qformer", "qformer", 48, {"num_queries": 3, "num_layers": 2, "num_heads": 4}),
    ("qformer-hidden", "qformer", 16, {"num_queries": 2, "num_layers": 1, "num_heads": 4, "hidden_dim": 24}),
    ("emotion_llama_frame", "emotion_llama_frame", 16, {"merge": 4}),  # [CLS, patches] -> [patches/4..., CLS]
    ("emotion_llama_frame-merge1", "emotion_llama_frame", 8, {}),
]


@pytest.fixture(params=CASES, ids=[c[0] for c in CASES])
def case(request):
    _, kind, in_dim, kwargs = request.param
    return build_projector(kind, in_dim, OUT, **kwargs).eval(), kwargs


def _expected_k(kwargs, proj, T):
    if hasattr(proj, "cls_proj"):  # CLS + T - 1 patches
        return math.ceil((T - 1) / kwargs.get("merge", 1)) + 1
    if hasattr(proj, "score"):  # AffectGPT's attention pooling: one token
        return 1
    kind_is_query = hasattr(proj, "queries")
    return kwargs.get("num_queries", 1) if kind_is_query else math.ceil(T / kwargs.get("merge", 1))


def test_kinds_cover_cases():
    assert set(PROJECTOR_KINDS) == {c[1] for c in CASES}


@pytest.mark.parametrize("T", [1, 2, 5, 8])
def test_shapes_and_token_lengths(case, T):
    proj, kwargs = case
    lengths = torch.tensor([T, 1, max(1, T - 1)])
    tokens, token_lengths = proj(torch.randn(3, T, proj.in_dim), lengths)
    assert tokens.shape == (3, _expected_k(kwargs, proj, T), OUT)
    assert token_lengths.tolist() == [proj.num_tokens(n) for n in lengths.tolist()]
    assert tokens.shape[1] == proj.num_tokens(T)  # the longest sample fills the padded output
    assert torch.isfinite(tokens).all()


def test_num_tokens_matches_forward(case):
    proj, kwargs = case
    for n in range(1, 30):
        tokens, token_lengths = proj(torch.randn(1, n, proj.in_dim), torch.tensor([n]))
        assert tokens.shape[1] == token_lengths.item() == proj.num_tokens(n) == _expected_k(kwargs, proj, n)


def test_padding_invariance(case):
    """Garbage (huge values, NaN) beyond `lengths`, and extra padded frames, must not change valid tokens."""
    proj, _ = case
    lengths = torch.tensor([7, 1, 4, 5])
    x = torch.randn(4, 7, proj.in_dim)
    tokens, token_lengths = proj(x, lengths)

    garbage = torch.cat([x, torch.zeros(4, 6, proj.in_dim)], dim=1)  # (B, 7, D) -> (B, 13, D)
    pad = torch.arange(13)[None, :] >= lengths[:, None]
    garbage[pad] = 1e4 * torch.randn(int(pad.sum()), proj.in_dim)
    garbage[1, 3] = float("nan")
    tokens_g, token_lengths_g = proj(garbage, lengths)
    assert torch.equal(token_lengths, token_lengths_g)
    for b, n in enumerate(lengths.tolist()):
        k = token_lengths[b]
        torch.testing.assert_close(tokens_g[b, :k], tokens[b, :k])
        alone, _ = proj(x[b : b + 1, :n], torch.tensor([n]))  # same sample, no padding at all
        torch.testing.assert_close(alone[0], tokens[b, :k])


def test_gradients_reach_every_parameter_but_not_padding(case):
    proj, _ = case
    proj.train()
    x = torch.randn(3, 6, proj.in_dim, requires_grad=True)
    lengths = torch.tensor([6, 2, 5])
    tokens, token_lengths = proj(x, lengths)
    tokens.pow(2).sum().backward()
    for name, p in proj.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    pad = torch.arange(6)[None, :] >= lengths[:, None]
    assert x.grad[pad].abs().sum() == 0 and x.grad[~pad].abs().sum() > 0


def test_identity_dim_check():
    with pytest.raises(ValueError, match="in_dim"):
        build_projector("identity", 16, 32)
    assert build_projector("identity", 16, 32, merge=2).num_tokens(5) == 3


def test_unknown_kind_lists_known_kinds():
    with pytest.raises(ValueError, match="'mlp3x'") as err:
        build_projector("mlp3x", 16, 32)
    assert all(kind in str(err.value) for kind in PROJECTOR_KINDS)


@pytest.mark.parametrize(
    ("kind", "kwargs", "match"),
    [
        ("linear", {"in_dim": 0}, "in_dim"),
        ("linear", {"out_dim": -1}, "out_dim"),
        ("linear", {"merge": 0}, "merge"),
        ("linear", {"num_queries": 4}, "num_queries"),
        ("linear", {"dropout": 1.5}, "dropout"),
        ("attn_pool", {"num_queries": 0}, "num_queries"),
        ("attn_pool", {"in_dim": 20, "num_heads": 8}, "num_heads"),
        ("qformer", {"merge": 2}, "merge"),
        ("qformer", {"hidden_dim": 30, "num_heads": 4}, "num_heads=4"),
        ("qformer", {"num_layers": 0}, "num_layers"),
    ],
)
def test_bad_arguments(kind, kwargs, match):
    kwargs = {"in_dim": 16, "out_dim": OUT, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_projector(kind, **kwargs)


@pytest.mark.parametrize("kind", PROJECTOR_KINDS)
def test_bad_inputs(kind):
    proj = build_projector(kind, 32, OUT, num_heads=4)
    x = torch.randn(2, 5, 32)
    for lengths in (torch.tensor([0, 3]), torch.tensor([6, 3]), torch.tensor([5]), torch.tensor([5.0, 3.0])):
        with pytest.raises(ValueError, match="lengths"):
            proj(x, lengths)
    with pytest.raises(ValueError, match="in_dim"):
        proj(torch.randn(2, 5, 31), torch.tensor([5, 3]))
    with pytest.raises(ValueError, match="input_length"):
        proj.num_tokens(0)


def test_qformer_max_length():
    proj = build_projector("qformer", 16, OUT, num_queries=2, num_heads=4, max_length=8).eval()
    with pytest.raises(ValueError, match="max_length"):
        proj(torch.randn(1, 10, 16), torch.tensor([10]))
    with pytest.raises(ValueError, match="max_length"):
        proj.num_tokens(9)
    x = torch.randn(2, 10, 16)  # longer than max_length, but only padding beyond it
    tokens, _ = proj(x, torch.tensor([8, 3]))
    torch.testing.assert_close(tokens, proj(x[:, :8], torch.tensor([8, 3]))[0])


# ----------------------------------------------------------------------------- modality type embedding


def test_modality_type_embedding():
    emb = ModalityTypeEmbedding(["audio", "face", "video"], OUT)
    tokens = torch.randn(2, 3, OUT)
    assert torch.equal(emb(tokens, "audio"), tokens)  # zero-initialised: a no-op
    with torch.no_grad():
        emb.weight.normal_()
    audio, video = emb(tokens, "audio"), emb(tokens, "video")
    assert not torch.allclose(audio, tokens) and not torch.allclose(audio, video)
    torch.testing.assert_close(video - tokens, emb.weight[2].expand_as(tokens))
    with pytest.raises(ValueError, match="'text'"):
        emb(tokens, "text")
    with pytest.raises(ValueError, match="unique"):
        ModalityTypeEmbedding(["audio", "audio"], OUT)


# ----------------------------------------------------------------------------- cross-modal fusion

# Batch of 5 samples: audio in 0,1,2,4; video in 1,2,3; face in 0,2.
INDEX = {"audio": [0, 1, 2, 4], "video": [1, 2, 3], "face": [0, 2]}
LENGTHS = {"audio": [3, 1, 4, 2], "video": [2, 5, 1], "face": [1, 2]}
WIDTH = {"audio": 4, "video": 5, "face": 2}  # face K=2: with one key, softmax has no gradient


def _fusion_batch():
    tokens = {m: torch.randn(len(INDEX[m]), WIDTH[m], OUT) for m in INDEX}
    lengths = {m: torch.tensor(v) for m, v in LENGTHS.items()}
    index = {m: torch.tensor(v) for m, v in INDEX.items()}
    return tokens, lengths, index


def _fusion(perturb: bool) -> CrossModalFusion:
    fusion = CrossModalFusion(OUT, [("audio", "video"), ("face", "audio")], depth=2, fusion_dim=16, num_heads=4)
    if perturb:
        with torch.no_grad():
            for p in fusion.parameters():
                p.add_(0.3 * torch.randn_like(p))
    return fusion


def test_fusion_fresh_block_is_identity():
    tokens, lengths, index = _fusion_batch()
    out = _fusion(perturb=False)(tokens, lengths, index)
    assert out.keys() == tokens.keys() and out is not tokens
    assert all(torch.equal(out[m], tokens[m]) for m in tokens)


def test_fusion_only_samples_with_both_modalities_change():
    tokens, lengths, index = _fusion_batch()
    out = _fusion(perturb=True)(tokens, lengths, index)
    # audio row 3 (sample 4) and video row 2 (sample 3) have no partner; every other sample has one.
    unchanged = {"audio": [3], "video": [2], "face": []}
    for m in tokens:
        assert out[m].shape == tokens[m].shape
        for row, n in enumerate(LENGTHS[m]):
            same = torch.equal(out[m][row], tokens[m][row])
            assert same == (row in unchanged[m]), (m, row)
            assert torch.equal(out[m][row, n:], tokens[m][row, n:])  # padded tokens are not updated


def test_fusion_padding_invariance():
    fusion = _fusion(perturb=True)
    tokens, lengths, index = _fusion_batch()
    out = fusion(tokens, lengths, index)
    garbage = {}
    for m, x in tokens.items():
        g = torch.cat([x, torch.zeros(x.shape[0], 3, OUT)], dim=1)  # (B_m, K_m, D) -> (B_m, K_m + 3, D)
        pad = torch.arange(g.shape[1])[None, :] >= lengths[m][:, None]
        g[pad] = 1e4 * torch.randn(int(pad.sum()), OUT)
        garbage[m] = g
    garbage["video"][2, 3] = float("nan")
    out_g = fusion(garbage, lengths, index)
    for m in tokens:
        for row, n in enumerate(LENGTHS[m]):
            torch.testing.assert_close(out_g[m][row, :n], out[m][row, :n])


def test_fusion_absent_modality_and_row_order():
    fusion = _fusion(perturb=True)
    tokens, lengths, index = _fusion_batch()
    tokens["text"], lengths["text"], index["text"] = torch.randn(1, 2, OUT), torch.tensor([2]), torch.tensor([0])
    del tokens["face"], lengths["face"], index["face"]  # the ("face", "audio") pair is skipped
    out = fusion(tokens, lengths, index)
    assert out.keys() == tokens.keys()
    assert torch.equal(out["text"], tokens["text"])  # in no pair: passes through
    assert torch.equal(out["audio"][0], tokens["audio"][0])  # sample 0 had only face as partner
    assert not torch.equal(out["audio"][1], tokens["audio"][1])

    perm = torch.tensor([2, 0, 3, 1])  # rows of one modality in another order give the same result per sample
    tokens["audio"], lengths["audio"], index["audio"] = (
        tokens["audio"][perm],
        lengths["audio"][perm],
        index["audio"][perm],
    )
    torch.testing.assert_close(fusion(tokens, lengths, index)["audio"], out["audio"][perm])


def test_fusion_gradients():
    fusion = _fusion(perturb=True)
    tokens, lengths, index = _fusion_batch()
    out = fusion(tokens, lengths, index)
    sum(x.pow(2).sum() for x in out.values()).backward()
    for name, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_fusion_errors():
    with pytest.raises(ValueError, match="two different"):
        CrossModalFusion(OUT, [("audio", "audio")])
    with pytest.raises(ValueError, match="twice"):
        CrossModalFusion(OUT, [("audio", "video"), ("video", "audio")])
    with pytest.raises(ValueError, match="fusion_dim"):
        CrossModalFusion(OUT, [("audio", "video")], fusion_dim=18, num_heads=4)
    fusion = _fusion(perturb=False)
    tokens, lengths, index = _fusion_batch()
    del lengths["video"]
    with pytest.raises(ValueError, match="'video'"):
        fusion(tokens, lengths, index)
    tokens, lengths, index = _fusion_batch()
    lengths["audio"] = torch.tensor([3, 0, 4, 2])
    with pytest.raises(ValueError, match="lengths\\['audio'\\]"):
        fusion(tokens, lengths, index)
