"""``emollm score ov``: open-vocabulary sets from name,openset CSVs, hand-computed metrics, errors, CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emollm_eval.score import main

REPO = Path(__file__).resolve().parents[2]

GOLD = "name,openset\na,\"['happy', 'excited']\"\nb,\"['sad']\"\nc,\"['angry']\"\nd,[]\ne,\"['worried']\"\n"
PRED = (
    "name,openset\n"
    "a,\"['joyful', 'thrilled', 'calm']\"\n"  # {happy, excited, neutral}: P 2/3, R 1
    "b,not sad but disappointed\n"  # free text, negation: {disappointed}: 0, 0
    'c,"angry, frustrated"\n'  # comma list: P 1/2, R 1
    "d,happy\n"  # empty reference: skipped
)  # e missing: 0, 0


def _files(tmp_path: Path, gold: str = GOLD, pred: str = PRED) -> tuple[Path, Path]:
    g, p = tmp_path / "gold.csv", tmp_path / "pred.csv"
    g.write_text(gold, encoding="utf-8")
    p.write_text(pred, encoding="utf-8")
    return g, p


def test_ov_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g, p = _files(tmp_path)
    out = tmp_path / "per_sample.csv"
    assert main(["ov", "--pred", str(p), "--gold", str(g), "--json", "--per-sample", str(out)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["task"] == "ov" and r["n"] == 4 and r["skipped"] == 1 and r["missing"] == 1
    assert r["precision"] == pytest.approx((2 / 3 + 0 + 1 / 2 + 0) / 4)
    assert r["recall"] == pytest.approx(0.5)
    assert r["hit_rate"] == pytest.approx(0.5)
    assert r["mer_ov"] == pytest.approx((r["precision"] + r["recall"]) / 2)
    rows = out.read_text().splitlines()
    assert rows[0] == "name,gold,pred,precision,recall,f1"
    assert rows[1].startswith("a,excited|happy,excited|happy|neutral,0.6667,1.0000,0.8000")
    assert main(["ov", "--pred", str(p), "--gold", str(g), "--per-sample", str(out)]) == 2  # exists
    assert "already exists" in capsys.readouterr().err


def test_ov_table_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g, p = _files(tmp_path)
    assert main(["ov", "--pred", str(p), "--gold", str(g)]) == 0
    assert "hit rate" in capsys.readouterr().out
    g2, p2 = _files(tmp_path, pred="name,openset\nzz,happy\n")
    assert main(["ov", "--pred", str(p2), "--gold", str(g2)]) == 2
    assert "not in" in capsys.readouterr().err
    g3, p3 = _files(tmp_path, pred='name,openset\na,"[1, 2]"\n')
    assert main(["ov", "--pred", str(p3), "--gold", str(g3)]) == 2
    assert "pred.csv:2: openset" in capsys.readouterr().err
    g4, p4 = _files(tmp_path, pred="name,label\na,happy\n")
    assert main(["ov", "--pred", str(p4), "--gold", str(g4)]) == 2
    assert "missing column(s) openset" in capsys.readouterr().err


def test_ov_through_the_cli(tmp_path: Path) -> None:
    g, p = _files(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "emollm.cli", "score", "ov", "--pred", str(p), "--gold", str(g), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["hit_rate"] == pytest.approx(0.5)
