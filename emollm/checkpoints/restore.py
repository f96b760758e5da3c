"""Restore a checkpoint folder's weights into an existing model: ``restore_into(model, dir, parts=...)``.

The one loader of the stored parts (``emollm.checkpoints`` describes the folder), used by ``load_model``, the
training recipe's ``train.init_from`` and its resume:

- ``base``: the full LLM weights of ``llm/model.safetensors``, into a language model without LoRA;
- ``adapter``: ``adapter_model.safetensors`` (LoRA, peft format);
- ``connectors``: ``projectors.safetensors`` (projectors, modality-type embeddings, fusion, trained encoders).

Every load checks keys and shapes explicitly and names the file in its errors. Only safetensors are read: nothing
is unpickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from emollm.checkpoints.format import (
    ADAPTER_FILE,
    BASE_FILE,
    CONNECTORS_FILE,
    CheckpointInfo,
    connector_parts,
    is_quantized,
    read_checkpoint,
)
from emollm.model.lora import is_peft
from emollm.model.modeling import EmoLLMForCausalLM

__all__ = ["PARTS", "RestoreReport", "restore_into"]

#: What :func:`restore_into` can restore, in the order it restores them.
PARTS = ("base", "adapter", "connectors")


@dataclass
class RestoreReport:
    """What :func:`restore_into` loaded.

    Attributes:
        base: The full LLM weights were loaded.
        adapter: The LoRA adapter was loaded (or attached).
        loaded: Connector tensors loaded from ``projectors.safetensors``.
        missing: Connector tensors of the model the file lacks (they keep their values; lenient mode only).
        unexpected: Tensors of the file the model has no place for (ignored; lenient mode only).
    """

    base: bool = False
    adapter: bool = False
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def _load(file: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint's safetensors ``file``; a damaged one raises ``ValueError`` naming it."""
    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise ValueError(
            f"{file} is truncated or damaged ({e}); re-save the checkpoint (or copy the folder again)"
        ) from None


def _check_state(file: Path, state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    """Raise unless ``state`` (read from ``file``) has exactly ``expected``'s keys and shapes."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{file} does not fit this model: missing {missing[:8]}, unexpected {unexpected[:8]}")
    bad = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if bad:
        raise ValueError(f"{file} has tensors of the wrong shape: {bad[:8]}")


@torch.no_grad()
def _restore_base(model: EmoLLMForCausalLM, info: CheckpointInfo) -> None:
    """Load the full LLM weights of ``llm/`` into the (not yet LoRA-wrapped) language model."""
    lm = model.language_model
    if is_peft(lm):
        raise ValueError(f"{info.path}/llm: restore the base LLM weights before LoRA adapters are applied")
    if is_quantized(lm):
        raise ValueError(
            f"{info.path}/llm holds full LLM weights, which cannot be loaded into a quantized model; "
            "drop model.quantization for this run"
        )
    file = info.path / BASE_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing; the checkpoint is incomplete")
    state = _load(file)
    missing, unexpected = lm.load_state_dict(state, strict=False)
    tied = getattr(lm.config, "tie_word_embeddings", False)
    missing = [k for k in missing if not (tied and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"{info.path}/llm does not fit this LLM: missing {missing[:6]}, unexpected {unexpected[:6]}")
    if tied:
        lm.tie_weights()


def _restore_adapter(model: EmoLLMForCausalLM, info: CheckpointInfo) -> None:
    """Load the LoRA adapter into the model's own (same r and targets), or attach it frozen when it has none."""
    from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict

    file = info.path / ADAPTER_FILE
    if not info.has_adapter:
        raise ValueError(f"{info.path} has no LoRA adapter (checkpoint.json lists none)")
    if not file.is_file():  # checked here: peft would otherwise fall back to unpickling adapter_model.bin
        raise FileNotFoundError(f"{file} is missing but checkpoint.json lists LoRA")
    state = _load(file)
    lm = model.language_model
    if not is_peft(lm):
        model.language_model = PeftModel.from_pretrained(lm, str(info.path), is_trainable=False)
        _check_state(file, state, get_peft_model_state_dict(model.language_model, save_embedding_layers=False))
        return
    cfg_file = info.path / "adapter_config.json"
    try:
        saved_cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{cfg_file} cannot be read ({e}); re-save the checkpoint") from None
    ours = lm.peft_config["default"]
    saved_targets = set(saved_cfg.get("target_modules") or [])
    if saved_cfg.get("r") != ours.r or saved_targets != set(ours.target_modules or []):
        raise ValueError(
            f"the adapter in {info.path} (r={saved_cfg.get('r')}, targets={sorted(saved_targets)}) does not match "
            f"this run's LoRA (r={ours.r}, targets={sorted(ours.target_modules or [])}); use the same "
            "train.lora settings, or train.init_adapter=false to start a new adapter"
        )
    _check_state(file, state, get_peft_model_state_dict(lm, save_embedding_layers=False))
    result = set_peft_model_state_dict(lm, state)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise ValueError(f"{file} does not fit: missing {missing[:6]}, unexpected {list(result.unexpected_keys)[:6]}")


@torch.no_grad()
def _restore_connectors(model: EmoLLMForCausalLM, info: CheckpointInfo, *, strict: bool) -> RestoreReport:
    """Load ``projectors.safetensors``: strict = keys match exactly; lenient = load what fits. Shapes always match."""
    file = info.path / CONNECTORS_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing; the checkpoint is incomplete")
    state = _load(file)
    with_encoders = bool(info.trainable and info.trainable.encoders) or any(k.startswith("towers.") for k in state)
    parts = connector_parts(model, with_encoders)
    expected = {f"{p}.{k}": v for p, mod in parts.items() for k, v in mod.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if bad:
        raise ValueError(f"{file} has tensors of the wrong shape: {bad[:8]} (different feature_dim / projector kind?)")
    if strict and (missing or unexpected):
        raise ValueError(f"{file} does not fit this model: missing {missing[:8]}, unexpected {unexpected[:8]}")
    for prefix, module in parts.items():
        sub = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".") and k in expected}
        module.load_state_dict(sub, strict=strict)
    return RestoreReport(loaded=sorted(set(expected) & set(state)), missing=missing, unexpected=unexpected)


