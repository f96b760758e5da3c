"""Write a self-describing checkpoint folder (``save_checkpoint``), atomically: a temporary sibling renamed into
place, so a kill never leaves a half-written checkpoint under the final name."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from emollm.checkpoints.format import (
    _DIR_MODE,
    BASE_FILE,
    CONNECTORS_FILE,
    FORMAT,
    VERSION,
    connector_parts,
    is_quantized,
)
from emollm.model.lora import LoraSettings, TrainableSpec, is_peft
from emollm.model.modeling import EmoLLMForCausalLM
from emollm.model.processing import EmoProcessor
from emollm.utils.io import atomic_write_text


def _connector_state(model: EmoLLMForCausalLM, with_encoders: bool) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for prefix, module in connector_parts(model, with_encoders).items():
        for key, value in module.state_dict().items():
            state[f"{prefix}.{key}"] = value.detach().to("cpu").contiguous().clone()
    return state


def _base_llm_state(lm) -> dict[str, torch.Tensor]:
    """Base weights of a (possibly peft-wrapped) LLM, with peft's wrapper names removed and LoRA left out."""
    if not is_peft(lm):
        return {k: v.detach().cpu().contiguous().clone() for k, v in lm.state_dict().items()}
    out = {}
    for key, value in lm.state_dict().items():
        if "lora_" in key:
            continue
        key = key.removeprefix("base_model.model.").replace(".base_layer.", ".")
        out[key] = value.detach().cpu().contiguous().clone()
    return out


def save_checkpoint(
    model: EmoLLMForCausalLM,
    processor: EmoProcessor,
    out_dir: str | os.PathLike,
    *,
    lora: LoraSettings | None = None,
    trainable: TrainableSpec | None = None,
    run_config: dict[str, Any] | None = None,
    save_base: bool | None = None,
) -> Path:
    """Write a self-describing checkpoint folder atomically.

    Args:
        model: The model to save.
        processor: Its processor (tokenizer and placeholder settings).
        out_dir: The folder to create or replace (a file there is refused, never replaced; ``emollm export``
            guards its target further, see :func:`check_export_target`).
        lora: The LoRA settings, recorded in ``checkpoint.json`` when the LLM has adapters.
        trainable: What was trained; ``trainable.encoders`` also saves the encoder towers.
        run_config: The run's own settings, written to ``run_config.json``.
        save_base: Store the full LLM weights in ``llm/``. Defaults to True when the base weights exist nowhere
            else (random-init model) or were trained in full; otherwise the folder records ``llm_source`` and
            stays small.

    Returns:
        The checkpoint folder.
    """
    out_dir = Path(out_dir)
    if (out_dir.exists() or out_dir.is_symlink()) and not out_dir.is_dir():
        raise FileExistsError(
            f"{out_dir} is a file, not a checkpoint folder; it was left untouched: choose a new path for the checkpoint"
        )
    config = model.config
    lm = model.language_model
    if save_base is None:
        save_base = config.llm_source is None or (trainable is not None and trainable.llm == "full")
    if save_base and is_quantized(lm):
        raise ValueError("cannot save quantized base weights; the base is re-loaded from its llm_source instead")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        tmp.chmod(_DIR_MODE)  # mkdtemp's 0700 would hide the checkpoint from everyone else
        config.save(tmp / "emollm_config.json")
        processor.save_pretrained(tmp)
        save_file(_connector_state(model, trainable is not None and trainable.encoders), str(tmp / CONNECTORS_FILE))
        has_adapter = is_peft(lm)
        if has_adapter:
            # adapter_model.safetensors + adapter_config.json. Not the resized embedding matrix: its new rows are
            # placeholder rows, re-created deterministically at load time and always overwritten by features.
            lm.save_pretrained(tmp, save_embedding_layers=False)
            (tmp / "README.md").unlink(missing_ok=True)  # peft's model-card stub; checkpoint.json describes the folder
        if save_base:
            (tmp / "llm").mkdir()
            base_config = config.hf_text_config()
            base_config.save_pretrained(tmp / "llm")
            state = _base_llm_state(lm)
            if getattr(base_config, "tie_word_embeddings", False):
                state.pop("lm_head.weight", None)
            save_file(state, str(tmp / BASE_FILE), metadata={"format": "pt"})
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "backbone": config.backbone,
            "chat_format": config.chat_format,
            "encoders": {m: c.encoder for m, c in config.modalities.items()},
            "llm_source": "llm/" if save_base else config.llm_source,
            "lora": None if lora is None or not has_adapter else vars(lora),
            "trainable": None if trainable is None else vars(trainable),
        }
        atomic_write_text(tmp / "checkpoint.json", json.dumps(meta, indent=2) + "\n")
        if run_config is not None:
            atomic_write_text(tmp / "run_config.json", json.dumps(run_config, indent=2, default=str) + "\n")
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None and old.is_symlink():
            old.unlink()  # a link the user pointed at a folder: drop the link, never the folder behind it
        elif old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
