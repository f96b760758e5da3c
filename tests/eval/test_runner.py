"""``emollm eval``: a tiny random checkpoint run end to end over generated DFEW/MER2023 files in the Emotion-LLaMA
layout; metrics recomputed from predictions.jsonl; invalid answers and missing features counted; resume; refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import emollm.checkpoints as emollm_checkpoint
import emollm.model.generation
from emollm.model.prompts import EVAL_PROMPTS as DEFAULT_PROMPTS
from emollm.model.prompts import fill_prompt as build_prompt
from emollm_eval import metrics as M
from emollm_eval.cli import main
from emollm_eval.runner import (
    ConfigMismatchError,
    EvalConfig,
    check_selection_allowed,
    load_config,
    read_rows,
    run_eval,
)

REPO = Path(__file__).resolve().parents[2]
DIMS = {"audio": 24, "face": 16, "video": 20}  # tests/emollm/conftest.py tiny_modalities()
DIRS = {"face": "mae_340_UTT", "video": "maeV_399_UTT", "audio": "HL-UTT"}
DFEW_ORDER = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]


def write_features(root: Path, names: list[str], missing: dict[str, set[str]] | None = None) -> Path:
    """One (D,) .npy per sample and modality under root/<Emotion-LLaMA sub-folder>/, except the ``missing`` ones."""
    rng = np.random.default_rng(0)
    for m, sub in DIRS.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        for n in names:
            if n not in (missing or {}).get(m, set()):
                np.save(root / sub / f"{n}.npy", rng.standard_normal(DIMS[m]).astype(np.float32))
    return root


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    import torch

    from emollm.checkpoints import save_checkpoint
    from tests.emollm.conftest import make_tiny

    torch.manual_seed(0)
    model, processor = make_tiny("llama2")
    return save_checkpoint(model, processor, tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def dfew_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dfew")
    names = [f"{i:05d}" for i in range(1, 11)]
    # 1-indexed DFEW codes; every class appears.
    split = root / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_1.csv"
    split.parent.mkdir(parents=True)
    split.write_text("video_name,label\n" + "".join(f"{n},{i % 7 + 1}\n" for i, n in enumerate(names)))
    feats = write_features(root / "features", names, missing={"audio": {"00003"}})
    return {"gold": split, "features": feats}


def write_yaml(path: Path, overrides: list[str]) -> Path:
    """A YAML config from key=value strings (with the header comment every config has)."""
    import yaml

    data = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in overrides)}
    path.write_text(f"# emollm eval {path.name}\n" + yaml.safe_dump(data))
    return path


class CountingChat:
    """Wraps emollm.model.generation.chat (optionally replacing the answers) and counts the samples it is asked."""

    def __init__(self, answer=None):
        self.real = emollm.model.generation.chat
        self.answer = answer
        self.samples: list = []

    def __call__(self, model, processor, samples, **kwargs):
        self.samples += list(samples)
        if self.answer is None:
            return self.real(model, processor, samples, **kwargs)
        return [self.answer(s) for s in samples]


def dfew_overrides(ckpt: Path, data: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        f"checkpoint={ckpt}",
        "dataset=dfew",
        f"gold={data['gold']}",
        f"feature_root={data['features']}",
        f"output_dir={out}",
        "max_new_tokens=4",
        "batch_size=4",
        "n_bootstrap=50",
        *extra,
    ]


def test_end_to_end_cli(tiny_checkpoint, dfew_data, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = write_yaml(tmp_path / "dfew.yaml", dfew_overrides(tiny_checkpoint, dfew_data, out))
    assert main([str(cfg), "--no-progress"]) == 0
    assert "generated 10, reused 0" in capsys.readouterr().out
    files = (
        "run.json",
        "predictions.jsonl",
        "metrics.json",
        "report.md",
        "confusion_matrix.png",
        "per_class_recall.png",
    )
    for name in files:
        assert (out / name).is_file(), name
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = read_rows(out / "predictions.jsonl")
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["name"] for r in rows] == [f"{i:05d}" for i in range(1, 11)]
    # metrics.json is what emollm_eval.metrics says about predictions.jsonl
    gold = [r["gold"] for r in rows]
    pred = [r["label"] for r in rows]
    assert metrics["uar"] == pytest.approx(M.uar(gold, pred, DFEW_ORDER))
    assert metrics["war"] == pytest.approx(M.war(gold, pred))
    assert metrics["invalid"] == M.invalid_count(pred) == sum(r["label"] is None for r in rows)
    assert metrics["confusion_matrix"] == M.confusion_matrix(gold, pred, DFEW_ORDER).tolist()
    assert metrics["invalid_rate"] == pytest.approx(metrics["invalid"] / 10)
    assert sum(metrics["invalid_reasons"].values()) == metrics["invalid"]
    assert len(metrics["uar_ci"]) == 2 and len(metrics["war_ci"]) == 2
    # a random tiny model mostly answers nonsense: reported as invalid, never mapped to a class
    assert metrics["invalid"] >= 5
    for r in rows:
        assert (r["label"] is None) == (r["reason"] != "ok")
    # the sample without an audio file ran without audio, and is counted
    assert metrics["missing_features"] == {"audio": 1, "face": 0, "video": 0}
    row3 = next(r for r in rows if r["name"] == "00003")
    assert row3["missing_features"] == ["audio"] and "audio" not in row3["modalities"]
    # prompt and label order actually used
    assert metrics["label_order"] == DFEW_ORDER
    assert metrics["prompt"] == (
        "<video><face><audio> Please determine which emotion label in the video represents: "
        "happy, sad, neutral, angry, surprise, disgust, fear."
    )
    report = (out / "report.md").read_text()
    assert metrics["prompt"] in report and "1. happy, 2. sad" in report
    assert "audio: 1" in report and "no model selection happens here" in report
    assert "95% CIs from 50 bootstrap resamples" in report  # metrics.json records n_bootstrap with the CIs
    assert "](confusion_matrix.png)" in report and "](per_class_recall.png)" in report


def test_scripted_answers_mer2023(tiny_checkpoint, tmp_path, monkeypatch):
    """Valid, wrong, extra-label, several-label and empty answers; weighted F1 equals scikit-learn's."""
    from sklearn.metrics import f1_score

    names = [f"sample_{i:08d}" for i in range(8)]
    gold = ["neutral", "angry", "happy", "sad", "worried", "surprise", "happy", "sad"]
    answers = ["neutral", "The emotion is anger.", "fear", "happy or sad", "", "surprised", "joyful", "sad"]
    labels_csv = tmp_path / "test3-label.csv"
    labels_csv.write_text(
        "name,discrete,valence\n" + "".join(f"{n},{g},0.5\n" for n, g in zip(names, gold, strict=True))
    )
    subs = tmp_path / "transcription_en_all.csv"
    subs.write_text("name,sentence\n" + "".join(f"{n},I see <audio> {i}\n" for i, n in enumerate(names[:5])))
    feats = write_features(tmp_path / "feats", names)
    by_name = dict(zip(names, answers, strict=True))
    fake = CountingChat(lambda s: by_name[s.name])
    monkeypatch.setattr(emollm.model.generation, "chat", fake)
    cfg = load_config(
        REPO / "configs/eval/mer2023.yaml",
        [
            f"checkpoint={tiny_checkpoint}",
            f"gold={labels_csv}",
            f"feature_root={feats}",
            f"subtitles={subs}",
            f"output_dir={tmp_path / 'out'}",
            "n_bootstrap=20",
        ],
    )
    m = run_eval(cfg, progress=False).metrics
    labels = ["neutral", "angry", "happy", "sad", "worried", "surprise"]
    pred = ["neutral", "angry", "fear", None, None, "surprise", "happy", "sad"]
    rows = read_rows(tmp_path / "out" / "predictions.jsonl")
    assert [r["label"] for r in rows] == pred
    assert m["invalid"] == 2 and m["invalid_reasons"] == {"several labels": 1, "empty answer": 1}
    assert m["accuracy"] == pytest.approx(5 / 8)
    dummy = ["<invalid>" if p is None else p for p in pred]
    assert m["weighted_f1"] == pytest.approx(f1_score(gold, dummy, labels=labels, average="weighted", zero_division=0))
    assert m["prediction_labels"][-3:] == ["fear", "contempt", "doubt"]  # offered by the 9-label prompt
    assert m["split"] == "test3" and m["protocol"] == "test3" and "predicts no valence" in m["valence"]
    # transcripts: the sentence is there when a sample has one, and markers inside a transcript are neutralised
    texts = [s.messages[0]["content"] for s in fake.samples]
    assert texts[0].startswith("<video><face><audio> The person in video says: I see 0. Please determine")
    assert "<audio> 0" not in texts[0]
    assert texts[6].startswith("<video><face><audio> Please determine which emotion label")
    assert m["samples_with_subtitle"] == 5


