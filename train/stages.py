"""Named stages: which parts train in each, as data (``TrainableSpec`` presets), plus the LoRA settings glue.

``pretrain`` is LLaVA / Emotion-LLaMA stage 1 (align the projectors; the LLM is frozen), ``instruct`` is stage 2
(projectors + LoRA), ``finetune`` is the per-dataset fine-tune (same parts as ``instruct``). A config may set
``train.trainable`` to anything else (e.g. stage 1 with LoRA: ``train.trainable.llm=lora``).
"""

from __future__ import annotations

from emollm.lora import LoraSettings, TrainableSpec
from emollm.runconfig import TrainableConfig, TrainConfig

STAGES: dict[str, TrainableConfig] = {
    "pretrain": TrainableConfig(encoders=False, projectors=True, llm="frozen"),
    "instruct": TrainableConfig(encoders=False, projectors=True, llm="lora"),
    "finetune": TrainableConfig(encoders=False, projectors=True, llm="lora"),
}


def trainable_spec(train: TrainConfig) -> TrainableSpec:
    """The config's ``trainable`` section, or its stage's preset, as the core's ``TrainableSpec``."""
    t = train.trainable or STAGES[train.stage]
    return TrainableSpec(encoders=t.encoders, projectors=t.projectors, llm=t.llm, extra=list(t.extra))


def lora_settings(train: TrainConfig) -> LoraSettings:
    lo = train.lora
    return LoraSettings(r=lo.r, alpha=lo.alpha, dropout=lo.dropout, targets=list(lo.targets) if lo.targets else None)
