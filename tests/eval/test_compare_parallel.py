"""``emollm bench backbones`` under ``torchrun`` (2 CPU processes): the rows are shared out over the ranks, each
trained and evaluated in a fresh single process, and rank 0 writes the one table with the numbers one process gets."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from emollm_eval.compare import CompareConfig, compare
from tests.emollm.test_distributed_jobs import emollm_cmd, launch_env

REPO = Path(__file__).resolve().parents[2]
SETTINGS = {
    "base_config": "configs/debug/tiny.yaml",
    "runs": [{"name": "llama2-tiny", "overrides": ["model.backbone=llama2"]}],
    "variants": ["lora"],
    "common_overrides": ["train.max_steps=2", "train.save_every=0", "train.eval_every=0"],
    "eval_samples": 4,
    "fusion_runs": [{"name": "avgpool", "method": "avgpool_hidden", "synth": "both", "overrides": ["train.epochs=2"]}],
}
SAME = ("val_accuracy", "val_uar", "invalid_rate", "val_loss", "trainable_params", "eval_samples")


def test_two_processes_share_the_rows_and_rank0_writes_the_table(tmp_path):
    cfg_file = tmp_path / "bench.yaml"
    cfg_file.write_text(yaml.safe_dump(SETTINGS))
    cmd = emollm_cmd("bench", "backbones", "--config", str(cfg_file), "--output-dir", str(tmp_path / "two"), nproc=2)
    two = subprocess.run(cmd, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one = compare(_config(cfg_file, tmp_path / "one"))  # the same rows, one process
    rows = json.loads((tmp_path / "two" / "results.json").read_text())["rows"]
    assert [(r["run"], r["variant"]) for r in rows] == [("llama2-tiny", "lora"), ("avgpool", "fusion")]
    assert all("error" not in r for r in rows), [r.get("error") for r in rows]
    llm, fusion = rows
    assert {k: llm[k] for k in SAME} == {k: one[0][k] for k in SAME}  # alone in a fresh process: one's numbers
    # (the fusion baseline's numbers vary between two single-process runs too, so only its shape is compared)
    assert {k: fusion[k] for k in ("trainable_params", "eval_samples", "data")} == {
        k: one[1][k] for k in ("trainable_params", "eval_samples", "data")
    }
    md = (tmp_path / "two" / "results.md").read_text()
    assert "Rows ran 2 at a time, one per process of `torchrun`" in md
    assert two.stdout.count("[bench backbones] llama2-tiny / lora ...") == 1  # one rank ran it
    assert two.stdout.count("[bench backbones] avgpool / fusion") == 1


def _config(path: Path, out: Path) -> CompareConfig:
    cfg = CompareConfig.load(path)
    cfg.output_dir = str(out)
    return cfg
