"""emollm: multimodal emotion recognition and reasoning with swappable LLM backbones.

Public names are imported lazily, so ``import emollm`` (and the CLI's light commands) do not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Analysis": "emollm.apps.analysis",
    "analyze": "emollm.apps.analyze",
    "load_analyzer": "emollm.apps.analyze",
    "BackboneSpec": "emollm.backbones",
    "get_backbone": "emollm.backbones",
    "list_backbones": "emollm.backbones",
    "export_merged": "emollm.checkpoints",
    "load_model": "emollm.checkpoints",
    "save_checkpoint": "emollm.checkpoints",
    "EmoLLMConfig": "emollm.model.configuration",
    "FusionConfig": "emollm.model.configuration",
    "ModalityConfig": "emollm.model.configuration",
    "ProjectorConfig": "emollm.model.configuration",
    "list_encoders": "emollm.encoders",
    "build_model": "emollm.model.factory",
    "emotion_llama_modalities": "emollm.model.factory",
    "chat": "emollm.model.generation",
    "stream_chat": "emollm.model.generation",
    "LoraSettings": "emollm.model.lora",
    "TrainableSpec": "emollm.model.lora",
    "apply_lora": "emollm.model.lora",
    "set_trainable": "emollm.model.lora",
    "EmoLLMForCausalLM": "emollm.model.modeling",
    "ModalityInputs": "emollm.model.modeling",
    "label_probabilities": "emollm.model.likelihood",
    "EmoBatch": "emollm.model.processing",
    "EmoProcessor": "emollm.model.processing",
    "Sample": "emollm.model.processing",
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
