"""Deterministic, resumable, distributed batch plans (with length grouping and class-balanced sampling).

The whole epoch's order is a pure function of ``(seed, epoch)``, laid out in optimizer steps: step ``s`` consumes
``batch_size x grad_accum x world_size`` samples, micro-batch ``a`` of rank ``r`` being the ``(a * world_size + r)``-th
chunk of that step. Resuming at step ``s`` is therefore just "start the plan at ``s``": no sampler state to save
beyond ``(epoch, step)``, and every rank knows its share without communication. Incomplete steps at the end of an
epoch are dropped (those samples come in a different position next epoch).

Length grouping follows LLaVA's modality-length-grouped sampler: the shuffled order is cut into mega-batches of a few
optimizer steps, each sorted by length (so one micro-step across all ranks holds similar lengths: little padding and
balanced ranks), and the micro-steps of a mega-batch are shuffled again so lengths do not decrease monotonically.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

__all__ = ["BatchPlan", "inverse_frequency_weights"]


def inverse_frequency_weights(labels: Sequence[str | None]) -> list[float]:
    """Per-sample weight ``N / (K * count(label))`` (1 for unlabelled samples): each class gets equal total weight."""
    counts: dict[str, int] = {}
    for lab in labels:
        if lab is not None:
            counts[lab] = counts.get(lab, 0) + 1
    n, k = sum(counts.values()), len(counts)
    return [n / (k * counts[lab]) if lab is not None else 1.0 for lab in labels]


class BatchPlan:
    """Which samples every rank reads at every step of every epoch.

    Args:
        num_samples: Size of the main data (indices ``0..num_samples-1``).
        batch_size: Samples per micro-batch per rank.
        grad_accum: Micro-batches per optimizer step.
        world_size: Processes.
        rank: This process.
        seed: Seed of the order.
        lengths: Per-index length estimates (main data, then auxiliary pools), for ``group_by_length``.
        group_by_length: Group similar lengths (see module docstring).
        weights: Per-sample sampling weights of the main data: each epoch draws ``num_samples`` samples with
            replacement (class-balanced sampling); None = a plain permutation.
        pools: ``(offset, size, per_epoch)`` auxiliary pools: ``per_epoch`` samples of each are mixed into every epoch.
        megabatch_steps: Optimizer steps per length-grouping mega-batch.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        batch_size: int,
        grad_accum: int = 1,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        lengths: Sequence[int] | None = None,
        group_by_length: bool = False,
        weights: Sequence[float] | None = None,
        pools: Sequence[tuple[int, int, int]] = (),
        megabatch_steps: int = 8,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        if group_by_length and lengths is None:
            raise ValueError("group_by_length needs per-sample lengths")
        if weights is not None and len(weights) != num_samples:
            raise ValueError(f"{len(weights)} weights for {num_samples} samples")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.grad_accum = grad_accum
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.lengths = list(lengths) if lengths is not None else None
        self.group_by_length = group_by_length
        self.weights = list(weights) if weights is not None else None
        self.pools = [tuple(p) for p in pools]
        self.megabatch_steps = megabatch_steps
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"an epoch has {self.epoch_size} samples, fewer than one optimizer step "
                f"(batch_size {batch_size} x grad_accum {grad_accum} x {world_size} processes = "
                f"{self.samples_per_step}); "
                "lower train.batch_size / train.grad_accum or add data"
            )

    @property
    def samples_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.world_size

    @property
    def epoch_size(self) -> int:
        return self.num_samples + sum(k for _, _, k in self.pools)

    @property
    def steps_per_epoch(self) -> int:
        return self.epoch_size // self.samples_per_step

    def epoch_order(self, epoch: int) -> list[int]:
        """The global sample order of ``epoch``, truncated to whole optimizer steps."""
        rng = random.Random(self.seed * 1_000_003 + epoch)
        if self.weights is None:
            order = list(range(self.num_samples))
            rng.shuffle(order)
        else:
            order = rng.choices(range(self.num_samples), weights=self.weights, k=self.num_samples)
        for offset, size, k in self.pools:
            pool = range(offset, offset + size)
            order += rng.sample(pool, k) if k <= size else rng.choices(pool, k=k)
        if self.pools:
            rng.shuffle(order)
        order = order[: self.steps_per_epoch * self.samples_per_step]
        if self.group_by_length:
            order = self._group(order, rng)
        return order

    def _group(self, order: list[int], rng: random.Random) -> list[int]:
        assert self.lengths is not None
        micro = self.batch_size * self.world_size  # one micro-step across all ranks
        mega = self.samples_per_step * self.megabatch_steps
        out: list[int] = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
            steps = [chunk[j : j + micro] for j in range(0, len(chunk), micro)]
            rng.shuffle(steps)
            for s in steps:
                out += s
        return out

    def step_batches(self, order: list[int], step: int) -> list[list[int]]:
        """This rank's ``grad_accum`` micro-batches of optimizer step ``step`` (within the epoch) of ``order``."""
        base = step * self.samples_per_step
        out = []
        for a in range(self.grad_accum):
            start = base + (a * self.world_size + self.rank) * self.batch_size
            out.append(order[start : start + self.batch_size])
        return out

    def iter_epoch(self, epoch: int, start_step: int = 0) -> Iterator[list[tuple[int, int]]]:
        """This rank's micro-batches of ``epoch`` from ``start_step`` on, as lists of ``(index, epoch)`` keys (the
        ``batch_sampler`` of a DataLoader over ``InstructionDataset``)."""
        order = self.epoch_order(epoch)
        for step in range(start_step, self.steps_per_epoch):
            for batch in self.step_batches(order, step):
                yield [(i, epoch) for i in batch]
