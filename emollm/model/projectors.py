"""Projectors: encoder features of one modality -> tokens in the LLM embedding space.

Kinds (``build_projector(kind, in_dim, out_dim, ...)``):

- ``identity``, ``linear``, ``mlp2x_gelu``: per frame, as in LLaVA (``mlp2x_gelu`` is LLaVA-1.5's Linear -> GELU ->
  Linear). ``merge > 1`` first concatenates ``merge`` adjacent frames, as MiniGPT-v2 / Emotion-LLaMA do with 4 adjacent
  EVA patch tokens (1024 x 1408 -> 256 x 5632 -> Linear). K = ceil(T / merge).
- ``attn_pool``: K learned queries, one multi-head cross-attention over the valid frames (softmax over frames).
- ``affectgpt_attn_pool``: AffectGPT's attention pooling over time (``video_fusion_type`` / ``audio_fusion_type:
  attention``): a score per frame from a 1-output linear *with bias* and no softmax or normalisation,
  ``pooled = sum_t (w . h_t + b) h_t`` over the valid frames, then one linear to D_out: K = 1. The released
  ``video_attention_mlp`` / ``affectgpt_proj`` are ``score`` / ``proj``.
- ``qformer``: a small resampler in the spirit of Video-LLaMA's video/audio Q-Former (32 / 8 queries): K learned
  queries, ``num_layers`` pre-LayerNorm blocks of [self-attention, masked cross-attention to the frames, MLP].
- ``emotion_llama_frame``: the EVA branch of Emotion-LLaMA / MiniGPT-v2. The input is a global image encoder's
  [CLS, patch_1..patch_N]; ``merge`` (4) consecutive patches are concatenated and go through ``patch_proj``
  (MiniGPT-v2's ``llama_proj``, 4 x 1408 -> D), the CLS token through ``cls_proj`` (Emotion-LLaMA's
  ``cls_tk_llama_proj``, 1408 -> D). Output: [patch tokens..., CLS], K = ceil(N / merge) + 1 (257 for 1 + 1024).

Also here: ``ModalityTypeEmbedding`` (tells the LLM which modality a token came from), ``CrossModalFusion``
(zero-initialised bidirectional cross-attention between projected modality token sequences) and ``PreFusion``
(AffectGPT's attention pre-fusion: other modalities' encoder features -> one vector for a fused ``multi`` slot).

Notation used for tensor shapes: B batch, T frames (padded), D_in encoder width, K tokens, D_out LLM width,
H hidden width, h heads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emollm.utils.tensors import valid_mask

__all__ = [
    "PROJECTOR_KINDS",
    "CrossModalFusion",
    "ModalityTypeEmbedding",
    "PreFusion",
    "Projector",
    "ProjectorKind",
    "build_projector",
]

ProjectorKind = Literal[
    "identity", "linear", "mlp2x_gelu", "attn_pool", "affectgpt_attn_pool", "qformer", "emotion_llama_frame"
]
PROJECTOR_KINDS: tuple[str, ...] = get_args(ProjectorKind)


# ----------------------------------------------------------------------------- helpers


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_lengths(lengths: Tensor, batch: int, size: int, name: str = "lengths") -> int:
    """Check that `lengths` is a (B,) integer tensor with values in [1, size]; return its maximum (0 if B == 0)."""
    if not isinstance(lengths, Tensor) or lengths.shape != (batch,):
        shape = tuple(lengths.shape) if isinstance(lengths, Tensor) else type(lengths).__name__
        raise ValueError(f"{name} must be a tensor of shape ({batch},), got {shape}")
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {lengths.dtype}")
    if batch == 0:
        return 0
    lo, hi = torch.stack([lengths.min(), lengths.max()]).tolist()
    if lo < 1 or hi > size:
        raise ValueError(f"{name} must be in [1, {size}] (the padded length), got min {lo} and max {hi}")
    return hi


class _Attention(nn.Module):
    """Multi-head attention from `q` (B, Q, D_q) to `kv` (B, T, D_kv) in width `attn_dim`, output width `out_dim`.

    The key projection has no bias: it would add the same score to every key, which softmax ignores.
    """

    def __init__(self, q_dim: int, kv_dim: int, attn_dim: int, out_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if attn_dim % num_heads:
            raise ValueError(f"attention width {attn_dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(q_dim, attn_dim)
        self.k_proj = nn.Linear(kv_dim, attn_dim, bias=False)
        self.v_proj = nn.Linear(kv_dim, attn_dim)
        self.out_proj = nn.Linear(attn_dim, out_dim)

    def forward(self, q: Tensor, kv: Tensor, key_mask: Tensor | None = None) -> Tensor:
        B, Q, _ = q.shape
        T, h = kv.shape[1], self.num_heads
        q = self.q_proj(q).view(B, Q, h, -1).transpose(1, 2)  # (B, Q, D_q) -> (B, h, Q, H/h)
        k = self.k_proj(kv).view(B, T, h, -1).transpose(1, 2)  # (B, T, D_kv) -> (B, h, T, H/h)
        v = self.v_proj(kv).view(B, T, h, -1).transpose(1, 2)  # (B, T, D_kv) -> (B, h, T, H/h)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, T) -> (B, 1, 1, T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, Q, -1)  # (B, h, Q, H/h) -> (B, Q, H)
        return self.out_proj(y)


# ----------------------------------------------------------------------------- projectors


class Projector(nn.Module):
    """Base class: maps padded features of one modality (B, T, D_in) to LLM tokens (B, K, D_out).

    Attributes:
        in_dim: Encoder feature width D_in.
        out_dim: LLM embedding width D_out.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.in_dim = _check_int("in_dim", in_dim)
        self.out_dim = _check_int("out_dim", out_dim)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Project padded features; padded frames never influence valid tokens.

        Args:
            x: (B, T, D_in) padded features.
            lengths: (B,) number of valid frames per row, each in [1, T].

        Returns:
            tokens (B, K, D_out) and token_lengths (B,); rows of `tokens` beyond ``token_lengths[b]`` are padding
            (zeros for the per-frame kinds; the query kinds always fill all K).
        """
        raise NotImplementedError

    def num_tokens(self, input_length: int) -> int:
        """Number of tokens K that `forward` yields for a sample with `input_length` valid frames."""
        raise NotImplementedError

    def _check_inputs(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, int]:
        """Validate shapes; return (B, T) valid-frame mask and the longest valid length."""
        if x.ndim != 3 or x.shape[-1] != self.in_dim:
            raise ValueError(f"x must have shape (B, T, in_dim={self.in_dim}), got {tuple(x.shape)}")
        longest = _check_lengths(lengths, x.shape[0], x.shape[1])
        return valid_mask(lengths.to(x.device), x.shape[1]), longest


class _FrameProjector(Projector):
    """Per-frame projector (identity / linear / mlp2x_gelu) after optionally concatenating `merge` adjacent frames."""

    def __init__(self, proj: nn.Module, in_dim: int, out_dim: int, merge: int):
        super().__init__(in_dim, out_dim)
        self.merge = merge
        self.proj = proj

    def num_tokens(self, input_length: int) -> int:
        return math.ceil(_check_int("input_length", input_length) / self.merge)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        mask, _ = self._check_inputs(x, lengths)
        B, T, D = x.shape
        m = self.merge
        x = x.masked_fill(~mask[..., None], 0.0)  # zero padding (even NaN garbage) before frames are merged
        x = F.pad(x, (0, 0, 0, -T % m))  # (B, T, D_in) -> (B, ceil(T/m)*m, D_in)
        x = x.reshape(B, -1, m * D)  # (B, ceil(T/m)*m, D_in) -> (B, K, m*D_in)
        tokens = self.proj(x)  # (B, K, m*D_in) -> (B, K, D_out)
        token_lengths = (lengths.to(x.device) + m - 1) // m
        tokens = tokens.masked_fill(~valid_mask(token_lengths, tokens.shape[1])[..., None], 0.0)
        return tokens, token_lengths


class _CLSPatchProjector(Projector):
    """[CLS, patches] -> [``merge`` patches per token through ``patch_proj``..., CLS through ``cls_proj``].

    Emotion-LLaMA's EVA branch: ``llama_proj(view(patches, (B, N / 4, 4 * W)))`` and ``cls_tk_llama_proj(cls)``.
    A row with ``n`` valid frames (CLS + n - 1 patches) gives ceil((n - 1) / merge) patch tokens, then its CLS token
    (placed right after them, so padding stays at the end); the last group of patches is zero-padded when
    ``merge`` does not divide n - 1.
    """

    def __init__(self, in_dim: int, out_dim: int, merge: int, dropout: float):
        super().__init__(in_dim, out_dim)
        self.merge = merge
        self.dropout = nn.Dropout(dropout)
        self.patch_proj = nn.Linear(merge * in_dim, out_dim)
        self.cls_proj = nn.Linear(in_dim, out_dim)

    def num_tokens(self, input_length: int) -> int:
        return math.ceil((_check_int("input_length", input_length) - 1) / self.merge) + 1

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        mask, _ = self._check_inputs(x, lengths)
        B, T, D = x.shape
        m = self.merge
        x = x.masked_fill(~mask[..., None], 0.0)  # zero padding (even NaN garbage) before patches are merged
        k = math.ceil((T - 1) / m)  # patch tokens of the longest row
        patches = F.pad(x[:, 1:], (0, 0, 0, k * m - (T - 1)))  # (B, T-1, D_in) -> (B, k*m, D_in)
        patches = patches.reshape(B, k, m * D)  # (B, k*m, D_in) -> (B, k, m*D_in): m consecutive patches per token
        patch_tokens = self.patch_proj(self.dropout(patches))  # (B, k, m*D_in) -> (B, k, D_out)
        cls_token = self.cls_proj(self.dropout(x[:, 0]))  # (B, D_in) -> (B, D_out)
        n_patch = (lengths.to(x.device) - 1 + m - 1) // m  # (B,) patch tokens per row
        tokens = torch.cat([patch_tokens, patch_tokens.new_zeros(B, 1, self.out_dim)], dim=1)  # (B, k+1, D_out)
        tokens = tokens.masked_fill(~valid_mask(n_patch, k + 1)[..., None], 0.0)
        at = n_patch[:, None, None].expand(B, 1, self.out_dim)  # (B, 1, D_out): each row's CLS slot
        tokens = tokens.scatter(1, at, cls_token[:, None].to(tokens.dtype))  # CLS right after the row's patches
        return tokens, n_patch + 1


class _AttnPoolProjector(Projector):
    """K learned queries attend once over the valid frames; the attention output projection maps to D_out."""

    def __init__(self, in_dim: int, out_dim: int, num_queries: int, num_heads: int, hidden_dim: int, dropout: float):
        super().__init__(in_dim, out_dim)
        if hidden_dim % num_heads:
            raise ValueError(
                f"attn_pool width {hidden_dim} (hidden_dim, default in_dim) is not divisible by num_heads={num_heads}; "
                "pass a num_heads that divides it or a hidden_dim divisible by num_heads"
            )
        self.queries = nn.Parameter(torch.randn(num_queries, hidden_dim) * 0.02)
        self.attn = _Attention(hidden_dim, in_dim, hidden_dim, out_dim, num_heads, dropout)

    def num_tokens(self, input_length: int) -> int:
        _check_int("input_length", input_length)
        return self.queries.shape[0]

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        mask, _ = self._check_inputs(x, lengths)
        B = x.shape[0]
        x = x.masked_fill(~mask[..., None], 0.0)  # 0 * NaN would leak padding through the attention weights
        q = self.queries.expand(B, -1, -1)  # (K, H) -> (B, K, H)
        tokens = self.attn(q, x, mask)  # (B, K, H), (B, T, D_in) -> (B, K, D_out)
        return tokens, torch.full_like(lengths, tokens.shape[1], device=x.device)


class _ScorePoolProjector(Projector):
    """AffectGPT's temporal attention pooling: ``proj(sum_t score(h_t) * h_t)`` with a linear ``score`` (D_in -> 1,
    with bias), no softmax, over the valid frames only; one token."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float):
        super().__init__(in_dim, out_dim)
        self.score = nn.Linear(in_dim, 1)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(in_dim, out_dim)

    def num_tokens(self, input_length: int) -> int:
        _check_int("input_length", input_length)
        return 1

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        mask, _ = self._check_inputs(x, lengths)
        x = x.masked_fill(~mask[..., None], 0.0)  # padding (even NaN garbage) contributes nothing
        weights = self.score(x).masked_fill(~mask[..., None], 0.0)  # (B, T, D_in) -> (B, T, 1), unnormalised
        pooled = (weights * x).sum(dim=1)  # (B, T, 1) * (B, T, D_in) -> (B, D_in)
        tokens = self.proj(self.dropout(pooled))[:, None]  # (B, D_in) -> (B, 1, D_out)
        return tokens, torch.ones_like(lengths, device=x.device)


