"""Media and feature-cache benchmark: extraction cold vs warm, training on cached vs live features, stage times.

Run: ``make bench`` or ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_media.py [--quick]``. Clips are generated
(real face photos, synthetic tone audio), so the numbers are about throughput, not accuracy.
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from emollm.encoders import FeatureStore, build_encoder  # noqa: E402
from emollm.jobs.features import ExtractSpec, extract, modality_from_cache  # noqa: E402
from emollm.media import fixtures, load_sample, probe, read_frames, sample_frame_indices  # noqa: E402
from emollm.media.audio import load_audio  # noqa: E402
from emollm.media.faces import build_face_detector, detect_faces  # noqa: E402
from emollm.model.configuration import ModalityConfig  # noqa: E402
from emollm.model.processing import Sample  # noqa: E402

SPECS = [
    ExtractSpec("fer", frame_policy="uniform:8", face_detector="haar"),
    ExtractSpec("whisper", options={"pooling": "utterance"}),
]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def bench_extraction(clips: list[Path], cache: Path) -> list[dict]:
    rows = []
    for spec in SPECS:
        cold, t_cold = timed(lambda spec=spec: extract(clips, spec, cache, progress=False, workers=2))
        warm, t_warm = timed(lambda spec=spec: extract(clips, spec, cache, progress=False, workers=2))
        assert warm.cached == len(clips)
        rows.append(
            {
                "encoder": spec.encoder,
                "clips": len(clips),
                "cold_clips_per_s": len(clips) / t_cold,
                "warm_clips_per_s": len(clips) / t_warm,
                "speedup": t_cold / t_warm,
            }
        )
    return rows


def bench_training(clips: list[Path], cache: Path, steps: int) -> dict:
    """Samples/s of a tiny-LLM train step fed by live media+encoders vs by the feature cache."""
    from emollm.backbones import get_backbone, get_chat_format
    from emollm.model.factory import build_model
    from emollm.testing import build_tiny_tokenizer

    tok = build_tiny_tokenizer(get_chat_format("chatml"))
    cfg = get_backbone("smollm2").text_config(n_layers=2, hidden=64, vocab_size=len(tok))
    folders = {s.encoder: extract(clips, s, cache, progress=False).folder for s in SPECS}
    live_mods = {
        "face": ModalityConfig(encoder="fer", feature_dim=7),
        "audio": ModalityConfig(encoder="whisper", feature_dim=384, encoder_options={"pooling": "utterance"}),
    }
    cached_mods = {"face": modality_from_cache(folders["fer"]), "audio": modality_from_cache(folders["whisper"])}
    msg = [{"role": "user", "content": "<face><audio> Emotion?"}, {"role": "assistant", "content": "happy"}]
    results = {}
    for kind, mods in (("live", live_mods), ("cached", cached_mods)):
        tokenizer = build_tiny_tokenizer(get_chat_format("chatml"))  # a fresh copy per model
        model, proc = build_model("smollm2", mods, text_config=cfg, tokenizer=tokenizer)
        opt = torch.optim.AdamW([p for n, p in model.named_parameters() if not n.startswith("towers.")], lr=1e-4)
        for p in model.towers.parameters():
            p.requires_grad_(False)
        model.train()
        stores = {m: FeatureStore(cache, c.feature_dir, c.feature_dim) for m, c in cached_mods.items()}

        def features(clip: Path, kind=kind, stores=stores) -> dict:
            if kind == "cached":
                return {m: s.load(clip.stem) for m, s in stores.items()}
            media = load_sample(clip, modalities=["audio", "face"], frame_policy="uniform:8", face_detector="haar")
            return {"face": torch.from_numpy(media.faces), "audio": torch.from_numpy(media.audio)}

        t = time.perf_counter()
        for step in range(steps):
            clip = clips[step % len(clips)]
            batch = proc([Sample(messages=msg, features=features(clip))])
            model(**batch.model_inputs()).loss.backward()
            opt.step()
            opt.zero_grad()
        results[kind] = steps / (time.perf_counter() - t)
    return {
        "live_samples_per_s": results["live"],
        "cached_samples_per_s": results["cached"],
        "speedup": results["cached"] / results["live"],
    }


def bench_stages(clip: Path) -> list[tuple[str, float]]:
    rows = []
    info, t = timed(lambda: probe(clip))
    rows.append(("probe", t))
    idx = sample_frame_indices(info.frames, "uniform:8")
    frames, t = timed(lambda: read_frames(clip, idx))
    rows.append(("decode 8 frames", t))
    _, t = timed(lambda: load_audio(clip, sample_rate=16000))
    rows.append(("decode audio (16 kHz)", t))
    for name in ("haar", "mtcnn"):
        try:
            det = build_face_detector(name)
        except ImportError:
            continue
        _, t = timed(lambda det=det: detect_faces(det, frames))
        rows.append((f"face detection ({name}, 8 frames)", t))
    media = load_sample(clip, modalities=["audio", "face"], frame_policy="uniform:8", face_detector="haar")
    for enc, modality in (("fer", "face"), ("whisper", "audio")):
        encoder = build_encoder(enc, feature_dim=None).eval()
        x = torch.from_numpy(media.faces if modality == "face" else media.audio)[None]
        with torch.no_grad():
            encoder(x, torch.tensor([x.shape[1]]))  # warm-up
            _, t = timed(lambda encoder=encoder, x=x: encoder(x, torch.tensor([x.shape[1]])))
        rows.append((f"encoder {enc}", t))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, default=Path("bench/out/media.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    n = 4 if args.quick else 8
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clips = []
        for i in range(n):
            photo = "astronaut" if i % 2 == 0 else "grace_hopper"
            clips.append(fixtures.make_face_clip(root / f"clip{i}.mp4", photo=photo, seconds=2.0, audio="tone").path)
        long_clip = fixtures.make_face_clip(root / "ten.mp4", seconds=10.0, audio="tone").path
        extraction = bench_extraction(clips, root / "cache")
        training = bench_training(clips, root / "cache2", steps=n * 2)
        stages = bench_stages(long_clip)
    print(f"\nFeature extraction, {n} generated 2 s clips (2 decode workers)")
    print(f"{'encoder':<8} {'cold clips/s':>13} {'warm clips/s':>13} {'warm/cold':>10}")
    for r in extraction:
        print(f"{r['encoder']:<8} {r['cold_clips_per_s']:>13.2f} {r['warm_clips_per_s']:>13.1f} {r['speedup']:>9.0f}x")
    print("\nTraining step (tiny LLM, face+audio branches), features from live media+encoders vs the cache")
    print(f"{'live samples/s':>15} {'cached samples/s':>17} {'cached/live':>12}")
    print(
        f"{training['live_samples_per_s']:>15.2f} {training['cached_samples_per_s']:>17.2f} "
        f"{training['speedup']:>11.1f}x"
    )
    print("\nStages of one 10 s clip (320x240, 10 fps)")
    for name, t in stages:
        print(f"  {name:<34} {t * 1000:>8.1f} ms")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"date": time.strftime("%Y-%m-%d"), "extraction": extraction, "training": training, "stages": stages},
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
