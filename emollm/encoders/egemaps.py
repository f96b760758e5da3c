"""openSMILE eGeMAPS (v02) as an audio encoder of the feature cache: the classic hand-crafted audio baseline.

``emollm features extract --encoders egemaps`` writes per clip either the 88 eGeMAPS functionals as one token
(``level="functionals"``, the default: ``(1, 88)``) or the 25 low-level descriptors per 10 ms frame
(``level="lld"``: ``(T', 25)``), for the fusion baselines' sequence methods. Input: ``(B, T_samples)`` 16 kHz
waveforms (padded; ``lengths`` in samples). openSMILE fills the functionals of a clip too short to analyse with NaN;
those become 0 (the cache refuses NaN), with a warning naming how many.

Needs the ``opensmile`` package (``pip install 'emollm[clues]'``); it is imported when the encoder is built.
"""

from __future__ import annotations

import os
import warnings
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["EGEMAPS_DIMS", "EGeMAPSEncoder", "build_egemaps_encoder"]

SAMPLE_RATE = 16000
EGEMAPS_DIMS = {"functionals": 88, "lld": 25}


class EGeMAPSEncoder(nn.Module):
    """eGeMAPSv02 functionals (88-d, one token) or LLDs (25-d per frame); no trainable weights."""

    def __init__(self, level: Literal["functionals", "lld"] = "functionals", sample_rate: int = SAMPLE_RATE):
        super().__init__()
        import opensmile

        if level not in EGEMAPS_DIMS:
            raise ValueError(f"egemaps: level must be 'functionals' or 'lld', got {level!r}")
        self.level = level
        self.sample_rate = sample_rate
        self.output_dim = EGEMAPS_DIMS[level]
        self._smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02,
            feature_level=(
                opensmile.FeatureLevel.Functionals
                if level == "functionals"
                else opensmile.FeatureLevel.LowLevelDescriptors
            ),
        )

    def _one(self, wave: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Segment too short")
            feats = np.array(self._smile.process_signal(wave, self.sample_rate), dtype=np.float32)  # (T', D), writable
        if feats.shape[0] == 0:
            feats = np.zeros((1, self.output_dim), np.float32)
        bad = ~np.isfinite(feats)
        if bad.any():
            warnings.warn(f"egemaps: {int(bad.sum())} values were NaN (clip too short?) and are set to 0", stacklevel=3)
            feats = np.where(bad, 0.0, feats).astype(np.float32)
        return feats

    @torch.no_grad()
    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T_samples), (B,) -> (B, T', D) zero-padded, (B,) frames per clip (1 for functionals)."""
        outs = [self._one(inputs[i, : int(lengths[i])].float().cpu().numpy()) for i in range(inputs.shape[0])]
        t = max(o.shape[0] for o in outs)
        feats = torch.zeros(len(outs), t, self.output_dim)
        for i, o in enumerate(outs):
            feats[i, : o.shape[0]] = torch.from_numpy(o)
        return feats, torch.tensor([o.shape[0] for o in outs])

    def num_tokens(self, input_length: int) -> int:
        if self.level == "functionals":
            return 1
        return self._one(np.zeros(int(input_length), np.float32)).shape[0]


def build_egemaps_encoder(feature_dim: int | None = None, path: str | os.PathLike | None = None, **options):
    """Registry builder for ``egemaps`` (no weights: ``path`` must be None; option ``level``)."""
    if path is not None:
        raise ValueError("egemaps has no weights; do not pass a path")
    encoder = EGeMAPSEncoder(**options)
    if feature_dim is not None and feature_dim != encoder.output_dim:
        raise ValueError(f"egemaps ({encoder.level}) gives {encoder.output_dim}-d features, not {feature_dim}")
    return encoder
