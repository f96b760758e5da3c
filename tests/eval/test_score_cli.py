"""``emollm score``: emollm_eval.score.main on generated CSVs, checked against hand-computed values."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emollm_eval.score import main

REPO = Path(__file__).resolve().parents[2]

# Gold: 2 happy, 2 sad, 1 neutral, 1 angry, 1 surprise, 1 disgust, 1 fear (1-indexed DFEW codes).
DFEW_GOLD = "video_name,label\n00001,1\n00002,1\n00003,2\n00004,2\n00005,3\n00006,4\n00007,5\n00008,6\n00009,7\n"
DFEW_PRED = (
    "name,prediction\n"
    "00001,The emotion is happy.\n"  # happy   ok
    "00002,joyful\n"  # happy   ok (synonym)
    "00003,Sad.\n"  # sad     ok
    "00004,happy or sad\n"  # sad     invalid (two labels)
    "00005,neutral\n"  # neutral ok
    "00006,sad\n"  # angry   wrong
    "00007,\n"  # surprise invalid (empty)
    "00008,6\n"  # disgust ok (1-indexed class number)
    # 00009 (fear) missing -> invalid
)


def _files(tmp_path: Path, gold: str, pred: str) -> tuple[Path, Path]:
    g, p = tmp_path / "gold.csv", tmp_path / "pred.csv"
    g.write_text(gold, encoding="utf-8")
    p.write_text(pred, encoding="utf-8")
    return g, p


def _run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_dfew_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold, pred = _files(tmp_path, DFEW_GOLD, DFEW_PRED)
    out = _run_json(capsys, ["dfew", "--pred", str(pred), "--gold", str(gold)])
    recall = {"happy": 1.0, "sad": 0.5, "neutral": 1.0, "angry": 0.0, "surprise": 0.0, "disgust": 1.0, "fear": 0.0}
    assert out["per_class_recall"] == pytest.approx(recall)
    assert out["uar"] == pytest.approx(3.5 / 7)
    assert out["war"] == pytest.approx(5 / 9)
    assert out["n"] == 9
    assert out["invalid"] == 3
    assert out["missing"] == 1
    assert out["invalid_rate"] == pytest.approx(3 / 9)
    assert out["invalid_by_class"] == {"happy": 0, "sad": 1, "neutral": 0, "angry": 0, "surprise": 1, "disgust": 0,
                                       "fear": 1}  # fmt: skip
    assert out["support"]["happy"] == 2
    assert out["confusion_matrix"][3] == [0, 1, 0, 0, 0, 0, 0]  # angry predicted as sad
    assert all(0.0 <= out[k] <= 1.0 for k in ("uar", "war"))


def test_dfew_table_ci_and_per_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold, pred = _files(tmp_path, DFEW_GOLD, DFEW_PRED)
    per_sample = tmp_path / "per_sample.csv"
    argv = ["dfew", "--pred", str(pred), "--gold", str(gold), "--ci", "--n-resamples", "100", "--per-sample"]
    assert main([*argv, str(per_sample)]) == 0
    table = capsys.readouterr().out
    assert "UAR" in table and "50.00%" in table and "95% CI" in table and "invalid" in table
    lines = per_sample.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "name,gold,answer,parsed,reason"
    assert lines[4] == '00004,sad,happy or sad,,"several labels: happy, sad"'
    assert lines[9] == "00009,fear,,,missing from PRED"
    out = _run_json(capsys, [*argv, str(per_sample), "--overwrite"])
    assert out["uar_ci"][0] <= out["uar"] <= out["uar_ci"][1]
    assert out["war_ci"][0] <= out["war"] <= out["war_ci"][1]


def test_dfew_class_without_gold_sample_is_null_and_left_out_of_uar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gold, pred = _files(tmp_path, "video_name,label\n1,1\n2,2\n", "name,prediction\n1,happy\n2,happy\n")
    out = _run_json(capsys, ["dfew", "--pred", str(pred), "--gold", str(gold)])
    assert out["per_class_recall"]["fear"] is None
    assert out["uar"] == pytest.approx(0.5)


def test_extra_prediction_rows_are_an_error_listing_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold, pred = _files(tmp_path, DFEW_GOLD, DFEW_PRED + "99998,happy\n99999,sad\n")
    assert main(["dfew", "--pred", str(pred), "--gold", str(gold), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "2 prediction name(s) not in" in captured.err and "99998, 99999" in captured.err
    assert str(pred) in captured.err and "Traceback" not in captured.err


def test_zero_padding_mismatch_gets_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold, pred = _files(tmp_path, "video_name,label\n25,1\n", "name,prediction\n00025,happy\n")
    assert main(["dfew", "--pred", str(pred), "--gold", str(gold)]) == 2
    assert "leading zeros" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("gold_text", "pred_text", "extra", "match"),
    [
        (None, "name,prediction\n1,happy\n", [], "file not found; check the path"),
        ("video_name,label\n1,9\n", "name,prediction\n1,happy\n", [], "gold.csv:2: label 9 is out of range"),
        ("video_name,label\n1,1\n", "name,answer\n1,happy\n", [], "pred.csv:1: missing column"),
        ("video_name,label\n1,1\n", "name,prediction\n1,happy\n", ["--labels", "a,a"], "duplicate label"),
    ],
)
def test_errors_exit_2_with_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], gold_text: str | None, pred_text: str, extra: list, match: str
) -> None:
    gold, pred = _files(tmp_path, gold_text or "", pred_text)
    if gold_text is None:
        gold.unlink()
    assert main(["dfew", "--pred", str(pred), "--gold", str(gold), *extra]) == 2
    err = capsys.readouterr().err
    assert match in err and err.startswith("emollm score dfew: error: ")


def test_usage_errors_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["cifar"]) == 2
    assert main(["dfew", "--gold", "x.csv"]) == 2
    capsys.readouterr()
    assert main(["dfew", "--help"]) == 0
    assert "--pred" in capsys.readouterr().out


MER_GOLD = "name,discrete,valence\na,happy,2.0\nb,sad,-2.0\nc,neutral,0.0\nd,worried,-1.0\n"


def test_mer2023_without_valence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold, pred = _files(tmp_path, MER_GOLD, "name,discrete\na,happy\nb,The emotion is sad.\nc,angry\n")
    out = _run_json(capsys, ["mer2023", "--pred", str(pred), "--gold", str(gold)])
    # F1: happy 1, sad 1, neutral 0 (predicted angry), worried 0 (missing); support 1 each.
    assert out["weighted_f1"] == pytest.approx(0.5)
    assert out["accuracy"] == pytest.approx(0.5)
    assert (out["n"], out["invalid"], out["missing"]) == (4, 1, 1)
    assert "valence_mse" not in out and "combined" not in out


def test_mer2023_with_valence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred_text = "name,discrete,valence\na,happy,1.0\nb,sad,-2.0\nc,neutral,1.0\nd,sad,\n"
    gold, pred = _files(tmp_path, MER_GOLD, pred_text)
    out = _run_json(capsys, ["mer2023", "--pred", str(pred), "--gold", str(gold), "--ci", "--n-resamples", "50"])
    # F1: happy 1; sad P=1/2 R=1 -> 2/3; neutral 1; worried 0 -> weighted (1 + 2/3 + 1 + 0) / 4.
    f1 = (1 + 2 / 3 + 1) / 4
    mse = (1.0 + 0.0 + 1.0 + 1.0) / 4  # d has no valence: scored as 0 -> (-1 - 0)^2
    assert out["weighted_f1"] == pytest.approx(f1)
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["valence_mse"] == pytest.approx(mse)
    assert out["combined"] == pytest.approx(f1 - 0.25 * mse)
    assert out["valence_missing"] == 1
    assert out["invalid"] == 0
    for key in ("weighted_f1", "accuracy", "valence_mse", "combined"):
        low, high = out[f"{key}_ci"]
        assert low <= high


def test_mer2023_protocols(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold, pred = _files(tmp_path, MER_GOLD, "name,discrete,valence\na,happy,1.0\n")
    out = _run_json(capsys, ["mer2023", "--pred", str(pred), "--gold", str(gold), "--protocol", "test3"])
    assert out["protocol"] == "test3" and "combined" not in out
    _, no_val = _files(tmp_path, MER_GOLD, "name,discrete\na,happy\n")
    assert main(["mer2023", "--pred", str(no_val), "--gold", str(gold), "--protocol", "test1"]) == 2
    assert "add a 'valence' column" in capsys.readouterr().err
    placeholder, pred = _files(tmp_path, "name,discrete,valence\na,happy,-10\n", "name,discrete,valence\na,happy,1\n")
    assert main(["mer2023", "--pred", str(pred), "--gold", str(placeholder)]) == 2
    assert "placeholder" in capsys.readouterr().err


def test_mer2023_labels_override_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold, pred = _files(tmp_path, "name,discrete\na,happy\nb,fear\n", "name,prediction\na,joy\nb,scared\n")
    assert main(["mer2023", "--pred", str(pred), "--gold", str(gold)]) == 2  # fear is not a MER2023 class
    assert "unknown label 'fear'" in capsys.readouterr().err
    assert main(["mer2023", "--pred", str(pred), "--gold", str(gold), "--labels", "happy,fear"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("MER2023: 2 samples, 0 invalid") and "weighted F1" in table and "100.00%" in table


def test_per_sample_never_destroys_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold, pred = _files(tmp_path, DFEW_GOLD, DFEW_PRED)
    base = ["dfew", "--pred", str(pred), "--gold", str(gold), "--per-sample"]
    (tmp_path / "link.csv").symlink_to(pred)
    os.link(gold, tmp_path / "hard.csv")
    for target in (pred, gold, tmp_path / "link.csv", tmp_path / "hard.csv", tmp_path / "." / "pred.csv"):
        for extra in ([], ["--overwrite"]):  # an input of the command is refused even with --overwrite
            assert main([*base, str(target), *extra]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "would destroy the input" in err and str(target) in err
    assert pred.read_text(encoding="utf-8") == DFEW_PRED and gold.read_text(encoding="utf-8") == DFEW_GOLD
    mine = tmp_path / "mine.csv"
    mine.write_text("precious\n", encoding="utf-8")
    assert main([*base, str(mine)]) == 2
    err = capsys.readouterr().err
    assert f"--per-sample {mine} already exists; pass --overwrite" in err and err.count("\n") == 1
    assert mine.read_text(encoding="utf-8") == "precious\n"
    assert main([*base, str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main([*base, str(mine), "--overwrite"]) == 0
    assert mine.read_text(encoding="utf-8").startswith("name,gold,answer,parsed,reason")


def test_debug_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold, pred = _files(tmp_path, DFEW_GOLD, DFEW_PRED)
    argv = ["dfew", "--pred", str(pred), "--gold", str(gold), "--per-sample", str(pred)]
    assert main(argv) == 2
    with pytest.raises(ValueError, match="would destroy the input"):
        main([*argv, "--debug"])


def test_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "emollm"
    if not script.exists():
        pytest.skip(f"console script {script} not installed (pip install -e .)")
    gold, pred = _files(tmp_path, DFEW_GOLD, DFEW_PRED)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(script), "score", "dfew", "--pred", str(pred), "--gold", str(gold), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["war"] == pytest.approx(5 / 9)
    proc = subprocess.run([*cmd[:4], str(tmp_path / "missing.csv"), *cmd[5:]], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "file not found" in proc.stderr and "Traceback" not in proc.stderr


def test_eval_package_does_not_import_torch() -> None:
    code = (
        "import sys, emollm_eval.score, emollm_eval.metrics, emollm.labels, emollm_eval.datasets; "
        "sys.exit('torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr or "eval imported torch"
