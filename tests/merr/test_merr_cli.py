"""``emollm merr au-label``: JSON contract, human output, errors (in-process and once via the console script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emollm.aus.cues import DEFAULT_CUES_PATH
from emollm_merr.cli import main

from .openface_gen import Plant, write_openface_csv

REPO = Path(__file__).resolve().parents[2]
HAPPY = {"AU06": 2.0, "AU12": 2.0, "AU14": 2.0}
SURPRISE = {"AU01": 2.0, "AU02": 2.0, "AU05": 2.0, "AU26": 2.0}


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_contract(tmp_path, capsys):
    p = write_openface_csv(tmp_path / "sample_00000023.csv", 50, [Plant(HAPPY, 21)])
    code, out, err = _run(capsys, "au-label", str(p), "--json")
    assert code == 0 and err == ""
    payload = json.loads(out)
    assert list(payload)[:3] == ["peak_index", "peak_AU_list", "pseu_emotion"]
    assert payload["peak_index"] == 21 and isinstance(payload["peak_index"], int)
    assert payload["peak_AU_list"] == ["AU06", "AU12", "AU14"]
    assert payload["pseu_emotion"] == "happy"
    assert payload["candidates"][0]["emotion"] == "happy" and payload["strength"] == "moderate"
    assert payload["visual_expression"] == ["cheek raiser", "lip corner puller (smile)", "dimpler"]
    assert payload["peak_frame"] == 22 and payload["rule"] == "paper" and payload["au_source"] == str(p)
    assert out.count("\n") == 1  # one line


def test_json_null_label_and_rule_flag(tmp_path, capsys):
    p = write_openface_csv(tmp_path / "n.csv", 30, [])
    code, out, _ = _run(capsys, "au-label", str(p), "--json")
    assert code == 0 and json.loads(out)["pseu_emotion"] is None and '"pseu_emotion": null' in out
    burst = {au: 1.5 for au in ("AU04", "AU07", "AU09", "AU10", "AU15", "AU17", "AU23")}
    p = write_openface_csv(
        tmp_path / "d.csv", 60, [Plant({"AU05": 1.6, "AU26": 1.6}, 20, width=12), Plant(burst, 45, 0)]
    )
    assert json.loads(_run(capsys, "au-label", str(p), "--json")[1])["peak_index"] == 20
    sum_all = json.loads(_run(capsys, "au-label", str(p), "--json", "--rule", "sum_all")[1])
    assert sum_all["peak_index"] == 45 and sum_all["rule"] == "sum_all"


def test_cues_and_min_confidence_flags(tmp_path, capsys):
    plants = [Plant(HAPPY, 10), Plant(SURPRISE | {"AU01": 3.0}, 30, width=0)]
    p = write_openface_csv(tmp_path / "c.csv", 40, plants, confidence={30: 0.85}, noise=0.05)
    args = ["au-label", str(p), "--json", "--rule", "sum_all"]
    assert json.loads(_run(capsys, *args)[1])["pseu_emotion"] == "surprise"
    assert json.loads(_run(capsys, *args, "--min-confidence", "0.9")[1])["pseu_emotion"] == "happy"
    data = yaml.safe_load(DEFAULT_CUES_PATH.read_text())
    data["emotions"] = {"joy": ["AU06", "AU12"]}
    cues = tmp_path / "cues.yaml"
    cues.write_text(yaml.safe_dump(data, sort_keys=False))
    p2 = write_openface_csv(tmp_path / "h.csv", 40, [Plant(HAPPY, 10)])
    assert json.loads(_run(capsys, "au-label", str(p2), "--json", "--cues", str(cues))[1])["pseu_emotion"] == "joy"


def test_human_output(tmp_path, capsys):
    p = write_openface_csv(tmp_path / "h.csv", 40, [Plant(HAPPY, 10)], success={0: 0})
    code, out, _ = _run(capsys, "au-label", str(p))
    assert code == 0
    assert "40 frames, 39 valid" in out
    assert "row 10 (OpenFace frame 11" in out
    assert "AU12 lip corner puller (smile)" in out
    assert "pseu_emotion: happy (moderate" in out and "also fired:   contempt" in out
    code, out, _ = _run(capsys, "au-label", str(write_openface_csv(tmp_path / "n.csv", 20, [])))
    assert "pseu_emotion: none (no AU combination fired" in out


@pytest.mark.parametrize(
    ("setup", "pattern"),
    [
        (lambda d: d / "missing.csv", r"missing\.csv: no such OpenFace CSV"),
        (lambda d: (d / "empty.csv", (d / "empty.csv").write_text(""))[0], r"empty\.csv: empty file"),
        (
            lambda d: write_openface_csv(d / "dead.csv", 10, success=dict.fromkeys(range(10), 0)),
            r"dead\.csv: no face detected: all 10 frames failed",
        ),
        (
            lambda d: (d / "nan.csv", (d / "nan.csv").write_text("frame, AU01_r\n1, x\n"))[0],
            r"nan\.csv:2: column 'AU01_r' has non-numeric value 'x'",
        ),
        (
            lambda d: (d / "inf.csv", (d / "inf.csv").write_text("frame, AU06_r, AU12_r\n1, 0.1, 0.2\n2, inf, 2\n"))[0],
            r"inf\.csv:3: column 'AU06_r' has infinite value 'inf'; OpenFace writes finite numbers only",
        ),
        (
            lambda d: (d / "f.csv", (d / "f.csv").write_text("frame, AU06_r, AU12_r\n1, 0.1, 0.2\nnan, 2, 2\n"))[0],
            r"f\.csv:3: column 'frame' has 'nan', not a frame number",
        ),
    ],
)
def test_bad_input_exit_2_no_traceback(tmp_path, capsys, setup, pattern):
    path = setup(tmp_path)
    code, out, err = _run(capsys, "au-label", str(path), "--json")
    assert code == 2 and out == ""
    assert err.startswith("emollm merr au-label: error: ") and "Traceback" not in err
    import re

    assert re.search(pattern, err), err
    assert err.count("\n") == 1


def _strict_json(text):
    def refuse(constant):
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_json_is_strict_when_a_timestamp_is_unknown(tmp_path, capsys):
    p = write_openface_csv(tmp_path / "t.csv", 30, [Plant(HAPPY, 12)])
    lines = p.read_text().splitlines()
    cells = lines[13].split(", ")
    cells[2] = "nan"  # the peak row's timestamp (column 3) is unknown
    lines[13] = ", ".join(cells)
    p.write_text("\n".join(lines) + "\n")
    code, out, _ = _run(capsys, "au-label", str(p), "--json")
    payload = _strict_json(out)
    assert code == 0 and payload["peak_index"] == 12 and payload["peak_frame"] == 13
    assert payload["peak_timestamp"] is None


@pytest.mark.parametrize("value", ["nan", "inf", "-0.1", "1.5"])
def test_min_confidence_out_of_range_is_one_line(tmp_path, capsys, value):
    p = write_openface_csv(tmp_path / "c.csv", 20, [Plant(HAPPY, 5)])
    code, out, err = _run(capsys, "au-label", str(p), "--json", "--min-confidence", value)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("emollm merr au-label: error: --min-confidence must be a number between 0 and 1")


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert _run(capsys, "au-label", str(tmp_path / "missing.csv"))[0] == 2
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        main(["au-label", str(tmp_path / "missing.csv"), "--debug"])


def test_argparse_errors_and_help(tmp_path, capsys):
    code, _, err = _run(capsys, "au-label", "x.csv", "--rule", "median")
    assert code == 2 and "invalid choice" in err
    code, _, err = _run(capsys)
    assert code == 2 and "required" in err
    code, out, _ = _run(capsys, "au-label", "--help")
    assert code == 0 and "--rule" in out and "OPENFACE.csv" in out
    code, _, err = _run(capsys, "au-label", "x.csv", "--cues", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml: AU cue table not found" in err


def test_console_script_subprocess(tmp_path):
    exe = Path(sys.executable).parent / "emollm"
    if not exe.exists():
        pytest.skip(f"console script {exe} not installed (pip install -e .)")
    p = write_openface_csv(tmp_path / "sample_00000047.csv", 40, [Plant(SURPRISE, 18)])
    env = os.environ | {"PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [str(exe), "merr", "au-label", str(p), "--json"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert (payload["peak_index"], payload["peak_AU_list"], payload["pseu_emotion"]) == (
        18,
        ["AU01", "AU02", "AU05", "AU26"],
        "surprise",
    )
    bad = subprocess.run(
        [str(exe), "merr", "au-label", str(tmp_path / "missing.csv")], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert bad.returncode == 2 and "missing.csv" in bad.stderr and "Traceback" not in bad.stderr
