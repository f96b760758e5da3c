"""Backbones: the LLM families emollm can wrap, one file each (reference config, chat format, placeholder-token
policy, LoRA targets), the registry that assembles them, and the loading of a backbone's weights from local paths.

Imports nothing of emollm above ``utils``: the model core, checkpoints and apps build on it.
"""

from emollm.backbones.chat import ChatFormat, RenderedChat, tokenize_chat
from emollm.backbones.registry import (
    ADDED_PLACEHOLDERS,
    LORA_ALL_LINEAR,
    BackboneSpec,
    get_backbone,
    get_chat_format,
    list_backbones,
    list_chat_formats,
)

__all__ = [
    "ADDED_PLACEHOLDERS",
    "LORA_ALL_LINEAR",
    "BackboneSpec",
    "ChatFormat",
    "RenderedChat",
    "get_backbone",
    "get_chat_format",
    "list_backbones",
    "list_chat_formats",
    "tokenize_chat",
]
