"""Precomputed features in Emotion-LLaMA's released layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from emollm.encoders import FeatureStore, PrecomputedEncoder, build_encoder, list_encoders
from emollm.model.configuration import EMOTION_LLAMA_FEATURE_DIRS, EmoLLMConfig


def _layout(root):
    rng = np.random.default_rng(0)
    for _mod, sub in EMOTION_LLAMA_FEATURE_DIRS.items():
        (root / sub).mkdir(parents=True)
        np.save(root / sub / "sample_00000023.npy", rng.standard_normal(1024).astype(np.float32))  # (1024,)
        np.save(root / sub / "00025.npy", rng.standard_normal((1, 1024)).astype(np.float32))  # (1, 1024)
    return root


def test_reads_emotion_llama_layout(tmp_path):
    root = _layout(tmp_path)
    for _mod, sub in EMOTION_LLAMA_FEATURE_DIRS.items():
        store = FeatureStore(root, sub, 1024)
        a = store.load("sample_00000023")
        b = store.load("00025")  # numeric DFEW-style names stay strings
        assert a.shape == (1, 1024) and b.shape == (1, 1024) and a.dtype == torch.float32
        assert "00025" in store and "25" not in store


def test_frame_level_and_safetensors(tmp_path):
    save_file({"features": np.ones((7, 8), np.float32)}, str(tmp_path / "clip.safetensors"))
    np.save(tmp_path / "frames.npy", np.zeros((5, 8), np.float16))
    store = FeatureStore(tmp_path, None, 8)
    assert store.load("clip").shape == (7, 8)
    assert store.load("frames").dtype == torch.float32


def test_bad_files_name_the_file(tmp_path):
    store = FeatureStore(tmp_path, None, 8)
    np.save(tmp_path / "wide.npy", np.zeros((2, 16), np.float32))
    with pytest.raises(ValueError, match=r"wide.npy has width 16, but the model expects 8"):
        store.load("wide")
    np.save(tmp_path / "nan.npy", np.full((2, 8), np.nan, np.float32))
    with pytest.raises(ValueError, match="nan.npy contains NaN"):
        store.load("nan")
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="cannot read feature file .*pickled.npy"):
        store.load("pickled")
    (tmp_path / "trunc.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="trunc.npy"):
        store.load("trunc")
    np.save(tmp_path / "empty.npy", np.zeros((0, 8), np.float32))
    with pytest.raises(ValueError, match="expected \\(D,\\) or \\(T, D\\)"):
        store.load("empty")
    with pytest.raises(ValueError, match="not a plain file stem"):
        store.load("../wide")
    with pytest.raises(FileNotFoundError, match="no features for sample 'absent'"):
        store.load("absent")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FeatureStore(tmp_path, "HL-UTT", 1024)


def test_encoder_registry_and_identity():
    assert "precomputed" in list_encoders()
    enc = build_encoder("precomputed", feature_dim=4)
    assert isinstance(enc, PrecomputedEncoder) and enc.num_tokens(9) == 9
    x, lengths = torch.randn(2, 3, 4), torch.tensor([3, 1])
    y, ly = enc(x, lengths)
    assert y is x and ly is lengths
    with pytest.raises(ValueError, match="unknown encoder 'nope'"):
        build_encoder("nope")


def test_config_rejects_typos():
    base = {"backbone": "llama2", "text_config": {"model_type": "llama", "hidden_size": 64}}
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['modalitys'\]"):
        EmoLLMConfig.from_dict({**base, "modalitys": {}})
    with pytest.raises(ValueError, match=r"modalities.audio.projector: unknown key\(s\) \['knd'\]"):
        EmoLLMConfig.from_dict({**base, "modalities": {"audio": {"projector": {"knd": "linear"}}}})
    with pytest.raises(ValueError, match="unknown modality 'smell'"):
        EmoLLMConfig.from_dict({**base, "modalities": {"smell": {}}})
    with pytest.raises(ValueError, match="backbone 'llama2' is a 'llama' model"):
        EmoLLMConfig.from_dict({**base, "text_config": {"model_type": "qwen2"}})
    with pytest.raises(ValueError, match="fusion.pairs names modality 'video'"):
        EmoLLMConfig.from_dict({**base, "modalities": {"audio": {}}, "fusion": {"pairs": [["audio", "video"]]}})
    cfg = EmoLLMConfig.from_dict({**base, "modalities": {"audio": {"feature_dim": 8}}})
    assert EmoLLMConfig.from_dict(cfg.to_dict()) == cfg
