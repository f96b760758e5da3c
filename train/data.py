"""The recipe's data: training and validation sets from the run config, and the stream of optimizer steps.

``build_run_data`` reads the records (synthetic, MERR files or a stream), attaches feature files, mixes in auxiliary
text data and fixes the batch plan; ``RunData.micro_batches`` then yields the micro-batches of each optimizer step
from any step on, so a resumed run sees exactly the batches the original run would have seen.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from emollm.runconfig import RunConfig

log = logging.getLogger("emollm.train")

__all__ = ["RunData", "build_run_data", "datasets_cache_dir"]


def datasets_cache_dir(cfg: RunConfig, rank: int) -> Path:
    """This process's Hugging Face ``datasets`` cache of the run: ``<output_dir>/.datasets-cache/rank-N``, never the
    user's ``~/.cache/huggingface/datasets``; the recipe deletes it at the end (``SFTRecipe.cleanup``).

    Args:
        cfg: The run config.
        rank: This process's index (one folder per process: no locking between processes).
    """
    return Path(cfg.train.output_dir) / ".datasets-cache" / f"rank-{rank}"


@dataclass
class RunData:
    """Datasets, collator and batch plan of a run.

    Attributes:
        collator: Turns dataset items into a ``TrainBatch``.
        train_ds: The map-style training set (None when streaming).
        train_stream: The streamed training set (None otherwise).
        plan: The batch plan over ``train_ds`` (None when streaming).
        val_ds: The validation set, or None.
        train_size: Main training samples (None when streaming).
        steps_per_epoch: Optimizer steps per epoch (None when streaming).
        total_steps: Optimizer steps of the run.
        skipped: What was left out and why (reported in the setup log record).
        batch_size: Samples per micro-batch.
        grad_accum: Micro-batches per optimizer step.
        seed: The run's seed (data order).
        num_workers: DataLoader workers.
        stream_state: Epoch and position of the stream (saved in resumable checkpoints).
    """

    collator: Any
    train_ds: Any
    train_stream: Any
    plan: Any
    val_ds: Any
    train_size: int | None
    steps_per_epoch: int | None
    total_steps: int
    skipped: dict[str, Any]
    batch_size: int
    grad_accum: int
    seed: int
    num_workers: int = 0
    stream_state: dict[str, int] = field(default_factory=lambda: {"epoch": 0, "position": 0})

    @property
    def val_size(self) -> int:
        """Validation samples (0 without a validation set)."""
        return len(self.val_ds) if self.val_ds is not None else 0

    def micro_batches(self, global_step: int) -> Iterator[tuple[int, int | None, list[Any]]]:
        """Yield ``(epoch, step_in_epoch, [TrainBatch x grad_accum])`` for every optimizer step from ``global_step``.

        Args:
            global_step: Optimizer steps already done (a streamed run resumes from ``stream_state`` instead).
        """
        if self.train_stream is not None:
            yield from self._stream_batches()
            return
        from torch.utils.data import DataLoader

        epoch, start = divmod(global_step, self.steps_per_epoch)
        while True:
            # A private generator: iterating a DataLoader draws a base seed from its generator, which would otherwise
            # be the global torch RNG and shift the dropout stream of a resumed run.
            loader = DataLoader(
                self.train_ds,
                batch_sampler=list(self.plan.iter_epoch(epoch, start)),
                collate_fn=self.collator,
                num_workers=self.num_workers,
                generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch),
            )
            it = iter(loader)
            for step in range(start, self.steps_per_epoch):
                yield epoch, step, [next(it) for _ in range(self.grad_accum)]
            epoch, start = epoch + 1, 0

    def _stream_batches(self) -> Iterator[tuple[int, None, list[Any]]]:
        bs = self.batch_size
        need = bs * self.grad_accum
        while True:
            epoch, pos = self.stream_state["epoch"], self.stream_state["position"]
            items = []
            for item in self.train_stream.iterate(epoch, skip=pos):
                items.append(item)
                if len(items) == need:
                    pos += need
                    self.stream_state = {"epoch": epoch, "position": pos}
                    yield epoch, None, [self.collator(items[i : i + bs]) for i in range(0, need, bs)]
                    items = []
            if pos == 0 and not items:
                from emollm.data.datasets import DataError, unknown_labels_hint

                stream = self.train_stream
                unknown = ", ".join(f"{k!r} x{v}" for k, v in stream.unknown_labels.most_common(5))
                raise DataError(
                    f"{stream.source or 'the streamed training set'}: yields no usable samples on this process"
                    + unknown_labels_hint(unknown)
                    + (f"; skipped: {stream.skipped}" if stream.skipped else "")
                )
            self.stream_state = {"epoch": epoch + 1, "position": 0}  # leftovers (< one step) are dropped


def build_run_data(
    cfg: RunConfig, processor: Any, *, rank: int, world_size: int, show_progress: bool = True
) -> RunData:
    """Training and validation data as the config says.

    Args:
        cfg: The resolved run config.
        processor: The model's ``EmoProcessor``.
        rank: This process's index.
        world_size: Number of processes.
        show_progress: Keep the ``datasets`` progress bars.

    Returns:
        The run's :class:`RunData`.
    """
    from emollm.data.collate import TrainCollator
    from emollm.data.datasets import (
        FeatureFiles,
        InstructionDataset,
        NoFeatures,
        PromptBuilder,
        StreamingInstructions,
        load_aux_records,
        load_records,
        split_by_name,
        synthetic_records,
    )
    from emollm.data.samplers import BatchPlan, inverse_frequency_weights

    d, t = cfg.data, cfg.train
    cache_dir = str(datasets_cache_dir(cfg, rank))
    if not show_progress:
        import datasets

        datasets.disable_progress_bars()
    mods = cfg.model.modalities
    builder = PromptBuilder(d, list(mods))
    mods = {m: s for m, s in mods.items() if s.fuse is None}  # a fused slot (multi) has no features of its own
    dims = {m: s.feature_dim for m, s in mods.items()}
    collator = TrainCollator(processor, d.max_length)
    skipped: dict[str, Any] = {}
    train_idx = val_idx = None
    drop_if = None
    if d.format == "synthetic":
        train_records, train_feats = synthetic_records(d, dims, "train")
        val_records, val_feats = synthetic_records(d, dims, "val") if d.synthetic.num_val else (None, None)
    else:
        if mods:
            feats = FeatureFiles(d.feature_root, {m: s.feature_dir for m, s in mods.items()}, dims, d.missing_features)
        else:
            feats = NoFeatures()
        train_records = load_records(
            d.format, d.train, transcripts=d.transcripts, streaming=d.streaming, cache_dir=cache_dir
        )
        train_feats = val_feats = feats
        if isinstance(feats, FeatureFiles) and not d.streaming:
            missing = feats.missing_counts(list(train_records["name"]))
            if any(missing.values()):
                skipped["missing_feature_files"] = missing
                log.warning(
                    "feature files missing for %s of %d training samples (policy: %s)",
                    missing,
                    len(train_records),
                    d.missing_features,
                )
            if d.missing_features == "drop_sample":
                drop_if = lambda name: not feats.has_all(name)  # noqa: E731
        val_records = None
        if d.val:
            val_records = load_records(d.format, d.val, transcripts=d.transcripts, cache_dir=cache_dir)
        elif d.val_fraction:
            train_idx, val_idx = split_by_name(train_records, d.val_fraction)
            val_records = train_records
    aux_parts = []
    for i, a in enumerate(d.aux):
        recs, dropped = load_aux_records(
            a.path,
            text_field=a.text_field,
            label_field=a.label_field,
            label_map=a.label_map,
            labels=d.labels,
            prefix=f"aux{i}",
            cache_dir=cache_dir,
        )
        if dropped:
            skipped[f"aux[{i}]_unmapped_labels"] = dropped
        aux_parts.append((recs, NoFeatures()))
    train_ds = train_stream = plan = None
    train_size = steps_per_epoch = None
    if d.streaming:
        train_stream = StreamingInstructions(
            train_records,
            train_feats,
            builder,
            dict(d.tasks),
            t.seed,
            modality_dropout=d.modality_dropout,
            shuffle_buffer=d.shuffle_buffer,
            rank=rank,
            world_size=world_size,
            source=d.train,
        )
        total_steps = t.max_steps
    else:
        train_ds = InstructionDataset(
            [(train_records, train_feats), *aux_parts],
            builder,
            tasks=dict(d.tasks),
            seed=t.seed,
            train=True,
            modality_dropout=d.modality_dropout,
            balance_loss=d.balance == "loss",
            indices=train_idx,
            drop_sample_if=drop_if,
            source=d.train if d.format != "synthetic" else None,
        )
        if train_ds.skipped:
            skipped["train"] = train_ds.skipped
        if train_ds.unknown_labels:
            n_unknown = sum(train_ds.unknown_labels.values())
            skipped["unknown_labels"] = dict(train_ds.unknown_labels)
            dropped = train_ds.skipped.get("label not in data.labels", 0)
            log.warning(
                "%s: %d of %d training samples have labels not in data.labels (%s): %d skipped%s; add the labels to "
                "data.labels or fix the file",
                d.train or "training data",
                n_unknown,
                train_ds.main_records,
                train_ds.unknown_labels_text(),
                dropped,
                "" if dropped == n_unknown else f", {n_unknown - dropped} trained on other tasks only",
            )
        n = train_ds.num_main
        pools = [
            (off, size, max(1, round(a.ratio * n))) for (off, size), a in zip(train_ds.pools(), d.aux, strict=True)
        ]
        plan = BatchPlan(
            n,
            batch_size=t.batch_size,
            grad_accum=t.grad_accum,
            world_size=world_size,
            rank=rank,
            seed=t.seed,
            lengths=train_ds.lengths() if d.group_by_length else None,
            group_by_length=d.group_by_length,
            weights=inverse_frequency_weights(train_ds.labels()) if d.balance == "sampler" else None,
            pools=pools,
        )
        train_size = n
        steps_per_epoch = plan.steps_per_epoch
        total_steps = t.max_steps or t.epochs * steps_per_epoch
    val_ds = None
    if val_records is not None:
        try:
            val_ds = InstructionDataset(
                [(val_records, val_feats)],
                builder,
                tasks={k: 1.0 for k in d.val_tasks},
                seed=t.seed,
                train=False,
                indices=val_idx,
            )
        except ValueError as e:
            log.warning("no usable validation samples (%s); no validation metric, no best checkpoint", e)
    return RunData(
        collator=collator,
        train_ds=train_ds,
        train_stream=train_stream,
        plan=plan,
        val_ds=val_ds,
        train_size=train_size,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        skipped=skipped,
        batch_size=t.batch_size,
        grad_accum=t.grad_accum,
        seed=t.seed,
        num_workers=d.num_workers,
    )
