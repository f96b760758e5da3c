"""``emollm plan``: will a training run fit on a GPU? Per-GPU memory from the config, before renting anything.

The language model is built on the ``meta`` device from the registry's reference dimensions (no weights, no
download), so every parameter is counted exactly: embeddings, ``lm_head``, norms, and the LoRA adapters that the
configured targets and rank would add (found by walking the meta model's ``nn.Linear`` modules). The projectors are
built on ``meta`` too. Memory per GPU, in GiB (2**30 bytes; a "24 GB" card has 24 GiB):

weights
    16-bit: 2 bytes/param (4 for a float32 backbone). 8-bit (LLM.int8): 1 byte per quantized weight + one fp32 scale
    per output row. 4-bit NF4 with double quantization (what
    ``emollm.backbones.loading.quantization_config`` loads): 0.5 byte per
    weight + an 8-bit absmax per 64-weight block + an fp32 absmax per 256 blocks = 4.127 bits/weight. Only the decoder
    layers' ``nn.Linear`` weights are quantized; embeddings, ``lm_head`` (transformers skips the output embedding),
    norms and biases stay 16-bit, and peft's ``prepare_model_for_kbit_training`` (run by ``apply_lora`` on a 4/8-bit
    base) upcasts them to fp32 for training: a separate row.
trainable state
    Without DeepSpeed, LoRA and projector weights are fp32 (peft keeps adapters in fp32): weight 4 + gradient 4 +
    AdamW m and v 8 = 16 bytes/param; a fully trained 16-bit LLM: 2 + 2 + 2x2 (torch AdamW keeps its states in the
    parameter's dtype; no master copy). DDP over N GPUs adds a gradient bucket copy of the trainable gradients.
    Under DeepSpeed (bf16) every trainable param costs DeepSpeed's own 2 + 18/N bytes for ZeRO-2 (16-bit weight
    replicated; 16-bit and fp32 gradients, fp32 master weight, m and v partitioned) and 18/N for ZeRO-3; frozen
    weights cost 2 bytes (ZeRO-2, replicated) or 2/N (ZeRO-3). ZeRO-3 also holds the gathered 16-bit copy of the
    largest module plus the prefetch bucket, and both stages a reduce bucket (sizes from
    ``configs/accelerate/ds_zero*.json``).
    DeepSpeed's ``estimate_zero{2,3}_model_states_mem_needs`` and accelerate's ``calculate_maximum_sizes`` /
    ``estimate_training_usage`` are run as cross-checks (``cross_checks`` in ``--json``).
activations
    Bytes saved for backward per token of one LLaMA-style decoder layer (HF implementation, SDPA attention, measured
    op by op with ``saved_tensors_hooks``; a Korthikanti et al. 2022 style count adapted to RMSNorm, GQA, SwiGLU, flash
    / memory-efficient attention that keeps no T x T matrix, and no dropout in the LLM), with h hidden, I intermediate,
    a heads, h_kv = kv_heads x head_dim, e = 2 (bf16/fp16 autocast), m = dropout-mask bytes (1 on CUDA, 0 without
    LoRA dropout), r = LoRA rank::

        base   = 2 x 4h                      # the two RMSNorms keep their fp32 input copy
               + e(h + 2 h_kv' + h) + 4a     # SDPA keeps q, k, v, output and fp32 logsumexp
               + 3eI                         # SwiGLU: gate output, SiLU output, up output
        full   += 2 x (e_res + e)h + eI      # trainable norms/linears also keep their inputs
        lora   += sum over targets (m + e) d_in + e r   # peft: dropout mask + input of lora_A, output of lora_A

    h_kv' = h when a padding mask is given (transformers repeats k/v instead of native GQA), h_kv otherwise. Plus the
    final norm (4h per token), the B x T x T attention mask, and the autocast bf16 copies of fp32 trainable weights.
    Without gradient checkpointing the peak is all L layers + max(loss workspace, one layer's backward workspace);
    with it, one residual-stream tensor (e_res h per token) per layer + max(loss workspace, 2 x one layer) (the
    layer being recomputed and its gradients). Loss workspace: 12 bytes x tokens-with-logits x V (fp32 log-probs
    kept by cross-entropy, their gradient and the gradient w.r.t. the fp32 logits, live together when backward
    starts). emollm's loop computes logits only where labels are set (``--answer-tokens``); the default assumes all
    of ``data.max_length``.
overhead
    A constant for what ``torch.cuda.max_memory_allocated`` does not see: CUDA context + cuBLAS workspaces
    (``CUDA_CONTEXT_GIB`` = 0.5), NCCL buffers with more than one GPU (``NCCL_GIB`` = 0.25), and caching-allocator
    fragmentation (``FRAGMENTATION`` = 5% of the allocated peak).

Example::

    plan = plan_run(load_config("configs/instruct/llama3.yaml", ["model.quantization=4bit"]), gpu_memory_gib=24)
    print(plan.table(), plan.fits, plan.max_batch)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from emollm.backbones import BackboneSpec, get_backbone
from emollm.runconfig import ConfigError, RunConfig, load_config, validate
from emollm.settings import STAGES
from emollm.utils.typed_config import check_range

__all__ = [
    "CUDA_CONTEXT_GIB",
    "FRAGMENTATION",
    "NCCL_GIB",
    "ActivationSettings",
    "Architecture",
    "Plan",
    "activation_bytes",
    "count_parameters",
    "main",
    "meta_language_model",
    "plan_run",
    "quantized_weight_bytes",
]

GIB = 2**30
CUDA_CONTEXT_GIB = 0.5
"""CUDA context + cuBLAS/cuDNN workspaces per process (0.3-0.6 GiB on Ampere/Hopper with lazy module loading)."""
NCCL_GIB = 0.25
"""NCCL communicator buffers per process when more than one GPU takes part."""
FRAGMENTATION = 0.05
"""Caching-allocator slack: reserved minus allocated memory at the peak, as a share of the allocated peak."""
NF4_BLOCK = 64
"""bitsandbytes 4-bit blocksize (weights per absmax)."""
NF4_DQ_BLOCK = 256
"""Double quantization: absmax values per second-level fp32 constant."""
_DS_DEFAULTS = {"reduce_bucket_size": 5e8, "stage3_prefetch_bucket_size": 5e7}
_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "accelerate"

Quantization = Literal["4bit", "8bit"] | None


# ============================================================================================ architecture (meta)


@dataclass(frozen=True)
class Architecture:
    """Exact parameter counts and the dimensions the activation formula needs, from a (meta) language model.

    Attributes:
        n_layers, hidden, intermediate, n_heads, n_kv_heads, head_dim, vocab: The decoder's dimensions.
        total: All LLM parameters (tied matrices counted once).
        embedding: Input embedding parameters.
        lm_head: Output projection parameters (0 when tied to the embedding).
        quantizable: Weights of the decoder layers' ``nn.Linear`` modules (what bitsandbytes quantizes).
        quantizable_rows: Their output rows (one fp32 scale each in 8-bit).
        lora: LoRA parameters the targets and rank add to the whole model.
        lora_r: The rank they were counted with.
        lora_inputs: Input width of each LoRA-targeted linear in one decoder layer.
        largest_module: Parameters of the largest single module (what ZeRO-3 gathers at once).
        projectors: Projector + modality-type-embedding parameters.
    """

    n_layers: int
    hidden: int
    intermediate: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int
    total: int
    embedding: int
    lm_head: int
    quantizable: int
    quantizable_rows: int
    lora: int = 0
    lora_r: int = 0
    lora_inputs: tuple[int, ...] = ()
    largest_module: int = 0
    projectors: int = 0

    @property
    def unquantized(self) -> int:
        """Parameters bitsandbytes leaves in 16-bit: embeddings, lm_head, norms, biases."""
        return self.total - self.quantizable


def meta_language_model(spec: BackboneSpec, **overrides: Any):
    """The backbone's transformers model on the ``meta`` device (reference dimensions; no memory, no weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(spec.text_config(**overrides), dtype=torch.float32)


