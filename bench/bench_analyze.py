"""Clue-mode ``analyze`` benchmark: latency of a 10 s clip by stage (cold start and warm), clips/min in batch mode,
and the cost of the LLM rationale against the template one, in one run.

Run: ``make bench`` or ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_analyze.py [--quick]``. Clips are
generated from real face photos (scikit-image's astronaut, matplotlib's Grace Hopper) with espeak-ng speech, so
the numbers are about speed, not accuracy. Goal on a 2-core CPU: a 10 s clip in <= 8 s warm, <= 15 s at worst.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emollm.apps.clue_mode import ClueAnalyzer, ClueSettings  # noqa: E402
from emollm.jobs.batch import run_batch  # noqa: E402
from emollm.media import fixtures  # noqa: E402

SENTENCES = [
    "I passed the exam, this is wonderful news!",
    "I cannot believe you lied to me again.",
    "My grandmother passed away last night.",
    "Well, I suppose we will see tomorrow.",
]
STAGES = ("media", "face_expression", "face_aus", "prosody", "asr", "text", "reasoning", "total")


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 4 s clip and 2 batch clips")
    args = parser.parse_args()
    seconds, n_batch = (4.0, 2) if args.quick else (10.0, 4)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        long_text = " ".join(SENTENCES[:2] if args.quick else SENTENCES)
        clip = root / "clip10s.mp4"
        fixtures.make_face_clip(clip, "astronaut", seconds=seconds, size=(640, 480), text=long_text)
        batch = []
        for i in range(n_batch):
            p = root / "batch" / f"clip{i}.mp4"
            p.parent.mkdir(exist_ok=True)
            photo = "astronaut" if i % 2 == 0 else "grace_hopper"
            fixtures.make_face_clip(p, photo, seconds=4.0, size=(480, 360), text=SENTENCES[i % len(SENTENCES)])
            batch.append(p)

        rows = []
        for reasoning in ("llm", "template"):
            with ClueAnalyzer(settings=ClueSettings(reasoning=reasoning)) as analyzer:
                t = time.perf_counter()
                cold = analyzer(clip)
                cold_wall = time.perf_counter() - t
                warm = analyzer(clip)
                for name, r, wall in (("cold", cold, cold_wall), ("warm", warm, warm.timings["total"])):
                    cells = [f"{r.timings.get(s, 0.0):.2f}" for s in STAGES[:-1]]
                    rows.append([f"{reasoning}/{name}", *cells, f"{wall:.2f}", r.label or "-"])
                if reasoning == "llm":
                    out = root / "batch.jsonl"
                    t = time.perf_counter()
                    run_batch(analyzer, batch, out, progress=False)
                    per_min = 60 * len(batch) / (time.perf_counter() - t)
        print(f"analyze, clue mode, one {seconds:.0f} s 640x480 clip with speech (seconds per stage)\n")
        print(table(["rationale/start", *STAGES[:-1], "total", "label"], rows))
        llm_warm = next(float(r[-2]) for r in rows if r[0] == "llm/warm")
        tpl_warm = next(float(r[-2]) for r in rows if r[0] == "template/warm")
        print(f"\nLLM rationale / template rationale, warm: {llm_warm / tpl_warm:.2f}x")
        print(f"batch mode ({len(batch)} clips of 4 s, LLM rationale, models loaded once): {per_min:.1f} clips/min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
