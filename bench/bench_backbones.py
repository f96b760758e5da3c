"""Backbone comparison for ``make bench``: ``emollm bench backbones`` with the shipped config.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_backbones.py [--quick | --llms]`` (``--quick``: tiny backbones
only, LoRA only, 8 steps; ``--llms``: the real SmolLM2-135M vs Gemma-3-270M comparison of ``configs/bench/llms.yaml``
on the corpus ``make bench-llms`` builds, about 40 minutes on this CPU).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emollm_eval.compare import CompareConfig, compare, format_table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--llms", action="store_true", help="two real LLMs, stage 1 + 2, held-out split")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    if args.llms:
        if not Path("runs/bench-llms/merr/MERR_fine_grained.json").is_file():
            print("the corpus is missing: run `make bench-llms` (it builds runs/bench-llms, then runs this comparison)")
            return 2
        rows = compare(CompareConfig.load("configs/bench/llms.yaml"))
        print(format_table([r for r in rows if "error" not in r]))
        return 1 if any("error" in r for r in rows) else 0
    cfg = CompareConfig.load("configs/bench/backbones.yaml")
    cfg.output_dir = "bench/out/backbones"
    if args.quick:
        cfg.runs = [r for r in cfg.runs if r.name.endswith("-tiny")]
        cfg.variants = ["lora"]
        cfg.common_overrides += ["train.max_steps=8"]
    rows = compare(cfg)
    print("\nSame recipe (configs/debug/tiny.yaml) across backbones; metrics on the validation split")
    print(format_table([r for r in rows if "error" not in r]))
    failed = [r for r in rows if "error" in r]
    for r in failed:
        print(f"failed: {r['run']} / {r['variant']}: {r['error']}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
