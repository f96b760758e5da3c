"""peft glue: LoRA / QLoRA on the language model, and ``set_trainable`` applying the declarative trainable spec.

The settings themselves (:class:`LoraSettings`, :class:`TrainableSpec`) are torch-free and live in
:mod:`emollm.settings`, shared with the YAML schema; one function, :func:`set_trainable`, applies any spec.
"""

from __future__ import annotations

from torch import nn

from emollm.settings import LoraSettings, TrainableSpec

__all__ = [
    "LoraSettings",
    "TrainableSpec",
    "apply_lora",
    "count_trainable",
    "is_peft",
    "keep_4bit_trainable",
    "set_trainable",
]


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
    if getattr(lm, "is_loaded_in_4bit", False):
        keep_4bit_trainable(model.language_model)


def keep_4bit_trainable(model: nn.Module) -> int:
    """Turn off bitsandbytes' CPU inference repacking of 4-bit weights; returns how many layers it touched.

    On a CPU with AVX512-BF16, ``Linear4bit.forward`` in eval mode without grad (our sampling and reference passes)
    repacks the weight in place into a layout that only ``gemv_4bit`` reads, and that op has no autograd kernel: the
    following training forward then silently drops the gradient through every frozen base layer (torch warns "an
    autograd kernel was not registered"), so the LoRA weights of the lower layers get wrong gradients. GRPO switches
    between sampling and training every step, and SFT validates between steps: QLoRA keeps the training layout
    throughout (``apply_lora`` calls this on a 4-bit base).
    """
    try:
        import bitsandbytes as bnb
        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse
    except ImportError:
        return 0
    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            w = module.weight
            if getattr(w.quant_state, "packing_format_for_cpu", False):
                w.data, w.quant_state = _convert_weight_packed_for_cpu_inverse(w.data, w.quant_state)
            n += 1
    return n


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