def test_resume_and_refusal(tiny_checkpoint, dfew_data, tmp_path, monkeypatch, capsys):
    fake = CountingChat()
    monkeypatch.setattr(emollm.model.generation, "chat", fake)
    out = tmp_path / "out"
    base = dfew_overrides(tiny_checkpoint, dfew_data, out)
    first = run_eval(load_config(None, [*base, "limit=4"]), progress=False)
    assert (first.generated, first.reused, len(fake.samples)) == (4, 0, 4)
    assert first.metrics["n"] == 4 and first.metrics["limit"] == 4
    early = {r["name"]: r["answer"] for r in read_rows(out / "predictions.jsonl")}

    # a kill mid-write leaves a torn last line: it is cut off, and the full run only generates the rest
    with open(out / "predictions.jsonl", "a") as f:
        f.write('{"name": "00005", "gold": "surp')
    full = run_eval(load_config(None, [*base, "batch_size=3"]), progress=False)  # batch size is not hashed
    assert (full.generated, full.reused, len(fake.samples)) == (6, 4, 10)
    assert [s.name for s in fake.samples[4:]] == [f"{i:05d}" for i in range(5, 11)]
    rows = read_rows(out / "predictions.jsonl")
    assert len(rows) == 10 and {r["name"]: r["answer"] for r in rows[:4]} == early
    assert full.metrics["n"] == 10

    def no_model(*args, **kwargs):
        raise AssertionError("nothing left to generate: the model must not be loaded")

    monkeypatch.setattr(emollm_checkpoint, "load_model", no_model)
    again = run_eval(load_config(None, base), progress=False)
    assert (again.generated, len(fake.samples)) == (0, 10)
    assert again.metrics == full.metrics

    with pytest.raises(ConfigMismatchError, match=r"different config.*label_order"):
        run_eval(load_config(None, [*base, "label_order=[fear,disgust,surprise,angry,neutral,sad,happy]"]))
    assert main([str(write_yaml(tmp_path / "cfg.yaml", base)), "max_new_tokens=5", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "refusing to mix" in err and "max_new_tokens: 4 -> 5" in err


def test_missing_feature_root_and_folder(tiny_checkpoint, dfew_data, tmp_path):
    base = dfew_overrides(tiny_checkpoint, dfew_data, tmp_path / "o")
    no_root = [o for o in base if not o.startswith("feature_root")]
    with pytest.raises(ValueError, match="feature_root is not set"):
        run_eval(load_config(None, no_root))
    with pytest.raises(FileNotFoundError, match="nope"):
        run_eval(load_config(None, [*base, "features.face=nope"]))


def test_config_validation_messages():
    ok = {"checkpoint": "c", "dataset": "dfew", "gold": "g.csv", "output_dir": "o"}
    unknown = r"unknown key\(s\) \['label_ordr'\] \(did you mean 'label_order'\?\); allowed keys: checkpoint, dataset"
    with pytest.raises(ValueError, match=unknown):
        EvalConfig.from_dict({**ok, "label_ordr": []})
    with pytest.raises(ValueError, match="limit must be an integer or null, got 'ten'"):
        EvalConfig.from_dict({**ok, "limit": "ten"})
    with pytest.raises(ValueError, match="label_order must be a list of strings or null, got 'happy'"):
        EvalConfig.from_dict({**ok, "label_order": "happy"})
    with pytest.raises(ValueError, match=r"leaves out the gold label\(s\) \['fear'\]"):
        EvalConfig.from_dict({**ok, "label_order": DFEW_ORDER[:-1]})
    with pytest.raises(ValueError, match="dataset: unknown kind 'affwild'"):
        EvalConfig.from_dict({**ok, "dataset": "affwild"})
    with pytest.raises(ValueError, match="protocol is for dataset: mer2023 only"):
        EvalConfig.from_dict({**ok, "protocol": "test1"})
    with pytest.raises(ValueError, match="drop_modalities: unknown modality 'text'"):
        EvalConfig.from_dict({**ok, "drop_modalities": ["text"]})
    with pytest.raises(ValueError, match="output_dir is required"):
        EvalConfig.from_dict({**ok, "output_dir": ""})
    with pytest.raises(ValueError, match="judge is for dataset: emer only"):
        EvalConfig.from_dict({**ok, "judge": "smollm2"})
    cfg = load_config(None, [f"{k}={v}" for k, v in ok.items()] + ["features.face=mae_DFEW_ck16_UTT", "limit=3"])
    assert cfg.features == {"face": "mae_DFEW_ck16_UTT"} and cfg.limit == 3 and cfg.resolved_split() == "unknown"
    cfg = load_config(None, [f"{k}={v}" for k, v in ok.items()] + ["prompt=<audio> Which one: {labels}?"])
    assert cfg.prompt == "<audio> Which one: {labels}?"


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "eval").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    assert path.read_text().startswith("# ") and f"emollm eval configs/eval/{path.name}" in path.read_text()
    cfg = load_config(path)
    assert cfg.dataset == path.stem.split("_")[0]  # <dataset>[_variant].yaml


def test_build_prompt_and_selection_guard():
    assert build_prompt(DEFAULT_PROMPTS["emotion"], ["happy", "sad"], "  I  see ") == (
        "<video><face><audio> The person in video says: I see. Please determine which emotion label in the video "
        "represents: happy, sad."
    )
    assert build_prompt("{subtitle}", ["a"], None) == ""
    check_selection_allowed("val", "a label order")
    for split in ("test", "test3", "set_1_test", "unknown"):
        with pytest.raises(ValueError, match="refusing to select a label order"):
            check_selection_allowed(split, "a label order")
