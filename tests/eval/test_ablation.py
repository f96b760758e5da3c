"""Modality ablation and label-order sensitivity: the right variants and rows, exact deltas and Shapley values with
a scripted model, and the refusal to select a label order on a test split."""

from __future__ import annotations

import json

import pytest

import emollm.model.generation
from emollm_eval.ablation import label_order_sensitivity, label_orders, modality_ablation, shapley_values
from emollm_eval.cli import main
from emollm_eval.runner import load_config

from .test_runner import DFEW_ORDER, CountingChat, dfew_data, dfew_overrides, tiny_checkpoint, write_yaml  # noqa: F401


def test_modality_ablation_with_the_tiny_model(tiny_checkpoint, dfew_data, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    cfg = write_yaml(
        tmp_path / "dfew.yaml", dfew_overrides(tiny_checkpoint, dfew_data, out, "limit=3", "n_bootstrap=0")
    )
    assert main(["ablate", str(cfg), "--no-progress"]) == 0
    md = capsys.readouterr().out
    summary = json.loads((out / "ablation" / "ablation.json").read_text())
    names = [v["variant"] for v in summary["variants"]]
    assert names == ["all", "no_audio", "no_face", "no_video", "only_audio", "only_face", "only_video", "text_only"]
    assert summary["modalities"] == ["audio", "face", "video"]
    for v in summary["variants"]:
        assert v["n"] == 3 and set(v["delta"]) == {"uar", "war"}
        assert f"| {v['variant']} |" in md
    assert summary["variants"][-1]["modalities"] == []
    assert set(summary["contributions"]["uar"]) == {"audio", "face", "video"}
    assert (out / "report.md").is_file()  # the full run is the config's own run
    assert (out / "ablation" / "text_only" / "report.md").is_file() and (out / "ablation" / "ablation.png").is_file()
    # dropped modalities have no placeholder in the prompt and are not counted as missing files
    rows = [json.loads(x) for x in (out / "ablation" / "only_face" / "predictions.jsonl").read_text().splitlines()]
    assert all(r["modalities"] == ["face"] and r["missing_features"] == [] for r in rows)


def test_ablation_numbers_with_a_scripted_model(tiny_checkpoint, dfew_data, tmp_path, monkeypatch):  # noqa: F811
    """Right iff audio and face are both present; else right iff audio is present for even samples."""
    from emollm_eval.runner import read_gold

    cfg = load_config(None, dfew_overrides(tiny_checkpoint, dfew_data, tmp_path / "o", "n_bootstrap=0"))
    gold = {g.name: g.gold for g in read_gold(cfg)}

    def answer(sample):
        has = {m for m, f in sample.features.items() if f is not None}
        right = {"audio", "face"} <= has or ("audio" in has and int(sample.name) % 2 == 0)
        return gold[sample.name] if right else "no idea"

    monkeypatch.setattr(emollm.model.generation, "chat", CountingChat(answer))
    res = modality_ablation(cfg, progress=False)
    war = {r["variant"]: r["war"] for r in res.rows}
    # sample 00003 has no audio file: never right; 5 of 10 names are even
    assert war == pytest.approx(
        {
            **{"all": 0.9, "no_audio": 0.0, "no_face": 0.5, "no_video": 0.9},
            **{"only_audio": 0.5, "only_face": 0.0, "only_video": 0.0, "text_only": 0.0},
        }
    )
    c = res.summary["contributions"]["war"]
    assert c["audio"]["drop_delta"] == pytest.approx(0.9) and c["video"]["drop_delta"] == pytest.approx(0.0)
    assert c["audio"]["alone_gain"] == pytest.approx(0.5)
    # Shapley: audio's own 0.5 plus half of the 0.4 audio-face interaction; face the other half; video nothing
    assert c["audio"]["shapley"] == pytest.approx(0.7) and c["face"]["shapley"] == pytest.approx(0.2)
    assert c["video"]["shapley"] == pytest.approx(0.0)
    assert sum(x["shapley"] for x in c.values()) == pytest.approx(war["all"] - war["text_only"])
    assert res.rows[1]["delta"]["war"] == pytest.approx(-0.9)
    assert "| audio | +90.00 | +50.00 | +70.00 |" in res.markdown


def test_label_order_sensitivity(tiny_checkpoint, dfew_data, tmp_path, monkeypatch):  # noqa: F811
    """A model that always answers the first label it is offered: its WAR is the share of that class."""

    def answer(sample):
        return sample.messages[0]["content"].split("represents: ")[1].split(",")[0]

    monkeypatch.setattr(emollm.model.generation, "chat", CountingChat(answer))
    cfg = load_config(None, dfew_overrides(tiny_checkpoint, dfew_data, tmp_path / "o", "n_bootstrap=0"))
    res = label_order_sensitivity(cfg, 5, seed=3, progress=False)
    names = [r["variant"] for r in res.rows]
    assert names == ["given", "reversed", "alphabetical", "random_1", "random_2"]
    assert res.rows[0]["order"] == DFEW_ORDER and res.rows[1]["order"] == DFEW_ORDER[::-1]
    # gold: 2 happy, 2 sad, 2 neutral, 1 each of the rest (10 samples)
    assert res.rows[0]["war"] == pytest.approx(0.2) and res.rows[1]["war"] == pytest.approx(0.1)
    assert res.rows[2]["order"][0] == "angry" and res.rows[2]["war"] == pytest.approx(0.1)
    assert res.summary["spread"]["war"] == pytest.approx(max(r["war"] for r in res.rows) - 0.1)
    assert "selected" not in res.summary and "spread (max - min)" in res.markdown
    saved = json.loads((tmp_path / "o" / "label_order" / "label_order.json").read_text())
    assert [r["variant"] for r in saved["orders"]] == names
    with pytest.raises(ValueError, match="refusing to select a label order on split 'test'"):
        label_order_sensitivity(cfg, 2, select=True)
    val = load_config(None, dfew_overrides(tiny_checkpoint, dfew_data, tmp_path / "v", "n_bootstrap=0", "split=val"))
    picked = label_order_sensitivity(val, 2, select=True, progress=False)
    assert picked.summary["selected"]["order_name"] == "given"


def test_label_orders_and_shapley_helpers():
    orders = label_orders(["b", "a", "c"], 10, seed=0)
    assert [n for n, _ in orders][:2] == ["given", "reversed"] and len(orders) == 6  # 3! distinct orders
    assert len({tuple(o) for _, o in orders}) == 6
    assert label_orders(["a", "b", "c"], 2) == [("given", ["a", "b", "c"]), ("reversed", ["c", "b", "a"])]
    assert label_orders(["x", "y", "z", "w"], 5, seed=1) == label_orders(["x", "y", "z", "w"], 5, seed=1)
    with pytest.raises(ValueError):
        label_orders(["a"], 0)
    v = {frozenset(): 0.0, frozenset("a"): 1.0, frozenset("b"): 2.0, frozenset("ab"): 5.0}
    assert shapley_values(v, ["a", "b"]) == pytest.approx({"a": 2.0, "b": 3.0})
    assert shapley_values({frozenset(): 0.0, frozenset("a"): 1.0}, ["a", "b"]) is None
