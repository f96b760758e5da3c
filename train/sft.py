"""``emollm train CONFIG.yaml [key=value ...]``: the one training recipe (pretrain, instruct, fine-tune).

The stage is only config: which parts train (``train.trainable`` / ``train.stage``), the data and task pool, the
learning rates, and ``train.init_from`` (stage 2 starts from stage 1's projectors). The recipe follows torchtune's
protocol: ``setup`` / ``train`` / ``save_checkpoint`` / ``load_checkpoint`` / ``cleanup``.

Scale-out is accelerate's: the same command runs on one CPU, one GPU, DDP or DeepSpeed ZeRO-2/3, e.g.::

    emollm train configs/debug/tiny.yaml
    ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 -m emollm.cli train configs/debug/tiny.yaml
    accelerate launch --config_file configs/accelerate/zero2.yaml -m emollm.cli train configs/instruct/llama3.yaml

Outputs (``train.output_dir``): ``checkpoints/step-N`` (resumable: model + optimizer + scheduler + RNG + data
position; the newest ``keep_last`` are kept), ``final`` (model at the end), ``best`` (lowest validation loss or
highest validation accuracy, chosen on the validation split only), ``train_log.jsonl``, ``tensorboard/``,
``config.yaml`` (resolved config) and ``summary.json``.

Resume after a kill: run the same command again (``train.resume=auto``): training continues from the newest complete
checkpoint with the same data order, optimizer, scheduler and RNG state, and gives the same weights and loss log as an
uninterrupted run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from emollm.runconfig import ConfigError, RunConfig, load_config, validate

log = logging.getLogger("emollm.train")

#: Debugging hook: SIGKILL this process right after the checkpoint of this step is written (used by the resume
#: test to simulate a crash without any end-of-training code running).
KILL_ENV = "EMOLLM_DEBUG_KILL_AT_STEP"

# Config keys that define the data order / model; a resume with other values cannot reproduce the original run.
_ORDER_KEYS = (
    "train.seed",
    "train.batch_size",
    "train.grad_accum",
    "train.stage",
    "train.trainable",
    "train.lora",
    "data.format",
    "data.train",
    "data.tasks",
    "data.labels",
    "data.label_order",
    "data.aux",
    "data.modality_dropout",
    "data.balance",
    "data.group_by_length",
    "data.synthetic",
    "model.backbone",
    "model.tiny",
    "model.modalities",
)


@contextlib.contextmanager
def _without_hf_zero3(plugin):
    """Turn off transformers' ZeRO-3 awareness (``zero.Init`` at construction) while the model is built.

    accelerate's ``zero3_init_context_manager(enable=False)`` re-registers the same DeepSpeed config with transformers,
    so it does not help here; unset it and register it again afterwards (generation needs it under ZeRO-3)."""
    if plugin is None or plugin.zero_stage != 3:
        yield
        return
    from transformers.integrations import unset_hf_deepspeed_config

    plugin.dschf = None
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.set_deepspeed_weakref()


def release_freed_memory_to_os(threshold: int = 1 << 20) -> bool:
    """Linux/glibc: serve allocations above ``threshold`` bytes with mmap, so freed activations go back to the OS.

    glibc raises its mmap threshold dynamically after large frees; activation tensors of a few MB then come from the
    heap and freed ones stay in RSS (SmolLM2 LoRA, 4 x 512 tokens with gradient checkpointing: 4.7 GB peak RSS
    instead of 2.0 GB of live memory). Fixing the threshold makes every large tensor fresh zeroed pages: that step
    was ~50% slower on a 2-core VM (bench/bench_train.py). Returns whether it applied."""
    if sys.platform != "linux":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_mmap_threshold = -3
        return bool(libc.mallopt(m_mmap_threshold, int(threshold)))
    except (OSError, AttributeError):
        return False


def _pick(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


class SFTRecipe:
    """Supervised fine-tuning of ``EmoLLMForCausalLM`` for any stage.

    Args:
        cfg: The resolved run config.
    """

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.out = Path(cfg.train.output_dir)
        self.ckpt_root = self.out / "checkpoints"
        self.global_step = 0
        self.best: dict[str, Any] | None = None
        self.stream_state = {"epoch": 0, "position": 0}
        self.last_eval_step = -1
        self.last_saved_step = -1
        self.init_report: dict[str, Any] = {}

    # ================================================================================================ setup
    def setup(self) -> None:
        """Accelerator, model (+ weights from ``init_from`` or the resumed checkpoint), data, optimizer, logging."""
        from accelerate.utils import set_seed

        from emollm.lora import set_trainable

        cfg, t = self.cfg, self.cfg.train
        report = validate(cfg)
        report.raise_if_errors()
        for w in report.warnings:
            log.warning(w)
        if t.threads:
            torch.set_num_threads(t.threads)
        if t.release_memory and not torch.cuda.is_available():
            release_freed_memory_to_os()
        self.accelerator = acc = self._make_accelerator()
        self.is_main = acc.is_main_process
        self.resume_dir = self._find_resume()
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.ckpt_root.is_dir():
                for p in self.ckpt_root.glob(".step-*.partial"):  # leftovers of a killed save
                    import shutil

                    shutil.rmtree(p, ignore_errors=True)
        acc.wait_for_everyone()

        set_seed(t.seed)  # identical initialisation on every process
        # Build the whole model on every process, never under ZeRO-3's zero.Init: the core's embedding resize and the
        # checkpoint restores below read and write full tensors; ZeRO-3 partitions them in prepare().
        with _without_hf_zero3(acc.state.deepspeed_plugin):
            model, processor, spec = self._build_model()
        self.trainable = spec
        self.trainable_counts = set_trainable(model, spec)
        if t.gradient_checkpointing:
            lm = model.language_model
            base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
            kwargs = {"use_reentrant": False}  # inputs_embeds come from trainable projectors; frozen layers in between
            if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x name
                base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
            base.config.use_cache = False
        self.processor = processor
        self._setup_data()
        from emollm_train.optim import build_optimizer, build_scheduler

        optimizer = build_optimizer(model, t)
        self.scheduler = build_scheduler(optimizer, t, self.total_steps)
        self._configure_deepspeed()
        if acc.state.deepspeed_plugin is not None:  # DeepSpeed steps the wrapped optimizer behind torch's back
            import warnings

            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.raw_model = acc.unwrap_model(self.model)
        if self.resume_dir is not None:
            self.load_checkpoint(self.resume_dir)
        else:
            set_seed(t.seed + acc.process_index)  # training randomness (dropout) differs per process
        from emollm_train.monitor import RunLogger

        self.logger = RunLogger(
            self.out,
            t.logging,
            enabled=self.is_main,
            resume_step=self.global_step if self.resume_dir else None,
            config=cfg.to_dict(),
        )
        if self.is_main:
            (self.out / "config.yaml").write_text(
                f"# resolved config of this run (re-run: emollm train {self.out / 'config.yaml'})\n" + cfg.to_yaml()
            )
            self._write_record(
                {
                    "kind": "setup",
                    "step": self.global_step,
                    "world_size": acc.num_processes,
                    "trainable": self.trainable_counts,
                    "train_samples": self.train_size,
                    "val_samples": self.val_size,
                    "steps_per_epoch": self.steps_per_epoch,
                    "total_steps": self.total_steps,
                    "resumed_from": str(self.resume_dir) if self.resume_dir else None,
                    **self.init_report,
                    "skipped_samples": self.skipped,
                }
            )
        log.info("trainable parameters: %s", self.trainable_counts)

    def _build_model(self):
        """Build the model, take weights from the resumed checkpoint or ``init_from``, apply LoRA."""
        from emollm_train import build
        from emollm_train.stages import lora_settings, trainable_spec

        from emollm.lora import apply_lora

        cfg, t = self.cfg, self.cfg.train
        model, processor = build.build_run_model(cfg)
        spec = trainable_spec(t)
        source = self.resume_dir or (Path(t.init_from) if t.init_from else None)
        meta = (
            build.check_compatible(model, source, "resume checkpoint" if self.resume_dir else "init_from")
            if source
            else None
        )
        if source is not None and (source / "llm").is_dir():
            build.restore_base(model, source)
        if spec.llm == "lora":
            from emollm.backbones import get_backbone

            apply_lora(model, lora_settings(t), get_backbone(cfg.model.backbone).lora_targets)
        if source is not None:
            has_adapter = bool(meta.get("lora")) and (source / "adapter_model.safetensors").is_file()
            if self.resume_dir is not None:
                if has_adapter != (spec.llm == "lora"):
                    raise ValueError(
                        f"resume checkpoint {source} {'has' if has_adapter else 'has no'} LoRA adapter, "
                        f"but this run's trainable.llm is {spec.llm!r}"
                    )
                if has_adapter:
                    build.restore_adapter(model, source)
                build.restore_connectors(model, source, strict=True)
            else:
                if has_adapter and t.init_adapter and spec.llm == "lora":
                    build.restore_adapter(model, source)
                    self.init_report["adapter"] = True
                elif has_adapter and spec.llm != "lora":
                    log.warning("init_from %s has a LoRA adapter, but this run trains no LoRA: it is not used", source)
                loaded = build.restore_connectors(model, source, strict=False)
                self.init_report.update(
                    init_from=str(source), projectors_loaded=len(loaded["loaded"]), projectors_missing=loaded["missing"]
                )
                if loaded["missing"]:
                    log.warning(
                        "init_from %s lacks %d connector tensors (new modalities?), e.g. %s; they start from scratch",
                        source,
                        len(loaded["missing"]),
                        loaded["missing"][:3],
                    )
        return model, processor, spec

    def _make_accelerator(self):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        t = self.cfg.train
        cuda = torch.cuda.is_available()
        mp = t.mixed_precision
        if mp == "auto":
            mp = "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
        if mp == "fp16" and not cuda:
            raise ConfigError("train.mixed_precision: fp16 needs a CUDA GPU; use 'no' (or 'bf16') on CPU")
        # find_unused_parameters: with modality dropout / missing modalities a projector may get no gradient in a step.
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
        handlers: list[Any] = [ddp]
        deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
        if deepspeed and not cuda:
            # accelerate turns DeepSpeed off when cpu=True and finds no backend without a GPU; DeepSpeed itself runs
            # on CPU (DS_ACCELERATOR=cpu) over gloo, so name the backend instead of passing cpu=True.
            from accelerate.utils import InitProcessGroupKwargs

            handlers.append(InitProcessGroupKwargs(backend="gloo"))
        return Accelerator(
            mixed_precision=mp,
            gradient_accumulation_steps=t.grad_accum,
            kwargs_handlers=handlers,
            cpu=not cuda and not deepspeed,
        )

    def _configure_deepspeed(self) -> None:
        plugin = self.accelerator.state.deepspeed_plugin
        if plugin is None:
            return
        t = self.cfg.train
        ds = plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = t.batch_size
        ds["gradient_accumulation_steps"] = t.grad_accum
        ds["train_batch_size"] = t.batch_size * t.grad_accum * self.accelerator.num_processes
        ds["gradient_clipping"] = t.max_grad_norm or 0.0

    @property
    def zero3(self) -> bool:
        plugin = self.accelerator.state.deepspeed_plugin
        return plugin is not None and plugin.zero_stage == 3

    def _find_resume(self) -> Path | None:
        from emollm_train.state import STATE_FILE, list_step_checkpoints

        r = self.cfg.train.resume
        if r == "never":
            if list_step_checkpoints(self.ckpt_root):
                raise FileExistsError(
                    f"train.resume=never, but {self.ckpt_root} holds checkpoints of an earlier run, which a later "
                    "resume=auto would pick up; delete them or choose another train.output_dir"
                )
            return None
        if r == "auto":
            found = list_step_checkpoints(self.ckpt_root)
            return found[-1][1] if found else None
        path = Path(r)
        if not (path / STATE_FILE).is_file():
            raise FileNotFoundError(f"train.resume: {path} is not a resumable checkpoint (no {STATE_FILE})")
        return path

    # ------------------------------------------------------------------------------------------------ data
    def _setup_data(self) -> None:
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

        cfg, d, t = self.cfg, self.cfg.data, self.cfg.train
        acc = self.accelerator
        if not (t.logging.progress and self.is_main):
            import datasets

            datasets.disable_progress_bars()
        mods = cfg.model.modalities
        dims = {m: s.feature_dim for m, s in mods.items()}
        builder = PromptBuilder(d, list(mods))
        self.collator = TrainCollator(self.processor, d.max_length)
        self.skipped: dict[str, Any] = {}
        train_idx = val_idx = None
        drop_if = None
        if d.format == "synthetic":
            train_records, train_feats = synthetic_records(d, dims, "train")
            val_records, val_feats = synthetic_records(d, dims, "val") if d.synthetic.num_val else (None, None)
        else:
            if mods:
                feats = FeatureFiles(
                    d.feature_root, {m: s.feature_dir for m, s in mods.items()}, dims, d.missing_features
                )
            else:
                feats = NoFeatures()
            train_records = load_records(d.format, d.train, transcripts=d.transcripts, streaming=d.streaming)
            train_feats = val_feats = feats
            if isinstance(feats, FeatureFiles) and not d.streaming:
                missing = feats.missing_counts(list(train_records["name"]))
                if any(missing.values()):
                    self.skipped["missing_feature_files"] = missing
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
                val_records = load_records(d.format, d.val, transcripts=d.transcripts)
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
            )
            if dropped:
                self.skipped[f"aux[{i}]_unmapped_labels"] = dropped
            aux_parts.append((recs, NoFeatures()))
        if d.streaming:
            self.train_stream = StreamingInstructions(
                train_records,
                train_feats,
                builder,
                dict(d.tasks),
                t.seed,
                modality_dropout=d.modality_dropout,
                shuffle_buffer=d.shuffle_buffer,
                rank=acc.process_index,
                world_size=acc.num_processes,
            )
            self.train_ds = None
            self.train_size = None
            self.steps_per_epoch = None
            self.total_steps = t.max_steps
        else:
            self.train_stream = None
            self.train_ds = InstructionDataset(
                [(train_records, train_feats), *aux_parts],
                builder,
                tasks=dict(d.tasks),
                seed=t.seed,
                train=True,
                modality_dropout=d.modality_dropout,
                balance_loss=d.balance == "loss",
                indices=train_idx,
                drop_sample_if=drop_if,
            )
            if self.train_ds.skipped:
                self.skipped["train"] = self.train_ds.skipped
            n = self.train_ds.num_main
            pools = [
                (off, size, max(1, round(a.ratio * n)))
                for (off, size), a in zip(self.train_ds.pools(), d.aux, strict=True)
            ]
            self.plan = BatchPlan(
                n,
                batch_size=t.batch_size,
                grad_accum=t.grad_accum,
                world_size=acc.num_processes,
                rank=acc.process_index,
                seed=t.seed,
                lengths=self.train_ds.lengths() if d.group_by_length else None,
                group_by_length=d.group_by_length,
                weights=inverse_frequency_weights(self.train_ds.labels()) if d.balance == "sampler" else None,
                pools=pools,
            )
            self.train_size = n
            self.steps_per_epoch = self.plan.steps_per_epoch
            self.total_steps = t.max_steps or t.epochs * self.steps_per_epoch
        self.val_ds = None
        if val_records is not None:
            try:
                self.val_ds = InstructionDataset(
                    [(val_records, val_feats)],
                    builder,
                    tasks={k: 1.0 for k in d.val_tasks},
                    seed=t.seed,
                    train=False,
                    indices=val_idx,
                )
            except ValueError as e:
                log.warning("no usable validation samples (%s); no validation metric, no best checkpoint", e)
        self.val_size = len(self.val_ds) if self.val_ds is not None else 0

    def _micro_batches(self) -> Any:
        """Yield ``(epoch, step_in_epoch, [TrainBatch x grad_accum])`` from ``self.global_step`` on."""
        t, d = self.cfg.train, self.cfg.data
        if self.train_stream is not None:
            yield from self._stream_batches()
            return
        from torch.utils.data import DataLoader

        epoch, start = divmod(self.global_step, self.steps_per_epoch)
        while True:
            # A private generator: iterating a DataLoader draws a base seed from its generator, which would otherwise
            # be the global torch RNG and shift the dropout stream of a resumed run.
            loader = DataLoader(
                self.train_ds,
                batch_sampler=list(self.plan.iter_epoch(epoch, start)),
                collate_fn=self.collator,
                num_workers=d.num_workers,
                generator=torch.Generator().manual_seed(t.seed * 1_000_003 + epoch),
            )
            it = iter(loader)
            for step in range(start, self.steps_per_epoch):
                yield epoch, step, [next(it) for _ in range(t.grad_accum)]
            epoch, start = epoch + 1, 0

    def _stream_batches(self) -> Any:
        t = self.cfg.train
        need = t.batch_size * t.grad_accum
        while True:
            epoch, pos = self.stream_state["epoch"], self.stream_state["position"]
            items = []
            for item in self.train_stream.iterate(epoch, skip=pos):
                items.append(item)
                if len(items) == need:
                    pos += need
                    self.stream_state = {"epoch": epoch, "position": pos}
                    yield (
                        epoch,
                        None,
                        [self.collator(items[i : i + t.batch_size]) for i in range(0, need, t.batch_size)],
                    )
                    items = []
            if pos == 0 and not items:
                raise ValueError("the streamed training set yields no usable samples on this process")
            self.stream_state = {"epoch": epoch + 1, "position": 0}  # leftovers (< one step) are dropped

    # ================================================================================================ train
    def _loss(self, batch, *, reduce: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted token cross-entropy on the answer tokens; logits are computed only where labels are set.

        Returns ``(loss, weight_sum)`` (``loss`` is the sum when ``reduce=False``)."""
        device = self.accelerator.device
        b = batch.batch.to(device)
        labels = b.labels
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = labels[:, 1:] != -100  # (B, L): positions whose next token is supervised
        if not keep.any():
            keep[0, 0] = True  # keep the graph connected (DDP); contributes nothing below
            weights = torch.zeros(1, device=device)
        else:
            weights = batch.weights.to(device)[:, None].expand_as(keep)[keep]  # (N,)
        out = self.model(
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

    def train(self) -> dict[str, Any]:
        """Run until ``total_steps``; returns the summary (also written to ``summary.json``)."""
        from tqdm.auto import tqdm

        t = self.cfg.train
        acc = self.accelerator
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        bar = tqdm(
            total=self.total_steps,
            initial=self.global_step,
            desc=f"{t.stage}",
            dynamic_ncols=True,
            disable=not (self.is_main and t.logging.progress),
        )
        started = time.perf_counter()
        tokens_total = 0
        kill_at = int(os.environ.get(KILL_ENV, "0") or 0)
        last_loss = None
        if self.global_step < self.total_steps:
            for epoch, _, micro in self._micro_batches():
                t0 = time.perf_counter()
                losses, tokens, samples, grad_norm = [], 0, 0, None
                for mb in micro:
                    with acc.accumulate(self.model):
                        loss, _ = self._loss(mb)
                        acc.backward(loss)
                        if acc.sync_gradients and t.max_grad_norm:
                            grad_norm = acc.clip_grad_norm_(params, t.max_grad_norm)
                        self.optimizer.step()
                        self.optimizer.zero_grad(set_to_none=True)
                    losses.append(loss.detach())
                    tokens += mb.num_tokens
                    samples += len(mb)
                lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}  # the LRs this step used
                self.scheduler.step()
                self.global_step += 1
                stats = torch.tensor(
                    [torch.stack(losses).mean().item(), tokens, samples], dtype=torch.float64, device=acc.device
                )
                stats = acc.reduce(stats, reduction="sum")
                dt = time.perf_counter() - t0
                last_loss = stats[0].item() / acc.num_processes
                tokens_total += int(stats[1].item())
                record = {
                    "kind": "train",
                    "step": self.global_step,
                    "epoch": epoch,
                    "loss": last_loss,
                    "lr": lrs,
                    "tokens": int(stats[1].item()),
                    "tokens_per_s": stats[1].item() / dt,
                    "samples_per_s": stats[2].item() / dt,
                    "step_time_s": dt,
                }
                if grad_norm is not None:
                    record["grad_norm"] = float(grad_norm)
                self._write_record(record)
                if self.global_step % t.logging.log_every == 0:
                    bar.set_postfix(
                        loss=f"{last_loss:.4f}",
                        lr=f"{next(iter(lrs.values())):.2e}",
                        tok_s=f"{record['tokens_per_s']:.0f}",
                    )
                bar.update(1)
                if t.eval_every and self.global_step % t.eval_every == 0 and self.val_ds is not None:
                    self.evaluate()
                if t.save_every and self.global_step % t.save_every == 0 and self.global_step < self.total_steps:
                    self.save_checkpoint()
                    if kill_at and self.global_step == kill_at:
                        os.kill(os.getpid(), signal.SIGKILL)
                if self.global_step >= self.total_steps:
                    break
        bar.close()
        if self.val_ds is not None and self.last_eval_step != self.global_step:
            self.evaluate()
        if self.last_saved_step != self.global_step:  # decided the same way on every process
            self.save_checkpoint()
        self.save_model(self.out / "final")
        replicas = self.check_replicas()
        elapsed = time.perf_counter() - started
        summary = {
            "steps": self.global_step,
            "last_loss": last_loss,
            "best": self.best,
            "final": str(self.out / "final"),
            "elapsed_s": elapsed,
            "tokens": tokens_total,
            "tokens_per_s": tokens_total / elapsed if elapsed > 0 else None,
            "replica_fingerprints": replicas,
        }
        if self.is_main:
            from emollm_train.state import write_json

            write_json(self.out / "summary.json", summary)
        return summary

    # ============================================================================================= evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss (token mean) and, for ``emotion`` samples, label accuracy of greedy answers; sharded
        over processes. Updates ``best`` (on the validation split only)."""
        from emollm.generation import chat
        from emollm.labels import LabelParser

        t, acc = self.cfg.train, self.accelerator
        n = min(len(self.val_ds), t.eval_max_samples)
        world, rank = acc.num_processes, acc.process_index
        mine = list(range(rank, n, world))
        per_rank = -(-n // world)
        pad = per_rank - len(mine)  # equal work on every rank (DeepSpeed ZeRO-3 runs collectives in forward)
        keys = mine + [mine[-1] if mine else 0] * pad
        real = [True] * len(mine) + [False] * pad
        self.model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=acc.device)
        tok_sum = torch.zeros((), dtype=torch.float64, device=acc.device)
        correct = total = 0
        parser = LabelParser(self.cfg.data.labels)
        bs = t.batch_size
        for s in range(0, len(keys), bs):
            items = [self.val_ds[k] for k in keys[s : s + bs]]
            flags = real[s : s + bs]
            batch = self.collator(items)
            batch.weights = torch.tensor([1.0 if f else 0.0 for f in flags])
            loss, wsum = self._loss(batch, reduce=False)
            loss_sum += loss.double()
            tok_sum += wsum.double()
            if not self.zero3:
                emo = [
                    (it, f) for it, f in zip(items, flags, strict=True) if it.task == "emotion" and it.label is not None
                ]
                if emo:
                    prompts = [
                        type(it.sample)(
                            messages=it.sample.messages[:-1], features=it.sample.features, name=it.sample.name
                        )
                        for it, _ in emo
                    ]
                    answers = chat(
                        self.raw_model, self.processor, prompts, max_new_tokens=t.eval_generate_tokens, batch_size=bs
                    )
                    for (it, f), ans in zip(emo, answers, strict=True):
                        if f:
                            total += 1
                            correct += int(parser.parse(ans).label == it.label)
        self.model.train()
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
        self.last_eval_step = self.global_step
        self._write_record({"kind": "eval", "step": self.global_step, **result, "val_samples": n})
        metric = t.best_metric
        if metric in result:
            value = result[metric]
            lower_is_better = metric == "val_loss"
            best = None if self.best is None else self.best["value"]
            better = best is None or (value < best if lower_is_better else value > best)
            if better:
                self.best = {"metric": metric, "value": value, "step": self.global_step}
                self.save_model(self.out / "best", extra={"best.json": self.best})
        return result

    # ============================================================================================ checkpoints
    def _gathered(self, full: bool):
        """ZeRO-3 keeps parameter shards on each process: gather them (collectively) around a save."""
        if not self.zero3:
            return contextlib.nullcontext()
        import deepspeed

        params = [p for p in self.raw_model.parameters() if full or p.requires_grad]
        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)

    def save_model(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        """A self-describing model checkpoint (``emollm.checkpoint.save_checkpoint``: atomic) at ``path``."""
        from emollm_train.stages import lora_settings

        from emollm.checkpoint import save_checkpoint

        acc = self.accelerator
        acc.wait_for_everyone()
        with self._gathered(full=self.raw_model.config.llm_source is None or self.trainable.llm == "full"):
            if self.is_main:
                lora = lora_settings(self.cfg.train) if self.trainable.llm == "lora" else None
                save_checkpoint(
                    self.raw_model,
                    self.processor,
                    path,
                    lora=lora,
                    trainable=self.trainable,
                    run_config=self.cfg.to_dict(),
                )
                from emollm_train.state import write_json

                for name, data in (extra or {}).items():
                    write_json(path / name, data)
        acc.wait_for_everyone()

    def save_checkpoint(self) -> Path:
        """A resumable checkpoint ``checkpoints/step-N``: model folder + optimizer, scheduler, RNG, data position.
        Assembled under a hidden name and renamed into place when complete; old ones pruned to ``keep_last``."""
        from emollm_train import state

        acc, t = self.accelerator, self.cfg.train
        final = state.step_dir(self.ckpt_root, self.global_step)
        tmp = self.ckpt_root / f".{final.name}.partial"
        self.save_model(tmp)
        if self.is_main:
            if acc.state.deepspeed_plugin is None:
                state.save_optimizer(self.optimizer, tmp / "optimizer.pt")
            state.write_json(tmp / "scheduler.json", state.scheduler_state(self.scheduler))
            state.write_json(
                tmp / state.STATE_FILE,
                {
                    "version": 1,
                    "global_step": self.global_step,
                    "total_steps": self.total_steps,
                    "steps_per_epoch": self.steps_per_epoch,
                    "world_size": acc.num_processes,
                    "best": self.best,
                    "last_eval_step": self.last_eval_step,
                    "order_config": {k: _pick(self.cfg.to_dict(), k) for k in _ORDER_KEYS},
                },
            )
        acc.wait_for_everyone()
        if acc.state.deepspeed_plugin is not None:  # ZeRO shards optimizer state over processes: DeepSpeed's format
            self.model.save_checkpoint(str(tmp / "deepspeed"), tag="state", exclude_frozen_parameters=True)
        state.write_json(
            tmp / f"rng_state_rank{acc.process_index}.json", {**state.capture_rng(), "stream": self.stream_state}
        )
        acc.wait_for_everyone()
        if self.is_main:
            if final.exists():
                import shutil

                shutil.rmtree(final)
            os.replace(tmp, final)
            state.prune(self.ckpt_root, t.keep_last)
        acc.wait_for_everyone()
        self.last_saved_step = self.global_step
        return final

    def load_checkpoint(self, path: Path) -> None:
        """Restore optimizer, scheduler, step, best metric, data position and RNG from ``path`` (model weights were
        restored in ``setup``)."""
        from emollm_train import state

        acc = self.accelerator
        info = json.loads((path / state.STATE_FILE).read_text())
        if info["world_size"] != acc.num_processes:
            log.warning(
                "resuming a %d-process run with %d processes: the data order differs from the original run",
                info["world_size"],
                acc.num_processes,
            )
        current = {k: _pick(self.cfg.to_dict(), k) for k in _ORDER_KEYS}
        changed = [
            k
            for k in _ORDER_KEYS
            if json.dumps(current[k], sort_keys=True) != json.dumps(info["order_config"].get(k), sort_keys=True)
        ]
        if changed:
            log.warning(
                "config keys %s changed since %s: the resumed run will not reproduce the original", changed, path
            )
        if acc.state.deepspeed_plugin is not None:
            self.model.load_checkpoint(
                str(path / "deepspeed"),
                tag="state",
                load_module_strict=False,
                load_optimizer_states=True,
                load_lr_scheduler_states=False,
            )
        else:
            state.load_optimizer(self.optimizer, path / "optimizer.pt")
        state.load_scheduler(self.scheduler, json.loads((path / "scheduler.json").read_text()))
        self.global_step = self.last_saved_step = info["global_step"]
        self.best = info.get("best")
        self.last_eval_step = info.get("last_eval_step", -1)
        rng_file = path / f"rng_state_rank{acc.process_index}.json"
        if rng_file.is_file():
            rng = json.loads(rng_file.read_text())
            self.stream_state = rng.pop("stream", self.stream_state)
            state.restore_rng(rng)
        else:
            log.warning("%s has no RNG state for process %d; dropout masks will differ", path, acc.process_index)
        log.info("resumed from %s at step %d", path, self.global_step)

    def fingerprint(self) -> str:
        """SHA-256 of every trainable tensor (name, dtype, bytes): equal on all processes of a correct run."""
        h = hashlib.sha256()
        with self._gathered(full=False):
            for name, p in sorted(self.raw_model.named_parameters()):
                if p.requires_grad:
                    h.update(name.encode())
                    h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def check_replicas(self) -> list[str]:
        """Gather each process's trainable-weight fingerprint; raise if the replicas diverged."""
        from accelerate.utils import gather_object

        prints = gather_object([self.fingerprint()])
        if self.is_main:
            from emollm_train.state import write_json

            write_json(self.out / "replicas.json", {"fingerprints": prints})
        if len(set(prints)) > 1:
            raise RuntimeError(f"trainable weights differ between processes after training: {prints}")
        return prints

    def _write_record(self, record: dict[str, Any]) -> None:
        if hasattr(self, "logger"):
            self.logger.write(record)

    def cleanup(self) -> None:
        if hasattr(self, "logger"):
            self.logger.close()
        self.accelerator.end_training()


# ===================================================================================================== CLI


def run(cfg: RunConfig) -> dict[str, Any]:
    """Set up, train, clean up; returns the summary."""
    recipe = SFTRecipe(cfg)
    recipe.setup()
    try:
        return recipe.train()
    finally:
        recipe.cleanup()


def main(argv: list[str]) -> int:
    """``emollm train CONFIG [key=value ...]``."""
    parser = argparse.ArgumentParser(
        prog="emollm train",
        description="Train an emollm model (stage 1 pretrain, stage 2 instruct, fine-tune) from a YAML config. "
        "Keys are overridden with key=value (e.g. train.max_steps=100 model.llm_path=/models/llama3). "
        "See `emollm validate --schema` for every key.",
    )
    parser.add_argument("config", help="YAML run config, e.g. configs/debug/tiny.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("-q", "--quiet", action="store_true", help="less logging (warnings only)")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config:
            print(cfg.to_yaml(), end="")
            return 0
        summary = run(cfg)
    except (ConfigError, FileNotFoundError, FileExistsError) as e:
        print(f"emollm train: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: summary[k] for k in ("steps", "last_loss", "best", "final", "tokens_per_s")}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
