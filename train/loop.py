"""The training step and the validation pass: loss, one optimizer step over its micro-batches, evaluation.

Functions of the model, batches and accelerator only; the recipe (``train/sft.py``) owns the run's state and decides
when to evaluate and save.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["StepStats", "better", "evaluate", "optimizer_step", "token_loss"]


def token_loss(
    model: torch.nn.Module, batch: Any, device: torch.device, *, reduce: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted token cross-entropy on the answer tokens; logits are computed only where labels are set.

    Args:
        model: The (possibly wrapped) model.
        batch: A ``TrainBatch`` (processor outputs and per-sample loss weights).
        device: Where to compute.
        reduce: Return the weighted mean instead of the sum.

    Returns:
        ``(loss, weight_sum)``; ``loss`` is the sum when ``reduce=False``.
    """
    b = batch.batch.to(device)
    labels = b.labels
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != -100  # (B, L): positions whose next token is supervised
    if not keep.any():
        keep[0, 0] = True  # keep the graph connected (DDP); contributes nothing below
        weights = torch.zeros(1, device=device)
    else:
        weights = batch.weights.to(device)[:, None].expand_as(keep)[keep]  # (N,)
    out = model(
        input_ids=b.input_ids,
        attention_mask=b.attention_mask,
        modality_inputs=b.modality_inputs,
        logits_to_keep=keep,
        use_cache=False,
    )
    logits = out.logits.reshape(-1, out.logits.shape[-1]).float()  # (N, V), row-major over (B, L)
    targets = labels[:, 1:][keep[:, :-1]]  # (N,); -100 only in the all-masked case, where its weight is 0
    ce = F.cross_entropy(logits, targets.clamp_min(0), reduction="none")  # (N,)
    total = (ce * weights).sum()
    wsum = weights.sum()
    if not reduce:
        return total, wsum
    return total / wsum.clamp_min(1e-8), wsum


@dataclass
class StepStats:
    """One optimizer step, summed over processes.

    Attributes:
        loss: Mean micro-batch loss, averaged over processes.
        tokens: Input tokens of all processes.
        samples: Samples of all processes.
        lrs: The learning rate each parameter group used, by group name.
        grad_norm: Gradient norm before clipping (None when not clipped).
    """

    loss: float
    tokens: int
    samples: int
    lrs: dict[str, float]
    grad_norm: float | None


def optimizer_step(
    accelerator: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    micro: Sequence[Any],
    params: Sequence[torch.Tensor],
    max_grad_norm: float | None,
) -> StepStats:
    """Forward/backward every micro-batch of one optimizer step, step the optimizer and the LR schedule.

    Args:
        accelerator: The run's accelerator (gradient accumulation, clipping, reduction).
        model: The prepared model.
        optimizer: The prepared optimizer.
        scheduler: The LR schedule, stepped once.
        micro: The step's ``grad_accum`` micro-batches.
        params: Trainable parameters (for clipping).
        max_grad_norm: Clip to this norm (0 / None: no clipping).

    Returns:
        The step's :class:`StepStats`.
    """
    losses, tokens, samples, grad_norm = [], 0, 0, None
    for mb in micro:
        with accelerator.accumulate(model):
            loss, _ = token_loss(model, mb, accelerator.device)
            accelerator.backward(loss)
            if accelerator.sync_gradients and max_grad_norm:
                grad_norm = accelerator.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        tokens += mb.num_tokens
        samples += len(mb)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}  # the LRs this step used
    scheduler.step()
    stats = torch.tensor(
        [torch.stack(losses).mean().item(), tokens, samples], dtype=torch.float64, device=accelerator.device
    )
    stats = accelerator.reduce(stats, reduction="sum")
    return StepStats(
        loss=stats[0].item() / accelerator.num_processes,
        tokens=int(stats[1].item()),
        samples=int(stats[2].item()),
        lrs=lrs,
        grad_norm=None if grad_norm is None else float(grad_norm),
    )