class _QFormerBlock(nn.Module):
    """Pre-LayerNorm block: queries self-attention, cross-attention to the (masked) frames, MLP."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.ln_self = nn.LayerNorm(dim)
        self.self_attn = _Attention(dim, dim, dim, dim, num_heads, dropout)
        self.ln_cross = nn.LayerNorm(dim)
        self.ln_frames = nn.LayerNorm(dim)
        self.cross_attn = _Attention(dim, dim, dim, dim, num_heads, dropout)
        self.ln_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))

    def forward(self, q: Tensor, frames: Tensor, mask: Tensor) -> Tensor:
        h = self.ln_self(q)
        q = q + self.self_attn(h, h)
        q = q + self.cross_attn(self.ln_cross(q), self.ln_frames(frames), mask)
        return q + self.mlp(self.ln_mlp(q))


class _QFormerProjector(Projector):
    """Small resampler: K learned queries read the frames through `num_layers` blocks in width H."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_queries: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        dropout: float,
        max_length: int,
    ):
        super().__init__(in_dim, out_dim)
        if hidden_dim % num_heads:
            raise ValueError(
                f"qformer width {hidden_dim} (hidden_dim, default min(in_dim, 512)) is not divisible by "
                f"num_heads={num_heads}; pass a num_heads that divides it or a hidden_dim divisible by num_heads"
            )
        self.max_length = max_length
        self.in_proj = nn.Linear(in_dim, hidden_dim)
        self.pos_emb = nn.Parameter(torch.randn(max_length, hidden_dim) * 0.02)
        self.queries = nn.Parameter(torch.randn(num_queries, hidden_dim) * 0.02)
        self.blocks = nn.ModuleList(_QFormerBlock(hidden_dim, num_heads, dropout) for _ in range(num_layers))
        self.ln_out = nn.LayerNorm(hidden_dim)
        self.out_proj = nn.Linear(hidden_dim, out_dim)

    def num_tokens(self, input_length: int) -> int:
        if _check_int("input_length", input_length) > self.max_length:
            raise ValueError(f"input_length {input_length} exceeds the qformer max_length={self.max_length}")
        return self.queries.shape[0]

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        mask, longest = self._check_inputs(x, lengths)
        if longest > self.max_length:
            raise ValueError(f"lengths has a sample of {longest} frames; the qformer max_length is {self.max_length}")
        x, mask = x[:, : self.max_length], mask[:, : self.max_length]  # frames past max_length are all padding
        B, T, _ = x.shape
        x = x.masked_fill(~mask[..., None], 0.0)  # 0 * NaN would leak padding through the attention weights
        frames = self.in_proj(x) + self.pos_emb[:T]  # (B, T, D_in) -> (B, T, H)
        q = self.queries.expand(B, -1, -1)  # (K, H) -> (B, K, H)
        for block in self.blocks:
            q = block(q, frames, mask)
        tokens = self.out_proj(self.ln_out(q))  # (B, K, H) -> (B, K, D_out)
        return tokens, torch.full_like(lengths, tokens.shape[1], device=x.device)