def count_parameters(lm, lora_targets: list[str] | tuple[str, ...] = (), lora_r: int = 0) -> Architecture:
    """Count ``lm``'s parameters by kind and the LoRA parameters ``lora_targets`` at rank ``lora_r`` would add.

    Works on a meta model or a real one. Linear modules inside the decoder layers are the quantizable ones (as in
    bitsandbytes, which skips ``lm_head``); a target matches a module whose last name component equals it (peft's
    ``target_modules`` rule).
    """
    from torch import nn

    from emollm.backbones.registry import text_dims

    cfg = lm.config
    cfg = getattr(cfg, "text_config", None) or cfg
    out_emb = lm.get_output_embeddings()
    out_ids = {id(p) for p in out_emb.parameters()} if out_emb is not None else set()
    params = dict(lm.named_parameters())  # named_parameters() skips tied duplicates
    total = sum(p.numel() for p in params.values())
    emb = lm.get_input_embeddings().weight
    head = 0 if out_emb is None or out_emb.weight is emb else out_emb.weight.numel()
    quantizable = rows = lora = 0
    lora_inputs: list[int] = []
    first_layer = None
    largest = 0
    for name, mod in lm.named_modules():
        own = sum(p.numel() for p in mod.parameters(recurse=False))
        largest = max(largest, own)
        if not isinstance(mod, nn.Linear) or any(id(p) in out_ids for p in mod.parameters()):
            continue
        quantizable += mod.weight.numel()
        rows += mod.out_features
        if name.rsplit(".", 1)[-1] in lora_targets and lora_r:
            lora += lora_r * (mod.in_features + mod.out_features)
            layer = re.search(r"\.layers\.(\d+)\.", f".{name}")
            if layer is not None:
                first_layer = layer.group(1) if first_layer is None else first_layer
                if layer.group(1) == first_layer:
                    lora_inputs.append(mod.in_features)
    dims = text_dims(cfg)  # Gemma-4's config refuses cfg.head_dim (a per-layer attribute)
    return Architecture(
        n_layers=dims["n_layers"],
        hidden=dims["hidden"],
        intermediate=dims["intermediate"],
        n_heads=dims["n_heads"],
        n_kv_heads=dims["n_kv_heads"],
        head_dim=dims["head_dim"],
        vocab=emb.shape[0],
        total=total,
        embedding=emb.numel(),
        lm_head=head,
        quantizable=quantizable,
        quantizable_rows=rows,
        lora=lora,
        lora_r=lora_r if lora else 0,
        lora_inputs=tuple(lora_inputs),
        largest_module=largest,
    )


