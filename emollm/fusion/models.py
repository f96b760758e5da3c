"""The classic fusion baselines, over time-aligned cached features.

Every model takes ``x: {modality: (B, T, D_m)}`` and ``present: {modality: (B,)}`` (bool) and returns logits
``(B, C)``. Inputs are standardised with training-set statistics kept as buffers (saved with the weights); an absent
modality is zeros after standardisation and is masked wherever a method can mask it. Modality dropout (training
only) hides whole modalities per clip, never all of a clip's modalities.

Shape legend: B batch, T time steps, D_m width of modality m, H hidden width, M modalities, C classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AttentionFusion",
    "FusionModel",
    "LateFusion",
    "PenultimateFusion",
    "TransformerFusion",
    "UnimodalClassifier",
]

Batch = dict[str, Tensor]


class FusionModel(nn.Module):
    """Shared parts: per-modality input standardisation, modality dropout, the loss.

    Args:
        dims: Modality -> feature width (its order is the model's modality order).
        n_classes: C.
        modality_dropout: Probability of hiding each modality of a training clip.
    """

    def __init__(self, dims: dict[str, int], n_classes: int, modality_dropout: float = 0.0):
        super().__init__()
        if not dims:
            raise ValueError("a fusion model needs at least one modality")
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"model.modality_dropout must be in [0, 1), got {modality_dropout}")
        self.modalities = list(dims)
        self.dims = dict(dims)
        self.n_classes = n_classes
        self.modality_dropout = modality_dropout
        for m, d in dims.items():
            self.register_buffer(f"mean_{m}", torch.zeros(d))
            self.register_buffer(f"std_{m}", torch.ones(d))

    def set_normalization(self, x: Batch, present: Batch) -> None:
        """Standardise with the mean/std of the present clips' frames (call once, on the training split)."""
        for m in self.modalities:
            frames = x[m][present[m]].reshape(-1, self.dims[m])  # (N_present * T, D)
            if frames.shape[0] == 0:
                continue
            getattr(self, f"mean_{m}").copy_(frames.mean(0))
            getattr(self, f"std_{m}").copy_(frames.std(0, unbiased=False).clamp_min(1e-5))

    def drop_modalities(self, present: Batch) -> Batch:
        """Training-time modality dropout: hide each present modality with probability p, keeping >= 1 per clip."""
        if not self.training or self.modality_dropout == 0.0 or len(self.modalities) < 2:
            return present
        stack = torch.stack([present[m] for m in self.modalities], 1)  # (B, M)
        keep = stack & (torch.rand(stack.shape) >= self.modality_dropout)
        none_left = ~keep.any(1) & stack.any(1)
        if none_left.any():  # restore one of the clip's own modalities at random
            scores = torch.rand(stack.shape).masked_fill(~stack, -1.0)
            pick = F.one_hot(scores.argmax(1), len(self.modalities)).bool()
            keep = torch.where(none_left[:, None], pick, keep)
        return {m: keep[:, i] for i, m in enumerate(self.modalities)}

    def prepare(self, x: Batch, present: Batch) -> Batch:
        """Standardised inputs with absent modalities zeroed: {m: (B, T, D_m)}."""
        out = {}
        for m in self.modalities:
            z = (x[m] - getattr(self, f"mean_{m}")) / getattr(self, f"std_{m}")
            out[m] = z * present[m][:, None, None].to(z.dtype)
        return out

    def logits(self, x: Batch, present: Batch) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Batch, present: Batch) -> Tensor:
        present = self.drop_modalities(present)
        return self.logits(self.prepare(x, present), present)

    def loss(self, x: Batch, present: Batch, y: Tensor) -> Tensor:
        return F.cross_entropy(self(x, present), y)


