"""The training recipe's glue to the shared settings: a run's trainable spec and LoRA settings.

The named stages themselves are data in :data:`emollm.settings.STAGES`.
"""

from __future__ import annotations

from emollm.runconfig import TrainConfig
from emollm.settings import STAGES, LoraSettings, TrainableSpec


def trainable_spec(train: TrainConfig) -> TrainableSpec:
    """The config's ``trainable`` section, or its stage's preset."""
    return train.trainable or STAGES[train.stage]


def lora_settings(train: TrainConfig) -> LoraSettings:
    """The config's LoRA settings."""
    return train.lora
