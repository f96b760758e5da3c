"""``emollm eval`` precision: ``precision: auto|fp32|bf16`` resolved per device and weight dtype, autocast around
generation only, recorded in ``metrics.json`` and (when bf16) in the config hash."""

from __future__ import annotations

import json

import pytest
import torch

import emollm.model.generation
import emollm.model.precision
from emollm.encoders.precomputed import FeatureStore
from emollm_eval.runner import ConfigMismatchError, EvalConfig, load_config, run_eval

from .test_runner import CountingChat, dfew_data, dfew_overrides, tiny_checkpoint  # noqa: F401 (fixtures)

OK = {"checkpoint": "c", "dataset": "dfew", "gold": "g.csv", "output_dir": "o"}


def test_config_precision(tmp_path, monkeypatch):
    assert EvalConfig.from_dict(OK).precision == "auto"
    yaml = tmp_path / "e.yaml"
    yaml.write_text("checkpoint: c\ndataset: dfew\ngold: g.csv\noutput_dir: o\nprecision: no\n")  # YAML false
    assert load_config(yaml).precision == "no"
    assert load_config(None, [f"{k}={v}" for k, v in OK.items()] + ["precision=no"]).precision == "no"
    with pytest.raises(ValueError, match="precision must be 'auto' | 'fp32' | 'bf16' | 'no', got 'fp16'"):
        EvalConfig.from_dict({**OK, "precision": "fp16"})
    with pytest.raises(ValueError, match="bf16 autocast over dtype: float16"):
        EvalConfig.from_dict({**OK, "precision": "bf16", "dtype": "float16"})
    auto, fp32, bf16 = (EvalConfig.from_dict({**OK, "precision": p}) for p in ("auto", "no", "bf16"))
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(emollm.model.precision, "cpu_has_native_bf16", lambda native=native: native)
        assert auto.resolved_precision("float32") == expected
        assert auto.resolved_precision("bfloat16") == "fp32"  # a model loaded in bf16 runs as loaded
        assert fp32.resolved_precision("float32") == "fp32" and bf16.resolved_precision("float32") == "bf16"


def test_generation_runs_under_the_resolved_precision(tiny_checkpoint, dfew_data, tmp_path, monkeypatch):  # noqa: F811
    seen: dict[str, list[bool]] = {"chat": [], "features": []}
    real_load = FeatureStore.load

    def load(self, name):
        seen["features"].append(torch.is_autocast_enabled("cpu"))
        return real_load(self, name)

    def answer(sample):
        seen["chat"].append(torch.is_autocast_enabled("cpu"))
        return "happy"

    monkeypatch.setattr(FeatureStore, "load", load)
    monkeypatch.setattr(emollm.model.generation, "chat", CountingChat(answer))
    out = tmp_path / "out"
    base = dfew_overrides(tiny_checkpoint, dfew_data, out, "limit=4", "n_bootstrap=0")

    monkeypatch.setattr(emollm.model.precision, "cpu_has_native_bf16", lambda: True)
    m = run_eval(load_config(None, base), progress=False).metrics
    assert (m["precision"], m["llm_dtype"]) == ("bf16", "float32")  # the tiny checkpoint stores fp32 weights
    assert seen["chat"] and all(seen["chat"]) and not any(seen["features"])
    run = json.loads((out / "run.json").read_text())
    assert run["fingerprint"]["precision"] == "bf16" and run["config"]["precision"] == "auto"

    # the same config on a CPU without native bf16 would give fp32 predictions: not mixed into this folder
    monkeypatch.setattr(emollm.model.precision, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ConfigMismatchError, match="precision"):
        run_eval(load_config(None, base), progress=False)

    # fp32 hashes as before precision existed, so earlier output folders still resume
    seen["chat"].clear()
    m = run_eval(load_config(None, [*base, f"output_dir={tmp_path / 'fp32'}"]), progress=False).metrics
    assert m["precision"] == "fp32" and seen["chat"] and not any(seen["chat"])
    assert "precision" not in json.loads((tmp_path / "fp32" / "run.json").read_text())["fingerprint"]
