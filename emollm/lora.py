"""peft glue: LoRA / QLoRA on the language model, and the declarative trainable spec.

Which parts train is data, not code paths: ``TrainableSpec(encoders=False, projectors=True, llm="lora")`` is stage 2
of Emotion-LLaMA/LLaVA, ``TrainableSpec(llm="frozen")`` is the projector-only alignment stage, and one function,
``set_trainable``, applies either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

LLMMode = Literal["frozen", "lora", "full"]


@dataclass
class LoraSettings:
    """LoRA hyper-parameters. Defaults follow AffectGPT (r=16, alpha=32, all linear layers of each block)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: list[str] | None = None
    """Module-name suffixes; None takes the backbone registry's ``lora_targets``."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"lora.r must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TrainableSpec:
    """Which parts of ``EmoLLMForCausalLM`` receive gradients."""

    encoders: bool = False
    projectors: bool = True
    """Projectors, modality-type embeddings and the fusion block."""
    llm: LLMMode = "lora"
    extra: list[str] = field(default_factory=list)
    """Additional parameter-name substrings to unfreeze (e.g. ``lm_head``)."""

    def __post_init__(self) -> None:
        if self.llm not in ("frozen", "lora", "full"):
            raise ValueError(f"trainable.llm must be 'frozen', 'lora' or 'full', got {self.llm!r}")


def is_peft(module: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(module, PeftModel)


def apply_lora(model, settings: LoraSettings, default_targets: tuple[str, ...] | list[str]) -> None:
    """Wrap ``model.language_model`` with LoRA adapters (in place). A 4/8-bit base is prepared for k-bit training."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if is_peft(model.language_model):
        raise ValueError("the language model already has LoRA adapters")
    lm = model.language_model
    targets = list(settings.targets or default_targets)
    names = {n.rsplit(".", 1)[-1] for n, _ in lm.named_modules()}
    absent = [t for t in targets if t not in names]
    if absent:
        raise ValueError(f"LoRA targets {absent} match no module of this {lm.config.model_type} model")
    if getattr(lm, "is_loaded_in_4bit", False) or getattr(lm, "is_loaded_in_8bit", False):
        lm = prepare_model_for_kbit_training(lm, use_gradient_checkpointing=False)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    model.language_model = get_peft_model(lm, config)


def set_trainable(model, spec: TrainableSpec) -> dict[str, int]:
    """Freeze everything, then unfreeze what ``spec`` names. Returns trainable parameter counts per part."""
    for p in model.parameters():
        p.requires_grad_(False)
    if spec.encoders:
        for p in model.towers.parameters():
            p.requires_grad_(True)
    if spec.projectors:
        for part in model.connector_modules().values():
            for p in part.parameters():
                p.requires_grad_(True)
    if spec.llm == "lora":
        if not is_peft(model.language_model):
            raise ValueError("trainable.llm is 'lora' but the model has no LoRA adapters; call apply_lora first")
        for n, p in model.language_model.named_parameters():
            if "lora_" in n:
                p.requires_grad_(True)
    elif spec.llm == "full":
        if getattr(model.language_model, "is_loaded_in_4bit", False):
            raise ValueError("trainable.llm='full' is impossible on a 4-bit model; use 'lora' (QLoRA)")
        for p in model.language_model.parameters():
            p.requires_grad_(True)
    for n, p in model.named_parameters():
        if any(s in n for s in spec.extra):
            p.requires_grad_(True)
    return count_trainable(model)


def count_trainable(model) -> dict[str, int]:
    """Trainable parameter counts for encoders, connector parts and the LLM, plus the total."""

    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    out = {"encoders": count(model.towers), "llm": count(model.language_model)}
    for name, part in model.connector_modules().items():
        out[name] = count(part)
    out["total"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return out


def get_adapter_state_dict(model) -> dict:
    """LoRA weights only (peft key names), for ``adapter_model.safetensors``."""
    from peft import get_peft_model_state_dict

    if not is_peft(model.language_model):
        return {}
    return get_peft_model_state_dict(model.language_model)


def merge_lora(model) -> None:
    """Fold LoRA into the base weights (in place) for export; the model then has no adapters."""
    if not is_peft(model.language_model):
        raise ValueError("the model has no LoRA adapters to merge")
    if getattr(model.language_model, "is_loaded_in_4bit", False):
        raise ValueError("merging into a 4-bit base would re-quantize it; load the base in full precision first")
    model.language_model = model.language_model.merge_and_unload()
