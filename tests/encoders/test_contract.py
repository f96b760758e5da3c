"""Every registered live encoder, built from a tiny random model of its real transformers class (or its real
embedded weights), honours the tower contract: num_tokens == forward lengths, padding never changes valid outputs,
feature_dim is checked, and gradients flow when parameters are trainable."""

from __future__ import annotations

import pytest
import torch

from emollm.encoders import build_encoder, list_encoders
from tests.encoders.conftest import frame_batch, waveform_batch

# transformers' WavLM passes a bool key-padding mask with a float position bias to torch; harmless here
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")

AUDIO_LENGTHS = [1, 319, 320, 321, 5000, 16000, 16001, 40000]  # whisper: 1 s windows in the tiny config
SSL_LENGTHS = [20, 29, 30, 31, 399, 400, 1234, 4000]  # receptive field of the tiny conv stack: 20 samples
FRAME_LENGTHS = [1, 2, 3, 5]
CLIP_LENGTHS = [1, 3, 4, 5, 9]  # tiny VideoMAE clips have 4 frames

# case id -> (registry name, tiny folder kind or None for embedded weights, options, input kind, lengths)
CASES: dict[str, tuple[str, str | None, dict, str, list[int]]] = {
    "whisper": ("whisper", "whisper", {}, "audio", AUDIO_LENGTHS),
    "whisper-utterance-layers": (
        "whisper",
        "whisper",
        {"pooling": "utterance", "layers_mean": 2},
        "audio",
        AUDIO_LENGTHS,
    ),
    "hubert": ("hubert", "hubert", {"pooling": "frame"}, "audio", SSL_LENGTHS),
    "hubert-utterance": ("hubert", "hubert", {"layers_mean": 2}, "audio", SSL_LENGTHS),
    "hubert-groupnorm": ("hubert", "hubert_group", {"pooling": "frame", "layer": 1}, "audio", SSL_LENGTHS),
    # AffectGPT's layout: 8 windows of 2 s, one normalisation over them all, one feature per window
    "hubert-clips": (
        "hubert",
        "hubert",
        {"clips": 8, "normalize_scope": "sample", "pooling": "frame"},
        "audio",
        SSL_LENGTHS,
    ),  # fmt: skip
    "wav2vec2": ("wav2vec2", "wav2vec2", {"pooling": "frame"}, "audio", SSL_LENGTHS),
    "wav2vec2-adapter": ("wav2vec2", "wav2vec2_adapter", {"pooling": "frame"}, "audio", [60, 100, 101, 2000]),
    "wavlm": ("wavlm", "wavlm", {"pooling": "frame"}, "audio", SSL_LENGTHS),
    "egemaps": ("egemaps", None, {}, "audio", [1600, 8000, 16000, 16001]),
    "egemaps-lld": ("egemaps", None, {"level": "lld"}, "audio", [1600, 8000, 16000, 16001]),
    "fer-logits": ("fer", None, {}, "frames", FRAME_LENGTHS),
    "fer-embedding": ("fer", None, {"output": "embedding", "pooling": "utterance"}, "frames", FRAME_LENGTHS),
    "vit_face": ("vit_face", "vit", {}, "frames", FRAME_LENGTHS),
    "vit_face-mae-patch": ("vit_face", "vit_mae", {"token": "patch"}, "frames", FRAME_LENGTHS),
    "vit_face-mae-utterance": ("vit_face", "vit_mae", {"pooling": "utterance", "layer": -2}, "frames", FRAME_LENGTHS),
    "clip-pooled": ("clip", "clip", {}, "frames", FRAME_LENGTHS),
    "clip-projected": ("clip", "clip", {"tokens": "projected"}, "frames", FRAME_LENGTHS),
    "clip-patch": ("clip", "clip", {"tokens": "patch", "select_layer": -2}, "frames", FRAME_LENGTHS),
    "clip_face-squash": ("clip_face", "clip", {"tokens": "projected", "resize": "squash"}, "frames", FRAME_LENGTHS),
    "siglip-pooled": ("clip", "siglip", {}, "frames", FRAME_LENGTHS),
    "siglip-patch-utterance": ("clip", "siglip", {"tokens": "patch", "pooling": "utterance"}, "frames", FRAME_LENGTHS),
    "open_clip": ("open_clip", "open_clip", {}, "frames", FRAME_LENGTHS),
    "open_clip-utterance": ("open_clip", "open_clip", {"pooling": "utterance"}, "frames", FRAME_LENGTHS),
    "videomae": ("videomae", "videomae", {}, "frames", CLIP_LENGTHS),
    "videomae-patch": ("videomae", "videomae", {"tokens": "patch"}, "frames", CLIP_LENGTHS),
    "videomae-utterance": ("videomae", "videomae", {"pooling": "utterance"}, "frames", CLIP_LENGTHS),
    "eva_vitg": ("eva_vitg", "eva", {"image_size": 112}, "frames", FRAME_LENGTHS),  # the first frame only
}

_BUILT: dict[str, torch.nn.Module] = {}


def build_case(case: str, tiny_dirs) -> torch.nn.Module:
    if case not in _BUILT:
        name, kind, options, _, _ = CASES[case]
        path = tiny_dirs(kind) if kind else None
        _BUILT[case] = build_encoder(name, feature_dim=None, path=path, **options)
    return _BUILT[case]


