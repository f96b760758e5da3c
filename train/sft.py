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

The recipe class holds the run's state and drives it; the separable jobs live beside it: ``runtime.py`` (accelerator,
mixed precision, ZeRO), ``build.py`` (model, weights from ``init_from`` / the resumed checkpoint through
``emollm.checkpoints.restore.restore_into``), ``data.py`` (datasets, batch plan, the stream of optimizer steps),
``loop.py``
(loss, optimizer step, validation), ``state.py`` (resumable-checkpoint files), ``optim.py`` and ``monitor.py``.
"""

from __future__ import annotations

import argparse
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

from emollm.data.datasets import DataError
from emollm.runconfig import ConfigError, RunConfig, load_config, validate

log = logging.getLogger("emollm.train")

#: Debugging hook: SIGKILL this process right after the checkpoint of this step is written (used by the resume
#: test to simulate a crash without any end-of-training code running).
KILL_ENV = "EMOLLM_DEBUG_KILL_AT_STEP"


class SFTRecipe:
    """Supervised fine-tuning of ``EmoLLMForCausalLM`` for any stage (torchtune's recipe protocol).

    Args:
        cfg: The resolved run config.
    """

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.out = Path(cfg.train.output_dir)
        self.ckpt_root = self.out / "checkpoints"
        self.global_step = 0
        self.best: dict[str, Any] | None = None
        self.last_eval_step = -1
        self.last_saved_step = -1
        self.init_report: dict[str, Any] = {}

    # ================================================================================================ setup
    def setup(self) -> None:
        """Accelerator, model (+ weights from ``init_from`` or the resumed checkpoint), data, optimizer, logging."""
        from accelerate.utils import set_seed

        from emollm.model.lora import set_trainable
        from emollm_train import runtime, state
        from emollm_train.build import build_for_run
        from emollm_train.data import build_run_data
        from emollm_train.monitor import RunLogger
        from emollm_train.optim import build_optimizer, build_scheduler

        cfg, t = self.cfg, self.cfg.train
        # check_paths: open the data (records, labels, the first rows' feature files) before building the model, so
        # that a bad file stops the run in seconds with the same one-line message as `emollm validate --check-paths`.
        # Its data warnings (unknown labels, missing feature files) come again, counted on the whole set, from
        # build_run_data; print the config's own warnings only.
        validate(cfg, check_paths=True).raise_if_errors()
        report = validate(cfg)
        for w in report.warnings:
            log.warning(w)
        if t.threads:
            torch.set_num_threads(t.threads)
        if t.release_memory and not torch.cuda.is_available():
            runtime.release_freed_memory_to_os()
        self.accelerator = acc = runtime.make_accelerator(t)
        _, why = runtime.resolve_mixed_precision(t.mixed_precision, deepspeed=acc.state.deepspeed_plugin is not None)
        self.precision = {"mixed_precision": acc.mixed_precision, "mixed_precision_reason": why}
        self.is_main = acc.is_main_process
        self.resume_dir = state.find_resume(t.resume, self.ckpt_root)
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            state.remove_partial(self.ckpt_root)
        acc.wait_for_everyone()

        set_seed(t.seed)  # identical initialisation on every process
        # Build the whole model on every process, never under ZeRO-3's zero.Init: the core's embedding resize and the
        # checkpoint restores read and write full tensors; ZeRO-3 partitions them in prepare().
        with runtime.without_hf_zero3(acc.state.deepspeed_plugin):
            built = build_for_run(cfg, self.resume_dir)
        model, self.processor, self.trainable = built.model, built.processor, built.trainable
        self.init_report = built.init_report
        self.trainable_counts = set_trainable(model, self.trainable)
        if t.gradient_checkpointing:
            runtime.enable_gradient_checkpointing(model)
        self.data = build_run_data(
            cfg,
            self.processor,
            rank=acc.process_index,
            world_size=acc.num_processes,
            show_progress=t.logging.progress and self.is_main,
        )
        optimizer = build_optimizer(model, t)
        self.scheduler = build_scheduler(optimizer, t, self.total_steps)
        runtime.configure_deepspeed(acc, t)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.raw_model = acc.unwrap_model(self.model)
        if self.resume_dir is not None:
            self.load_checkpoint(self.resume_dir)
        else:
            set_seed(t.seed + acc.process_index)  # training randomness (dropout) differs per process
        self.logger = RunLogger(
            self.out,
            t.logging,
            enabled=self.is_main,
            resume_step=self.global_step if self.resume_dir else None,
            config=cfg.to_dict(),
        )
        if self.is_main:
            from emollm.utils.io import atomic_write_text

            atomic_write_text(
                self.out / "config.yaml",
                f"# resolved config of this run (re-run: emollm train {self.out / 'config.yaml'})\n" + cfg.to_yaml(),
            )
            self._write_record(
                {
                    "kind": "setup",
                    "step": self.global_step,
                    "world_size": acc.num_processes,
                    "trainable": self.trainable_counts,
                    "train_samples": self.data.train_size,
                    "val_samples": self.data.val_size,
                    "steps_per_epoch": self.data.steps_per_epoch,
                    "total_steps": self.total_steps,
                    "resumed_from": str(self.resume_dir) if self.resume_dir else None,
                    **self.precision,
                    **self.init_report,
                    "skipped_samples": self.data.skipped,
                }
            )
        log.info("trainable parameters: %s", self.trainable_counts)
        log.info("mixed precision: %s (%s)", acc.mixed_precision, why)

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the run."""
        return self.data.total_steps

    @property
    def val_ds(self) -> Any:
        """The validation set, or None."""
        return self.data.val_ds

    @property
    def zero3(self) -> bool:
        """Whether parameters are sharded (DeepSpeed ZeRO-3)."""
        from emollm_train.runtime import is_zero3

        return is_zero3(self.accelerator)

    # ================================================================================================ train
    def train(self) -> dict[str, Any]:
        """Run until ``total_steps``; returns the summary (also written to ``summary.json``)."""
        if self.cfg.train.stage == "grpo":  # the same recipe, a reinforcement-learning step (train/grpo.py)
            from emollm_train.grpo import train_grpo

            return train_grpo(self)
        from tqdm.auto import tqdm

        from emollm_train.loop import optimizer_step

        t = self.cfg.train
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
            for epoch, _, micro in self.data.micro_batches(self.global_step):
                t0 = time.perf_counter()
                step = optimizer_step(
                    self.accelerator, self.model, self.optimizer, self.scheduler, micro, params, t.max_grad_norm
                )
                self.global_step += 1
                dt = time.perf_counter() - t0
                last_loss = step.loss
                tokens_total += step.tokens
                record = {
                    "kind": "train",
                    "step": self.global_step,
                    "epoch": epoch,
                    "loss": last_loss,
                    "lr": step.lrs,
                    "tokens": step.tokens,
                    "tokens_per_s": step.tokens / dt,
                    "samples_per_s": step.samples / dt,
                    "step_time_s": dt,
                }
                if step.grad_norm is not None:
                    record["grad_norm"] = step.grad_norm
                self._write_record(record)
                if self.global_step % t.logging.log_every == 0:
                    bar.set_postfix(
                        loss=f"{last_loss:.4f}",
                        lr=f"{next(iter(step.lrs.values())):.2e}",
                        tok_s=f"{record['tokens_per_s']:.0f}",
                    )
                bar.update(1)
                if self.after_step(kill_at):
                    break
        bar.close()
        return self.finish(started, tokens_total, {"last_loss": last_loss})

    def after_step(self, kill_at: int | None) -> bool:
        """Validation, checkpoint and the test kill hook after an optimizer step; True when training is done.

        Shared by every stage's loop (SFT here, GRPO in ``emollm_train.grpo``)."""
        t = self.cfg.train
        if t.eval_every and self.global_step % t.eval_every == 0 and self.val_ds is not None:
            self.evaluate()
        if t.save_every and self.global_step % t.save_every == 0 and self.global_step < self.total_steps:
            self.save_checkpoint()
            if kill_at and self.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return self.global_step >= self.total_steps

    def finish(self, started: float, tokens_total: int, extra: dict[str, Any]) -> dict[str, Any]:
        """The end of a run: last validation and checkpoint, ``final/``, replica check, ``summary.json``.

        Args:
            started: ``time.perf_counter()`` at the start of training.
            tokens_total: Tokens trained on.
            extra: Stage-specific summary fields (``last_loss``, ``last_reward``), placed after ``steps``.
        """
        if self.val_ds is not None and self.last_eval_step != self.global_step:
            self.evaluate()
        if self.last_saved_step != self.global_step:  # decided the same way on every process
            self.save_checkpoint()
        self.save_model(self.out / "final")
        replicas = self.check_replicas()
        elapsed = time.perf_counter() - started
        summary = {
            "steps": self.global_step,
            **extra,
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

    def evaluate(self) -> dict[str, float]:
        """Validation loss and accuracy (``loop.evaluate``), logged; keeps ``best`` (on the validation split only)
        and saves it to ``best/`` when it improves."""
        from emollm_train.loop import better, evaluate

        t = self.cfg.train
        result = evaluate(
            self.accelerator,
            self.model,
            self.raw_model,
            self.processor,
            self.data.collator,
            self.val_ds,
            labels=self.cfg.data.labels,
            max_samples=t.eval_max_samples,
            batch_size=t.batch_size,
            generate_tokens=t.eval_generate_tokens,
            generate=not self.zero3,
        )
        self.last_eval_step = self.global_step
        n = min(len(self.val_ds), t.eval_max_samples)
        self._write_record({"kind": "eval", "step": self.global_step, **result, "val_samples": n})
        metric = t.best_metric
        if metric in result and better(metric, result[metric], self.best):
            self.best = {"metric": metric, "value": result[metric], "step": self.global_step}
            self.save_model(self.out / "best", extra={"best.json": self.best})
        return result

    # ============================================================================================ checkpoints
    def _gathered(self, full: bool):
        from emollm_train.runtime import gathered

        return gathered(self.accelerator, self.raw_model, full=full)

    def save_model(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        """A self-describing model checkpoint (``emollm.checkpoints.save_checkpoint``: atomic) at ``path``.

        Args:
            path: The folder to write.
            extra: More JSON files to put in it, by name.
        """
        from emollm.checkpoints import save_checkpoint
        from emollm_train.stages import lora_settings
        from emollm_train.state import write_json

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
                for name, data in (extra or {}).items():
                    write_json(path / name, data)
        acc.wait_for_everyone()

    def save_checkpoint(self) -> Path:
        """A resumable checkpoint ``checkpoints/step-N``: model folder + optimizer, scheduler, RNG, data position.
        Assembled under a hidden name and renamed into place when complete; old ones pruned to ``keep_last``.

        Returns:
            The checkpoint folder.
        """
        from emollm_train import state

        acc, t = self.accelerator, self.cfg.train
        final = state.step_dir(self.ckpt_root, self.global_step)
        tmp = state.partial_dir(self.ckpt_root, self.global_step)
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
                    "steps_per_epoch": self.data.steps_per_epoch,
                    "world_size": acc.num_processes,
                    "best": self.best,
                    "last_eval_step": self.last_eval_step,
                    "order_config": state.order_config(self.cfg.to_dict()),
                },
            )
        acc.wait_for_everyone()
        if acc.state.deepspeed_plugin is not None:  # ZeRO shards optimizer state over processes: DeepSpeed's format
            self.model.save_checkpoint(str(tmp / "deepspeed"), tag="state", exclude_frozen_parameters=True)
        state.write_json(
            tmp / f"rng_state_rank{acc.process_index}.json", {**state.capture_rng(), "stream": self.data.stream_state}
        )
        acc.wait_for_everyone()
        if self.is_main:
            state.publish(tmp, final)
            state.prune(self.ckpt_root, t.keep_last)
        acc.wait_for_everyone()
        self.last_saved_step = self.global_step
        return final

    def load_checkpoint(self, path: Path) -> None:
        """Restore optimizer, scheduler, step, best metric, data position and RNG from ``path`` (model weights were
        restored in ``setup``).

        Args:
            path: A resumable checkpoint folder.
        """
        from emollm_train import state

        acc = self.accelerator
        info = state.read_json(path / state.STATE_FILE)
        state.warn_if_order_changed(self.cfg.to_dict(), info, path, acc.num_processes)
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
        state.load_scheduler(self.scheduler, state.read_json(path / "scheduler.json"))
        self.global_step = self.last_saved_step = info["global_step"]
        self.best = info.get("best")
        self.last_eval_step = info.get("last_eval_step", -1)
        rng_file = path / f"rng_state_rank{acc.process_index}.json"
        if rng_file.is_file():
            rng = state.read_json(rng_file)
            self.data.stream_state = rng.pop("stream", self.data.stream_state)
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
        """Gather each process's trainable-weight fingerprint; raise if the replicas diverged.

        Returns:
            The fingerprints, one per process.
        """
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
        """Close the logs, delete this process's ``datasets`` cache and end the accelerator's run."""
        import shutil

        from emollm_train.data import datasets_cache_dir

        if hasattr(self, "logger"):
            self.logger.close()
        if hasattr(self, "accelerator"):
            cache = datasets_cache_dir(self.cfg, self.accelerator.process_index)
            shutil.rmtree(cache, ignore_errors=True)
            try:
                cache.parent.rmdir()  # the last process to finish removes the folder
            except OSError:
                pass
            self.accelerator.end_training()


# ===================================================================================================== CLI


def run(cfg: RunConfig, *, init_only: bool = False) -> dict[str, Any]:
    """Set up, train, clean up; returns the summary.

    Args:
        cfg: The run config.
        init_only: Build the model exactly as training would start it (``init_from``, new LoRA, projector init)
            and save it as ``<output_dir>/init`` without any step: the "untrained" point of a comparison.
    """
    recipe = SFTRecipe(cfg)
    try:
        recipe.setup()
        if init_only:
            path = recipe.out / "init"
            recipe.save_model(path)
            return {"steps": 0, "last_loss": None, "best": None, "final": str(path), "tokens_per_s": None}
        return recipe.train()
    finally:
        recipe.cleanup()


def _one_line(error: BaseException) -> str:
    """The message of ``error``; one raised in a DataLoader worker comes wrapped in its traceback: its last line."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].endswith("Error") else last
    return text


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
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    parser.add_argument(
        "--init-only", action="store_true", help="save the model as training would start it (OUTPUT/init), no steps"
    )
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config:
            print(cfg.to_yaml(), end="")
            return 0
        summary = run(cfg, init_only=args.init_only)
    except (ConfigError, DataError, FileNotFoundError, FileExistsError, ValueError) as e:
        # ValueError: the data, checkpoint and config checks raise it with a message naming the problem and the fix
        if args.debug:
            raise
        print(f"emollm train: {_one_line(e)}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: summary[k] for k in ("steps", "last_loss", "best", "final", "tokens_per_s")}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
