"""``emollm fusion`` end to end on a synthetic cache, and every shipped fusion config loads."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from emollm.fusion.cli import main
from emollm.fusion.config import FusionConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "fusion" / "synthetic_avgpool_hidden.yaml"


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "fusion").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.out.startswith("runs/fusion/")
    assert path.read_text().startswith("#") and "emollm fusion train" in path.read_text()


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(FusionConfigError, match="unknown method 'nope'"):
        load_config(CONFIG, ["model.method=nope"])
    with pytest.raises(FusionConfigError, match="train.select"):
        load_config(CONFIG, ["train.select=f2"])
    with pytest.raises(FusionConfigError, match="exactly one of labels"):
        load_config(CONFIG, ["data.corpus=ravdess"])


def test_train_eval_cli(tmp_path, capsys):
    synth = tmp_path / "synth"
    assert main(["synth", str(synth), "--task", "both", "--n", "150", "--steps", "4"]) == 0
    base = [
        f"data.labels={synth / 'labels.csv'}",
        f"data.features.audio={synth / 'audio'}",
        f"data.features.face={synth / 'face'}",
        "data.steps=4",
        "train.epochs=4",
        f"out={tmp_path / 'run'}",
    ]
    assert main(["train", str(CONFIG), *base, "--quiet", "--stop-after", "2"]) == 0
    assert "run again to resume" in capsys.readouterr().err
    assert not (tmp_path / "run" / "report_val.json").exists()
    assert main(["train", str(CONFIG), *base, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "resuming from" in captured.err and "val (best epoch" in captured.out
    run = tmp_path / "run"
    assert len((run / "log.jsonl").read_text().splitlines()) == 4
    assert not list(run.glob("*test*"))  # training never touches the test split
    assert main(["eval", str(CONFIG), *base]) == 0
    report = json.loads((run / "report_test.json").read_text())
    assert {"accuracy", "uar", "weighted_f1", "per_class", "confusion_matrix"} <= set(report)
    rows = list(csv.reader((run / "predictions_test.csv").open()))
    assert rows[0] == ["name", "pred"] and len(rows) - 1 == report["n"]
    assert main(["eval", str(CONFIG), *base, "--drop", "face"]) == 0
    assert (run / "report_test_no-face.json").is_file()
    # another config in the same folder is refused; --fresh starts over
    assert main(["train", str(CONFIG), *base, "model.hidden=8", "--quiet"]) == 1
    assert "another config" in capsys.readouterr().err
    assert main(["train", str(CONFIG), *base, "model.method=nope"]) == 2
    assert main(["list"]) == 0 and "transformer" in capsys.readouterr().out
