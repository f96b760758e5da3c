"""emollm: multimodal emotion recognition and reasoning with swappable LLM backbones.

Public names are imported lazily, so ``import emollm`` (and the CLI's light commands) do not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Analysis": "emollm.analysis",
    "analyze": "emollm.inference",
    "load_analyzer": "emollm.inference",
    "BackboneSpec": "emollm.backbones",
    "get_backbone": "emollm.backbones",
    "list_backbones": "emollm.backbones",
    "export_merged": "emollm.checkpoint",
    "load_model": "emollm.checkpoint",
    "save_checkpoint": "emollm.checkpoint",
    "EmoLLMConfig": "emollm.configuration",
    "FusionConfig": "emollm.configuration",
    "ModalityConfig": "emollm.configuration",
    "ProjectorConfig": "emollm.configuration",
    "list_encoders": "emollm.encoders",
    "build_model": "emollm.factory",
    "emotion_llama_modalities": "emollm.factory",
    "chat": "emollm.generation",
    "stream_chat": "emollm.generation",
    "LoraSettings": "emollm.lora",
    "TrainableSpec": "emollm.lora",
    "apply_lora": "emollm.lora",
    "set_trainable": "emollm.lora",
    "EmoLLMForCausalLM": "emollm.modeling",
    "ModalityInputs": "emollm.modeling",
    "label_probabilities": "emollm.scoring",
    "EmoBatch": "emollm.processing",
    "EmoProcessor": "emollm.processing",
    "Sample": "emollm.processing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'emollm' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
