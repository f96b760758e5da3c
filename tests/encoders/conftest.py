"""Tiny random-weight models of the real transformers classes, saved as local folders the encoders load from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

SR = 16000


def _save(model, folder: Path, preprocessor: dict | None = None) -> Path:
    torch.manual_seed(0)
    model.save_pretrained(folder)
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder


def _ssl_config(cls, **overrides):
    kwargs = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32, 32),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
    )
    kwargs.update(overrides)
    return cls(**kwargs)


def make_tiny_dir(kind: str, root: Path) -> Path:
    """Build and save the tiny model ``kind`` under ``root/kind``; returns the folder."""
    import transformers as tf

    torch.manual_seed(0)
    folder = root / kind
    if kind == "hubert":
        return _save(tf.HubertModel(_ssl_config(tf.HubertConfig)), folder)
    if kind == "hubert_group":  # base-style: group norm in the feature extractor, post-LN encoder
        cfg = _ssl_config(tf.HubertConfig, feat_extract_norm="group", do_stable_layer_norm=False)
        return _save(tf.HubertModel(cfg), folder, {"do_normalize": False})
    if kind == "wav2vec2":
        return _save(tf.Wav2Vec2Model(_ssl_config(tf.Wav2Vec2Config)), folder)
    if kind == "wav2vec2_adapter":
        cfg = _ssl_config(
            tf.Wav2Vec2Config,
            add_adapter=True,
            adapter_stride=2,
            adapter_kernel_size=3,
            num_adapter_layers=2,
            output_hidden_size=24,
        )
        return _save(tf.Wav2Vec2Model(cfg), folder)
    if kind == "wavlm":
        return _save(tf.WavLMModel(_ssl_config(tf.WavLMConfig, num_buckets=16, max_bucket_distance=40)), folder)
    if kind == "whisper":  # 1 s windows (50 positions) instead of 30 s, to keep tests fast
        cfg = tf.WhisperConfig(
            vocab_size=51864,  # the English-only Whisper vocabulary (the CT2 converter relies on its special ids)
            d_model=32,
            encoder_layers=2,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            num_mel_bins=80,
            max_source_positions=50,
            max_target_positions=16,
            pad_token_id=50256,
            bos_token_id=50257,
            eos_token_id=50256,
            decoder_start_token_id=50257,
        )
        return _save(tf.WhisperForConditionalGeneration(cfg), folder)
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=32, patch_size=8
    )
    if kind == "clip":  # a full CLIPModel folder, as openai/clip-vit-* checkpoints are
        cfg = tf.CLIPConfig(
            text_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                vocab_size=99,
                max_position_embeddings=16,
            ),
            vision_config=vision,
            projection_dim=24,
        )
        pre = {
            "size": {"shortest_edge": 32},
            "crop_size": {"height": 32, "width": 32},
            "do_center_crop": True,
            "resample": 3,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "do_normalize": True,
        }
        return _save(tf.CLIPModel(cfg), folder, pre)
    if kind == "siglip":
        return _save(tf.SiglipVisionModel(tf.SiglipVisionConfig(**vision)), folder)
    if kind == "vit":
        return _save(tf.ViTModel(tf.ViTConfig(**vision), add_pooling_layer=False), folder)
    if kind == "vit_mae":  # saved with its pre-training decoder, as MAE checkpoints are
        cfg = tf.ViTMAEConfig(
            **vision,
            decoder_hidden_size=32,
            decoder_num_hidden_layers=1,
            decoder_num_attention_heads=2,
            decoder_intermediate_size=64,
        )
        return _save(tf.ViTMAEForPreTraining(cfg), folder)
    if kind == "videomae":
        cfg = tf.VideoMAEConfig(**vision, num_frames=4, tubelet_size=2, use_mean_pooling=True)
        return _save(tf.VideoMAEModel(cfg), folder)
    if kind == "open_clip":  # open_clip's local-dir layout: open_clip_config.json + weights
        import open_clip
        from safetensors.torch import save_file

        folder.mkdir()
        cfg = {
            "model_cfg": {
                "embed_dim": 16,
                "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
                "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
            },
            "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        }
        (folder / "open_clip_config.json").write_text(json.dumps(cfg))
        model = open_clip.create_model(f"local-dir:{folder}", pretrained_image=False, pretrained_text=False)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
        return folder
    if kind == "eva":
        return make_tiny_eva(folder)
    raise ValueError(kind)


TINY_EVA_ARGS = {"embed_dim": 32, "depth": 3, "num_heads": 2, "mlp_ratio": 4.0}
"""EVA-g's timm class and geometry (patch 14, 224 px, CLS + absolute positions), at width 32 and depth 3."""


def make_tiny_eva(folder: Path, seed: int = 0) -> Path:
    """A timm folder (``config.json`` + ``model.safetensors``) of a tiny random ``eva_giant_patch14_clip_224``."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model("eva_giant_patch14_clip_224", pretrained=False, num_classes=16, **TINY_EVA_ARGS)
    with torch.no_grad():  # non-trivial biases, norms and positions, so that every tensor matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    folder.mkdir(parents=True)
    config = {
        "architecture": "eva_giant_patch14_clip_224",
        "num_classes": 16,
        "num_features": 32,
        "global_pool": "token",
        "model_args": TINY_EVA_ARGS,
        "pretrained_cfg": {"tag": "tiny", "input_size": [3, 224, 224], "num_classes": 16},
    }
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    return folder


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """``tiny_dirs(kind)`` -> folder of a tiny random model, built once per session."""
    root = tmp_path_factory.mktemp("tiny_encoders")
    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = make_tiny_dir(kind, root)
        return cache[kind]

    return get


@pytest.fixture(scope="session")
def real_whisper():
    """The embedded Whisper tiny.en encoder (converted once into $EMOLLM_CACHE)."""
    from emollm.encoders import build_encoder

    return build_encoder("whisper", feature_dim=384, path=None)


@pytest.fixture(scope="session")
def real_fer():
    from emollm.encoders import build_encoder

    return build_encoder("fer", feature_dim=7, path=None)


def waveform_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random speech-like audio (B, max(lengths)) with non-zero garbage in the padding."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), generator=g) * 0.1
    return x, torch.tensor(lengths)


def frame_batch(lengths: list[int], size: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 frames (B, max(lengths), size, size, 3)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (len(lengths), max(lengths), size, size, 3), generator=g, dtype=torch.uint8)
    return x, torch.tensor(lengths)