def build_projector(
    kind: str,
    in_dim: int,
    out_dim: int,
    *,
    num_queries: int = 1,
    num_layers: int = 2,
    num_heads: int = 8,
    hidden_dim: int | None = None,
    merge: int = 1,
    dropout: float = 0.0,
    max_length: int = 4096,
) -> Projector:
    """Build a projector from encoder width `in_dim` to LLM width `out_dim`.

    Args:
        kind: One of ``PROJECTOR_KINDS`` (see the module docstring).
        in_dim: Encoder feature width D_in.
        out_dim: LLM embedding width D_out.
        num_queries: Number of output tokens K of ``attn_pool`` / ``qformer``; must be 1 for the per-frame kinds.
        num_layers: Number of ``qformer`` blocks.
        num_heads: Attention heads of ``attn_pool`` / ``qformer``; must divide their width.
        hidden_dim: Hidden width: ``mlp2x_gelu`` (default out_dim, as LLaVA), ``attn_pool`` (default in_dim),
            ``qformer`` (default min(in_dim, 512)). Ignored by ``identity`` / ``linear`` /
            ``emotion_llama_frame``.
        merge: Per-frame kinds and ``emotion_llama_frame``: concatenate this many adjacent frames (patches) before
            projecting (K = ceil(T / merge); ``emotion_llama_frame``: ceil((T - 1) / merge) + 1).
        dropout: Dropout probability (attention weights and MLP outputs; before the last Linear of the per-frame
            kinds; before both linears of ``emotion_llama_frame``). Ignored by ``identity``.
        max_length: Longest input ``qformer`` accepts (size of its learned frame position table).

    Returns:
        The projector.

    Raises:
        ValueError: On an unknown kind or an invalid argument; the message names the argument and its value.
    """
    if kind not in PROJECTOR_KINDS:
        raise ValueError(f"unknown projector kind {kind!r}; known kinds: {', '.join(PROJECTOR_KINDS)}")
    in_dim, out_dim = _check_int("in_dim", in_dim), _check_int("out_dim", out_dim)
    num_queries, num_layers = _check_int("num_queries", num_queries), _check_int("num_layers", num_layers)
    num_heads, merge = _check_int("num_heads", num_heads), _check_int("merge", merge)
    max_length = _check_int("max_length", max_length)
    if hidden_dim is not None:
        hidden_dim = _check_int("hidden_dim", hidden_dim)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")

    if kind in ("attn_pool", "qformer"):
        if merge != 1:
            raise ValueError(f"merge={merge} applies only to the per-frame kinds, not to {kind!r}")
        if kind == "attn_pool":
            return _AttnPoolProjector(in_dim, out_dim, num_queries, num_heads, hidden_dim or in_dim, dropout)
        hidden = hidden_dim or min(in_dim, 512)
        return _QFormerProjector(in_dim, out_dim, num_queries, num_layers, num_heads, hidden, dropout, max_length)

    if num_queries != 1:
        raise ValueError(f"num_queries={num_queries} applies only to 'attn_pool' and 'qformer', not to {kind!r}")
    if kind == "affectgpt_attn_pool":
        if merge != 1:
            raise ValueError(f"merge={merge} applies only to the per-frame kinds, not to {kind!r}")
        return _ScorePoolProjector(in_dim, out_dim, dropout)
    if kind == "emotion_llama_frame":
        return _CLSPatchProjector(in_dim, out_dim, merge, dropout)
    merged = merge * in_dim  # width of one token after concatenating `merge` frames
    if kind == "identity":
        if merged != out_dim:
            raise ValueError(f"identity projector needs in_dim * merge == out_dim, got {in_dim} * {merge} != {out_dim}")
        proj: nn.Module = nn.Identity()
    elif kind == "linear":
        proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(merged, out_dim))
    else:  # mlp2x_gelu
        hidden = hidden_dim or out_dim
        proj = nn.Sequential(nn.Linear(merged, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))
    return _FrameProjector(proj, in_dim, out_dim, merge)