def make_inputs(case: str, lengths: list[int]):
    kind = CASES[case][3]
    return waveform_batch(lengths) if kind == "audio" else frame_batch(lengths)


def test_every_live_encoder_is_covered():
    live = set(list_encoders()) - {"precomputed", "minilm"}  # minilm takes strings: tests/encoders/test_text.py
    assert live == {c[0] for c in CASES.values()}


@pytest.mark.parametrize("case", list(CASES))
def test_num_tokens_matches_forward(case, tiny_dirs):
    enc = build_case(case, tiny_dirs)
    lengths = CASES[case][4]
    x, lens = make_inputs(case, lengths)
    with torch.no_grad():
        feats, out_lens = enc(x, lens)
    expected = [enc.num_tokens(n) for n in lengths]
    assert out_lens.tolist() == expected
    assert feats.shape == (len(lengths), max(expected), enc.output_dim)
    assert torch.isfinite(feats).all()


@pytest.mark.parametrize("case", list(CASES))
def test_padding_does_not_change_valid_outputs(case, tiny_dirs):
    enc = build_case(case, tiny_dirs)
    lengths = CASES[case][4]
    picked = [lengths[0], lengths[-1], lengths[len(lengths) // 2]]
    x, lens = make_inputs(case, picked)
    with torch.no_grad():
        batched, blens = enc(x, lens)
        for i, n in enumerate(picked):
            alone, alens = enc(x[i : i + 1, :n], lens[i : i + 1])
            k = int(alens[0])
            assert int(blens[i]) == k
            torch.testing.assert_close(batched[i, :k], alone[0, :k], atol=2e-5, rtol=1e-4)
            assert batched[i, k:].abs().max() == 0 if batched.shape[1] > k else True  # padding rows are zero


@pytest.mark.parametrize(
    "case",
    [
        "whisper",
        "hubert",
        "hubert-groupnorm",
        "wavlm",
        "fer-embedding",
        "vit_face-mae-patch",
        "clip-patch",
        "siglip-pooled",
        "open_clip",
        "videomae",
        "eva_vitg",
    ],
)
def test_gradients_flow_when_trainable(case, tiny_dirs):
    enc = build_case(case, tiny_dirs)
    params = [p for p in enc.parameters() if p.is_floating_point()]
    for p in params:
        p.requires_grad_(True)
        p.grad = None
    x, lens = make_inputs(case, CASES[case][4][:2])
    feats, _ = enc(x, lens)
    feats.pow(2).sum().backward()
    grads = [p.grad for p in params if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    for p in params:
        p.grad = None


@pytest.mark.parametrize(
    "case",
    [
        "whisper",
        "hubert",
        "wav2vec2-adapter",
        "vit_face",
        "clip-projected",
        "siglip-pooled",
        "videomae",
        "fer-logits",
        "open_clip",
        "eva_vitg",
    ],
)
def test_wrong_feature_dim_names_both_widths(case, tiny_dirs):
    name, kind, options, _, _ = CASES[case]
    real = build_case(case, tiny_dirs).output_dim
    with pytest.raises(ValueError, match=rf"outputs {real}-d features, but feature_dim={real + 1}"):
        build_encoder(name, feature_dim=real + 1, path=tiny_dirs(kind) if kind else None, **options)


@pytest.mark.parametrize("name", ["hubert", "wav2vec2", "wavlm", "vit_face", "clip", "videomae", "open_clip"])
def test_missing_local_weights_is_a_clear_error(name, tmp_path):
    with pytest.raises(FileNotFoundError, match="needs local weights: pass encoder_path=.*never downloads"):
        build_encoder(name, feature_dim=32, path=None)
    with pytest.raises(FileNotFoundError, match="not a transformers model folder|has no open_clip_config.json"):
        build_encoder(name, feature_dim=32, path=tmp_path)


def test_open_clip_file_needs_model_name(tmp_path):
    ckpt = tmp_path / "open_clip_pytorch_model.bin"
    ckpt.write_bytes(b"")
    with pytest.raises(ValueError, match="needs encoder_options.model_name"):
        build_encoder("open_clip", feature_dim=768, path=ckpt)


def test_wrong_model_type_is_rejected(tiny_dirs):
    with pytest.raises(ValueError, match="holds a 'wavlm' model"):
        build_encoder("hubert", feature_dim=32, path=tiny_dirs("wavlm"))


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("hubert", {"pooling": "mean"}, "pooling must be one of"),
        ("hubert", {"layer": 3}, "layer=3 is out of range"),
        ("hubert", {"layers_mean": 4}, "layers_mean=4"),
        ("clip", {"select_layer": -1}, "select_layer applies to tokens='patch' only"),
        ("videomae", {"tokens": "cls"}, "tokens must be one of"),
    ],
)
def test_bad_options(name, options, match, tiny_dirs):
    kind = {"hubert": "hubert", "clip": "clip", "videomae": "videomae"}[name]
    with pytest.raises(ValueError, match=match):
        build_encoder(name, feature_dim=None, path=tiny_dirs(kind), **options)


def test_too_short_audio_is_rejected(tiny_dirs):
    enc = build_case("hubert", tiny_dirs)
    with pytest.raises(ValueError, match="shorter than the encoder's receptive field"):
        enc.num_tokens(19)
    with pytest.raises(ValueError, match="receptive field"):
        enc(torch.zeros(1, 19), torch.tensor([19]))
