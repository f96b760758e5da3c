"""``emollm eval`` under ``torchrun`` (2 CPU processes, gloo): the same predictions.jsonl and metrics.json as one
process (greedy, batch_size 1), and a run resumed with another number of processes from the parts a killed
data-parallel run left."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.emollm.test_distributed_jobs import emollm_cmd, launch_env

from . import test_runner
from .test_runner import dfew_overrides, write_yaml

tiny_checkpoint = test_runner.tiny_checkpoint  # the runner tests' fixtures: a tiny random checkpoint, DFEW files
dfew_data = test_runner.dfew_data

REPO = Path(__file__).resolve().parents[2]


def _eval(cfg: Path, nproc: int) -> subprocess.CompletedProcess:
    cmd = emollm_cmd("eval", str(cfg), "--no-progress", nproc=nproc)
    return subprocess.run(cmd, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=240)


def test_two_processes_give_the_single_process_predictions_and_metrics(tiny_checkpoint, dfew_data, tmp_path):
    def config(name: str) -> Path:
        out = tmp_path / name
        overrides = [o for o in dfew_overrides(tiny_checkpoint, dfew_data, out) if not o.startswith("batch_size")]
        return write_yaml(tmp_path / f"{name}.yaml", [*overrides, "batch_size=1"])

    one = _eval(config("one"), 1)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _eval(config("two"), 2)
    assert two.returncode == 0, two.stderr[-3000:]
    for name in ("predictions.jsonl", "metrics.json"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert "generated 10, reused 0" in two.stdout and not (tmp_path / "two" / ".predictions.jsonl.parts").exists()

    # a killed 2-process run left rank 1's part with four rows; one process finishes the job
    rows = (tmp_path / "one" / "predictions.jsonl").read_text().splitlines()
    part = tmp_path / "three" / ".predictions.jsonl.parts" / "rank-00001.jsonl"
    part.parent.mkdir(parents=True)
    part.write_text("".join(row + "\n" for row in rows[:4]) + rows[4][:20])  # and a line torn by the kill
    three = _eval(config("three"), 1)
    assert three.returncode == 0, three.stderr[-3000:]
    assert "generated 6, reused 4" in three.stdout  # nothing finished is generated again
    for name in ("predictions.jsonl", "metrics.json"):
        assert (tmp_path / "three" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert json.loads((tmp_path / "three" / "run.json").read_text())["config_hash"]
