"""Load a checkpoint folder into a ready model and processor (``load_model``), built on the reader and
``restore_into``."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError

from emollm.backbones import get_backbone
from emollm.backbones.loading import Quantization, fit_embeddings, load_language_model, resolve_llm_path
from emollm.checkpoints.format import _RESAVE, _check_tokenizer, _read_json, read_checkpoint
from emollm.checkpoints.restore import restore_into
from emollm.model.modeling import EmoLLMForCausalLM
from emollm.model.processing import EmoProcessor


def load_model(
    path: str | os.PathLike,
    *,
    llm_path: str | os.PathLike | None = None,
    backbone: str | None = None,
    dtype: torch.dtype | None = None,
    quantization: Quantization = None,
    device: str | torch.device | None = None,
) -> tuple[EmoLLMForCausalLM, EmoProcessor]:
    """Load ``(model, processor)`` from a checkpoint folder; needs nothing else but its base LLM.

    Args:
        path: Checkpoint folder.
        llm_path: Base LLM weights (folder or GGUF) when they are not in the checkpoint and not at the recorded
            ``llm_source`` (e.g. on another machine).
        backbone: Expected backbone; a checkpoint of another backbone raises instead of loading garbage.
        dtype: LLM dtype (default: the backbone's; float32 for weights stored in the checkpoint).
        quantization: Load the base in 4/8 bit.
        device: Where to put the model.

    Returns:
        The model (in eval mode) and its processor.
    """
    path = Path(path)
    info = read_checkpoint(path)
    config = info.config
    if backbone is not None:
        info.check_backbone(backbone)
    spec = get_backbone(config.backbone)
    if info.has_base:
        base_path = path / "llm"
        dtype = dtype or torch.float32
    elif llm_path is not None:
        base_path = resolve_llm_path(spec, llm_path)
    elif config.llm_source and config.llm_source.startswith("embedded:"):
        base_path = resolve_llm_path(spec, None)
    elif config.llm_source and Path(config.llm_source).exists():
        base_path = resolve_llm_path(spec, config.llm_source)
    else:
        raise FileNotFoundError(
            f"checkpoint {path} needs its base LLM ({spec.hf_id}), last seen at {config.llm_source!r}; "
            "pass llm_path= / --llm-path with the local folder or GGUF"
        )
    from transformers import AutoTokenizer

    for name in ("tokenizer.json", "tokenizer_config.json"):  # the tokenizers library's own errors name no file
        if (path / name).is_file():
            _read_json(path / name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"the tokenizer files in {path} cannot be read ({e}); {_RESAVE}") from None
    _check_tokenizer(info, tokenizer)
    try:
        lm = load_language_model(spec, base_path, dtype=dtype, quantization=quantization)
    except SafetensorError as e:
        raise ValueError(
            f"the base LLM at {base_path} has a damaged safetensors file ({e}); copy or convert it again"
        ) from None
    info.check_base_llm(lm.config, base_path)
    fit_embeddings(lm, tokenizer)
    model = EmoLLMForCausalLM(config, lm)
    restore_into(model, info, parts=("adapter", "connectors") if info.has_adapter else ("connectors",))
    if device is not None:
        model.to(device)
    else:
        lm_device = next(lm.parameters()).device
        for part in [model.towers, *model.connector_modules().values()]:
            part.to(lm_device)
    model.eval()
    processor = EmoProcessor.from_config(config, tokenizer, model.num_tokens)
    return model, processor
