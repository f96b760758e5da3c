"""openSMILE eGeMAPS as a cache encoder (registered in emollm.encoders once the table entry is added)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("opensmile")

from emollm.encoders.egemaps import build_egemaps_encoder  # noqa: E402


def test_functionals_and_lld_shapes():
    t = np.arange(16000) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * np.random.default_rng(0).normal(size=t.size)).astype(np.float32)
    inputs = torch.zeros(2, 16000)
    inputs[0], inputs[1, :8000] = torch.from_numpy(wave), torch.from_numpy(wave[:8000])
    enc = build_egemaps_encoder()
    feats, lengths = enc(inputs, torch.tensor([16000, 8000]))
    assert feats.shape == (2, 1, 88) and lengths.tolist() == [1, 1] and torch.isfinite(feats).all()
    assert enc.num_tokens(16000) == 1
    lld = build_egemaps_encoder(level="lld")
    feats, lengths = lld(inputs, torch.tensor([16000, 8000]))
    assert feats.shape[2] == 25 and lengths[0] > lengths[1] > 1 and lld.num_tokens(16000) == int(lengths[0])


def test_too_short_clip_gives_zeros_with_a_warning():
    with pytest.warns(UserWarning, match="NaN"):
        feats, _ = build_egemaps_encoder()(torch.zeros(1, 100), torch.tensor([100]))
    assert torch.isfinite(feats).all()
    with pytest.raises(ValueError, match="not 12"):
        build_egemaps_encoder(feature_dim=12)
