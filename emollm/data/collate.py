"""Collation: ``TrainItem`` lists -> a padded ``EmoBatch`` plus what the trainer needs beside it (loss weights,
labels, tasks, token counts). Padding, placeholder expansion and label masking are the processor's job."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from emollm.data.datasets import TrainItem
from emollm.model.processing import EmoBatch, EmoProcessor

__all__ = ["TrainBatch", "TrainCollator"]


@dataclass
class TrainBatch:
    """A model batch and its bookkeeping.

    Attributes:
        batch: Right-padded ``EmoBatch`` with labels.
        weights: (B,) per-sample loss weights (class balancing; 1 otherwise).
        labels: Gold label of each sample (None when unknown).
        tasks: Task of each sample.
        names: Sample names.
        num_tokens: Non-padding tokens in the batch.
    """

    batch: EmoBatch
    weights: Tensor
    labels: list[str | None]
    tasks: list[str]
    names: list[str | None]
    num_tokens: int

    def to(self, device) -> TrainBatch:
        return TrainBatch(
            self.batch.to(device), self.weights.to(device), self.labels, self.tasks, self.names, self.num_tokens
        )

    def __len__(self) -> int:
        return len(self.labels)


class TrainCollator:
    """Calls the processor on the samples (right padding, ``max_length`` truncation)."""

    def __init__(self, processor: EmoProcessor, max_length: int | None = None):
        self.processor = processor
        self.max_length = max_length

    def __call__(self, items: Sequence[TrainItem]) -> TrainBatch:
        batch = self.processor([it.sample for it in items], max_length=self.max_length)
        return TrainBatch(
            batch=batch,
            weights=torch.tensor([it.weight for it in items], dtype=torch.float32),
            labels=[it.label for it in items],
            tasks=[it.task for it in items],
            names=[it.sample.name for it in items],
            num_tokens=int(batch.attention_mask.sum()),
        )