@torch.no_grad()
def evaluate(
    accelerator: Any,
    model: torch.nn.Module,
    raw_model: torch.nn.Module,
    processor: Any,
    collator: Any,
    val_ds: Any,
    *,
    labels: Sequence[str],
    max_samples: int,
    batch_size: int,
    generate_tokens: int,
    generate: bool = True,
) -> dict[str, float]:
    """Validation loss (token mean) and, for ``emotion`` samples, label accuracy of greedy answers; sharded over
    processes, every process doing the same number of batches.

    Args:
        accelerator: The run's accelerator.
        model: The prepared model (loss).
        raw_model: The unwrapped model (generation).
        processor: Its processor.
        collator: Turns dataset items into a ``TrainBatch``.
        val_ds: The validation set.
        labels: The label set, for parsing answers (``emollm.labels.LabelParser``).
        max_samples: Evaluate at most this many samples.
        batch_size: Samples per batch.
        generate_tokens: Answer length for the accuracy.
        generate: Compute the accuracy (off under ZeRO-3, whose sharded generation is not supported here).

    Returns:
        ``{"val_loss": ...}`` and ``val_accuracy`` when there were emotion samples.
    """
    from emollm.labels import LabelParser
    from emollm.model.generation import chat

    acc = accelerator
    n = min(len(val_ds), max_samples)
    world, rank = acc.num_processes, acc.process_index
    mine = list(range(rank, n, world))
    per_rank = -(-n // world)
    pad = per_rank - len(mine)  # equal work on every rank (DeepSpeed ZeRO-3 runs collectives in forward)
    keys = mine + [mine[-1] if mine else 0] * pad
    real = [True] * len(mine) + [False] * pad
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=acc.device)
    tok_sum = torch.zeros((), dtype=torch.float64, device=acc.device)
    correct = total = 0
    parser = LabelParser(labels)
    bs = batch_size
    for s in range(0, len(keys), bs):
        items = [val_ds[k] for k in keys[s : s + bs]]
        flags = real[s : s + bs]
        batch = collator(items)
        batch.weights = torch.tensor([1.0 if f else 0.0 for f in flags])
        loss, wsum = token_loss(model, batch, acc.device, reduce=False)
        loss_sum += loss.double()
        tok_sum += wsum.double()
        if not generate:
            continue
        emo = [(it, f) for it, f in zip(items, flags, strict=True) if it.task == "emotion" and it.label is not None]
        if emo:
            prompts = [
                type(it.sample)(messages=it.sample.messages[:-1], features=it.sample.features, name=it.sample.name)
                for it, _ in emo
            ]
            with acc.autocast():  # the unwrapped model has no autocast of its own: generate as training computes
                answers = chat(raw_model, processor, prompts, max_new_tokens=generate_tokens, batch_size=bs)
            for (it, f), ans in zip(emo, answers, strict=True):
                if f:
                    total += 1
                    correct += int(parser.parse(ans).label == it.label)
    model.train()
    sums = acc.reduce(
        torch.stack(
            [
                loss_sum,
                tok_sum,
                torch.tensor(float(correct), dtype=torch.float64, device=acc.device),
                torch.tensor(float(total), dtype=torch.float64, device=acc.device),
            ]
        ),
        reduction="sum",
    )
    result = {"val_loss": (sums[0] / sums[1].clamp_min(1e-8)).item()}
    if sums[3] > 0:
        result["val_accuracy"] = (sums[2] / sums[3]).item()
    return result


def better(metric: str, value: float, best: dict[str, Any] | None) -> bool:
    """Whether ``value`` of ``metric`` beats the best so far (lower ``val_loss``, higher anything else).

    Args:
        metric: The metric's name.
        value: Its new value.
        best: The best so far (``{"metric", "value", "step"}``), or None.
    """
    if best is None:
        return True
    return value < best["value"] if metric == "val_loss" else value > best["value"]
