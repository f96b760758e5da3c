"""GRPO benchmark: steps/s, sampled tokens/s and the reward curve of ``train.stage: grpo``.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_grpo.py [--quick]``. ``--quick``: the tiny debug model only
(stage 1 on labels, ~10 s, then ``configs/debug/tiny_grpo.yaml``, ~20 s); the full run adds a few GRPO steps of
SmolLM2-135M (embedded weights, no stage-1 checkpoint: ``init_from=null``) on synthetic 1024-d features. Each row is
the real recipe (``sft.run``); throughput is the mean over the steps after the first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUIET = ["train.logging.progress=false", "train.logging.tensorboard=false", "train.threads=1"]


def _train(config: Path, overrides: list[str]) -> list[dict]:
    from emollm.runconfig import load_config
    from emollm_train.sft import run

    cfg = load_config(config, [*QUIET, *overrides])
    run(cfg)
    path = Path(cfg.train.output_dir) / "train_log.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == "train"]


def _row(name: str, log: list[dict]) -> dict:
    body = log[1:] or log
    time_s = sum(r["step_time_s"] for r in body)
    completions = sum(r["samples"] for r in body)
    new_tokens = sum(r["completion_length"] * r["samples"] for r in body)
    return {
        "name": name,
        "steps": len(log),
        "steps_per_s": len(body) / time_s,
        "completions_per_s": completions / time_s,
        "sampled_tokens_per_s": new_tokens / time_s,
        "tokens_per_s": sum(r["tokens"] for r in body) / time_s,
        "reward_first": log[0]["reward"],
        "reward_last": log[-1]["reward"],
    }


def _curve(log: list[dict], buckets: int = 5) -> list[float]:
    n = max(1, len(log) // buckets)
    return [sum(r["reward"] for r in log[i : i + n]) / len(log[i : i + n]) for i in range(0, len(log), n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model only")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    rows, curves = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        stage1 = Path(tmp) / "pretrain_emotion"
        _train(REPO / "configs/debug/tiny.yaml", [f"train.output_dir={stage1}", "data.tasks={emotion: 1.0}",
                                                  "train.eval_every=0", "data.synthetic.num_val=0"])  # fmt: skip
        log = _train(
            REPO / "configs/debug/tiny_grpo.yaml",
            [f"train.output_dir={tmp}/tiny", f"train.init_from={stage1}/final", "data.synthetic.num_val=0"],
        )
        rows.append(_row("tiny (2x64, G=8, 8 prompts, 6 tokens)", log))
        curves["tiny"] = _curve(log)
        if not args.quick:
            log = _train(
                REPO / "configs/grpo/smollm2.yaml",
                [
                    f"train.output_dir={tmp}/smollm2",
                    "train.init_from=null",
                    "data.format=synthetic",
                    "data.train=null",
                    "data.transcripts=null",
                    "data.feature_root=null",
                    "data.val_fraction=0.0",
                    "data.synthetic.num_val=0",
                    "data.synthetic.num_train=16",
                    "train.max_steps=3",
                    "train.batch_size=1",
                    "train.grad_accum=1",
                    "train.grpo.group_size=4",
                    "train.grpo.max_completion_tokens=32",
                    "train.save_every=0",
                    "train.eval_every=0",
                ],
            )
            rows.append(_row("smollm2-135m LoRA (G=4, 1 prompt, 32 tokens)", log))
            curves["smollm2"] = _curve(log)
    if args.json:
        print(json.dumps({"rows": rows, "reward_curves": curves}, indent=2))
        return 0
    print(f"{'config':<46}{'steps/s':>9}{'compl/s':>9}{'new tok/s':>11}{'tok/s':>9}")
    for r in rows:
        print(
            f"{r['name']:<46}{r['steps_per_s']:9.2f}{r['completions_per_s']:9.1f}"
            f"{r['sampled_tokens_per_s']:11.1f}{r['tokens_per_s']:9.0f}"
        )
    for name, curve in curves.items():
        print(f"reward curve {name} (means of fifths): " + " ".join(f"{x:.3f}" for x in curve))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
