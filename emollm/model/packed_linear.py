"""Inference-only bf16 linear layers packed once for oneDNN: faster CPU decoding, the same numbers as autocast.

Decoding one token at a time is a matrix-vector product per weight, bound by how fast the weights stream from memory.
``torch.autocast("cpu", torch.bfloat16)`` over fp32 weights re-casts every weight to bf16 on every call (reading 4
bytes and writing 2 per weight per token before the product reads 2). :class:`PackedLinear` casts once and keeps the
bf16 weight in oneDNN's blocked layout; its product takes the same bf16 operands with fp32 accumulation, so it
computes what autocast's linear computes. On this project's CPU (AVX512-BF16, one thread) SmolLM2-135M greedy decode
went from 18.7 to 26.0 tokens/s with identical logits, prefill unchanged (``bench/bench_speed.py``).

Example:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(8, 8)).eval()
    >>> pack_linears(model, "fp32")
    'none: only for bf16 on CPU'
"""

from __future__ import annotations

import os

import torch
from torch import nn

from emollm.model.precision import cpu_has_native_bf16, resolve_precision

__all__ = ["PackedLinear", "pack_linears"]


def _packing_available() -> str | None:
    """None when oneDNN bf16 weight packing works here, else why not."""
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise") or not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        return f"torch {torch.__version__} has no oneDNN linear_pointwise/reorder_linear_weight ops"
    if not torch.backends.mkldnn.is_available():
        return "torch was built without oneDNN (mkldnn)"
    if not cpu_has_native_bf16():
        return "the CPU has no native bf16 (AVX512-BF16 or AMX)"
    return None


class PackedLinear(nn.Module):
    """An inference-only ``nn.Linear`` whose weight is bf16 in oneDNN's packed layout (see the module text).

    Under bf16 autocast it returns bf16, as autocast's linear does; outside autocast it returns the input's dtype.
    It has no parameters (nothing to train) and keeps ``in_features``/``out_features``.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().to(torch.bfloat16)
        self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(weight, 1), persistent=False)
        bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x):
        out = torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), self.packed_weight, self.bias, "none", [], "")
        return out if torch.is_autocast_enabled("cpu") else out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bf16 oneDNN-packed"


def pack_linears(model, precision: str, device: str = "cpu") -> str:
    """Swap ``model``'s plain ``nn.Linear`` layers for :class:`PackedLinear` when that is exact and faster.

    Only for bf16 precision on a CPU with native bf16 and only for a model that will not be trained (the packed
    layers have no parameters). Linear layers inside a peft LoRA layer (its base layer and adapters) are left alone.
    The first swapped layer is checked against autocast's own linear on a random input; a difference means this
    torch's kernels disagree, and nothing is swapped. Set ``EMOLLM_PACK_LINEARS=0`` to turn it off.

    Returns:
        What was done, for ``produced_by``: ``"oneDNN-packed bf16 (N layers)"`` or ``"none: <why>"``.
    """
    if os.environ.get("EMOLLM_PACK_LINEARS", "1") == "0":
        return "none: EMOLLM_PACK_LINEARS=0"
    if resolve_precision(precision, device) != "bf16" or str(device).startswith("cuda"):
        return "none: only for bf16 on CPU"
    why = _packing_available()
    if why:
        return f"none: {why}"
    if any(p.requires_grad for p in model.parameters()) and model.training:
        return "none: the model is in training mode"
    packed_cls = PackedLinear
    swaps: list[tuple[nn.Module, str, nn.Linear]] = []

    def visit(module: nn.Module) -> None:
        for name, child in module.named_children():
            if hasattr(child, "base_layer") and hasattr(child, "lora_A"):  # a peft LoRA layer: keep whole
                continue
            if type(child) is nn.Linear and child.weight.device.type == "cpu" and child.weight.dtype == torch.float32:
                swaps.append((module, name, child))
            else:
                visit(child)

    visit(model)
    if not swaps:
        return "none: no fp32 nn.Linear layers"
    module, name, first = swaps[0]
    probe = torch.randn(3, first.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = first(probe).float()
        got = packed_cls(first)(probe).float()
    if not torch.allclose(got, want, rtol=1e-2, atol=1e-2 * float(want.abs().max()) + 1e-6):
        return "none: the packed kernel disagreed with autocast's linear on a probe"
    # Tied weights (an lm_head sharing the embedding matrix) get their own bf16 copy; the embedding stays.
    for module, name, child in swaps:
        setattr(module, name, packed_cls(child))
    return f"oneDNN-packed bf16 ({len(swaps)} layers)"
