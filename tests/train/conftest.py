"""Fixtures for the training recipe tests: tiny configs, generated MERR-format data with .npy features, runners."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "debug" / "tiny.yaml"
TINY_INSTRUCT = REPO / "configs" / "debug" / "tiny_instruct.yaml"
LABELS = ("neutral", "angry", "happy", "sad", "worried", "surprise")
FEATURE_DIRS = {"face": "mae_340_UTT", "video": "maeV_399_UTT", "audio": "HL-UTT"}

# Fast settings for in-process runs (no progress bar, 1 thread).
QUICK = ["train.logging.progress=false", "train.threads=1", "train.logging.tensorboard=false"]


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment of a child training process: offline, 1 thread, repo on the path."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        DS_ACCELERATOR="cpu",
        PYTHONPATH=str(REPO),
    )
    env.update(extra)
    return env


def python_bin() -> str:
    return sys.executable


def write_merr_dataset(
    root: Path, n: int = 48, dim: int = 16, *, seed: int = 0, missing_audio: int = 0, name_prefix: str = "sample"
) -> dict[str, Path]:
    """A MERR-format data set: coarse + fine JSON, an NCEV list, a transcription CSV, a JSONL export, and
    class-dependent ``.npy`` features (1-D, like Emotion-LLaMA's) in the three feature folders.

    The first ``missing_audio`` samples have no audio feature file."""
    rng = np.random.default_rng(seed)
    protos = {m: rng.normal(size=(len(LABELS), dim)) for m in FEATURE_DIRS}
    for d in FEATURE_DIRS.values():
        (root / d).mkdir(parents=True, exist_ok=True)
    coarse, fine, ncev, jsonl, csv_rows = {}, {}, [], [], ["name,sentence"]
    for i in range(n):
        name = f"{name_prefix}_{i:08d}"
        k = i % len(LABELS)
        label = LABELS[k]
        for m, d in FEATURE_DIRS.items():
            if m == "audio" and i < missing_audio:
                continue
            np.save(root / d / f"{name}.npy", (protos[m][k] + 0.3 * rng.normal(size=dim)).astype(np.float32))
        subtitle = f"I told you about it {i}"
        base = {
            "AU_list": ["AU06", "AU12"],
            "visual_prior_list": ["smiling"],
            "audio_prior_list": "calm",
            "peak_index": "3",
            "peak_AU_list": ["AU06"],
            "pseu_emotion": label,
        }
        coarse[name] = {**base, "caption": f"The person looks {label}; the tone is calm."}
        fine[name] = {
            **base,
            "smp_reason_caption": f"The cues all indicate {label}, so the person feels {label}.",
            "text": subtitle,
        }
        ncev.append(f"{name} {20 + i} {label} {0.1 * k:.3f}")
        # the layout `emollm merr build` exports (merr_train.jsonl): a ready `messages` column is ignored, the task
        # pool builds the conversations; `emotion` / `subtitle` are accepted aliases of `label` / `text`
        row = {
            "name": name,
            "emotion": label,
            "subtitle": subtitle if i % 5 else None,
            "reason": f"Because of the cues, {label}.",
            "caption": None,
            "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
        }
        jsonl.append(json.dumps(row))
        csv_rows.append(f"{name},{subtitle}")
    out = {
        "coarse": root / "MERR_coarse_grained.json",
        "fine": root / "MERR_fine_grained.json",
        "ncev": root / "train_NCEV.txt",
        "jsonl": root / "records.jsonl",
        "transcripts": root / "transcription_en_all.csv",
    }
    out["coarse"].write_text(json.dumps(coarse, indent=4))
    out["fine"].write_text(json.dumps(fine, indent=4))
    out["ncev"].write_text("\n".join(ncev) + "\n")
    out["jsonl"].write_text("\n".join(jsonl) + "\n")
    out["transcripts"].write_text("\n".join(csv_rows) + "\n")
    return out


def merr_overrides(data: dict[str, Path], root: Path, fmt: str = "merr_json", which: str = "coarse") -> list[str]:
    """Overrides that point the tiny config at generated data."""
    return [
        f"data.format={fmt}",
        f"data.train={data[which]}",
        f"data.feature_root={root}",
        f"data.transcripts={data['transcripts']}",
        "data.val_fraction=0.2",
        *(f"model.modalities.{m}.feature_dir={d}" for m, d in FEATURE_DIRS.items()),
    ]


@pytest.fixture
def run_tiny(tmp_path):
    """Train the tiny config in-process: ``run_tiny(overrides, config=TINY) -> (summary, output_dir)``."""
    from emollm.runconfig import load_config
    from emollm_train.sft import run

    def _run(overrides=(), config=TINY, out: Path | None = None):
        out = out or tmp_path / "run"
        cfg = load_config(config, [*QUICK, f"train.output_dir={out}", *overrides])
        return run(cfg), out

    return _run
