"""Encoder registry: name -> builder. Live encoders (audio/face/video) join this table in later work."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from emollm.encoders.base import ModalityEncoder
from emollm.encoders.precomputed import FeatureStore, PrecomputedEncoder, load_feature_file

ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "precomputed": lambda feature_dim, path=None, **_: PrecomputedEncoder(feature_dim),
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
    "FeatureStore",
    "ModalityEncoder",
    "PrecomputedEncoder",
    "build_encoder",
    "list_encoders",
    "load_feature_file",
]
