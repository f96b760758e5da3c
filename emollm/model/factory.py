"""``build_model``: backbone name + modality branches -> (model, processor), ready to train or generate."""

from __future__ import annotations

import os
from typing import Any

import torch

from emollm.backbones import get_backbone
from emollm.backbones.loading import (
    Quantization,
    fit_embeddings,
    load_language_model,
    load_tokenizer,
    prepare_tokenizer,
    resolve_llm_path,
)
from emollm.model.configuration import EmoLLMConfig, FusionConfig, ModalityConfig, text_config_dict
from emollm.model.modeling import EmoLLMForCausalLM
from emollm.model.processing import EmoProcessor


def emotion_llama_modalities(feature_dim: int = 1024, projector: str = "linear") -> dict[str, ModalityConfig]:
    """Emotion-LLaMA's three utterance-level feature branches (FaceMAE, VideoMAE, HuBERT-large), one token each."""
    from emollm.model.configuration import EMOTION_LLAMA_FEATURE_DIRS, ProjectorConfig

    return {
        m: ModalityConfig(feature_dim=feature_dim, projector=ProjectorConfig(kind=projector), feature_dir=d)
        for m, d in (
            ("face", EMOTION_LLAMA_FEATURE_DIRS["face"]),
            ("video", EMOTION_LLAMA_FEATURE_DIRS["video"]),
            ("audio", EMOTION_LLAMA_FEATURE_DIRS["audio"]),
        )
    }


def build_model(
    backbone: str,
    modalities: dict[str, ModalityConfig | dict[str, Any]],
    *,
    llm_path: str | os.PathLike | None = None,
    text_config=None,
    tokenizer=None,
    dtype: torch.dtype | None = None,
    quantization: Quantization = None,
    device_map: Any = None,
    modality_type_embeddings: bool = True,
    fusion: FusionConfig | dict[str, Any] | None = None,
) -> tuple[EmoLLMForCausalLM, EmoProcessor]:
    """Build a multimodal model around a backbone from the registry.

    Args:
        backbone: Registry name (``emollm backbones``).
        modalities: modality -> branch config (encoder, feature width, projector).
        llm_path: Local HF folder or ``.gguf`` file; None uses the backbone's embedded weights (``smollm2``).
        text_config: A transformers config to build a *random-initialised* LLM instead (tests, debugging); needs
            ``tokenizer``.
        tokenizer: Tokenizer to use instead of the one stored with the weights.
        dtype: LLM dtype (default: the backbone's ``default_dtype``; random-init models stay float32).
        quantization: ``"4bit"`` (QLoRA) or ``"8bit"`` through bitsandbytes.
        device_map: Passed to ``from_pretrained`` (e.g. ``{"": local_rank}`` for multi-GPU QLoRA, so 4-bit weights
            are created on their GPU).
        modality_type_embeddings: Add learned per-modality type embeddings.
        fusion: Cross-modal fusion settings, or None.

    Returns:
        ``(model, processor)``.
    """
    spec = get_backbone(backbone)
    mods = {
        m: (c if isinstance(c, ModalityConfig) else ModalityConfig.from_dict(c, f"modalities.{m}"))
        for m, c in modalities.items()
    }
    if text_config is not None:
        if tokenizer is None:
            raise ValueError("a random-initialised model (text_config=...) needs an explicit tokenizer")
        if quantization is not None:
            raise ValueError("quantization needs real weights: save the model and load it with llm_path")
        from transformers import AutoModelForCausalLM

        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(tokenizer, key, None)
            if value is not None:
                setattr(text_config, key, value)
        text_config.vocab_size = max(text_config.vocab_size, len(tokenizer))
        lm = AutoModelForCausalLM.from_config(text_config)
        llm_source = None
    else:
        path = resolve_llm_path(spec, llm_path)
        lm = load_language_model(spec, path, dtype=dtype, quantization=quantization, device_map=device_map)
        tokenizer = tokenizer or load_tokenizer(path)
        llm_source = f"embedded:{spec.embedded}" if llm_path is None else str(os.path.abspath(llm_path))
    placeholders = prepare_tokenizer(spec, tokenizer, list(mods))
    fit_embeddings(lm, tokenizer)
    vocab = tokenizer.get_vocab()
    for m, cfg in mods.items():
        cfg.placeholder = placeholders[m]
        cfg.token_id = vocab[placeholders[m]]
    config = EmoLLMConfig(
        backbone=backbone,
        text_config=text_config_dict(lm.config),
        modalities=mods,
        modality_type_embeddings=modality_type_embeddings,
        fusion=fusion,
        llm_source=llm_source,
    )
    model = EmoLLMForCausalLM(config, lm)
    device = next(lm.parameters()).device
    for part in [model.towers, *model.connector_modules().values()]:
        part.to(device)
    processor = EmoProcessor.from_config(config, tokenizer, model.num_tokens)
    return model, processor
