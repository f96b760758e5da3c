"""Optimizer parameter groups (separate learning rates for projectors, LoRA, LLM, encoders) and LR schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

from emollm.runconfig import TrainConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "param_groups"]


def _no_decay(name: str, p: torch.Tensor) -> bool:
    return p.ndim < 2 or name.endswith(".bias") or "norm" in name.lower() or "embedding" in name.lower()


def param_groups(model: nn.Module, train: TrainConfig) -> list[dict]:
    """Trainable parameters of ``EmoLLMForCausalLM`` split by part, each with its LR; no weight decay on biases,
    norms, embeddings and 1-D parameters. Groups carry a ``name`` (``projectors``, ``lora``, ``llm``, ``encoders``,
    with a ``/no_decay`` suffix), in a fixed order so optimizer state can be restored by position."""
    connector_ids = {id(p) for part in model.connector_modules().values() for p in part.parameters()}
    tower_ids = {id(p) for p in model.towers.parameters()}
    lrs = {"projectors": train.projector_lr, "lora": train.lora_lr, "llm": train.llm_lr, "encoders": train.encoder_lr}
    buckets: dict[tuple[str, bool], list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in connector_ids:
            part = "projectors"
        elif id(p) in tower_ids:
            part = "encoders"
        elif "lora_" in name:
            part = "lora"
        else:
            part = "llm"
        buckets.setdefault((part, _no_decay(name, p)), []).append(p)
    groups = []
    for part in ("projectors", "lora", "llm", "encoders"):
        for no_decay in (False, True):
            params = buckets.get((part, no_decay))
            if params:
                groups.append(
                    {
                        "name": part + ("/no_decay" if no_decay else ""),
                        "params": params,
                        "lr": lrs[part],
                        "weight_decay": 0.0 if no_decay else train.weight_decay,
                    }
                )
    if not groups:
        raise ValueError("no trainable parameters; check train.trainable")
    return groups


def build_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over ``param_groups`` (fused/foreach left to torch's defaults)."""
    return torch.optim.AdamW(param_groups(model, train), betas=tuple(train.adam_betas), eps=1e-8)


def warmup_steps(train: TrainConfig, total_steps: int) -> int:
    if train.warmup_steps:
        return min(train.warmup_steps, total_steps)
    return int(round(train.warmup_ratio * total_steps))


def lr_factor(step: int, *, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak LR at optimizer step ``step`` (0-based): linear warmup from ~0, then cosine / linear
    decay to ``min_ratio``, or constant."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    if schedule == "linear":
        decay = 1.0 - progress
    else:
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * decay


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig, total_steps: int):
    """``LambdaLR`` stepped once per optimizer step; its state is plain numbers (saved as JSON)."""
    warm = warmup_steps(train, total_steps)

    def fn(step: int) -> float:
        return lr_factor(step, total=total_steps, warmup=warm, schedule=train.schedule, min_ratio=train.min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
