"""Model set-up for the recipe: build from the run config, then restore weights from a checkpoint.

Every run builds its model the same way (``build_run_model``), then takes weights from a checkpoint folder:

- ``restore_base``: the full LLM weights a checkpoint stores in ``llm/`` (random-init debug model, full fine-tune),
  loaded before LoRA is applied;
- ``restore_adapter``: ``adapter_model.safetensors`` into the freshly applied LoRA (same r / targets required);
- ``restore_connectors``: ``projectors.safetensors`` (projectors, type embeddings, fusion; strict for a resume,
  lenient for ``init_from`` so that stage 2 may add a modality).

So a resume and a stage-2 start are the same code path as a fresh run, plus explicit, checked loads.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from emollm.backbones import get_backbone
from emollm.checkpoint import read_checkpoint_meta
from emollm.configuration import ModalityConfig, ProjectorConfig
from emollm.runconfig import RunConfig

log = logging.getLogger("emollm.train")

_ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def resolve_dtype(name: str, backbone: str) -> torch.dtype:
    """``auto`` -> the backbone's dtype on a GPU, float32 on CPU."""
    if name == "auto":
        return getattr(torch, get_backbone(backbone).default_dtype) if torch.cuda.is_available() else torch.float32
    return getattr(torch, name)


def modality_configs(cfg: RunConfig) -> dict[str, ModalityConfig]:
    out = {}
    for name, m in cfg.model.modalities.items():
        out[name] = ModalityConfig(
            encoder=m.encoder,
            feature_dim=m.feature_dim,
            encoder_path=m.encoder_path,
            encoder_options=dict(m.encoder_options),
            projector=ProjectorConfig(**vars(m.projector)),
            feature_dir=m.feature_dir,
        )
    return out


def tiny_tokenizer(backbone: str, vocab_size: int):
    """The tiny BPE tokenizer of a backbone's chat format (with LLaMA-3's reserved placeholder tokens)."""
    from emollm.chat_formats import get_chat_format
    from emollm.testing import build_tiny_tokenizer

    spec = get_backbone(backbone)
    extras: list[str] = []
    if spec.placeholder_token_policy == "reserved":
        extras += list(spec.placeholder_tokens().values())
    extras += [t for t in spec.pad_candidates if t.startswith("<|")]
    return build_tiny_tokenizer(get_chat_format(spec.chat_format), extra_special_tokens=extras, vocab_size=vocab_size)


def build_run_model(cfg: RunConfig):
    """``(model, processor)`` as the config says: a tiny random LLM, or real weights (optionally 4/8-bit)."""
    from emollm.factory import build_model

    m = cfg.model
    mods = modality_configs(cfg)
    if m.tiny is not None:
        spec = get_backbone(m.backbone)
        tok = tiny_tokenizer(m.backbone, m.tiny.vocab_size)
        text_config = spec.text_config(
            n_layers=m.tiny.n_layers, hidden=m.tiny.hidden, vocab_size=len(tok), initializer_range=m.tiny.init_std
        )
        return build_model(
            m.backbone,
            mods,
            text_config=text_config,
            tokenizer=tok,
            modality_type_embeddings=m.modality_type_embeddings,
        )
    return build_model(
        m.backbone,
        mods,
        llm_path=m.llm_path,
        dtype=resolve_dtype(m.dtype, m.backbone),
        quantization=m.quantization,
        modality_type_embeddings=m.modality_type_embeddings,
    )


