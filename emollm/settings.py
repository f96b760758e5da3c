"""Settings that configs and code share, torch-free: LoRA hyper-parameters, the trainable spec, named stages.

The YAML schema (:mod:`emollm.runconfig`) uses these very classes as the types of ``train.lora`` and
``train.trainable``, and :mod:`emollm.model.lora` applies them to a model, so the two cannot drift apart. Nothing here
imports torch: ``emollm validate`` checks a config without it.

Which parts train is data, not code paths: ``TrainableSpec(projectors=True, llm="lora")`` is stage 2 of
Emotion-LLaMA/LLaVA, ``TrainableSpec(llm="frozen")`` the projector-only alignment stage (:data:`STAGES`).

Example:
    >>> STAGES["pretrain"].llm, STAGES["instruct"].llm
    ('frozen', 'lora')
    >>> LoraSettings(r=0)
    Traceback (most recent call last):
    ...
    ValueError: lora.r must be >= 1, got 0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["LLMMode", "STAGES", "LoraSettings", "TrainableSpec"]

LLMMode = Literal["frozen", "lora", "full"]


@dataclass
class LoraSettings:
    """LoRA hyper-parameters. Defaults follow AffectGPT (r=16, alpha=32)."""

    r: int = 16
    """Rank."""
    alpha: int = 32
    """Scaling numerator (scale = alpha / r)."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    targets: list[str] | None = None
    """Module-name suffixes; None takes the backbone registry's ``lora_targets``."""

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"lora.r must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TrainableSpec:
    """Which parts of ``EmoLLMForCausalLM`` receive gradients (applied by ``emollm.model.lora.set_trainable``)."""

    encoders: bool = False
    """Live encoders (precomputed features have no weights)."""
    projectors: bool = True
    """Projectors, modality-type embeddings, fusion block."""
    llm: LLMMode = "lora"
    """The language model: frozen, LoRA adapters, or every weight."""
    extra: list[str] = field(default_factory=list)
    """More parameter-name substrings to unfreeze (e.g. ``lm_head``)."""

    def __post_init__(self) -> None:
        if self.llm not in ("frozen", "lora", "full"):
            raise ValueError(f"trainable.llm must be 'frozen', 'lora' or 'full', got {self.llm!r}")


STAGES: dict[str, TrainableSpec] = {
    "pretrain": TrainableSpec(encoders=False, projectors=True, llm="frozen"),
    "instruct": TrainableSpec(encoders=False, projectors=True, llm="lora"),
    "finetune": TrainableSpec(encoders=False, projectors=True, llm="lora"),
    "grpo": TrainableSpec(encoders=False, projectors=True, llm="lora"),
}
"""``pretrain`` is LLaVA / Emotion-LLaMA stage 1 (align the projectors; the LLM is frozen), ``instruct`` stage 2
(projectors + LoRA), ``finetune`` the per-dataset fine-tune (same parts as ``instruct``), ``grpo`` reinforcement
learning with rewards (same parts; the LoRA adapter is what the KL reference switches off). A config may set
``train.trainable`` to anything else (e.g. stage 1 with LoRA: ``train.trainable.llm=lora``)."""
