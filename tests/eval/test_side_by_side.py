"""``emollm eval compare`` (one gold split, several prediction sources, same metrics) and ``emollm eval baseline``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from emollm_eval.baseline import late_fusion_baseline
from emollm_eval.cli import main
from emollm_eval.side_by_side import compare_sources, read_source

LABELS = ["happy", "sad", "angry", "neutral"]


def _gold(path, pairs):
    path.write_text("".join(f"{n} 10 {lab} -10\n" for n, lab in pairs))
    return path


def test_sources_are_scored_alike_and_missing_is_invalid(tmp_path):
    names = [f"c{i}" for i in range(8)]
    gold_labels = ["happy", "sad", "angry", "neutral"] * 2
    gold = _gold(tmp_path / "test.txt", zip(names, gold_labels, strict=True))
    run = tmp_path / "eval_run"
    run.mkdir()
    answers = ["The emotion is happy.", "sad", "angry and sad", "", "joyful", "sad", "angry", "neutral"]
    run.joinpath("predictions.jsonl").write_text(
        "".join(
            json.dumps({"name": n, "gold": g, "answer": a}) + "\n"
            for n, g, a in zip(names, gold_labels, answers, strict=True)
        )
    )
    clues = tmp_path / "clues.jsonl"
    clues.write_text(
        "".join(
            json.dumps({"file": f"/x/{n}.mp4", "label": lab, "mode": "clues"}) + "\n"
            for n, lab in zip(names[:6], ["happy", "sad", None, "neutral", "happy", "happy"], strict=True)
        )
    )  # c6, c7 not predicted
    csvf = tmp_path / "pred.csv"
    csvf.write_text("name,pred\n" + "".join(f"{n},{g}\n" for n, g in zip(names, gold_labels, strict=True)))

    preds, kind = read_source(run, LABELS)
    assert kind == "emollm eval" and preds["c2"] is None and preds["c3"] is None and preds["c4"] == "happy"
    out = compare_sources(
        gold, [("llm", str(run)), ("clues", str(clues)), ("oracle", str(csvf))], tmp_path / "r", LABELS, n_bootstrap=50
    )
    llm = out["sources"]["llm"]
    y_pred = ["happy", "sad", "INVALID", "INVALID", "happy", "sad", "angry", "neutral"]
    assert llm["accuracy"] == pytest.approx(accuracy_score(gold_labels, y_pred))
    assert llm["uar"] == pytest.approx(balanced_accuracy_score(gold_labels, y_pred))
    assert llm["invalid"] == 2
    cl = out["sources"]["clues"]
    assert cl["missing"] == 2 and cl["invalid"] == 3 and cl["kind"] == "emollm analyze (clues)"
    assert out["sources"]["oracle"]["accuracy"] == 1.0
    md = (tmp_path / "r" / "compare.md").read_text()
    assert "| llm | emollm eval |" in md and "Nothing is selected on this split" in md


def test_baseline_learns_separable_features_and_drops_missing_modalities(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "features"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    protos = rng.normal(size=(4, 6))
    train, test = [], []
    for i in range(40):
        lab = i % 4
        name = f"s{i}"
        (train if i < 28 else test).append((name, LABELS[lab]))
        np.save(root / "a" / f"{name}.npy", protos[lab] + 0.2 * rng.normal(size=6))
        if i % 5:  # some clips lack modality b
            np.save(root / "b" / f"{name}.npy", rng.normal(size=(3, 4)))  # noise, frames averaged
    tr, te = _gold(tmp_path / "train.txt", train), _gold(tmp_path / "test.txt", test)
    te.write_text(te.read_text() + "ghost 10 happy -10\n")  # no features at all -> no prediction
    summary = late_fusion_baseline(root, {"a": "a", "b": "b"}, tr, te, LABELS, tmp_path / "out")
    assert summary["modalities"]["a"]["n_train"] == 28 and summary["n_predicted"] == 12
    rows = dict(line.split(",") for line in (tmp_path / "out" / "predictions.csv").read_text().splitlines()[1:])
    assert rows["ghost"] == ""
    right = sum(rows[n] == lab for n, lab in test)
    assert right >= 9  # modality a separates the classes; b is noise and only dilutes
    (root / "c").mkdir()
    np.save(root / "c" / "s0.npy", np.zeros(3))
    with pytest.raises(ValueError, match="cover 1 class"):
        late_fusion_baseline(root, {"c": "c"}, tr, te, LABELS, tmp_path / "o2")


def test_cli_errors_are_one_line(tmp_path, capsys):
    gold = _gold(tmp_path / "g.txt", [("a", "happy")])
    assert main(["compare", "--gold", str(gold), "--labels", "happy,sad", "--run", "x", "--out", str(tmp_path)]) == 2
    assert "--run 'x': expected NAME=PATH" in capsys.readouterr().err
    assert (
        main(
            [
                "compare",
                "--gold",
                str(gold),
                "--labels",
                "happy,sad",
                "--run",
                f"x={tmp_path / 'no'}",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "no such file or folder" in capsys.readouterr().err