def check_compatible(model, ckpt: Path, what: str) -> dict:
    """Raise unless ``ckpt`` was trained on this backbone, LLM shape and placeholder ids; returns its meta."""
    meta = read_checkpoint_meta(ckpt)
    if meta["backbone"] != model.config.backbone:
        raise ValueError(
            f"{what} {ckpt} was trained for backbone {meta['backbone']!r}, not {model.config.backbone!r}: its "
            "projectors only fit that LLM. Train a stage-1 checkpoint for this backbone (configs/pretrain/)"
        )
    saved = json.loads((ckpt / "emollm_config.json").read_text())
    ours = model.config.text_config
    diffs = [
        f"{k}: {saved['text_config'].get(k)!r} vs {ours.get(k)!r}"
        for k in _ARCH_KEYS
        if saved["text_config"].get(k) != ours.get(k)
    ]
    if diffs:
        raise ValueError(f"{what} {ckpt} was trained on a different LLM ({'; '.join(diffs)})")
    for name, mod in saved.get("modalities", {}).items():
        if name in model.config.modalities and mod.get("token_id") != model.config.modalities[name].token_id:
            raise ValueError(
                f"{what} {ckpt}: the {name} placeholder token id differs ({mod.get('token_id')} vs "
                f"{model.config.modalities[name].token_id}); was the tokenizer changed?"
            )
    return meta


@torch.no_grad()
def restore_base(model, ckpt: Path) -> None:
    """Load the full LLM weights stored in ``ckpt/llm`` (before LoRA is applied)."""
    lm = model.language_model
    if getattr(lm, "is_loaded_in_4bit", False) or getattr(lm, "is_loaded_in_8bit", False):
        raise ValueError(
            f"{ckpt}/llm holds full LLM weights, which cannot be loaded into a quantized model; "
            "drop model.quantization for this run"
        )
    state = load_file(str(ckpt / "llm" / "model.safetensors"))
    missing, unexpected = lm.load_state_dict(state, strict=False)
    tied = getattr(lm.config, "tie_word_embeddings", False)
    missing = [k for k in missing if not (tied and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"{ckpt}/llm does not fit this LLM: missing {missing[:6]}, unexpected {unexpected[:6]}")
    if tied:
        lm.tie_weights()


def restore_adapter(model, ckpt: Path) -> None:
    """Load ``ckpt``'s LoRA adapter into the model's (freshly applied, same-shaped) adapter."""
    from peft import set_peft_model_state_dict

    file = ckpt / "adapter_model.safetensors"
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing")
    saved_cfg = json.loads((ckpt / "adapter_config.json").read_text())
    ours = model.language_model.peft_config["default"]
    if saved_cfg.get("r") != ours.r or set(saved_cfg.get("target_modules") or []) != set(ours.target_modules or []):
        raise ValueError(
            f"the adapter in {ckpt} (r={saved_cfg.get('r')}, targets={sorted(saved_cfg.get('target_modules') or [])}) "
            f"does not match this run's LoRA (r={ours.r}, targets={sorted(ours.target_modules or [])}); use the same "
            "train.lora settings, or train.init_adapter=false to start a new adapter"
        )
    state = load_file(str(file))
    result = set_peft_model_state_dict(model.language_model, state)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise ValueError(f"{file} does not fit: missing {missing[:6]}, unexpected {list(result.unexpected_keys)[:6]}")


@torch.no_grad()
def restore_connectors(model, ckpt: Path, *, strict: bool) -> dict[str, list[str]]:
    """Load ``projectors.safetensors``. Strict: keys must match exactly. Lenient: load what fits, report the rest.
    Shape mismatches always raise."""
    state = load_file(str(ckpt / "projectors.safetensors"))
    parts = dict(model.connector_modules())
    if any(k.startswith("towers.") for k in state):
        parts["towers"] = model.towers
    expected = {f"{p}.{k}": v for p, mod in parts.items() for k, v in mod.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if bad:
        raise ValueError(
            f"{ckpt}/projectors.safetensors has tensors of the wrong shape: {bad[:6]} (different "
            "feature_dim / projector kind?)"
        )
    if strict and (missing or unexpected):
        raise ValueError(
            f"{ckpt}/projectors.safetensors does not fit: missing {missing[:6]}, unexpected {unexpected[:6]}"
        )
    for prefix, module in parts.items():
        sub = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".") and k in expected}
        module.load_state_dict(sub, strict=False)
    return {"loaded": sorted(set(expected) & set(state)), "missing": missing, "unexpected": unexpected}
