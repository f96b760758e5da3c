"""Each official scoring protocol, from its rules: which submissions ``emollm score`` accepts and what it scores.

- MER2023 MER-SEMI (test3): the test set is a labelled subset inside a pool of unlabelled test3 clips. The official
  scorer takes a submission that predicts every test3 clip, labelled or not, and scores weighted F1 on the labelled
  ones only; the extra rows change no metric and are counted (``extra``).
- MER2023 MER-MULTI / MER-NOISE (test1/test2): every clip is labelled; a name outside the gold file is an error, and
  ``combined = weighted F1 - 0.25 * valence MSE``.
- DFEW: a fold's test split is the gold file; a name outside it is an error (UAR / WAR).
- Without ``--protocol``, MER2023 stays strict.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emollm_eval.score import main

# Labelled test3 subset: 2 happy, 1 sad, 1 neutral.
TEST3_GOLD = "name,discrete,valence\nsample_1,happy,-10\nsample_2,happy,-10\nsample_3,sad,-10\nsample_4,neutral,-10\n"
TEST3_LABELLED_PRED = "name,discrete\nsample_1,happy\nsample_2,sad\nsample_3,sad\nsample_4,neutral\n"
UNLABELLED_ROWS = "samplenew_9,angry\nsamplenew_8,worried\nsamplenew_7,happy\n"

TEST1_GOLD = "name,discrete,valence\nsample_1,happy,2.0\nsample_2,sad,-1.0\n"
TEST1_PRED = "name,discrete,valence\nsample_1,happy,1.0\nsample_2,sad,-1.0\n"

DFEW_GOLD = "video_name,label\n00001,1\n00002,2\n"
DFEW_PRED = "name,prediction\n00001,happy\n00002,sad\n"


def _write(tmp_path: Path, gold: str, pred: str) -> tuple[str, str]:
    g, p = tmp_path / "gold.csv", tmp_path / "pred.csv"
    g.write_text(gold, encoding="utf-8")
    p.write_text(pred, encoding="utf-8")
    return str(g), str(p)


def _score(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_test3_accepts_every_clip_and_scores_only_the_labelled(tmp_path, capsys):
    gold, labelled_only = _write(tmp_path, TEST3_GOLD, TEST3_LABELLED_PRED)
    base = _score(capsys, ["mer2023", "--pred", labelled_only, "--gold", gold, "--protocol", "test3"])
    full = tmp_path / "full.csv"
    full.write_text(TEST3_LABELLED_PRED + UNLABELLED_ROWS, encoding="utf-8")
    out = _score(capsys, ["mer2023", "--pred", str(full), "--gold", gold, "--protocol", "test3"])
    assert out["extra"] == 3 and base["extra"] == 0
    assert out["n"] == 4  # only the labelled clips are scored
    for key in ("weighted_f1", "accuracy", "confusion_matrix", "per_class_recall", "invalid", "missing"):
        assert out[key] == base[key], key
    assert out["accuracy"] == pytest.approx(3 / 4)
    # weighted F1 by hand: happy P=1 R=.5 F=2/3 (support 2), sad P=.5 R=1 F=2/3 (1), neutral 1 (1)
    assert out["weighted_f1"] == pytest.approx((2 * 2 / 3 + 2 / 3 + 1) / 4)
    assert "valence_mse" not in out and "combined" not in out


def test_test3_table_reports_the_extra_rows(tmp_path, capsys):
    gold, pred = _write(tmp_path, TEST3_GOLD, TEST3_LABELLED_PRED + UNLABELLED_ROWS)
    assert main(["mer2023", "--pred", pred, "--gold", gold, "--protocol", "test3"]) == 0
    assert "extra predictions (not in the gold file, not scored): 3" in capsys.readouterr().out


def test_test3_missing_labelled_clip_still_counts_as_invalid(tmp_path, capsys):
    pred_text = "name,discrete\nsample_1,happy\nsample_2,happy\nsample_3,sad\n" + UNLABELLED_ROWS  # no sample_4
    gold, pred = _write(tmp_path, TEST3_GOLD, pred_text)
    out = _score(capsys, ["mer2023", "--pred", pred, "--gold", gold, "--protocol", "test3"])
    assert out["n"] == 4 and out["missing"] == 1 and out["invalid"] == 1 and out["extra"] == 3
    assert out["accuracy"] == pytest.approx(3 / 4)


@pytest.mark.parametrize("protocol", ["test1", "test2"])
def test_test1_test2_refuse_names_outside_the_gold_file(tmp_path, capsys, protocol):
    gold, pred = _write(tmp_path, TEST1_GOLD, TEST1_PRED + "sample_9,happy,0.0\n")
    assert main(["mer2023", "--pred", pred, "--gold", gold, "--protocol", protocol]) == 2
    assert "1 prediction name(s) not in" in capsys.readouterr().err


@pytest.mark.parametrize("protocol", ["test1", "test2"])
def test_test1_test2_combined_score(tmp_path, capsys, protocol):
    gold, pred = _write(tmp_path, TEST1_GOLD, TEST1_PRED)
    out = _score(capsys, ["mer2023", "--pred", pred, "--gold", gold, "--protocol", protocol])
    assert out["weighted_f1"] == pytest.approx(1.0)
    assert out["valence_mse"] == pytest.approx(0.5)  # ((2 - 1)^2 + 0) / 2
    assert out["combined"] == pytest.approx(1.0 - 0.25 * 0.5)
    assert "extra" not in out


def test_mer2023_without_protocol_stays_strict(tmp_path, capsys):
    gold, pred = _write(tmp_path, TEST3_GOLD, TEST3_LABELLED_PRED + UNLABELLED_ROWS)
    assert main(["mer2023", "--pred", pred, "--gold", gold]) == 2
    assert "3 prediction name(s) not in" in capsys.readouterr().err


def test_dfew_stays_strict(tmp_path, capsys):
    gold, pred = _write(tmp_path, DFEW_GOLD, DFEW_PRED + "00003,sad\n")
    assert main(["dfew", "--pred", pred, "--gold", gold]) == 2
    assert "1 prediction name(s) not in" in capsys.readouterr().err
    gold, pred = _write(tmp_path, DFEW_GOLD, DFEW_PRED)
    out = _score(capsys, ["dfew", "--pred", pred, "--gold", gold])
    assert out["uar"] == pytest.approx(1.0) and out["war"] == pytest.approx(1.0) and "extra" not in out