def restore_into(
    model: EmoLLMForCausalLM,
    checkpoint: str | os.PathLike | CheckpointInfo,
    *,
    parts: Iterable[str] = ("connectors", "adapter"),
    strict: bool = True,
    what: str = "checkpoint",
    hint: str | None = None,
) -> RestoreReport:
    """Load stored parts of a checkpoint into an existing model, after checking the checkpoint fits it.

    Parts are restored in the order base, adapter, connectors:

    - ``base``: the full LLM weights of ``llm/``, into a language model without LoRA (apply LoRA afterwards);
    - ``adapter``: ``adapter_model.safetensors``. Into the model's own LoRA when it has one (same r and target
      modules required, every tensor must fit), else attached as a frozen adapter (inference);
    - ``connectors``: ``projectors.safetensors`` (projectors, type embeddings, fusion, trained encoders).

    Args:
        model: A built model whose embeddings already fit its tokenizer.
        checkpoint: The checkpoint folder, or its already-read :class:`CheckpointInfo`.
        parts: Which of ``base``, ``adapter``, ``connectors`` to restore.
        strict: For connectors: True requires the file's keys to match the model's exactly (resume, inference);
            False loads what fits and reports the rest (``init_from`` when a later stage adds a modality). Shape
            mismatches always raise.
        what: How the errors name the checkpoint.
        hint: What to do about a backbone mismatch (see :meth:`CheckpointInfo.check_backbone`).

    Returns:
        A :class:`RestoreReport`.

    Raises:
        FileNotFoundError: A requested file is missing.
        ValueError: The checkpoint does not fit the model; the message names the file and the tensors.
    """
    info = checkpoint if isinstance(checkpoint, CheckpointInfo) else read_checkpoint(checkpoint)
    parts = tuple(parts)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"restore_into: unknown parts {unknown}; choose from {list(PARTS)}")
    info.check_fits(model, what=what, hint=hint)
    report = RestoreReport()
    if "base" in parts:
        _restore_base(model, info)
        report.base = True
    if "adapter" in parts:
        _restore_adapter(model, info)
        report.adapter = True
    if "connectors" in parts:
        loaded = _restore_connectors(model, info, strict=strict)
        report.loaded, report.missing, report.unexpected = loaded.loaded, loaded.missing, loaded.unexpected
    return report
