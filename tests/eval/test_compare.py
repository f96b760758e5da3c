"""emollm bench backbones: same recipe across backbones and LoRA/QLoRA, one table."""

from __future__ import annotations

import json
import math

import pytest

from emollm_eval.compare import CompareConfig, RunSpec, compare, format_table, main


def test_compare_two_variants(tmp_path):
    cfg = CompareConfig(
        base_config="configs/debug/tiny.yaml",
        runs=[RunSpec("llama2-tiny", ["model.backbone=llama2"])],
        variants=["lora", "qlora"],
        common_overrides=["train.max_steps=2", "train.save_every=0", "train.eval_every=0"],
        eval_samples=4,
        output_dir=str(tmp_path / "out"),
    )
    rows = compare(cfg)
    assert [(r["run"], r["variant"]) for r in rows] == [("llama2-tiny", "lora"), ("llama2-tiny", "qlora")]
    for r in rows:
        assert "error" not in r, r.get("error")
        for key in (
            "val_accuracy",
            "val_uar",
            "invalid_rate",
            "val_loss",
            "train_tokens_per_s",
            "eval_s_per_sample",
            "peak_rss_gb",
        ):
            assert isinstance(r[key], float) and math.isfinite(r[key]), key
        assert 0 <= r["val_accuracy"] <= 1 and 0 <= r["invalid_rate"] <= 1 and r["trainable_params"] > 0
        assert r["backbone"] == "llama2" and r["eval_samples"] == 4 and r["steps"] == 2
    assert rows[1]["quantization"] == "4bit" and rows[0]["quantization"] is None
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(saved["rows"]) == 2
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| llama2-tiny | qlora |" in md and "never a test split" in md


def test_table_and_config_errors(tmp_path):
    table = format_table([{"run": "a", "variant": "lora", "val_accuracy": 0.5, "trainable_params": 1234}])
    assert "| a | lora | - | 0.500 | - |" in table and "1,234" in table
    bad = tmp_path / "bad.yaml"
    bad.write_text("runs: [{name: a}]\nvariants: [lora, int3]\n")
    with pytest.raises(ValueError, match="unknown variant"):
        CompareConfig.load(bad)
    bad.write_text("runz: []\n")
    with pytest.raises(ValueError, match=r"runz: unknown key \(did you mean 'runs'\?\)"):
        CompareConfig.load(bad)
    assert main(["backbones", "--config", str(tmp_path / "missing.yaml")]) == 2
    shipped = CompareConfig.load("configs/bench/backbones.yaml")
    from emollm.backbones import list_backbones

    assert {r.overrides[0].split("=")[1] for r in shipped.runs} == set(list_backbones())


def test_fusion_run_adds_a_non_llm_row(tmp_path):
    """A fusion baseline (``emollm fusion synth`` data) appears in the same table, marked by its variant and data."""
    from emollm_eval.compare import FusionRunSpec

    cfg = CompareConfig(
        runs=[],
        fusion_runs=[FusionRunSpec("avgpool", method="avgpool_hidden", synth="both", overrides=["train.epochs=2"])],
        output_dir=str(tmp_path / "out"),
    )
    rows = compare(cfg)
    assert len(rows) == 1 and "error" not in rows[0], rows[0].get("error")
    r = rows[0]
    assert (r["run"], r["variant"], r["non_llm"], r["method"]) == ("avgpool", "fusion", True, "avgpool_hidden")
    assert r["data"] == "emollm fusion synth --task both" and r["invalid_rate"] == 0.0 and r["epochs"] == 2
    for key in ("val_accuracy", "val_uar", "train_s", "eval_s_per_sample", "peak_rss_gb"):
        assert isinstance(r[key], float) and math.isfinite(r[key]), key
    assert 0 <= r["val_uar"] <= 1 and r["trainable_params"] > 0
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| avgpool | fusion | emollm fusion synth --task both |" in md and "non-LLM baselines" in md
    with pytest.raises(ValueError, match="method needs synth"):
        FusionRunSpec("x", method="avgpool_hidden")
