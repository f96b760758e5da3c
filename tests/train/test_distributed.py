"""Two real processes on CPU: DDP through `accelerate launch` with the shipped config, DeepSpeed ZeRO-2 via torchrun.

Each rank hashes its trainable weights (projectors + LoRA) at the end; the recipe gathers the hashes into
``replicas.json`` (and fails the run if they differ). The tests check there are two and they agree.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from emollm_train.monitor import read_log

from .conftest import QUICK, REPO, TINY, subprocess_env

VENV_BIN = Path(__import__("sys").executable).parent
ARGS = [
    *QUICK,
    "train.max_steps=4",
    "train.batch_size=4",
    "train.grad_accum=2",
    "train.save_every=2",
    "train.eval_every=4",
    "data.synthetic.num_train=64",
    "-q",
]


def _check(out: Path, proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    prints = json.loads((out / "replicas.json").read_text())["fingerprints"]
    assert len(prints) == 2 and prints[0] == prints[1]
    setup = read_log(out / "train_log.jsonl", "setup")[0]
    assert setup["world_size"] == 2
    assert [r["step"] for r in read_log(out / "train_log.jsonl")] == [1, 2, 3, 4]
    ck = out / "checkpoints" / "step-00000004"
    assert (ck / "rng_state_rank0.json").is_file() and (ck / "rng_state_rank1.json").is_file()


def test_ddp_two_processes_end_with_identical_adapters(tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        str(VENV_BIN / "accelerate"),
        "launch",
        "--config_file",
        str(REPO / "configs/accelerate/ddp.yaml"),
        "--num_processes",
        "2",
        "-m",
        "emollm.cli",
        "train",
        str(TINY),
        f"train.output_dir={out}",
        *ARGS,
    ]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=REPO, env=subprocess_env(ACCELERATE_USE_CPU="true"), capture_output=True, text=True, timeout=180
    )
    elapsed = time.perf_counter() - start
    _check(out, proc)
    assert elapsed < 60, f"2-process DDP run took {elapsed:.0f} s"


@pytest.mark.slow
def test_deepspeed_zero2_two_processes_on_cpu(tmp_path):
    """ZeRO-2 over gloo. DeepSpeed JIT-compiles a shared-memory op on its first start on a machine (~70 s, cached in
    TORCH_EXTENSIONS_DIR); later runs take ~20 s."""
    out = tmp_path / "zero2"
    cmd = [
        str(VENV_BIN / "torchrun"),
        "--nproc_per_node",
        "2",
        "-m",
        "emollm.cli",
        "train",
        str(TINY),
        f"train.output_dir={out}",
        *ARGS,
    ]
    env = subprocess_env(
        ACCELERATE_USE_DEEPSPEED="true",
        DS_BUILD_OPS="0",
        ACCELERATE_DEEPSPEED_CONFIG_FILE=str(REPO / "configs/accelerate/ds_zero2.json"),
    )
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    _check(out, proc)
    assert (out / "checkpoints" / "step-00000004" / "deepspeed").is_dir()  # sharded optimizer state