# ----------------------------------------------------------------------------- modality embedding and fusion


class ModalityTypeEmbedding(nn.Module):
    """Learned embedding added to every token of a modality so the LLM knows which modality it came from.

    Zero-initialised, so adding it is a no-op until trained.

    Args:
        modalities: Modality names, e.g. ``("audio", "face", "video")``; no duplicates.
        dim: Token width D.
    """

    def __init__(self, modalities: Sequence[str], dim: int):
        super().__init__()
        if len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities must be unique, got {list(modalities)}")
        self.index = {m: i for i, m in enumerate(modalities)}
        self.weight = nn.Parameter(torch.zeros(len(modalities), _check_int("dim", dim)))

    def forward(self, tokens: Tensor, modality: str) -> Tensor:
        """Add the embedding of `modality` to (B, K, D) `tokens`; returns (B, K, D)."""
        if modality not in self.index:
            raise ValueError(f"unknown modality {modality!r}; known: {', '.join(self.index)}")
        if tokens.shape[-1] != self.weight.shape[1]:
            raise ValueError(f"tokens must have width dim={self.weight.shape[1]}, got shape {tuple(tokens.shape)}")
        return tokens + self.weight[self.index[modality]].to(tokens.dtype)  # (B, K, D) + (D,) -> (B, K, D)


