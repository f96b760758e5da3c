"""Which precision inference runs in: bf16 autocast where the CPU (or GPU) has native bf16, fp32 elsewhere.

On a CPU with AVX512-BF16 or AMX, ``torch.autocast("cpu", dtype=torch.bfloat16)`` over fp32 weights made SmolLM2
prefill 1.7-2.8x faster than fp32 (OFFLINE.md, ``bench/bench_speed.py``); on a CPU without native bf16 it is
emulated and slower, so ``auto`` picks fp32 there. The choice is recorded with every output
(``produced_by.precision``). Greedy decoding gains little from autocast alone (it re-casts every weight per token);
:mod:`emollm.model.packed_linear` casts the weights of inference-only models once (1.5x over fp32, same answers).

Example:
    >>> resolve_precision("fp32")
    'fp32'
    >>> with autocast("fp32"):
    ...     pass
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["PRECISIONS", "autocast", "cpu_has_native_bf16", "resolve_precision"]

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when ``/proc/cpuinfo`` lists AVX512-BF16 or AMX-BF16 (Linux; False where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str | bool | None = "auto", device: str = "cpu", *, weights: Any = "float32") -> str:
    """``auto`` -> ``bf16`` on a device with native bf16, else ``fp32``; ``no``/false/None mean ``fp32``.

    ``fp32`` means *no autocast*: the model runs in its weights' dtype. Autocast only pays over float32 weights, so
    ``auto`` over weights loaded in another dtype (a backbone in bfloat16 or float16) is ``fp32`` too.

    Args:
        precision: ``auto``, ``fp32`` (``no``, false, None, ``float32``) or ``bf16`` (``bfloat16``).
        device: Torch device the model runs on (``cpu``, ``cuda``, ``cuda:1``, ...).
        weights: dtype of the model's weights (a ``torch.dtype`` or its name).

    Raises:
        ValueError: For any other value, naming the allowed values; for ``bf16`` over float16 weights (autocast
            would round them to bf16).
    """
    weights = str(weights).removeprefix("torch.")
    if precision in (None, False, "no", "fp32", "float32"):
        return "fp32"
    if precision in ("bf16", "bfloat16"):
        if weights == "float16":
            raise ValueError("precision: bf16 autocast over float16 weights rounds them to bf16; load them as float32")
        return "bf16"
    if precision == "auto":
        if weights != "float32":
            return "fp32"
        if str(device).startswith("cuda"):
            import torch

            return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    raise ValueError(f"precision: must be one of {', '.join(PRECISIONS)} (or no), got {precision!r}")


@contextlib.contextmanager
def autocast(precision: str, device: str = "cpu") -> Iterator[None]:
    """bf16 autocast for ``precision == "bf16"`` (weights stay fp32), nothing for ``fp32``."""
    if resolve_precision(precision, device) != "bf16":
        yield
        return
    import torch

    with torch.autocast(device_type="cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16):
        yield