def _projector_params(cfg: RunConfig, hidden: int) -> tuple[int, list[str]]:
    """Parameters of the configured projectors and type embedding (built on meta), and notes."""
    import torch

    from emollm.model.projectors import ModalityTypeEmbedding, PreFusion, build_projector

    notes: list[str] = []
    n = 0
    with torch.device("meta"):
        for name, mod in cfg.model.modalities.items():
            p = mod.projector
            proj = build_projector(
                p.kind,
                mod.feature_dim,
                hidden,
                num_queries=p.num_queries,
                num_layers=p.num_layers,
                num_heads=p.num_heads,
                hidden_dim=p.hidden_dim,
                merge=p.merge,
                dropout=p.dropout,
            )
            n += sum(q.numel() for q in proj.parameters())
            if mod.fuse is not None:  # the fused slot's pre-fusion block (AffectGPT: per-source linears + weights)
                dims = {s: cfg.model.modalities[s].feature_dim for s in mod.fuse.sources}
                n += sum(q.numel() for q in PreFusion(dims, mod.feature_dim, mod.fuse.kind).parameters())
            elif mod.encoder != "precomputed":
                notes.append(
                    f"model.modalities.{name}: live encoder {mod.encoder!r} not counted (weights + activations)"
                )
        if cfg.model.modality_type_embeddings and cfg.model.modalities:
            n += sum(q.numel() for q in ModalityTypeEmbedding(list(cfg.model.modalities), hidden).parameters())
    return n, notes


# ================================================================================================ the formulas


def quantized_weight_bytes(arch: Architecture, quantization: Quantization, weight_bytes: int) -> float:
    """Bytes of the LLM's weights as loaded: quantized decoder linears + 16-bit (or ``weight_bytes``) rest."""
    if quantization is None:
        return arch.total * weight_bytes
    if quantization == "4bit":
        per = 0.5 + 1 / NF4_BLOCK + 4 / (NF4_BLOCK * NF4_DQ_BLOCK)  # nf4 + 8-bit absmax + fp32 second-level absmax
        return arch.quantizable * per + arch.unquantized * weight_bytes
    if quantization == "8bit":
        return arch.quantizable + 4 * arch.quantizable_rows + arch.unquantized * weight_bytes
    raise ValueError(f"model.quantization: expected '4bit', '8bit' or null, got {quantization!r}")


