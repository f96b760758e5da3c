"""emollm_eval.classification: the one report of ``emollm score`` and ``emollm eval``; encoded labels and bootstrap."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from emollm_eval import metrics as M
from emollm_eval.classification import classification_report
from emollm_eval.config import EvalConfig
from emollm_eval.runner import classification_metrics
from emollm_eval.score import main as score_main

sk = pytest.importorskip("sklearn.metrics")

REPO = Path(__file__).resolve().parents[2]
GOLD = ["neutral", "angry", "happy", "sad", "worried", "surprise"]
EXTRA = ["fear", "contempt", "doubt"]


def _random(seed: int, n: int = 300) -> tuple[list[str], list[str | None], list[str]]:
    rng = np.random.default_rng(seed)
    gold = rng.choice(GOLD, size=n).tolist()
    pred: list[str | None] = []
    reasons = []
    for g in gold:
        u = rng.random()
        pred.append(g if u < 0.45 else None if u < 0.6 else str(rng.choice(GOLD + EXTRA)))
        why = ["no label", "several labels: a, b", "no label (empty answer)"]
        reasons.append("ok" if pred[-1] else str(rng.choice(why)))
    return gold, pred, reasons


def test_encode_labels_uses_k_as_the_invalid_sentinel() -> None:
    enc = M.encode_labels(["b", "a", "c"], ["a", None, M.INVALID], ["a", "b", "c"])
    assert enc.labels == ("a", "b", "c") and enc.invalid_code == 3
    assert enc.true.tolist() == [1, 0, 2] and enc.pred.tolist() == [0, 3, 3]
    scores = M.ClassScores.from_codes(enc.true, enc.pred, 3)
    assert scores.confusion.tolist() == [[0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 0, 1]]
    assert scores.invalid == 2 and scores.accuracy == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_report_matches_sklearn_with_extra_prompt_labels(seed: int) -> None:
    gold, pred, reasons = _random(seed)
    r = classification_report(gold, pred, GOLD, extra_labels=EXTRA, reasons=reasons)
    dummy = ["__invalid__" if p is None else p for p in pred]
    everything = GOLD + EXTRA
    assert r["prediction_labels"] == everything and r["labels"] == GOLD
    assert r["accuracy"] == r["war"] == pytest.approx(sk.accuracy_score(gold, dummy))
    assert r["weighted_f1"] == pytest.approx(sk.f1_score(gold, dummy, labels=everything, average="weighted"))
    assert r["uar"] == pytest.approx(sk.recall_score(gold, dummy, labels=GOLD, average="macro"))
    assert r["macro_f1"] == pytest.approx(sk.f1_score(gold, dummy, labels=GOLD, average="macro"))
    p, rec, f1, sup = sk.precision_recall_fscore_support(gold, dummy, labels=GOLD, zero_division=0)
    assert list(r["per_class_precision"].values()) == pytest.approx(p.tolist())
    assert list(r["per_class_recall"].values()) == pytest.approx(rec.tolist())
    assert list(r["per_class_f1"].values()) == pytest.approx(f1.tolist())
    assert list(r["support"].values()) == sup.tolist()
    assert r["confusion_matrix"] == sk.confusion_matrix(gold, dummy, labels=everything)[: len(GOLD)].tolist()
    assert r["invalid"] == sum(p is None for p in pred) == sum(r["invalid_by_class"].values())
    assert sum(r["invalid_reasons"].values()) == r["invalid"]
    assert set(r["invalid_reasons"]) <= {"no label", "several labels", "empty answer"}
    json.dumps(r)  # JSON-ready


def test_bootstrap_scores_equals_bootstrap_ci_on_strings() -> None:
    """One pass over encoded labels gives the same intervals as one string-level bootstrap per metric."""
    gold, pred, _ = _random(3, n=120)
    labels = GOLD + EXTRA
    enc = M.encode_labels(gold, pred, labels)
    fast = M.bootstrap_scores(enc, ["uar", "weighted_f1", "accuracy"], n_resamples=150, seed=4)
    assert fast["uar"] == M.bootstrap_ci(lambda t, p: M.uar(t, p, labels), gold, pred, 150, seed=4)
    assert fast["weighted_f1"] == M.bootstrap_ci(lambda t, p: M.weighted_f1(t, p, labels), gold, pred, 150, seed=4)
    assert fast["accuracy"] == M.bootstrap_ci(M.accuracy, gold, pred, 150, seed=4)
    r = classification_report(gold, pred, labels, ci=["uar", "macro_f1"], n_resamples=150, seed=4)
    assert r["uar_ci"] == list(fast["uar"]) and r["n_bootstrap"] == 150 and r["bootstrap_seed"] == 4
    assert r["macro_f1_ci"][0] <= r["macro_f1"] <= r["macro_f1_ci"][1]
    with pytest.raises(ValueError, match="no metric 'f2' to bootstrap"):
        M.bootstrap_scores(enc, ["f2"])


def test_score_and_eval_report_the_same_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``emollm score`` and ``emollm eval`` build their classification fields with the same function."""
    rng = np.random.default_rng(5)
    gold = rng.choice(GOLD, size=40).tolist()
    pred = [g if rng.random() < 0.5 else None if rng.random() < 0.3 else str(rng.choice(GOLD)) for g in gold]
    names = [f"s{i}" for i in range(len(gold))]
    answers = ["happy or sad" if p is None else p for p in pred]
    (tmp_path / "g.csv").write_text("name,discrete\n" + "".join(f"{n},{g}\n" for n, g in zip(names, gold, strict=True)))
    pred_rows = "".join(f"{n},{a}\n" for n, a in zip(names, answers, strict=True))
    (tmp_path / "p.csv").write_text("name,prediction\n" + pred_rows)
    argv = ["mer2023", "--pred", str(tmp_path / "p.csv"), "--gold", str(tmp_path / "g.csv"), "--json", "--ci"]
    assert score_main(argv) == 0
    scored = json.loads(capsys.readouterr().out)
    rows = [
        {"gold": g, "label": p, "reason": "ok" if p else "several labels: happy, sad"}
        for g, p in zip(gold, pred, strict=True)
    ]
    evaluated = classification_metrics(rows, GOLD, GOLD, ("weighted_f1", "accuracy"), n_bootstrap=1000, seed=0)
    for key, value in evaluated.items():
        assert scored[key] == value, key


def test_eval_config_values_go_through_typed_config() -> None:
    ok = {"checkpoint": "c", "dataset": "dfew", "gold": "g.csv", "output_dir": "o"}
    cfg = EvalConfig.from_dict({**ok, "limit": "10", "batch_size": 4.0})  # typed_config converts these
    assert cfg.limit == 10 and cfg.batch_size == 4 and isinstance(cfg.batch_size, int)
    with pytest.raises(ValueError, match=r"features must be a mapping of modality to sub-folder, got \['face'\]"):
        EvalConfig.from_dict({**ok, "features": ["face"]})


def test_eval_recipe_imports_no_other_recipe() -> None:
    """Only the backbone benchmark (compare.py) may call the training recipe; nothing in eval/ uses emollm_merr."""
    for path in sorted((REPO / "eval").glob("*.py")):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert "emollm_merr" not in imported, path.name
        assert path.name == "compare.py" or "emollm_train" not in imported, path.name
