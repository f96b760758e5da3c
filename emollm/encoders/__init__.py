"""Encoder registry: name -> builder, for precomputed features and live audio/face/video/text encoders."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from emollm.encoders import audio, face, text, video
from emollm.encoders.base import ModalityEncoder
from emollm.encoders.precomputed import FeatureStore, PrecomputedEncoder, load_feature_file

ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "precomputed": lambda feature_dim, path=None, **_: PrecomputedEncoder(feature_dim),
    # live encoders: raw media in, built from local weights (or weights embedded in packages); never downloaded
    "whisper": audio.build_whisper_encoder,  # audio (B, T_samples) 16 kHz; path=None -> embedded tiny.en
    "hubert": audio.build_hubert_encoder,  # audio; needs encoder_path
    "wav2vec2": audio.build_wav2vec2_encoder,  # audio; needs encoder_path
    "wavlm": audio.build_wavlm_encoder,  # audio; needs encoder_path
    "fer": face.build_fer_encoder,  # face crops (B, T, H, W, 3); path=None -> fer package's mini-Xception
    "vit_face": face.build_vit_face_encoder,  # face crops; ViT / ViT-MAE folder
    "clip": video.build_clip_encoder,  # frames; CLIP / SigLIP vision folder
    "open_clip": video.build_open_clip_encoder,  # frames; open_clip checkpoint file + model_name, or its folder
    "videomae": video.build_videomae_encoder,  # frames in 16-frame clips; VideoMAE folder
    "minilm": text.build_minilm_encoder,  # list[str] subtitles (text towers take strings); path=None -> embedded
}


def list_encoders() -> list[str]:
    """Registered encoder names."""
    return list(ENCODERS)


def build_encoder(name: str, **kwargs) -> nn.Module:
    """Build an encoder from the registry (weights, if any, are loaded by the caller from a local path)."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)}")
    return ENCODERS[name](**kwargs)


__all__ = [
    "ENCODERS",
    "audio",
    "face",
    "text",
    "video",
    "FeatureStore",
    "ModalityEncoder",
    "PrecomputedEncoder",
    "build_encoder",
    "list_encoders",
    "load_feature_file",
]