class _FusionPair(nn.Module):
    """One layer of bidirectional cross-attention between modalities a and b (deltas only, not the residual)."""

    def __init__(self, dim: int, fusion_dim: int, num_heads: int):
        super().__init__()
        self.norm_a = nn.LayerNorm(dim)
        self.norm_b = nn.LayerNorm(dim)
        self.a_from_b = _Attention(dim, dim, fusion_dim, dim, num_heads)
        self.b_from_a = _Attention(dim, dim, fusion_dim, dim, num_heads)
        for attn in (self.a_from_b, self.b_from_a):  # zero up-projection: a fresh block adds exactly 0
            nn.init.zeros_(attn.out_proj.weight)
            nn.init.zeros_(attn.out_proj.bias)

    def forward(self, xa: Tensor, xb: Tensor, mask_a: Tensor, mask_b: Tensor) -> tuple[Tensor, Tensor]:
        ha = self.norm_a(xa.masked_fill(~mask_a[..., None], 0.0))  # (C, K_a, D), padding zeroed
        hb = self.norm_b(xb.masked_fill(~mask_b[..., None], 0.0))  # (C, K_b, D), padding zeroed
        da = self.a_from_b(ha, hb, mask_b).masked_fill(~mask_a[..., None], 0.0)  # (C, K_a, D)
        db = self.b_from_a(hb, ha, mask_a).masked_fill(~mask_b[..., None], 0.0)  # (C, K_b, D)
        return da, db


