"""Training benchmark: tokens/s, samples/s, step time and peak RSS of the training recipe, LoRA vs QLoRA.

Run: ``make bench`` (all benchmarks) or ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_train.py [--quick]``.
``--quick`` runs only the tiny configs (seconds); the full run (~20 min on 2 cores) adds SmolLM2-135M (the embedded
real weights) at batch 4 x ~512 tokens: stage 1 (projectors only), stage 2 LoRA and QLoRA (4-bit base) as shipped
(gradient checkpointing + ``train.release_memory``), with checkpointing only, and "fast" (neither). Every row is a
fresh process running the real recipe (``sft.run``) on synthetic data (``data.format=synthetic``), so peak RSS
is that configuration's own (model load included). Throughput is the mean over the steps after the first two.
Goal: stage-2 LoRA on SmolLM2 at 4 x 512 tokens under 3 GB RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COMMON = [
    "train.logging.progress=false",
    "train.logging.tensorboard=false",
    "train.save_every=0",
    "train.eval_every=0",
    "data.synthetic.num_val=0",
    "train.init_from=null",
    "data.modality_dropout=0.0",
]
# SmolLM2 on synthetic Emotion-LLaMA-shaped features (1024-d, 3 branches), ~512 tokens per sample.
SMOL = [
    "data.format=synthetic",
    "data.synthetic.num_train=64",
    "data.synthetic.subtitle_words=430",
    "data.max_length=1024",
    "train.batch_size=4",
    "train.grad_accum=1",
    "data.group_by_length=false",
]

ROWS: dict[str, tuple[str, list[str]]] = {
    "tiny stage 1 (proj+LoRA)": ("configs/debug/tiny.yaml", ["train.max_steps=20"]),
    "tiny stage 2 (proj+LoRA)": ("configs/debug/tiny_instruct.yaml", ["train.max_steps=20"]),
    "smollm2 stage 1 (proj)": (
        "configs/pretrain/smollm2.yaml",
        [*SMOL, "train.max_steps=6", "data.tasks={emotion: 1.0}"],
    ),
    # The shipped stage-2 config trades speed for memory: gradient checkpointing + train.release_memory.
    "smollm2 stage 2 LoRA": ("configs/instruct/smollm2.yaml", [*SMOL, "train.max_steps=6", "data.balance=none"]),
    "smollm2 stage 2 QLoRA": (
        "configs/instruct/smollm2.yaml",
        [*SMOL, "train.max_steps=6", "data.balance=none", "model.quantization=4bit"],
    ),
    "smollm2 stage 2 LoRA, ckpt only": (
        "configs/instruct/smollm2.yaml",
        [*SMOL, "train.max_steps=6", "data.balance=none", "train.release_memory=false"],
    ),
    "smollm2 stage 2 LoRA, fast": (
        "configs/instruct/smollm2.yaml",
        [
            *SMOL,
            "train.max_steps=6",
            "data.balance=none",
            "train.release_memory=false",
            "train.gradient_checkpointing=false",
        ],
    ),
    "smollm2 stage 2 QLoRA, fast": (
        "configs/instruct/smollm2.yaml",
        [
            *SMOL,
            "train.max_steps=6",
            "data.balance=none",
            "train.release_memory=false",
            "train.gradient_checkpointing=false",
            "model.quantization=4bit",
        ],
    ),
}
QUICK = ("tiny stage 1 (proj+LoRA)", "tiny stage 2 (proj+LoRA)")


def run_one(name: str, threads: int) -> dict:
    """Inside the child process: run the recipe, return throughput and peak RSS."""
    import logging
    import resource

    import torch

    logging.disable(logging.WARNING)
    torch.set_num_threads(threads)
    from emollm.runconfig import load_config
    from emollm_train.monitor import read_log
    from emollm_train.sft import run

    config, overrides = ROWS[name]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(REPO / config, [*COMMON, *overrides, f"train.output_dir={tmp}", f"train.threads={threads}"])
        t0 = time.perf_counter()
        run(cfg)
        wall = time.perf_counter() - t0
        log = read_log(Path(tmp) / "train_log.jsonl")
        setup = read_log(Path(tmp) / "train_log.jsonl", "setup")[0]
    steady = log[2:] or log
    tokens = sum(r["tokens"] for r in steady)
    time_s = sum(r["step_time_s"] for r in steady)
    samples = sum(r["samples_per_s"] * r["step_time_s"] for r in steady)
    return {
        "name": name,
        "trainable": setup["trainable"]["total"],
        "tokens_per_sample": tokens / samples,
        "tokens_per_s": tokens / time_s,
        "samples_per_s": samples / time_s,
        "step_s": time_s / len(steady),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,  # KiB on Linux
        "first_loss": log[0]["loss"],
        "last_loss": log[-1]["loss"],
        "wall_s": wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny configs only")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    parser.add_argument("--only", action="append", help="run only these rows (by name)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--_one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._one:
        print("BENCH " + json.dumps(run_one(args._one, args.threads)), flush=True)
        return 0
    names = list(args.only or (QUICK if args.quick else ROWS))
    print(
        f"# emollm training bench — {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {args.threads}, python {platform.python_version()}"
    )
    results = []
    for name in names:
        proc = subprocess.run(
            [sys.executable, __file__, "--_one", name, "--threads", str(args.threads)],
            capture_output=True,
            text=True,
            env=dict(os.environ),
        )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")), None)
        if proc.returncode != 0 or line is None:
            print(f"{name}: FAILED\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        results.append(json.loads(line[6:]))
        print(f"  done: {name} ({results[-1]['wall_s']:.0f} s)", file=sys.stderr, flush=True)
    header = ["config", "trainable", "tok/sample", "tokens/s", "samples/s", "step s", "peak RSS GB", "loss first->last"]
    rows = [
        [
            r["name"],
            f"{r['trainable']:,}",
            f"{r['tokens_per_sample']:.0f}",
            f"{r['tokens_per_s']:.0f}",
            f"{r['samples_per_s']:.2f}",
            f"{r['step_s']:.2f}",
            f"{r['peak_rss_gb']:.2f}",
            f"{r['first_loss']:.2f}->{r['last_loss']:.2f}",
        ]
        for r in results
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    by = {r["name"]: r for r in results}
    print()
    for suffix in ("", ", fast"):
        lora, qlora = by.get(f"smollm2 stage 2 LoRA{suffix}"), by.get(f"smollm2 stage 2 QLoRA{suffix}")
        if lora and qlora:
            print(
                f"QLoRA vs LoRA (SmolLM2 stage 2{suffix or ', shipped config'}): peak RSS "
                f"{qlora['peak_rss_gb']:.2f} vs {lora['peak_rss_gb']:.2f} GB, step {qlora['step_s']:.2f} vs "
                f"{lora['step_s']:.2f} s"
            )
    lora = by.get("smollm2 stage 2 LoRA")
    if lora:
        ok = lora["peak_rss_gb"] < 3.0
        print(
            f"goal: stage-2 LoRA on SmolLM2 at 4 x {lora['tokens_per_sample']:.0f} tokens under 3 GB RSS: "
            f"{'met' if ok else 'NOT met'} ({lora['peak_rss_gb']:.2f} GB)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if len(results) == len(names) else 1


if __name__ == "__main__":
    raise SystemExit(main())
