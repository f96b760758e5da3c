"""MERR build throughput: clips per minute of ``emollm merr build`` on generated clips + OpenFace CSVs.

Run: ``make bench`` (all benchmarks) or ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_merr.py [--quick]``.

Rows (each a fresh output folder unless it says "resume"):

* offline default without the LLM: probe + OpenFace AUs + peak + pseudo-label + measured audio tone + subtitles
  from a ``name,sentence`` CSV + coarse caption + exports (visual description ``none``), 1 and 2 worker threads;
* the same with subtitles from the embedded Whisper tiny.en (``inputs.subtitles: asr``, model load included);
* resume of a finished build (everything cached);
* the SmolLM2-135M reasoning stage alone (model load timed apart) on ``--llm-clips`` labelled clips.

Clips: 2 s, 10 fps, 160x120, real face photos with espeak speech or a voiced tone, 1 in 4 without an AU combination;
every clip has its own subtitle, so every prompt differs (identical prompts would be reasoned once).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emollm_merr.config import BuildConfig  # noqa: E402
from emollm_merr.pipeline import MERRBuilder  # noqa: E402
from tests.merr.openface_gen import Plant, write_openface_csv  # noqa: E402

EMOTIONS = [
    {"AU06": 2.0, "AU12": 2.0, "AU14": 2.0},  # happy
    {"AU01": 2.0, "AU02": 2.0, "AU05": 2.0, "AU26": 2.0},  # surprise
    {"AU01": 2.0, "AU04": 2.0, "AU15": 2.0, "AU14": 2.0},  # sad
    None,  # nothing fires
]
SENTENCES = ["I passed the exam", "Why would you do that", "I lost my keys again", "It is raining today"]


def make_clips(root: Path, n: int) -> tuple[Path, Path, Path]:
    from emollm.data.merr_files import write_transcriptions_csv
    from emollm.media.fixtures import make_face_clip

    videos, openface = root / "videos", root / "openface"
    videos.mkdir(parents=True)
    openface.mkdir(parents=True)
    for i in range(n):
        name = f"sample_{i:08d}"
        make_face_clip(
            videos / f"{name}.mp4",
            ("astronaut", "grace_hopper")[i % 2],
            seconds=2.0,
            fps=10,
            size=(160, 120),
            audio="speech" if i % 2 == 0 else "tone",
            text=SENTENCES[i % 4],
        )
        plant = EMOTIONS[i % 4]
        write_openface_csv(openface / f"{name}.csv", 20, [Plant(plant, 8, width=3)] if plant else [], seed=i)
    subtitles = write_transcriptions_csv(
        root / "transcription_en_all.csv", {f"sample_{i:08d}": f"{SENTENCES[i % 4]}, take {i}." for i in range(n)}
    )
    return videos, openface, subtitles


def config(videos: Path, openface: Path, out: Path, subtitles: Path | str, **over) -> BuildConfig:
    data = {
        "inputs": {
            "video_dir": str(videos),
            "openface_dir": str(openface),
            "subtitles": str(subtitles),
            "names": over.pop("names", None),
        },
        "reason": {"enabled": over.pop("reason", False), "max_new_tokens": over.pop("max_new_tokens", 160)},
        "output": {"dir": str(out)},
        "workers": over.pop("workers", 1),
    }
    return BuildConfig.from_dict(data)


def timed(cfg: BuildConfig) -> tuple[float, object]:
    t = time.perf_counter()
    result = MERRBuilder(cfg, progress=False).run()
    return time.perf_counter() - t, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer clips, shorter reasoning")
    parser.add_argument("--clips", type=int, default=None, help="number of generated clips (default 32; quick 8)")
    parser.add_argument("--llm-clips", type=int, default=None, help="labelled clips reasoned by SmolLM2 (8; quick 3)")
    parser.add_argument("--no-llm", action="store_true", help="skip the SmolLM2 row")
    parser.add_argument("--json", type=Path, default=Path("bench/out/merr.json"))
    args = parser.parse_args()
    n = args.clips or (8 if args.quick else 32)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_merr_") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        videos, openface, subs = make_clips(tmp, n)
        print(f"generated {n} clips in {time.perf_counter() - t:.1f} s", flush=True)

        def row(what: str, seconds: float, items: int, note: str = "") -> None:
            rows.append(
                {
                    "what": what,
                    "items": items,
                    "seconds": round(seconds, 3),
                    "per_minute": round(items / seconds * 60, 1) if seconds > 0 else None,
                    "note": note,
                }
            )
            print(f"  {what}: {items} in {seconds:.2f} s", flush=True)

        base = tmp / "w1"
        s, r = timed(config(videos, openface, base, subs))
        row("offline default (no LLM), workers=1", s, n, f"{r.summary['labelled']} labelled")
        s, _ = timed(config(videos, openface, tmp / "w2", subs, workers=2))
        row("offline default (no LLM), workers=2", s, n)
        s, _ = timed(config(videos, openface, tmp / "asr", "asr"))
        row("Whisper tiny.en subtitles instead of CSV (incl. load)", s, n)
        s, _ = timed(config(videos, openface, base, subs))
        row("resume, all cached", s, n)
        if not args.no_llm:
            tokens = 64 if args.quick else 160
            k = args.llm_clips or (3 if args.quick else 8)
            names = [
                x["name"] for x in map(json.loads, (base / "samples.jsonl").read_text().splitlines()) if x.get("label")
            ][:k]
            (tmp / "names.txt").write_text("\n".join(names) + "\n")
            cfg = config(
                videos, openface, tmp / "llm", subs, reason=True, max_new_tokens=tokens, names=str(tmp / "names.txt")
            )
            builder = MERRBuilder(cfg, progress=False)
            t = time.perf_counter()
            builder.reasoner._load()  # LLMReasoner: load apart from the per-sample time
            load = time.perf_counter() - t
            t = time.perf_counter()
            r = builder.run()
            reasoned = r.stats["reason"].computed
            row(
                f"SmolLM2-135M reasoning, max_new_tokens={tokens}",
                time.perf_counter() - t,
                reasoned,
                f"whole build of {len(names)} clips; model load {load:.1f} s apart; "
                f"{r.summary['fine']}/{reasoned} pass the filters",
            )
    width = max(len(r["what"]) for r in rows)
    title = f"MERR build ({os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']})"
    print(f"\n{title:<{width}}  {'items':>5}  {'seconds':>8}  {'per min':>8}  note")
    for r in rows:
        print(f"{r['what']:<{width}}  {r['items']:>5}  {r['seconds']:>8.2f}  {r['per_minute']:>8.1f}  {r['note']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"clips": n, "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