@dataclass(frozen=True)
class ActivationSettings:
    """What the activation formula depends on besides the architecture.

    Attributes:
        batch: Samples per GPU per micro-batch.
        seq_len: Tokens per sample.
        logit_tokens: Tokens per sample whose logits are computed (the loss positions).
        llm: ``frozen``, ``lora`` or ``full``.
        lora_dropout: LoRA dropout (0 = no mask).
        act_bytes: Bytes of an activation element (2 under bf16/fp16 autocast or a 16-bit model).
        residual_bytes: Bytes of the residual stream (4 when embeddings are fp32, e.g. after k-bit preparation).
        mask_bytes: Bytes of a dropout-mask element (1 on CUDA; 4 on CPU, which keeps a float mask).
        native_gqa: SDPA gets the kv heads as they are (no padding mask); otherwise k/v are repeated to all heads.
        attention_mask: A (B, 1, T, T) boolean mask is built (padded batches).
        autocast_weights: Bytes of the autocast copies of fp32 trainable weights (0 without autocast).
    """

    batch: int
    seq_len: int
    logit_tokens: int
    llm: str = "lora"
    lora_dropout: float = 0.05
    act_bytes: int = 2
    residual_bytes: int = 2
    mask_bytes: int = 1
    native_gqa: bool = False
    attention_mask: bool = True
    autocast_weights: float = 0.0


def activation_bytes(arch: Architecture, s: ActivationSettings) -> dict[str, float]:
    """Activation memory of one forward/backward (see the module docstring for the formula).

    Returns:
        ``saved`` (bytes kept for backward at the end of forward without checkpointing), ``saved_ckpt`` (with
        per-layer checkpointing), ``layer`` (one decoder layer), ``loss`` (loss workspace), and ``peak`` /
        ``peak_ckpt``: the activation share of the peak without / with checkpointing.
    """
    h, inter, e, er = arch.hidden, arch.intermediate, s.act_bytes, s.residual_bytes
    h_kv = arch.n_kv_heads * arch.head_dim if s.native_gqa else arch.n_heads * arch.head_dim
    q_out = arch.n_heads * arch.head_dim
    tokens = s.batch * s.seq_len
    per_token = 2 * 4 * h + e * (q_out + 2 * h_kv + q_out) + 4 * arch.n_heads + 3 * e * inter
    final = 4 * h
    if s.llm == "full":
        per_token += 2 * (er + e) * h + e * inter
        final += (er + e) * h
    elif s.llm == "lora":
        mask = s.mask_bytes if s.lora_dropout > 0 else 0
        per_token += sum((mask + e) * d + e * arch.lora_r for d in arch.lora_inputs)
    layer = per_token * tokens
    rope = 2 * e * arch.head_dim * tokens  # cos and sin, shared by all layers
    fixed = final * tokens + rope + (s.batch * s.seq_len**2 if s.attention_mask else 0) + s.autocast_weights
    loss = 12 * s.batch * s.logit_tokens * arch.vocab
    saved = arch.n_layers * layer + fixed
    saved_ckpt = arch.n_layers * er * h * tokens + fixed
    return {
        "per_token_per_layer": per_token,
        "layer": layer,
        "loss": loss,
        "saved": saved,
        "saved_ckpt": saved_ckpt,
        "peak": saved + max(loss, layer),
        "peak_ckpt": saved_ckpt + max(loss, 2 * layer),
    }


# ===================================================================================================== the plan