class CrossModalFusion(nn.Module):
    """Bidirectional cross-attention between modality token sequences (e.g. audio <-> video), `depth` layers.

    Runs on projected tokens of width `dim` through a bottleneck `fusion_dim` (q/k/v down-projection, output
    up-projection zero-initialised so a fresh block is an exact identity), residual, pre-LayerNorm. In each layer every
    pair reads the states from before that layer; the updates of all pairs are then added. Only samples that have both
    modalities of a pair exchange information; padded tokens neither influence valid ones nor get updated.

    Args:
        dim: Token width D.
        pairs: Modality pairs, e.g. ``[("audio", "video")]``; each pair is two different modalities, no repeats.
        depth: Number of layers.
        fusion_dim: Bottleneck attention width; divisible by `num_heads`.
        num_heads: Attention heads.
    """

    def __init__(
        self, dim: int, pairs: Sequence[tuple[str, str]], depth: int = 1, fusion_dim: int = 256, num_heads: int = 4
    ):
        super().__init__()
        self.dim = _check_int("dim", dim)
        _check_int("depth", depth)
        if _check_int("fusion_dim", fusion_dim) % _check_int("num_heads", num_heads):
            raise ValueError(f"fusion_dim={fusion_dim} is not divisible by num_heads={num_heads}")
        self.pairs = [tuple(p) for p in pairs]
        seen: set[frozenset[str]] = set()
        for pair in self.pairs:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ValueError(f"pairs must hold two different modalities each, got {pair!r}")
            if frozenset(pair) in seen:
                raise ValueError(f"pairs lists {pair!r} twice (fusion is already bidirectional)")
            seen.add(frozenset(pair))
        self.layers = nn.ModuleList(
            nn.ModuleList(_FusionPair(dim, fusion_dim, num_heads) for _ in self.pairs) for _ in range(depth)
        )

    def forward(
        self, tokens: dict[str, Tensor], lengths: dict[str, Tensor], sample_index: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """Fuse the token sequences of the modalities present in the batch.

        Args:
            tokens: Modality -> (B_m, K_m, D) tokens of the B_m samples that have modality m.
            lengths: Modality -> (B_m,) valid tokens per row, in [1, K_m].
            sample_index: Modality -> (B_m,) distinct rows of those samples in the full batch (ascending order is
                conventional but not required).

        Returns:
            A new dict with the same keys and shapes. Pairs naming a modality absent from `tokens` are skipped.
        """
        masks = {}
        for m, x in tokens.items():
            if m not in lengths or m not in sample_index:
                raise ValueError(f"modality {m!r} is in tokens but missing from lengths or sample_index")
            if x.ndim != 3 or x.shape[-1] != self.dim:
                raise ValueError(f"tokens[{m!r}] must have shape (B_m, K_m, dim={self.dim}), got {tuple(x.shape)}")
            _check_lengths(lengths[m], x.shape[0], x.shape[1], name=f"lengths[{m!r}]")
            idx = sample_index[m]
            if idx.shape != (x.shape[0],) or idx.unique().numel() != idx.numel():
                raise ValueError(f"sample_index[{m!r}] must hold {x.shape[0]} distinct rows, got {idx.tolist()}")
            masks[m] = valid_mask(lengths[m].to(x.device), x.shape[1])

        rows = {}  # pair -> (rows in a, rows in b) of the samples that have both
        for a, b in self.pairs:
            if a in tokens and b in tokens:
                sa, sb = sample_index[a].to(tokens[a].device), sample_index[b].to(tokens[a].device)
                rows[(a, b)] = (sa[:, None] == sb[None, :]).nonzero(as_tuple=True)  # (B_a, B_b) -> 2 x (C,)

        state = dict(tokens)
        for layer in self.layers:
            new = dict(state)
            for pair, block in zip(self.pairs, layer, strict=True):
                if pair not in rows or rows[pair][0].numel() == 0:
                    continue
                (a, b), (ia, ib) = pair, rows[pair]
                da, db = block(state[a][ia], state[b][ib], masks[a][ia], masks[b][ib])
                new[a] = new[a].index_add(0, ia, da)  # (B_a, K_a, D) += (C, K_a, D) on rows ia
                new[b] = new[b].index_add(0, ib, db)  # (B_b, K_b, D) += (C, K_b, D) on rows ib
            state = new
        return state


class PreFusion(nn.Module):
    """AffectGPT's attention pre-fusion (``multi_fusion_type: attention``): several modalities' encoder features ->
    one fused vector per sample, before any projector to the LLM.

    For sources s_1..s_n (in order): ``m_i = embed[s_i](mean_t h_i)`` (time mean over the valid frames, then a linear
    to the common width W), ``a = fc_att(attention_mlp([m_1; ...; m_n]))`` (``Linear(n W -> W)`` then
    ``Linear(W -> n)``, no activation in between, no softmax: the weights are unnormalised and may be negative),
    ``fused = sum_i a_i m_i``. The released names map as ``multi_video_embs`` / ``multi_audio_embs`` ->
    ``embed.<source>``, ``attention_mlp``, ``fc_att``.

    Args:
        source_dims: Source modality -> its encoder width, in concatenation order.
        width: The common width W (AffectGPT: the widest source, 1024 for CLIP ViT-L/14 + HuBERT-large).
        kind: ``attention`` (the only one so far).
    """

    def __init__(self, source_dims: dict[str, int], width: int, kind: str = "attention"):
        super().__init__()
        if kind != "attention":
            raise ValueError(f"unknown pre-fusion kind {kind!r}; known: attention")
        if len(source_dims) < 2:
            raise ValueError(f"pre-fusion needs two or more source modalities, got {list(source_dims)}")
        self.sources = list(source_dims)
        self.width = _check_int("width", width)
        self.embed = nn.ModuleDict({s: nn.Linear(_check_int(f"{s} width", d), width) for s, d in source_dims.items()})
        self.attention_mlp = nn.Linear(len(self.sources) * width, width)
        self.fc_att = nn.Linear(width, len(self.sources))

    def forward(self, features: dict[str, Tensor], lengths: dict[str, Tensor]) -> Tensor:
        """Fuse aligned rows: ``features[s]`` (B, T_s, D_s) padded, ``lengths[s]`` (B,) valid frames -> (B, 1, W)."""
        mapped = []
        for s in self.sources:
            x, n = features[s], lengths[s].to(features[s].device)
            if x.ndim != 3 or x.shape[-1] != self.embed[s].in_features:
                raise ValueError(
                    f"pre-fusion source {s!r} must be (B, T, {self.embed[s].in_features}), got {tuple(x.shape)}"
                )
            _check_lengths(n, x.shape[0], x.shape[1], name=f"lengths[{s!r}]")
            mask = valid_mask(n, x.shape[1])[..., None]  # (B, T, 1)
            mean = x.masked_fill(~mask, 0.0).sum(dim=1) / n[:, None].to(x.dtype)  # (B, T, D_s) -> (B, D_s)
            mapped.append(self.embed[s](mean))  # (B, D_s) -> (B, W)
        weights = self.fc_att(self.attention_mlp(torch.cat(mapped, dim=1)))  # (B, n W) -> (B, W) -> (B, n)
        stacked = torch.stack(mapped, dim=2)  # n x (B, W) -> (B, W, n)
        fused = torch.matmul(stacked, weights[:, :, None]).squeeze(2)  # (B, W, n) @ (B, n, 1) -> (B, W)
        return fused[:, None]  # (B, 1, W)
