"""Where and how the recipe computes: accelerate's ``Accelerator`` (mixed precision, DDP, DeepSpeed ZeRO), memory
settings and activation checkpointing.

The same command runs on one CPU, one GPU, DDP or DeepSpeed ZeRO-2/3; everything that differs between them is here.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import torch

from emollm.runconfig import ConfigError, TrainConfig

__all__ = [
    "configure_deepspeed",
    "enable_gradient_checkpointing",
    "gathered",
    "is_zero3",
    "make_accelerator",
    "release_freed_memory_to_os",
    "resolve_mixed_precision",
    "without_hf_zero3",
]


def release_freed_memory_to_os(threshold: int = 1 << 20) -> bool:
    """Linux/glibc: serve allocations above ``threshold`` bytes with mmap, so freed activations go back to the OS.

    glibc raises its mmap threshold dynamically after large frees; activation tensors of a few MB then come from the
    heap and freed ones stay in RSS (SmolLM2 LoRA, 4 x 512 tokens with gradient checkpointing: 4.7 GB peak RSS
    instead of 2.0 GB of live memory). Fixing the threshold makes every large tensor fresh zeroed pages: that step
    was ~50% slower on a 2-core VM (bench/bench_train.py).

    Args:
        threshold: Allocation size in bytes from which glibc uses mmap.

    Returns:
        Whether it applied.
    """
    if sys.platform != "linux":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_mmap_threshold = -3
        return bool(libc.mallopt(m_mmap_threshold, int(threshold)))
    except (OSError, AttributeError):
        return False


def resolve_mixed_precision(
    mixed_precision: str, *, cuda: bool | None = None, deepspeed: bool = False
) -> tuple[str, str]:
    """accelerate's ``mixed_precision`` for a ``train.mixed_precision`` value, and why.

    ``auto`` is bf16 autocast (weights and optimizer state stay fp32) on a CUDA GPU that supports bf16 and on a CPU
    with native bf16 (AVX512-BF16 or AMX: a SmolLM2 LoRA step 2.47x faster than fp32, OFFLINE.md), else ``no``.
    DeepSpeed on CPU stays ``no`` under ``auto``: its bf16 casts the weights themselves, which is not the autocast
    measured here.

    Args:
        mixed_precision: ``auto``, ``no``, ``bf16`` or ``fp16``.
        cuda: Whether a CUDA GPU is used (default: whether one is available).
        deepspeed: Whether DeepSpeed runs the model.

    Returns:
        ``(value, reason)``: ``no``/``bf16``/``fp16`` for ``Accelerator(mixed_precision=...)``, and a phrase for the
        run log.

    Raises:
        ConfigError: fp16 without a CUDA GPU.
    """
    from emollm.model.precision import cpu_has_native_bf16

    cuda = torch.cuda.is_available() if cuda is None else cuda
    if mixed_precision == "fp16" and not cuda:
        raise ConfigError("train.mixed_precision: fp16 needs a CUDA GPU; use 'no' (or 'bf16') on CPU")
    if mixed_precision != "auto":
        return mixed_precision, f"train.mixed_precision={mixed_precision}"
    if cuda:
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: the GPU supports bf16"
        return "no", "auto: the GPU has no bf16"
    if not cpu_has_native_bf16():
        return "no", "auto: this CPU has no native bf16 (AVX512-BF16/AMX), where bf16 autocast is slower"
    if deepspeed:
        return "no", "auto: DeepSpeed on CPU (its bf16 casts the weights; not measured)"
    return "bf16", "auto: this CPU has native bf16 (AVX512-BF16/AMX)"


def make_accelerator(train: TrainConfig) -> Any:
    """The run's ``accelerate.Accelerator``: mixed precision resolved for the device
    (:func:`resolve_mixed_precision`), DDP or DeepSpeed from the launcher's environment.

    Args:
        train: The ``train`` section of the run config.

    Returns:
        The accelerator; ``accelerator.mixed_precision`` is the resolved value.

    Raises:
        ConfigError: fp16 without a CUDA GPU.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

    cuda = torch.cuda.is_available()
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    mp, _ = resolve_mixed_precision(train.mixed_precision, cuda=cuda, deepspeed=deepspeed)
    # accelerate keeps one AcceleratorState per process and refuses another mixed precision in it. A second run in
    # the same process (tests, notebooks, `emollm bench`) may differ: drop the finished run's state, never the
    # process group (single process and no DeepSpeed only).
    state = AcceleratorState._shared_state
    single = int(os.environ.get("WORLD_SIZE", "1")) == 1 and not deepspeed
    if single and state and state.get("_mixed_precision", mp) != mp:
        AcceleratorState._reset_state(reset_partial_state=False)
    # find_unused_parameters: with modality dropout / missing modalities a projector may get no gradient in a step.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    handlers: list[Any] = [ddp]
    if deepspeed and not cuda:
        # accelerate turns DeepSpeed off when cpu=True and finds no backend without a GPU; DeepSpeed itself runs
        # on CPU (DS_ACCELERATOR=cpu) over gloo, so name the backend instead of passing cpu=True.
        from accelerate.utils import InitProcessGroupKwargs

        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    return Accelerator(
        mixed_precision=mp,
        gradient_accumulation_steps=train.grad_accum,
        kwargs_handlers=handlers,
        cpu=not cuda and not deepspeed,
    )


def configure_deepspeed(accelerator: Any, train: TrainConfig) -> None:
    """Fill DeepSpeed's batch-size and clipping settings from the run config (no-op without DeepSpeed).

    Args:
        accelerator: The run's accelerator.
        train: The ``train`` section of the run config.
    """
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    ds = plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = train.batch_size
    ds["gradient_accumulation_steps"] = train.grad_accum
    ds["train_batch_size"] = train.batch_size * train.grad_accum * accelerator.num_processes
    ds["gradient_clipping"] = train.max_grad_norm or 0.0
    # DeepSpeed steps the wrapped optimizer behind torch's back
    import warnings

    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")


def is_zero3(accelerator: Any) -> bool:
    """Whether the run shards parameters (DeepSpeed ZeRO stage 3)."""
    plugin = accelerator.state.deepspeed_plugin
    return plugin is not None and plugin.zero_stage == 3


@contextlib.contextmanager
def without_hf_zero3(plugin: Any) -> Iterator[None]:
    """Turn off transformers' ZeRO-3 awareness (``zero.Init`` at construction) while the model is built.

    accelerate's ``zero3_init_context_manager(enable=False)`` re-registers the same DeepSpeed config with transformers,
    so it does not help here; unset it and register it again afterwards (generation needs it under ZeRO-3).

    Args:
        plugin: accelerate's DeepSpeed plugin, or None.
    """
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


def gathered(accelerator: Any, model: torch.nn.Module, *, full: bool) -> contextlib.AbstractContextManager:
    """ZeRO-3 keeps parameter shards on each process: gather them (collectively) around a save or a hash.

    Args:
        accelerator: The run's accelerator.
        model: The unwrapped model.
        full: Gather every parameter, not only the trainable ones.

    Returns:
        A context manager (a no-op without ZeRO-3).
    """
    if not is_zero3(accelerator):
        return contextlib.nullcontext()
    import deepspeed

    params = [p for p in model.parameters() if full or p.requires_grad]
    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute the LLM's activations in backward (non-reentrant) and turn its KV cache off.

    Args:
        model: An ``EmoLLMForCausalLM`` (its LLM may be peft-wrapped).
    """
    lm = model.language_model
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    kwargs = {"use_reentrant": False}  # inputs_embeds come from trainable projectors; frozen layers in between
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x name
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    base.config.use_cache = False