@dataclass
class Plan:
    """Per-GPU memory of one training configuration, with and without gradient checkpointing (bytes).

    Attributes:
        components: Component -> ``[bytes without checkpointing, bytes with checkpointing]``.
        total: ``[without, with]`` sums.
        gradient_checkpointing: What the config sets (the column that counts).
        gpu_memory: Memory of one GPU in bytes.
        fits: Whether the configured column fits.
        max_batch: Largest micro-batch that fits at the configured length (configured checkpointing); 0 if none.
        max_seq_len: Largest sequence length (multiple of 128, up to the model's context) at the configured batch.
        params: Parameter counts (LLM, quantized part, LoRA, projectors, trainable).
        setup: The inputs (backbone, quantization, batch, length, GPUs, ZeRO stage, ...).
        cross_checks: DeepSpeed's and accelerate's own estimators on the same numbers.
        notes: Assumptions worth reading.
    """

    components: dict[str, list[float]]
    total: list[float]
    gradient_checkpointing: bool
    gpu_memory: float
    fits: bool
    max_batch: int
    max_seq_len: int
    params: dict[str, int]
    setup: dict[str, Any]
    cross_checks: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, sizes in GiB."""
        d = asdict(self)
        gib = lambda v: round(v / GIB, 3)  # noqa: E731
        d["components"] = {k: {"no_ckpt": gib(a), "ckpt": gib(b)} for k, (a, b) in self.components.items()}
        d["total"] = {"no_ckpt": gib(self.total[0]), "ckpt": gib(self.total[1])}
        d["gpu_memory"] = gib(self.gpu_memory)
        d["units"] = "GiB (2**30 bytes)"
        return d

    def table(self) -> str:
        """The plan as a text table (component -> GiB, both checkpointing settings)."""
        on = 1 if self.gradient_checkpointing else 0
        head = ["component", "no ckpt", "ckpt"]
        head[1 + on] += " *"
        rows = [[k, f"{a / GIB:.2f}", f"{b / GIB:.2f}"] for k, (a, b) in self.components.items()]
        rows.append(["total", f"{self.total[0] / GIB:.2f}", f"{self.total[1] / GIB:.2f}"])
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]

        def line(r: list[str]) -> str:
            return "  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))])

        out = [line(head), "  ".join("-" * w for w in widths), *map(line, rows[:-1])]
        out += ["  ".join("-" * w for w in widths), line(rows[-1])]
        return "\n".join(out)


def _ds_buckets(stage: int) -> dict[str, float]:
    path = _CONFIG_DIR / f"ds_zero{stage}.json"
    zero: dict[str, Any] = {}
    if path.is_file():
        zero = json.loads(path.read_text()).get("zero_optimization", {})
    return {k: float(zero.get(k, v)) for k, v in _DS_DEFAULTS.items()}


def _cross_checks(lm, arch: Architecture, trainable: int, frozen16: float, gpus: int, zero: int) -> dict[str, Any]:
    """DeepSpeed's and accelerate's estimators on the same model (model states only; no activations)."""
    out: dict[str, Any] = {}
    try:
        from accelerate.commands.estimate import estimate_training_usage
        from accelerate.utils import calculate_maximum_sizes

        size, (largest, names) = calculate_maximum_sizes(lm)
        out["accelerate"] = {
            "model_bytes_fp32": int(size),
            "largest_layer_bytes": int(largest),
            "largest_layer": names[0] if names else None,
            "full_finetune_bf16_bytes_per_gpu": {
                k: int(v) for k, v in estimate_training_usage(arch.total * 4, "bfloat16").items()
            },
        }
    except ImportError as e:  # pragma: no cover - accelerate is a core dependency
        out["accelerate"] = f"unavailable: {e}"
    if zero in (2, 3):
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
                from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
            if zero == 2:
                _, gpu = estimate_zero2_model_states_mem_needs(trainable, num_gpus_per_node=gpus, cpu_offload=False)
                frozen = frozen16
            else:
                _, gpu, _ = estimate_zero3_model_states_mem_needs(
                    trainable, arch.largest_module, num_gpus_per_node=gpus, cpu_offload=False, cpu_offload_params=False
                )
                frozen = frozen16 / gpus
            out["deepspeed"] = {
                "estimator": f"estimate_zero{zero}_model_states_mem_needs (offload none)",
                "trainable_states_bytes": int(gpu),
                "plus_frozen_16bit_bytes": int(frozen),
                "model_states_bytes": int(gpu + frozen),
            }
        except Exception as e:  # noqa: BLE001 - a cross-check must never break the plan
            out["deepspeed"] = f"unavailable: {type(e).__name__}: {e}"
    return out


def _weight_bytes(cfg: RunConfig, spec: BackboneSpec) -> int:
    dtype = spec.default_dtype if cfg.model.dtype == "auto" else cfg.model.dtype
    return 4 if dtype == "float32" else 2


def plan_run(
    cfg: RunConfig,
    *,
    gpus: int = 1,
    gpu_memory_gib: float = 24.0,
    zero: int = 0,
    answer_tokens: int | None = None,
    padded: bool = True,
    arch_overrides: dict[str, Any] | None = None,
    cross_checks: bool = True,
) -> Plan:
    """Estimate per-GPU memory of training ``cfg`` on ``gpus`` GPUs of ``gpu_memory_gib`` under ZeRO ``zero``.

    Args:
        cfg: The run config (``load_config``).
        gpus: GPUs (processes) on one machine.
        gpu_memory_gib: Memory of each GPU in GiB.
        zero: 0 (single GPU / DDP), 2 or 3 (DeepSpeed ZeRO stage, bf16).
        answer_tokens: Tokens per sample whose logits are computed; None = all ``data.max_length``.
        padded: Batches carry a padding mask (k/v repeated to all heads, a T x T mask); False = packed/unpadded.
        arch_overrides: ``text_config`` overrides (tests: a small model of the same family).
        cross_checks: Run DeepSpeed's and accelerate's estimators too.

    Returns:
        The plan.
    """
    if zero not in (0, 2, 3):
        raise ValueError(f"--zero: expected 0, 2 or 3, got {zero}")
    check_range("--gpus", gpus, ge=1)
    check_range("--gpu-memory", gpu_memory_gib, gt=0)
    check_range("--answer-tokens", answer_tokens, ge=1)
    for key in ("batch_size", "grad_accum"):  # what validate() refuses too; a plan must not print negative memory
        check_range(f"train.{key}", getattr(cfg.train, key), ge=1)
    check_range("data.max_length", cfg.data.max_length, ge=1)
    m, t = cfg.model, cfg.train
    spec = get_backbone(m.backbone)
    trainable = t.trainable or STAGES.get(t.stage, STAGES["instruct"])
    targets = list(t.lora.targets or spec.lora_targets)
    lm = meta_language_model(spec, **(arch_overrides or {}))
    arch = count_parameters(lm, targets if trainable.llm == "lora" else (), t.lora.r)
    n_proj, notes = _projector_params(cfg, arch.hidden)
    arch = Architecture(**{**asdict(arch), "lora_inputs": arch.lora_inputs, "projectors": n_proj})
    q = m.quantization
    wb = _weight_bytes(cfg, spec)
    ds = zero in (2, 3)
    if trainable.llm == "full" and q is not None:
        raise ConfigError("train.trainable.llm: 'full' cannot train a quantized LLM; use 'lora'")
    n_lora = arch.lora if trainable.llm == "lora" else 0
    n_train_small = n_lora + (n_proj if trainable.projectors else 0)
    n_train_llm = arch.total if trainable.llm == "full" else 0
    n_trainable = n_train_small + n_train_llm
    if trainable.extra:
        notes.append(f"train.trainable.extra {trainable.extra}: not counted as trainable")

    comps: dict[str, float] = {}
    frozen_llm = 0 if trainable.llm == "full" else arch.total
    if q is not None:
        kind = "nf4+double quant" if q == "4bit" else "int8"
        comps[f"weights (LLM, {kind})"] = quantized_weight_bytes(arch, q, wb) / (gpus if zero == 3 else 1)
        if trainable.llm == "lora" and not ds:
            comps["fp32 upcast of embeddings/lm_head/norms"] = arch.unquantized * (4 - wb)
        if zero == 3:
            notes.append(
                "ZeRO-3 with a bitsandbytes base needs bnb_4bit_quant_storage set to the compute dtype; "
                "emollm.backbones.loading.quantization_config does not set it"
            )
    else:
        frozen_bytes = frozen_llm * (2 if ds else wb)
        label = f"weights (LLM, {'16-bit' if ds or wb == 2 else 'fp32'}{', frozen' if frozen_llm else ''})"
        if frozen_llm:
            comps[label] = frozen_bytes / (gpus if zero == 3 else 1)
    frozen_proj = 0 if trainable.projectors else n_proj
    if frozen_proj:
        comps["projectors (frozen)"] = frozen_proj * 4
    # trainable state
    if not ds:
        if n_train_small:
            comps["LoRA + projector weights (fp32)"] = 4 * n_train_small
            comps["their gradients (fp32)"] = 4 * n_train_small
            comps["their AdamW m+v (fp32)"] = 8 * n_train_small
        if n_train_llm:
            comps[f"LLM weights ({'bf16' if wb == 2 else 'fp32'}, trained)"] = wb * n_train_llm
            comps["LLM gradients"] = wb * n_train_llm
            comps["LLM AdamW m+v (param dtype)"] = 2 * wb * n_train_llm
        if gpus > 1:
            comps["DDP gradient buckets"] = 4 * n_train_small + wb * n_train_llm
    else:
        w16 = 2 * n_trainable / (gpus if zero == 3 else 1)
        comps["trainable weights (bf16)" + (" / N" if zero == 3 else "")] = w16
        comps["gradients bf16 + fp32 / N"] = 6 * n_trainable / gpus
        comps["fp32 master weights / N"] = 4 * n_trainable / gpus
        comps["AdamW m+v fp32 / N"] = 8 * n_trainable / gpus
        buckets = _ds_buckets(zero)
        comps["DeepSpeed reduce bucket"] = 2 * min(buckets["reduce_bucket_size"], n_trainable)
        if zero == 3:
            gathered = arch.largest_module + buckets["stage3_prefetch_bucket_size"]
            comps["ZeRO-3 gathered params (largest module + prefetch)"] = 2 * min(gathered, arch.total)
    static = sum(comps.values())

    # activations
    autocast = t.mixed_precision != "no" or wb == 2
    residual = 4 if (q is not None and trainable.llm == "lora" and not ds) or (wb == 4 and not ds) else 2
    length = cfg.data.max_length

    def acts(batch: int, seq: int) -> dict[str, float]:
        s = ActivationSettings(
            batch=batch,
            seq_len=seq,
            logit_tokens=min(seq, answer_tokens or seq),
            llm=trainable.llm,
            lora_dropout=t.lora.dropout,
            act_bytes=2 if autocast else wb,
            residual_bytes=residual,
            mask_bytes=1,
            native_gqa=not padded,
            attention_mask=padded,
            autocast_weights=0 if ds or not autocast else 2 * (n_train_small + (n_train_llm if wb == 4 else 0)),
        )
        return activation_bytes(arch, s)

    a = acts(t.batch_size, length)

    def overhead(allocated: float) -> float:
        return (CUDA_CONTEXT_GIB + (NCCL_GIB if gpus > 1 else 0)) * GIB + FRAGMENTATION * allocated

    components = {k: [v, v] for k, v in comps.items()}
    components["activations (saved for backward)"] = [a["saved"], a["saved_ckpt"]]
    components["loss / backward workspace"] = [a["peak"] - a["saved"], a["peak_ckpt"] - a["saved_ckpt"]]
    alloc = [static + a["peak"], static + a["peak_ckpt"]]
    components["CUDA context, NCCL, fragmentation"] = [overhead(alloc[0]), overhead(alloc[1])]
    total = [alloc[0] + overhead(alloc[0]), alloc[1] + overhead(alloc[1])]
    budget = gpu_memory_gib * GIB
    ck = t.gradient_checkpointing

    def fits(batch: int, seq: int) -> bool:
        x = acts(batch, seq)
        allocated = static + (x["peak_ckpt"] if ck else x["peak"])
        return allocated + overhead(allocated) <= budget

    max_batch = 0
    if fits(1, length):
        lo, hi = 1, 2
        while fits(hi, length) and hi < 1 << 16:
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid, length) else (lo, mid)
        max_batch = lo
    context = getattr(lm.config, "max_position_embeddings", length) or length
    max_seq = 0
    for seq in range(128, context + 1, 128):
        if not fits(t.batch_size, seq):
            break
        max_seq = seq
    notes.append(
        f"logits over {min(length, answer_tokens or length)} tokens per sample"
        + (
            ""
            if answer_tokens
            else " (all of data.max_length; emollm computes them only where labels are set: --answer-tokens)"
        )
    )
    if t.mixed_precision == "fp16" or spec.default_dtype == "float16":
        notes.append("fp16 weights/autocast count like bf16 (2 bytes)")
    setup = {
        "backbone": m.backbone,
        "hf_id": spec.hf_id,
        "quantization": q,
        "trainable_llm": trainable.llm,
        "lora_r": t.lora.r if trainable.llm == "lora" else None,
        "lora_targets": targets if trainable.llm == "lora" else None,
        "batch_size": t.batch_size,
        "seq_len": length,
        "gradient_checkpointing": ck,
        "gpus": gpus,
        "zero": zero,
        "weight_dtype_bytes": 2 if ds else wb,
        "activation_per_token_per_layer_bytes": a["per_token_per_layer"],
    }
    params = {
        "llm": arch.total,
        "embedding": arch.embedding,
        "lm_head": arch.lm_head,
        "quantizable_linear": arch.quantizable,
        "unquantized": arch.unquantized,
        "lora": n_lora,
        "projectors": n_proj,
        "trainable": n_trainable,
        "largest_module": arch.largest_module,
    }
    frozen16 = 2 * (arch.total - n_train_llm) if q is None else quantized_weight_bytes(arch, q, 2)
    checks = _cross_checks(lm, arch, n_trainable, frozen16, gpus, zero) if cross_checks else {}
    return Plan(
        components=components,
        total=total,
        gradient_checkpointing=ck,
        gpu_memory=budget,
        fits=total[1 if ck else 0] <= budget,
        max_batch=max_batch,
        max_seq_len=max_seq,
        params=params,
        setup=setup,
        cross_checks=checks,
        notes=notes,
    )


# ========================================================================================================= CLI


def parse_memory(text: str) -> float:
    """``24GB`` / ``24GiB`` / ``24G`` / ``24`` -> 24.0 (GiB: a "24 GB" GPU has 24 GiB); ``80000MB`` -> MiB / 1024."""
    mt = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([GgMm]i?[Bb]?)?\s*", text)
    if not mt:
        raise argparse.ArgumentTypeError(f"--gpu-memory: expected e.g. 24GB or 80GiB, got {text!r}")
    value, unit = float(mt.group(1)), (mt.group(2) or "G").upper()
    return value / 1024 if unit.startswith("M") else value


def _fmt_params(n: int) -> str:
    return f"{n / 1e9:.3f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def main(argv: list[str] | None = None) -> int:
    """``emollm plan CONFIG [key=value ...] [--gpus N] [--gpu-memory 24GB] [--zero 0|2|3] [--json]``."""
    parser = argparse.ArgumentParser(
        prog="emollm plan",
        description="Estimate per-GPU training memory of a config (meta-device model, no weights) and whether it "
        "fits. Sizes in GiB; formulas in emollm/planning/memory.py. Exit status 0 when it fits, 2 when it does not, "
        "1 on a bad config.",
    )
    parser.add_argument("config", help="YAML run config, e.g. configs/instruct/llama3.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. model.quantization=4bit")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs on the machine (default 1)")
    parser.add_argument(
        "--gpu-memory", type=parse_memory, default=24.0, help="memory per GPU, e.g. 24GB, 80GB (GB = GiB; default 24)"
    )
    parser.add_argument("--zero", type=int, choices=(0, 2, 3), default=0, help="DeepSpeed ZeRO stage (0 = none/DDP)")
    parser.add_argument(
        "--answer-tokens", type=int, default=None, help="tokens per sample with logits (default: data.max_length)"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        # The same checks as `emollm validate` (batch_size=-1 would give negative memory that "fits").
        validate(cfg).raise_if_errors()
        plan = plan_run(
            cfg, gpus=args.gpus, gpu_memory_gib=args.gpu_memory, zero=args.zero, answer_tokens=args.answer_tokens
        )
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"emollm plan: {e}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(plan.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0 if plan.fits else 2
    s, p = plan.setup, plan.params
    zero = f"ZeRO-{s['zero']}" if s["zero"] else ("DDP" if s["gpus"] > 1 else "no DeepSpeed")
    print(
        f"{s['backbone']} ({s['hf_id']}), {s['quantization'] or str(8 * s['weight_dtype_bytes']) + '-bit'} weights, "
        f"LLM {s['trainable_llm']}"
        + (f" r={s['lora_r']}" if s["lora_r"] else "")
        + f"; batch {s['batch_size']} x {s['seq_len']} tokens per GPU; {s['gpus']} GPU(s), {zero}"
    )
    print(
        f"parameters: LLM {_fmt_params(p['llm'])} (embedding {_fmt_params(p['embedding'])}, lm_head "
        f"{_fmt_params(p['lm_head'])}), LoRA {_fmt_params(p['lora'])}, projectors {_fmt_params(p['projectors'])}, "
        f"trainable {_fmt_params(p['trainable'])}\n"
    )
    print(plan.table())
    col = "with" if plan.gradient_checkpointing else "without"
    verdict = "fits" if plan.fits else "does NOT fit"
    total = plan.total[1 if plan.gradient_checkpointing else 0] / GIB
    print(
        f"\n* configured ({col} gradient checkpointing): {total:.2f} GiB per GPU -> {verdict} in "
        f"{plan.gpu_memory / GIB:.0f} GiB"
    )
    print(
        f"largest batch at {s['seq_len']} tokens: {plan.max_batch}; largest length at batch {s['batch_size']}: "
        f"{plan.max_seq_len}"
    )
    for n in plan.notes:
        print(f"note: {n}")
    ds = plan.cross_checks.get("deepspeed")
    if isinstance(ds, dict):
        ours = sum(
            v[0] for k, v in plan.components.items() if not k.startswith(("activations", "loss", "CUDA context"))
        )
        print(
            f"cross-check: DeepSpeed {ds['estimator']} + frozen 16-bit weights: model states "
            f"{ds['model_states_bytes'] / GIB:.2f} GiB (this plan: {ours / GIB:.2f} GiB)"
        )
    return 0 if plan.fits else 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
