"""Report metrics (cross-checked with scikit-learn), time alignment, feature loading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emollm.fusion.data import align_steps, load_feature_set, synthetic_task
from emollm.fusion.metrics import classification_report, confusion_matrix


@pytest.mark.parametrize("seed", range(6))
def test_report_matches_sklearn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 7))
    y = rng.integers(0, c - 1 if seed % 2 else c, 80)  # odd seeds: one class never occurs in the gold labels
    p = np.where(rng.random(80) < 0.5, y, rng.integers(0, c, 80))
    labels = [f"c{i}" for i in range(c)]
    r = classification_report(confusion_matrix(y, p, c), labels)
    assert r["accuracy"] == pytest.approx(metrics.accuracy_score(y, p))
    present = sorted(set(y.tolist()))
    assert r["uar"] == pytest.approx(metrics.recall_score(y, p, labels=present, average="macro", zero_division=0))
    assert r["weighted_f1"] == pytest.approx(metrics.f1_score(y, p, average="weighted", zero_division=0))
    assert r["macro_f1"] == pytest.approx(metrics.f1_score(y, p, labels=range(c), average="macro", zero_division=0))
    prec, rec, f1, sup = metrics.precision_recall_fscore_support(y, p, labels=range(c), zero_division=0)
    for i, name in enumerate(labels):
        pc = r["per_class"][name]
        assert (pc["precision"], pc["recall"], pc["f1"], pc["support"]) == pytest.approx(
            (prec[i], rec[i], f1[i], sup[i])
        )
    assert np.array_equal(r["confusion_matrix"], metrics.confusion_matrix(y, p, labels=range(c)))


def test_align_steps_bins_and_repeats():
    x = np.arange(8, dtype=np.float32)[:, None]
    assert align_steps(x, 4)[:, 0].tolist() == [0.5, 2.5, 4.5, 6.5]
    assert align_steps(x[:2], 4)[:, 0].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert align_steps(np.ones(5, np.float32), 3).shape == (3, 5)  # (D,) utterance-level
    assert align_steps(x, 8) is not None and np.array_equal(align_steps(x, 8), x)


def test_synthetic_labels_live_where_asked():
    data = synthetic_task("both", n=90, steps=4, seed=0)
    assert data.features["audio"].shape == (90, 4, 24) and data.features["face"].shape == (90, 4, 16)
    assert data.present["audio"].all() and sorted(set(data.labels.tolist())) == [0, 1, 2]


def test_load_feature_set_missing_files(tmp_path):
    for m, d in (("audio", 3), ("face", 2)):
        (tmp_path / m).mkdir()
        for n in ("a", "b"):
            np.save(tmp_path / m / f"{n}.npy", np.ones((5, d), np.float32))
    (tmp_path / "face" / "b.npy").unlink()
    folders = {"audio": tmp_path / "audio", "face": tmp_path / "face"}
    with pytest.raises(FileNotFoundError, match=r"1 of 2 clips have no face features.*'b'"):
        load_feature_set({"a": "x", "b": "y"}, folders, steps=2)
    (tmp_path / "face" / "_missing").mkdir()
    (tmp_path / "face" / "_missing" / "b.json").write_text(json.dumps({"reason": "no face"}))
    data = load_feature_set({"a": "x", "b": "y"}, folders, steps=2)
    assert data.present["face"].tolist() == [True, False] and data.features["face"][1].sum() == 0
    assert data.classes == ["x", "y"] and data.features["audio"].shape == (2, 2, 3)
