"""``emollm.model.precision``: what ``auto`` resolves to per device and weight dtype, and the autocast it gives."""

from __future__ import annotations

import pytest
import torch

import emollm.model.precision
from emollm.model.precision import autocast, resolve_precision


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_follows_the_cpu(monkeypatch, native, expected):
    monkeypatch.setattr(emollm.model.precision, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("auto", "cpu", weights=torch.float32) == expected
    # autocast pays over fp32 weights only: a model loaded in bf16/fp16 runs as loaded
    assert resolve_precision("auto", "cpu", weights="bfloat16") == "fp32"
    assert resolve_precision("auto", "cpu", weights=torch.float16) == "fp32"
    # explicit values win on any CPU
    for value in ("no", False, None, "fp32", "float32"):
        assert resolve_precision(value, "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == resolve_precision("bfloat16", "cpu") == "bf16"


def test_refusals():
    with pytest.raises(ValueError, match="precision: must be one of auto, fp32, bf16"):
        resolve_precision("fp16")
    with pytest.raises(ValueError, match="float16 weights"):
        resolve_precision("bf16", weights="float16")


def test_autocast_context():
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with autocast("bf16"):
        assert layer(x).dtype == torch.bfloat16
    with autocast("fp32"):
        assert layer(x).dtype == torch.float32
    assert layer.weight.dtype == torch.float32  # autocast never casts the weights


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_merr_reasoning_precision(tmp_path, monkeypatch, native, expected):
    """``reason.precision`` of ``emollm merr build``: auto per CPU, ``no`` from YAML, and the client id (the
    reasoning cache key, recorded in ``manifest.json``) naming bf16."""
    from emollm_merr.config import BuildConfig, BuildConfigError
    from emollm_merr.reason import build_reasoning_client

    monkeypatch.setattr(emollm.model.precision, "cpu_has_native_bf16", lambda: native)

    def cfg(**reason):
        return BuildConfig.from_dict({"inputs": {"video_dir": str(tmp_path)}, "reason": reason})

    auto = cfg()
    assert auto.reason.precision == "auto" and auto.reason.resolved_precision() == expected
    client = build_reasoning_client(auto.reason)  # loads nothing yet
    assert client.precision == expected
    assert client.id == "llm:smollm2:embedded:greedy:160" + (":bf16" if expected == "bf16" else "")
    assert cfg(precision=False).reason.precision == "no"  # YAML's unquoted no
    assert cfg(precision="no").reason.resolved_precision() == "fp32"
    assert cfg(precision="bf16").reason.resolved_precision() == "bf16"
    assert cfg(backbone="llama3").reason.resolved_precision() == "fp32"  # loaded in bf16: runs as loaded
    with pytest.raises(BuildConfigError, match="reason.precision: bf16 autocast over llama2's float16 weights"):
        cfg(backbone="llama2", precision="bf16")
    with pytest.raises(BuildConfigError, match="reason.precision"):
        cfg(precision="fp16")


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_eval_and_train_auto(monkeypatch, native, expected):
    """The same switch for ``emollm eval`` and ``emollm train`` (their own tests cover runs)."""
    from emollm_eval.config import EvalConfig
    from emollm_train.runtime import resolve_mixed_precision

    monkeypatch.setattr(emollm.model.precision, "cpu_has_native_bf16", lambda: native)
    ev = EvalConfig.from_dict({"checkpoint": "c", "dataset": "dfew", "gold": "g.csv", "output_dir": "o"})
    assert ev.resolved_precision("float32") == expected
    assert resolve_mixed_precision("auto", cuda=False)[0] == {"bf16": "bf16", "fp32": "no"}[expected]
