"""emollm bench backbones: same recipe across backbones and LoRA/QLoRA, one table."""

from __future__ import annotations

import json
import math
from pathlib import Path

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


def test_staged_runs_scored_on_a_held_out_split(tmp_path):
    """Stage 1 + stage 2 per run, then the final model on an ``emollm eval`` held-out split in a fresh process: the
    table has accuracy/UAR with bootstrap intervals, the invalid rate, first-answer time, total/trainable parameters
    and precision, and its accuracy equals one recomputed from the written predictions."""
    from emollm_eval.compare import StageSpec
    from tests.train.conftest import (
        FEATURE_DIRS,
        LABELS,
        QUICK,
        TINY,
        TINY_INSTRUCT,
        merr_overrides,
        write_merr_dataset,
    )

    train_root, test_root = tmp_path / "train", tmp_path / "test"
    data = write_merr_dataset(train_root, n=24)
    gold = write_merr_dataset(test_root, n=12, seed=1, name_prefix="heldout")["ncev"]
    eval_yaml = tmp_path / "eval.yaml"
    eval_yaml.write_text(
        json.dumps(
            {
                "dataset": "ncev",
                "gold": str(gold),
                "split": "test",
                "feature_root": str(test_root),
                "features": dict(FEATURE_DIRS),
                "labels": list(LABELS),
                "prompt": "<video><face><audio> [emotion] Which label fits best: {labels}?",
                "max_new_tokens": 6,
                "batch_size": 4,
                "n_bootstrap": 100,
            }
        )
    )
    cfg = CompareConfig(
        stages=[
            StageSpec(str(TINY), merr_overrides(data, train_root, which="coarse")),
            StageSpec(str(TINY_INSTRUCT), merr_overrides(data, train_root, which="fine")),
        ],
        test_config=str(eval_yaml),
        runs=[RunSpec("smollm2-tiny", ["model.backbone=smollm2"]), RunSpec("qwen2-tiny", ["model.backbone=qwen2"])],
        variants=["lora"],
        common_overrides=[
            *QUICK,
            "train.max_steps=2",
            "train.save_every=0",
            "train.eval_every=0",
            "train.batch_size=4",
        ],
        output_dir=str(tmp_path / "out"),
    )
    rows = compare(cfg)
    assert [r["run"] for r in rows] == ["smollm2-tiny", "qwen2-tiny"]
    for r in rows:
        assert "error" not in r, r.get("error")
        assert r["steps_per_stage"] == "2+2" and r["test_n"] == 12 and r["test_split"] == "test"
        for key in ("test_accuracy", "test_uar"):
            lo, hi = r[f"{key}_ci"]
            assert 0 <= lo <= r[key] <= hi <= 1, (key, r[key], lo, hi)
        assert 0 <= r["test_invalid_rate"] <= 1 and r["first_answer_s"] > 0 and r["peak_rss_gb"] > 0
        assert r["total_params"] > r["trainable_params"] > 0 and r["precision"].startswith("float32 weights")
        assert r["train_tokens_per_s"] > 0 and r["train_tokens"] > 0
        # independent recomputation from the predictions the eval wrote
        preds = [json.loads(line) for line in (Path(r["test_metrics"]).parent / "predictions.jsonl").open()]
        assert len(preds) == 12
        assert r["test_accuracy"] == pytest.approx(sum(p["label"] == p["gold"] for p in preds) / 12)
        assert r["test_invalid_rate"] == pytest.approx(sum(p["label"] is None for p in preds) / 12)
    assert rows[1]["backbone"] == "qwen2" and rows[1]["run_overrides"] == ["model.backbone=qwen2"]
    md = (tmp_path / "out" / "results.md").read_text()
    header = md.splitlines()[md.splitlines().index(next(ln for ln in md.splitlines() if ln.startswith("| run |")))]
    assert "accuracy [95% CI]" in header and "s to 1st answer" in header and "total params" in header
    assert "| qwen2-tiny | lora | model.backbone=qwen2 | 2+2 |" in md and "held-out split" in md
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(saved["rows"]) == 2 and saved["config"]["test_config"] == str(eval_yaml)
    # the second row against the first on the same held-out samples
    paired = saved["rows"][1]["paired_vs_first"]
    assert paired["difference"] == pytest.approx(rows[1]["test_accuracy"] - rows[0]["test_accuracy"])
    assert paired["n"] == 12 and "## Paired differences on the same held-out samples" in md
    assert "| qwen2-tiny / lora |" in md.split("## Paired differences")[1]


def test_staged_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("runs: [{name: a}]\ntest_config: configs/demo/eval.yaml\n")
    with pytest.raises(ValueError, match="test_config needs stages"):
        CompareConfig.load(bad)
    bad.write_text("runs: [{name: a}]\nstages: [{config: configs/nope.yaml}]\n")
    with pytest.raises(ValueError, match=r"configs/nope.yaml \(in stages/test_config\) does not exist"):
        CompareConfig.load(bad)
    shipped = CompareConfig.load("configs/bench/llms.yaml")
    assert [r.overrides for r in shipped.runs] == [["model.backbone=smollm2"], ["model.backbone=gemma3_270m"]]
    assert [st.config for st in shipped.stages] == ["configs/demo/pretrain.yaml", "configs/demo/instruct.yaml"]
    seeds = CompareConfig.load("configs/bench/llms_seeds.yaml")  # the same recipe, corpus and split; other seeds
    assert seeds.stages == shipped.stages and seeds.test_overrides == shipped.test_overrides
    assert {o for r in seeds.runs for o in r.overrides} == {
        "model.backbone=smollm2", "model.backbone=gemma3_270m", "train.seed=1", "train.seed=2",
    }  # fmt: skip


def test_paired_accuracy_difference_by_hand():
    """Two samples, each row right on one: the 4 equally likely resamples give differences -1, 0, 0, +1, so the
    interval is [-1, +1] around 0; identical rows give exactly 0; different samples are refused."""
    from emollm_eval.compare import paired_accuracy_difference

    d = paired_accuracy_difference({"a": True, "b": False}, {"a": False, "b": True}, n_resamples=4000)
    assert d["difference"] == 0 and d["ci"] == [-1.0, 1.0] and (d["only_reference"], d["only_other"]) == (1, 1)
    same = {f"s{i}": i % 3 == 0 for i in range(30)}
    assert paired_accuracy_difference(same, same) | {"n_resamples": 0} == {
        "difference": 0.0, "ci": [0.0, 0.0], "n": 30, "both_right": 10, "only_reference": 0, "only_other": 0,
        "n_resamples": 0, "seed": 0,
    }  # fmt: skip
    better = {n: True for n in same}
    d = paired_accuracy_difference(same, better)
    assert d["difference"] == pytest.approx(20 / 30) and 0 < d["ci"][0] <= d["difference"] <= d["ci"][1] <= 1
    with pytest.raises(ValueError, match="same samples"):
        paired_accuracy_difference(same, {"x": True})
