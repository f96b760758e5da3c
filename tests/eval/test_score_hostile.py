"""Hostile scoring files for ``emollm score ov`` (open vocabulary) and ``emollm score mer2023`` / ``dfew``.

Each case: exit 2 with one line ``emollm score <task>: error: <file>:<line>: <problem>; <fix>`` (no traceback), no
partial report on stdout, and no ``--per-sample`` file left behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from emollm_eval.score import main

GOLD_OV = "name,openset\na,\"['happy', 'calm']\"\nb,sad\n"
PRED_OV = 'name,openset\na,joyful\nb,"sad, tired"\n'
GOLD_MER = "name,discrete,valence\na,happy,1.5\nb,sad,-2\n"
PRED_MER = "name,discrete,valence\na,happy,1\nb,sad,-1\n"


def _run(tmp_path: Path, capsys, task: str, gold: str | bytes, pred: str | bytes, *extra: str) -> str:
    g, p = tmp_path / "gold.csv", tmp_path / "pred.csv"
    for path, data in ((g, gold), (p, pred)):
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    per_sample = tmp_path / "per_sample.csv"
    assert main([task, "--pred", str(p), "--gold", str(g), "--per-sample", str(per_sample), *extra]) == 2
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert captured.out == "" and not per_sample.exists()
    assert lines[0].startswith(f"emollm score {task}: error: ")
    return lines[0]


OV_CASES = {
    "not-utf8": (GOLD_OV, b"name,openset\na,caf\xe9\n", "pred.csv: not UTF-8 text"),
    "empty": (GOLD_OV, "", "pred.csv:1: the file is empty"),
    "only-blank-lines": (GOLD_OV, "\n\n  \n", "pred.csv:1: the file is empty"),
    "header-only": (GOLD_OV, "name,openset\n", "a header but no rows"),
    "duplicate-name": (GOLD_OV, "name,openset\na,x\na,y\n", "pred.csv:3: duplicate name 'a' (first on line 2)"),
    "open-quote": (GOLD_OV, 'name,openset\na,"happy\nb,sad\n', "never closed"),
    "unclosed-list": (GOLD_OV, "name,openset\na,\"['happy'\"\n", "pred.csv:2: openset"),
    "dict-literal": (GOLD_OV, "name,openset\na,\"{'happy': 1}\"\n", None),  # free text: parsed as words
    "deep-nesting": (GOLD_OV, "name,openset\na," + "[" * 5000 + "]" * 5000 + "\n", "pred.csv:2: openset"),
    "numbers-in-list": (GOLD_OV, 'name,openset\na,"[1, 2]"\n', "pred.csv:2: openset"),
    "semicolons": (GOLD_OV, "name;openset\na;happy\n", "semicolon-separated"),
    "name-not-in-gold": (GOLD_OV, "name,openset\nzz,happy\n", "1 prediction name(s) not in"),
    "short-row": (GOLD_OV, "name,openset\na\n", "pred.csv:2: 1 fields but the header has 2"),
    "gold-not-utf8": (b"name,openset\na,\xff\n", PRED_OV, "gold.csv: not UTF-8 text"),
}


@pytest.mark.parametrize("case", list(OV_CASES))
def test_open_vocabulary_scoring_files(tmp_path, capsys, case):
    gold, pred, fragment = OV_CASES[case]
    if fragment is None:  # not an error: a prediction cell is free text, and a dict literal is just words
        (tmp_path / "g.csv").write_text(gold)
        (tmp_path / "p.csv").write_text(pred)
        assert main(["ov", "--pred", str(tmp_path / "p.csv"), "--gold", str(tmp_path / "g.csv"), "--json"]) == 0
        return
    line = _run(tmp_path, capsys, "ov", gold, pred)
    assert fragment in line, line


MER_CASES = {
    "nan-valence": (GOLD_MER, "name,discrete,valence\na,happy,nan\nb,sad,0\n", "valence 'nan' is not a finite"),
    "inf-valence-gold": ("name,discrete,valence\na,happy,inf\nb,sad,1\n", PRED_MER, "gold.csv:2: valence 'inf'"),
    "text-valence": (GOLD_MER, "name,discrete,valence\na,happy,high\nb,sad,0\n", "valence 'high' is not a number"),
    "both-columns": (GOLD_MER, "name,prediction,discrete\na,happy,happy\n", "both 'prediction' and 'discrete'"),
    "unknown-gold-label": ("name,discrete,valence\na,elated,1\n", PRED_MER, "gold.csv:2"),
    "test1-without-valence": (GOLD_MER, "name,discrete\na,happy\nb,sad\n", "scores valence but no prediction"),
    "gold-placeholder-valence": ("name,discrete,valence\na,happy,-10\nb,sad,1\n", PRED_MER, "have no valence"),
    "no-header": (GOLD_MER, "a,happy,1\nb,sad,0\n", "the header line seems to be missing"),
    "tabs": (GOLD_MER, "name\tdiscrete\na\thappy\n", "tab-separated"),
    "huge-field": (GOLD_MER, "name,discrete\na," + "x" * 200_000 + "\n", "pred.csv"),
    "nul-bytes": (GOLD_MER, "name,discrete\na,ha\x00ppy\nb,sad\n", None),  # an answer naming no label: invalid
    "duplicate-gold": ("name,discrete,valence\na,happy,1\na,sad,1\n", PRED_MER, "gold.csv:3: duplicate name"),
}


@pytest.mark.parametrize("case", list(MER_CASES))
def test_mer2023_scoring_files(tmp_path, capsys, case):
    gold, pred, fragment = MER_CASES[case]
    extra = ["--protocol", "test1"] if case in ("test1-without-valence", "gold-placeholder-valence") else []
    if fragment is None:
        (tmp_path / "g.csv").write_text(gold)
        (tmp_path / "p.csv").write_text(pred)
        assert main(["mer2023", "--pred", str(tmp_path / "p.csv"), "--gold", str(tmp_path / "g.csv"), "--json"]) == 0
        return
    line = _run(tmp_path, capsys, "mer2023", gold, pred, *extra)
    assert fragment in line, line


def test_per_sample_onto_an_input_or_a_folder_is_refused(tmp_path, capsys):
    g, p = tmp_path / "gold.csv", tmp_path / "pred.csv"
    g.write_text(GOLD_OV)
    p.write_text(PRED_OV)
    for target, fragment in ((g, "is the --gold input"), (p, "is the --pred input"), (tmp_path, "is a folder")):
        assert main(["ov", "--pred", str(p), "--gold", str(g), "--per-sample", str(target), "--overwrite"]) == 2
        assert fragment in capsys.readouterr().err
    assert g.read_text() == GOLD_OV and p.read_text() == PRED_OV
