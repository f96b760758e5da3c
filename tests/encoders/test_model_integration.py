"""One live encoder inside the full model: raw waveform -> processor placeholder expansion -> forward."""

from __future__ import annotations

import pytest
import torch

from emollm.model.configuration import ModalityConfig, ProjectorConfig
from emollm.model.processing import Sample


def test_hubert_tower_in_the_full_model(tiny_dirs):
    try:
        from tests.emollm.conftest import make_tiny
    except ImportError as e:  # emollm.testing.build_tiny_tokenizer is written by another developer
        pytest.skip(f"tiny model helpers are not available yet: {e}")
    audio = ModalityConfig(
        encoder="hubert",
        encoder_path=str(tiny_dirs("hubert")),
        feature_dim=32,
        encoder_options={"pooling": "frame"},
        projector=ProjectorConfig(kind="linear"),
    )
    model, proc = make_tiny("llama2", modalities={"audio": audio})
    tower = model.towers["audio"]
    waves = [torch.randn(1234) * 0.1, torch.randn(4000) * 0.1]
    samples = [
        Sample(
            messages=[
                {"role": "user", "content": "<audio> How does the speaker feel?"},
                {"role": "assistant", "content": "Happy."},
            ],
            features={"audio": w},
            name=f"s{i}",
        )
        for i, w in enumerate(waves)
    ]
    batch = proc(samples)
    token_id = model.config.modalities["audio"].token_id
    counts = (batch.input_ids == token_id).sum(dim=1).tolist()
    assert (
        counts == [tower.num_tokens(1234), tower.num_tokens(4000)] == [122, 399]
    )  # (1234 - 10) // 5 + 1 = 245, (245 - 3) // 2 + 1 = 122
    out = model(**batch.model_inputs())
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projectors["audio"].parameters())
