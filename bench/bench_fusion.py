"""Fusion baselines benchmark: training time per epoch, latency per clip and accuracy of every fusion method.

Run: ``make bench`` (all benchmarks) or ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_fusion.py [--quick]``.
Synthetic cached features (``emollm.fusion.data.synthetic_task("both")``: the label needs audio *and* face), the
same data and seed for every method, speaker-free random split 60/20/20. ``s/epoch`` is the mean over the epochs
after the first; ``latency`` is one clip at a time (batch 1, eval mode, mean over 64 clips), ``clips/s`` batched
(256). ``--quick`` (~15 s) uses 300 clips of 64/32-d features; the full run 1,200 clips of 1024-d audio and
face features (HuBERT-large / FaceMAE widths) with 16 steps. Also times openSMILE eGeMAPS on a 2 s clip, the
classic audio feature's cost per clip.

For scale, the LLM path (bench/RESULTS.md, not run here): feature extraction alone costs ~440 ms per 2 s clip for
Whisper tiny on this CPU (bench_media), and evaluating even the tiny random 2-layer backbones takes 4-8 ms per
sample (bench_backbones); a real 7B LLM is orders of magnitude slower. The fusion heads below run in well under
a millisecond per clip.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from emollm.fusion.data import synthetic_task  # noqa: E402
from emollm.fusion.registry import FUSION_METHODS, build_fusion_model  # noqa: E402
from emollm.fusion.trainer import evaluate, to_tensors, train_model  # noqa: E402


def _latency(model, data, n: int = 64) -> tuple[float, float]:
    model.eval()
    x, present = to_tensors(data, model.modalities)
    with torch.no_grad():
        model({m: v[:1] for m, v in x.items()}, {m: v[:1] for m, v in present.items()})  # warm-up
        t0 = time.perf_counter()
        for i in range(min(n, len(data))):
            model({m: v[i : i + 1] for m, v in x.items()}, {m: v[i : i + 1] for m, v in present.items()})
        per_clip = (time.perf_counter() - t0) / min(n, len(data))
        t0 = time.perf_counter()
        for s in range(0, len(data), 256):
            model({m: v[s : s + 256] for m, v in x.items()}, {m: v[s : s + 256] for m, v in present.items()})
        rate = len(data) / (time.perf_counter() - t0)
    return per_clip * 1000, rate


def _egemaps_ms() -> str:
    try:
        from emollm.encoders.egemaps import build_egemaps_encoder
    except ImportError:
        return "n/a"
    try:
        enc = build_egemaps_encoder()
    except ImportError:
        return "n/a (pip install 'emollm[clues]')"
    wave = torch.from_numpy((0.1 * np.random.default_rng(0).normal(size=32000)).astype(np.float32))[None]
    enc(wave, torch.tensor([32000]))
    t0 = time.perf_counter()
    for _ in range(5):
        enc(wave, torch.tensor([32000]))
    return f"{(time.perf_counter() - t0) / 5 * 1000:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data (~15 s)")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    n, dims, steps, epochs = (
        (300, {"audio": 64, "face": 32}, 8, 15) if args.quick else (1200, {"audio": 1024, "face": 1024}, 16, 15)
    )
    epochs = args.epochs or epochs
    data = synthetic_task("both", n=n, dims=dims, steps=steps, seed=0)
    idx = np.random.default_rng(0).permutation(n)
    a, b = int(0.6 * n), int(0.8 * n)
    train, val, test = data.take(idx[:a]), data.take(idx[a:b]), data.take(idx[b:])
    print(
        f"Fusion methods on synthetic 'both' features: {n} clips, {steps} steps, dims {dims}, {epochs} epochs, batch 32"
    )
    header = f"{'method':<16}{'params':>9}{'s/epoch':>9}{'latency ms':>12}{'clips/s':>10}{'test acc':>10}"
    print(header)
    print("-" * len(header))
    runs = [("unimodal", ["audio"]), ("unimodal", ["face"])] + [(m, None) for m in FUSION_METHODS if m != "unimodal"]
    for method, mods in runs:
        d = {m: data.dims[m] for m in (mods or data.modalities)}
        torch.manual_seed(0)
        kw = {"modality_dropout": 0.3} if method == "transformer" else {}
        model = build_fusion_model(method, d, len(data.classes), hidden=64, steps=steps, **kw)
        params = sum(p.numel() for p in model.parameters())
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            train_model(model, train, val, tmp, epochs=epochs, patience=0)
            total = time.perf_counter() - t0
            lines = Path(tmp, "log.jsonl").read_text().splitlines()
        secs = [json.loads(line)["seconds"] for line in lines]
        per_epoch = float(np.mean(secs[1:])) if len(secs) > 1 else total / epochs
        ms, rate = _latency(model, test)
        acc = evaluate(model, test)["accuracy"]
        name = method if mods is None else f"{method}:{mods[0]}"
        print(f"{name:<16}{params:>9,}{per_epoch:>9.3f}{ms:>12.3f}{rate:>10.0f}{acc:>10.3f}")
    print(f"\nopenSMILE eGeMAPS functionals, one 2 s clip: {_egemaps_ms()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