def _frame_mlp(d_in: int, hidden: int, dropout: float) -> nn.Sequential:
    """The unimodal penultimate network, applied per frame: Linear -> ELU -> Dropout."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ELU(), nn.Dropout(dropout))


def _pool(h: Tensor, kind: str) -> Tensor:
    """(B, T, H) -> (B, H)."""
    return h.amax(1) if kind == "max" else h.mean(1)


class UnimodalClassifier(FusionModel):
    """One modality: frame MLP (penultimate features) -> temporal mean -> linear classifier."""

    def __init__(self, dims: dict[str, int], n_classes: int, hidden: int = 64, dropout: float = 0.2, **kw):
        if len(dims) != 1:
            raise ValueError(f"unimodal takes exactly one modality (model.modalities), got {list(dims)}")
        super().__init__(dims, n_classes, **kw)
        (d,) = dims.values()
        self.encoder = _frame_mlp(d, hidden, dropout)
        self.head = nn.Linear(hidden, n_classes)

    def logits(self, x: Batch, present: Batch) -> Tensor:
        (m,) = self.modalities
        return self.head(self.encoder(x[m]).mean(1))  # (B, T, D) -> (B, T, H) -> (B, H) -> (B, C)


class LateFusion(FusionModel):
    """Method 1: one unimodal classifier per modality, each trained on its own loss; the prediction averages the
    log-probabilities of the modalities a clip has (a missing modality simply does not vote)."""

    def __init__(self, dims: dict[str, int], n_classes: int, hidden: int = 64, dropout: float = 0.2, **kw):
        super().__init__(dims, n_classes, **kw)
        self.encoders = nn.ModuleDict({m: _frame_mlp(d, hidden, dropout) for m, d in dims.items()})
        self.heads = nn.ModuleDict({m: nn.Linear(hidden, n_classes) for m in dims})

    def branch_logits(self, x: Batch) -> Tensor:
        return torch.stack([self.heads[m](self.encoders[m](x[m]).mean(1)) for m in self.modalities], 1)  # (B, M, C)

    def logits(self, x: Batch, present: Batch) -> Tensor:
        logp = self.branch_logits(x).log_softmax(-1)  # (B, M, C)
        w = torch.stack([present[m] for m in self.modalities], 1).to(logp.dtype)  # (B, M)
        return (logp * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp_min(1.0)  # (B, C)

    def loss(self, x: Batch, present: Batch, y: Tensor) -> Tensor:
        present = self.drop_modalities(present)
        logits = self.branch_logits(self.prepare(x, present))  # (B, M, C)
        total = logits.new_zeros(())
        for i, m in enumerate(self.modalities):
            mask = present[m]
            if mask.any():
                total = total + F.cross_entropy(logits[mask, i], y[mask])
        return total


class PenultimateFusion(FusionModel):
    """Methods 2-5: concatenate the unimodal networks' penultimate features and classify.

    Args:
        pool: ``none`` (method 2, intermediate fusion: concatenate per time step, classify each step, average the
            logits over time), ``mean`` (method 3: temporal average pooling before fusion) or ``max`` (method 5).
        head_hidden: 0 for a linear fusion head; > 0 adds a hidden layer with ELU and dropout (methods 4, 5).
    """

    def __init__(
        self,
        dims: dict[str, int],
        n_classes: int,
        hidden: int = 64,
        dropout: float = 0.2,
        pool: str = "mean",
        head_hidden: int = 0,
        **kw,
    ):
        super().__init__(dims, n_classes, **kw)
        if pool not in ("none", "mean", "max"):
            raise ValueError(f"model.options.pool must be none, mean or max, got {pool!r}")
        self.pool = pool
        self.encoders = nn.ModuleDict({m: _frame_mlp(d, hidden, dropout) for m, d in dims.items()})
        width = hidden * len(dims)
        if head_hidden > 0:
            self.head = nn.Sequential(
                nn.Linear(width, head_hidden), nn.ELU(), nn.Dropout(dropout), nn.Linear(head_hidden, n_classes)
            )
        else:
            self.head = nn.Linear(width, n_classes)

    def logits(self, x: Batch, present: Batch) -> Tensor:
        h = torch.cat([self.encoders[m](x[m]) for m in self.modalities], -1)  # (B, T, M*H)
        if self.pool == "none":
            return self.head(h).mean(1)  # per-step logits (B, T, C) averaged over time
        return self.head(_pool(h, self.pool))  # (B, M*H) -> (B, C)


class TransformerFusion(FusionModel):
    """Method 6: cross-modal attention over time-aligned sequences, then joint self-attention.

    Each modality is projected to ``d_model`` with a learned position and modality embedding; each modality's
    tokens attend to the other modalities' tokens plus a learned null token (so a clip missing the other modality
    still has something to attend to), then one transformer encoder layer runs over all present tokens, and the
    masked mean of its outputs is classified. Train with ``modality_dropout`` > 0 to stay accurate when a modality
    is missing at test time.
    """

    def __init__(
        self,
        dims: dict[str, int],
        n_classes: int,
        hidden: int = 64,
        dropout: float = 0.1,
        steps: int = 16,
        heads: int = 4,
        layers: int = 1,
        **kw,
    ):
        super().__init__(dims, n_classes, **kw)
        if hidden % heads:
            raise ValueError(f"model.hidden ({hidden}) must be divisible by model.options.heads ({heads})")
        self.proj = nn.ModuleDict({m: nn.Linear(d, hidden) for m, d in dims.items()})
        self.pos = nn.Parameter(torch.zeros(steps, hidden))
        self.modality_emb = nn.Parameter(torch.zeros(len(dims), hidden))
        self.null = nn.Parameter(torch.zeros(1, 1, hidden))
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.modality_emb, std=0.02)
        nn.init.normal_(self.null, std=0.02)
        self.cross = nn.ModuleDict(
            {m: nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True) for m in dims}
        )
        self.cross_norm = nn.ModuleDict({m: nn.LayerNorm(hidden) for m in dims})
        layer = nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout, batch_first=True, norm_first=True)
        self.joint = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, n_classes)

    def logits(self, x: Batch, present: Batch) -> Tensor:
        b = next(iter(x.values())).shape[0]
        t = next(iter(x.values())).shape[1]
        if t > self.pos.shape[0]:
            raise ValueError(f"sequences have {t} steps, the model was built for {self.pos.shape[0]} (data.steps)")
        tok = {
            m: self.proj[m](x[m]) + self.pos[:t] + self.modality_emb[i]  # (B, T, D_m) -> (B, T, H)
            for i, m in enumerate(self.modalities)
        }
        absent = {m: ~present[m][:, None].expand(b, t) for m in self.modalities}  # (B, T) True = ignore
        fused = []
        for m in self.modalities:
            others = [o for o in self.modalities if o != m]
            if others:
                keys = torch.cat([self.null.expand(b, 1, -1)] + [tok[o] for o in others], 1)  # (B, 1 + T*(M-1), H)
                pad = torch.cat([absent[m].new_zeros(b, 1)] + [absent[o] for o in others], 1)
                attended, _ = self.cross[m](tok[m], keys, keys, key_padding_mask=pad, need_weights=False)
                fused.append(self.cross_norm[m](tok[m] + attended))  # (B, T, H)
            else:
                fused.append(tok[m])
        seq = torch.cat(fused, 1)  # (B, M*T, H)
        pad = torch.cat([absent[m] for m in self.modalities], 1)  # (B, M*T)
        h = self.norm(self.joint(seq, src_key_padding_mask=pad))
        keep = (~pad).to(h.dtype)[..., None]
        pooled = (h * keep).sum(1) / keep.sum(1).clamp_min(1.0)  # (B, H)
        return self.head(pooled)


class AttentionFusion(FusionModel):
    """Method 7: MERBench's ``attention`` model (MERTools ``MERBench/toolkit/models/attention.py``).

    Each modality (text too, when its features are given) is mean-pooled and encoded by an MLP to H; an MLP over
    the concatenation gives one weight per modality (no softmax, as in MERBench); the fused vector is the weighted
    sum of the modality vectors, classified linearly. Absent modalities contribute zero vectors.
    """

    def __init__(self, dims: dict[str, int], n_classes: int, hidden: int = 64, dropout: float = 0.2, **kw):
        super().__init__(dims, n_classes, **kw)
        m = len(dims)
        self.encoders = nn.ModuleDict({k: _mlp_encoder(d, hidden, dropout) for k, d in dims.items()})
        self.attention_mlp = _mlp_encoder(hidden * m, hidden, dropout)
        self.fc_att = nn.Linear(hidden, m)
        self.fc_out = nn.Linear(hidden, n_classes)

    def logits(self, x: Batch, present: Batch) -> Tensor:
        hs = [
            self.encoders[m](x[m].mean(1)) * present[m][:, None].to(x[m].dtype)  # (B, T, D) -> (B, H)
            for m in self.modalities
        ]
        weights = self.fc_att(self.attention_mlp(torch.cat(hs, -1)))  # (B, M*H) -> (B, M)
        fused = torch.bmm(torch.stack(hs, 2), weights[..., None]).squeeze(-1)  # (B, H, M) @ (B, M, 1) -> (B, H)
        return self.fc_out(fused)


def _mlp_encoder(d_in: int, hidden: int, dropout: float) -> nn.Sequential:
    """MERBench's ``MLPEncoder``: Linear -> ReLU -> Dropout -> Linear -> ReLU -> Dropout."""
    return nn.Sequential(
        nn.Linear(d_in, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
    )


def modality_order(dims: dict[str, int], order: Sequence[str]) -> dict[str, int]:
    """``dims`` restricted to and ordered by ``order`` (each named modality must exist)."""
    missing = [m for m in order if m not in dims]
    if missing:
        raise ValueError(f"model.modalities names {missing}, but the data has {list(dims)}")
    return {m: dims[m] for m in order}
