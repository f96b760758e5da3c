"""``emollm eval`` / ``eval ablate`` with a fused ``<multi>`` slot, and AffectGPT's released sampling as a decoding
option: the fused slot is ablated like every other slot while its sources' features stay loaded for it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import emollm.model.generation
from emollm.model.configuration import ModalityConfig, PreFusionConfig, ProjectorConfig
from emollm_eval.ablation import modality_ablation
from emollm_eval.runner import config_hash, load_config, prediction_fingerprint, run_eval

from .test_runner import CountingChat, dfew_overrides

PROMPT = "<multi><audio><face> Please determine which emotion label in the video represents: {labels}."


@pytest.fixture(scope="module")
def fused_checkpoint(tmp_path_factory) -> Path:
    from emollm.checkpoints import save_checkpoint
    from tests.emollm.conftest import make_tiny

    torch.manual_seed(0)
    mods = {
        "audio": ModalityConfig(feature_dim=24, projector=ProjectorConfig(kind="affectgpt_attn_pool")),
        "face": ModalityConfig(feature_dim=16, projector=ProjectorConfig(kind="affectgpt_attn_pool")),
        "multi": ModalityConfig(feature_dim=20, fuse=PreFusionConfig(sources=["face", "audio"])),
    }
    model, processor = make_tiny("llama2", mods)
    return save_checkpoint(model, processor, tmp_path_factory.mktemp("ckpt") / "fused")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dfew")
    names = [f"{i:05d}" for i in range(1, 7)]
    split = root / "set_1.csv"
    split.write_text("video_name,label\n" + "".join(f"{n},{i % 7 + 1}\n" for i, n in enumerate(names)))
    rng = np.random.default_rng(0)
    for m, sub, dim in (("face", "mae_340_UTT", 16), ("audio", "HL-UTT", 24)):
        (root / "features" / sub).mkdir(parents=True)
        for n in names:
            if not (m == "audio" and n == "00002"):  # one clip without audio: no fused token either
                np.save(root / "features" / sub / f"{n}.npy", rng.standard_normal((3, dim)).astype(np.float32))
    return {"gold": split, "features": root / "features"}


def test_ablation_measures_the_fused_slot(fused_checkpoint, data, tmp_path, monkeypatch):
    cfg = load_config(None, dfew_overrides(fused_checkpoint, data, tmp_path / "o", "n_bootstrap=0", f"prompt={PROMPT}"))
    spy = CountingChat()
    monkeypatch.setattr(emollm.model.generation, "chat", spy)
    res = modality_ablation(cfg, progress=False)
    names = [r["variant"] for r in res.rows]
    assert names == ["all", "no_audio", "no_face", "no_multi", "only_audio", "only_face", "only_multi", "text_only"]
    assert res.summary["modalities"] == ["audio", "face", "multi"]
    assert set(res.summary["contributions"]["war"]) == {"audio", "face", "multi"}
    assert all(v["shapley"] is not None for v in res.summary["contributions"]["war"].values())  # 2^3 subsets ran
    only = tmp_path / "o" / "ablation" / "only_multi"
    rows = [json.loads(x) for x in (only / "predictions.jsonl").read_text().splitlines()]
    by_name = {r["name"]: r for r in rows}
    assert by_name["00001"]["modalities"] == ["multi"] and by_name["00002"]["missing_features"] == ["multi"]
    metrics = json.loads((only / "metrics.json").read_text())
    assert metrics["fused_slots"] == {"multi": ["face", "audio"]} and metrics["modalities_used"] == ["multi"]
    assert "<face>" not in metrics["prompt_template"] and "<multi>" in metrics["prompt_template"]
    # only <multi> was placed, but its sources' features were handed to the model
    asked = [s for s in spy.samples if s.messages[0]["content"].startswith("<multi> ")]
    assert asked and all(s.features.get("face") is not None for s in asked)
    full = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert full["missing_features"] == {"audio": 1, "face": 0, "multi": 1}


def test_released_sampling_is_seeded_recorded_and_hashed(fused_checkpoint, data, tmp_path):
    base = dfew_overrides(fused_checkpoint, data, tmp_path / "g", "n_bootstrap=0", f"prompt={PROMPT}", "limit=3")
    greedy = load_config(None, base)
    assert prediction_fingerprint(greedy, {})["decoding"] == "greedy"
    assert "decoding_seed" not in prediction_fingerprint(greedy, {})  # greedy runs hash as before the option
    outs = []
    for out in ("s1", "s2"):
        cfg = load_config(None, [*base, f"output_dir={tmp_path / out}", "decoding=affectgpt", "decoding_seed=7"])
        outs.append(run_eval(cfg, progress=False))
    assert [r["answer"] for r in outs[0].rows] == [r["answer"] for r in outs[1].rows]  # seeded per sample
    decoding = outs[0].metrics["decoding"]
    assert decoding["name"] == "affectgpt" and decoding["top_p"] == 0.9 and decoding["temperature"] == 1.0
    assert decoding["seed"] == 7 and decoding["top_k"] == 50  # the tiny LLM has no generation_config.json
    other = load_config(None, [*base, "decoding=affectgpt", "decoding_seed=8"])
    seeded = load_config(None, [*base, "decoding=affectgpt", "decoding_seed=7"])
    assert config_hash(prediction_fingerprint(other, {})) != config_hash(prediction_fingerprint(seeded, {}))
    with pytest.raises(ValueError, match=r"decoding must be 'greedy' \| 'affectgpt', got 'beam'"):
        load_config(None, [*base, "decoding=beam"])


def test_the_shipped_comparison_config_validates():
    """configs/bench/prefusion.yaml: both rows' stage configs validate with their overrides; only <multi> differs."""
    from emollm.runconfig import load_config as load_run
    from emollm.runconfig import validate
    from emollm_eval.compare import CompareConfig

    repo = Path(__file__).resolve().parents[2]
    cfg = CompareConfig.load(repo / "configs" / "bench" / "prefusion.yaml")
    assert [r.name for r in cfg.runs] == ["no-fusion", "prefusion-token"]
    for stage in cfg.stages:
        plain = load_run(repo / stage.config, [*stage.overrides, *cfg.runs[0].overrides])
        fused = load_run(repo / stage.config, [*stage.overrides, *cfg.runs[1].overrides])
        assert validate(plain).errors == [] and validate(fused).errors == []
        assert set(fused.model.modalities) - set(plain.model.modalities) == {"multi"}
        assert fused.model.modalities["multi"].fuse.sources == ["face", "audio"]
    assert any("<multi>" in o for o in cfg.test_overrides)
