"""Machine output stays pure on a first run: every command that offers ``--json`` prints exactly one JSON document on
stdout (and nothing else), with empty caches, as on a new machine.

Each command runs in its own process with a fresh ``EMOLLM_CACHE`` / ``HF_HOME`` / ``XDG_CACHE_HOME`` and *without*
``DS_ACCELERATOR`` (the test environment sets it; a user's shell does not, and then DeepSpeed's import logs
"Setting accelerator to CPU" through a stdout handler). The embedded weights come from the installed packages, so
a cold cache means the first ``analyze`` converts SmolLM2 and Whisper as a user's first run does.

Covered: ``analyze FILE --json`` (a .txt cold, an image warm), ``plan --zero 2 --json`` (its cross-check imports
DeepSpeed), ``backbones --json``, ``data corpora|list|split --json``, ``fusion list --json``,
``score dfew|mer2023|ov --json``, ``merr au-label --json``, and ``train`` (no ``--json``; its stdout must not carry
DeepSpeed's line either). Not here: ``eval --json`` and ``eval emer --json`` (they need a trained checkpoint; the same
boundary, ``emollm.cli.main``, runs them) and ``assess --json`` (tests/assess).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    env.update(
        EMOLLM_CACHE=str(tmp / "cache" / "emollm"),
        HF_HOME=str(tmp / "cache" / "hf"),
        XDG_CACHE_HOME=str(tmp / "cache" / "xdg"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(REPO),
    )
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path, *, ok: tuple[int, ...] = (0,)) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "emollm", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode in ok, f"emollm {' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _one_document(args: list[str], env: dict[str, str], cwd: Path, **kw) -> object:
    out = _run(args, env, cwd, **kw)
    try:
        return json.loads(out)  # exactly one document: anything before or after it fails here
    except json.JSONDecodeError as e:
        raise AssertionError(f"emollm {' '.join(args)}: stdout is not one JSON document ({e}):\n{out[:2000]}") from None


@pytest.fixture
def cold(tmp_path: Path) -> dict[str, str]:
    return _env(tmp_path)


def test_light_json_commands_print_one_document_on_a_cold_machine(cold, tmp_path):
    from tests.merr.openface_gen import Plant, write_openface_csv

    ravdess = tmp_path / "RAVDESS"
    for actor in range(1, 7):
        for emo in ("01", "03", "05"):
            f = ravdess / f"Actor_{actor:02d}" / f"03-01-{emo}-01-01-01-{actor:02d}.wav"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    (ravdess / "Actor_01" / "empty.wav").write_bytes(b"")  # listed as skipped, on stderr / in the document
    gold, pred = tmp_path / "gold.csv", tmp_path / "pred.csv"
    gold.write_text("name,discrete,valence\na,happy,1\nb,sad,-1\n")
    pred.write_text("name,discrete,valence\na,happy,0.5\nb,happy,0\n")
    dfew_gold, dfew_pred = tmp_path / "set_1.csv", tmp_path / "dfew_pred.csv"
    dfew_gold.write_text("video_name,label\n1,1\n2,3\n")
    dfew_pred.write_text("name,prediction\n1,happy\n2,neutral\n")
    ov_gold, ov_pred = tmp_path / "ov_gold.csv", tmp_path / "ov_pred.csv"
    ov_gold.write_text("name,openset\na,\"['happy', 'calm']\"\nb,sad\n")
    ov_pred.write_text('name,openset\na,joyful\nb,"sad, tired"\n')
    au_csv = write_openface_csv(tmp_path / "of.csv", plants=[Plant({"AU06": 3.0, "AU12": 3.5}, peak=30)])

    docs = {
        "backbones": _one_document(["backbones", "--json"], cold, tmp_path),
        "data corpora": _one_document(["data", "corpora", "--json"], cold, tmp_path),
        "data list": _one_document(["data", "list", "ravdess", str(ravdess), "--json"], cold, tmp_path),
        "data split": _one_document(
            ["data", "split", "ravdess", str(ravdess), "--folds", "3", "--json"], cold, tmp_path
        ),
        "fusion list": _one_document(["fusion", "list", "--json"], cold, tmp_path),
        "score mer2023": _one_document(
            ["score", "mer2023", "--pred", str(pred), "--gold", str(gold), "--json", "--ci", "--n-resamples", "50"],
            cold,
            tmp_path,
        ),
        "score dfew": _one_document(
            ["score", "dfew", "--pred", str(dfew_pred), "--gold", str(dfew_gold), "--json"], cold, tmp_path
        ),  # fmt: skip
        "score ov": _one_document(
            ["score", "ov", "--pred", str(ov_pred), "--gold", str(ov_gold), "--json"], cold, tmp_path
        ),  # fmt: skip
        "merr au-label": _one_document(["merr", "au-label", str(au_csv), "--json"], cold, tmp_path),
        # ZeRO-2: DeepSpeed's estimator is imported for the cross-check (DeepSpeed's first import on this machine).
        "plan": _one_document(
            ["plan", str(REPO / "configs/instruct/smollm2.yaml"), "--zero", "2", "--gpus", "2", "--json"],
            cold,
            tmp_path,
            ok=(0, 2),
        ),
    }
    assert any(b["name"] == "smollm2" for b in docs["backbones"])
    assert len(docs["data list"]["records"]) == 18 and docs["data list"]["skipped"][0]["path"].endswith("empty.wav")
    assert len(docs["data split"]["folds"]) == 3
    assert docs["score mer2023"]["task"] == "mer2023" and docs["score ov"]["task"] == "ov"
    assert "setup" in docs["plan"] and docs["plan"]["setup"]["backbone"] == "smollm2"


@pytest.mark.slow
def test_analyze_json_and_train_stdout_on_a_cold_machine(cold, tmp_path):
    """The issue's case: ``emollm analyze x.txt --json | jq .`` failed on the first try (SmolLM2's conversion imports
    DeepSpeed) and worked on the second; an image then runs the face models warm. ``train`` writes no JSON, but its
    stdout must not carry DeepSpeed's line either."""
    from emollm.media.fixtures import load_photo

    text = tmp_path / "note.txt"
    text.write_text("We won the match, I am so happy today!\n")
    doc = _one_document(["analyze", str(text), "--json", "--labels", "happy,sad,angry,neutral"], cold, tmp_path)
    assert doc["label"] in ("happy", "sad", "angry", "neutral") and doc["mode"] == "clues"
    assert (tmp_path / "cache" / "emollm").is_dir()  # it really was a first run: the cache was filled by it

    import cv2

    image = tmp_path / "face.jpg"
    cv2.imwrite(str(image), cv2.cvtColor(load_photo("astronaut"), cv2.COLOR_RGB2BGR))
    doc = _one_document(["analyze", str(image), "--json", "--no-asr", "--reasoning", "template"], cold, tmp_path)
    assert doc["file"] == str(image) and "face" in doc["modalities"]

    out = _run(
        [
            "train", str(REPO / "configs/debug/tiny.yaml"), f"train.output_dir={tmp_path / 'run'}",
            "train.max_steps=1", "train.logging.progress=false", "train.logging.tensorboard=false",
        ],
        cold,
        tmp_path,
    )  # fmt: skip
    assert "Setting accelerator" not in out and "[WARNING]" not in out, out[:2000]
