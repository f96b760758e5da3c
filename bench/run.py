"""``make bench``: run every ``bench/bench_*.py`` and collect their tables into ``bench/RESULTS.md``.

Each benchmark runs in its own process (``OMP_NUM_THREADS=1`` unless set), prints its tables, and is recorded in
RESULTS.md under a heading with the date, the machine and the exact command, so every row can be reproduced.
Extra arguments (e.g. ``--quick``) are passed to every benchmark. ``--only NAME`` runs one of them. Sections of
RESULTS.md that this run did not produce (other benchmarks, or ``make bench-llms``'s real-LLM comparison, which
``make bench`` does not run) are kept as they are.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"


def machine() -> str:
    try:
        import torch

        threads = os.environ.get("OMP_NUM_THREADS", "?")
        accel = f"CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU only"
        cores = os.cpu_count()
        return f"{platform.machine()}, {cores} cores, {accel}, OMP_NUM_THREADS={threads}, torch {torch.__version__}"
    except ImportError:
        return f"{platform.machine()}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run only bench_<ONLY>.py")
    args, extra = parser.parse_known_args(argv)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem == f"bench_{args.only}"]
        if not scripts:
            parser.error(f"no bench/bench_{args.only}.py")
    sections = []
    failed = []
    for script in scripts:
        command = " ".join(["python", f"bench/{script.name}", *extra])
        print(f"\n=== {command} ===", flush=True)
        t = time.perf_counter()
        # Run as __main__ behind emollm's boundary (emollm.cli.quiet_third_party), as `emollm` commands run: no
        # bitsandbytes "kernels-community" line, DeepSpeed's logger on stderr, not in the tables.
        boot = (
            "import runpy, sys; from emollm.cli import quiet_third_party; quiet_third_party(); "
            "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
        )
        proc = subprocess.run(
            [sys.executable, "-c", boot, str(script), *extra], env=env, capture_output=True, text=True
        )
        print(proc.stdout, flush=True)
        if proc.returncode != 0:
            print(proc.stderr[-4000:], file=sys.stderr)
            failed.append(script.name)
            continue
        body = proc.stdout.strip()
        sections.append(
            f"## {script.stem}\n\n- date: {time.strftime('%Y-%m-%d %H:%M')}\n- machine: {machine()}\n"
            f"- command: `OMP_NUM_THREADS={env['OMP_NUM_THREADS']} {command}` ({time.perf_counter() - t:.0f} s)\n\n"
            f"```\n{body}\n```\n"
        )
    if sections:
        header = (
            "# Benchmark results\n\nWritten by `make bench` (bench/run.py). Compare ratios within a section; "
            "absolute times depend on the machine and its load.\n\n"
        )
        fresh = {sec.split("\n", 1)[0] for sec in sections}
        old = RESULTS.read_text().split("\n## ")[1:] if RESULTS.is_file() else []
        kept = [f"## {sec.rstrip()}\n" for sec in old if f"## {sec.split(chr(10), 1)[0]}" not in fresh]
        RESULTS.write_text(header + "\n".join(sections + kept))
        print(f"wrote {RESULTS}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
