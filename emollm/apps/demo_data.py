"""The demo's data: a small audio-visual set with known labels, generated from what ships offline.

Every clip is **synthetic** and the files say so (``manifest.json``: ``"synthetic": true``). A clip is a real face
photo drifting over a gradient (scikit-image's smiling astronaut for *happy*, matplotlib's Grace Hopper for the
others) with espeak-ng reading an emotional sentence in a label-dependent voice (pitch, rate, volume; several
voices). So the label is carried jointly: the face separates *happy* from the rest, the words and the voice
separate *sad*, *angry* and *neutral*. Some clips have no audio track or a silent one, as real corpora do; for
those a non-happy label cannot be recovered, and the evaluation shows it.

Layout of ``out``::

    clips/<name>.mp4            every clip
    labels_train.txt            Emotion-LLaMA's ``N C E V`` list (name, frames, label, valence -10) of the train split
    labels_test.txt             the held-out split (never used for training or selection)
    clips_{train,test}.txt      the clips of each split, one path per line (``emollm analyze --list``)
    demo_clip.txt               the held-out clip (with speech) that ``make demo`` analyses at the end
    transcripts.csv             name,sentence (what espeak-ng said; clips without speech are absent)
    manifest.json               settings, counts, "synthetic": true

Example:
    >>> make_demo_set("runs/demo/data", per_label=2, quick=True)      # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from emollm.utils.io import atomic_write_json, atomic_write_text

__all__ = ["DEMO_LABELS", "SENTENCES", "VOICES", "DemoClip", "make_demo_set", "record_reproducibility"]

DEMO_LABELS: tuple[str, ...] = ("happy", "sad", "angry", "neutral")
"""The demo's classes (a subset of MER2023's six, in its order)."""

SENTENCES: dict[str, tuple[str, ...]] = {
    "happy": (
        "I passed the exam, this is wonderful news!",
        "We won the match, I am so happy!",
        "What a beautiful day, I love it!",
        "They loved my present, that makes me so glad!",
        "I got the job, this is the best day ever!",
        "My sister is coming home, how wonderful!",
    ),
    "sad": (
        "My grandmother passed away last night.",
        "I lost my job and I do not know what to do.",
        "Nobody came to my birthday party.",
        "I miss my old friends so much.",
        "The doctor said there is nothing more they can do.",
        "Our dog died this morning.",
    ),
    "angry": (
        "How dare you lie to me again!",
        "Get out of my house right now!",
        "You broke it and you did not even say sorry!",
        "I am sick of your excuses!",
        "Stop shouting at me, this is outrageous!",
        "You cheated me and I will not forget it!",
    ),
    "neutral": (
        "The meeting starts at ten tomorrow.",
        "Please put the files on the desk.",
        "The train leaves from platform four.",
        "I will send you the report on Monday.",
        "The store closes at six.",
        "We need two more chairs in the room.",
    ),
}
"""Sentences read by espeak-ng, per label."""

VOICES: dict[str, dict[str, int]] = {
    "happy": {"pitch": 75, "speed": 185, "amplitude": 140},
    "sad": {"pitch": 25, "speed": 115, "amplitude": 70},
    "angry": {"pitch": 55, "speed": 200, "amplitude": 190},
    "neutral": {"pitch": 45, "speed": 155, "amplitude": 110},
}
"""espeak-ng prosody per label (``-p`` pitch 0-99, ``-s`` words per minute, ``-a`` amplitude); each clip jitters
them a little and uses one of :data:`SPEAKERS`."""
SPEAKERS: tuple[str, ...] = ("en-us", "en+m3", "en+f3", "en-gb")
PHOTOS: dict[str, str] = {
    "happy": "astronaut",
    "sad": "grace_hopper",
    "angry": "grace_hopper",
    "neutral": "grace_hopper",
}


@dataclass(frozen=True)
class DemoClip:
    """One generated clip and its ground truth."""

    name: str
    label: str
    split: str
    photo: str
    audio: str
    """``speech``, ``none`` (no audio track) or ``silence`` (a silent track)."""
    sentence: str | None
    voice: dict[str, Any] | None
    frames: int


def _plan(per_label: int, test_fraction: float, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    plan = []
    for label in DEMO_LABELS:
        for i in range(per_label):
            audio = "speech"
            if i % 8 == 5:
                audio = "none"
            elif i % 8 == 7:
                audio = "silence"
            sentence = SENTENCES[label][i % len(SENTENCES[label])]
            v = VOICES[label]
            voice = {
                "pitch": max(0, min(99, v["pitch"] + rng.randint(-6, 6))),
                "speed": v["speed"] + rng.randint(-10, 10),
                "amplitude": v["amplitude"] + rng.randint(-10, 10),
                "speaker": SPEAKERS[(i + DEMO_LABELS.index(label)) % len(SPEAKERS)],
            }
            plan.append({"label": label, "audio": audio, "sentence": sentence, "voice": voice, "i": i})
    rng.shuffle(plan)
    n_test = max(len(DEMO_LABELS), round(test_fraction * len(plan)))
    # Stratified: the first test_fraction of each label (in shuffled order) is held out.
    quota = {lab: max(1, round(n_test / len(DEMO_LABELS))) for lab in DEMO_LABELS}
    for j, p in enumerate(plan):
        p["name"] = f"demo_{j:03d}"
        if quota[p["label"]] > 0:
            p["split"] = "test"
            quota[p["label"]] -= 1
        else:
            p["split"] = "train"
    return plan


def make_demo_set(
    out: str | Path, *, per_label: int = 12, test_fraction: float = 0.33, seconds: float = 2.5, seed: int = 0,
    quick: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Generate the demo set into ``out`` (skipped when ``out/manifest.json`` records the same settings).

    Args:
        out: Output folder.
        per_label: Clips per label.
        test_fraction: Held-out share (stratified by label).
        seconds: Clip length.
        seed: Seed of the plan (sentences, voices, splits).
        quick: Small clips (256x192) for tests and CI.

    Returns:
        The manifest.

    Raises:
        RuntimeError: espeak-ng is not installed (``apt-get install espeak-ng``).
    """
    from emollm.media import fixtures

    out = Path(out)
    # version 3: lossless clips (their decoded frames are the same on every run)
    settings = {"per_label": per_label, "test_fraction": test_fraction, "seconds": seconds, "seed": seed,
                "quick": quick, "version": 3}  # fmt: skip
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("settings") == settings:
            return old
    size = (256, 192) if quick else (320, 240)
    clips: list[DemoClip] = []
    (out / "clips").mkdir(parents=True, exist_ok=True)
    for p in _plan(per_label, test_fraction, seed):
        path = out / "clips" / f"{p['name']}.mp4"
        photo = PHOTOS[p["label"]]
        kind = None if p["audio"] == "none" else p["audio"]
        clip = fixtures.make_face_clip(
            path, photo, seconds=seconds, size=size, audio=kind, text=p["sentence"],
            voice=p["voice"] if kind == "speech" else None, lossless=True,
        )  # fmt: skip
        clips.append(
            DemoClip(
                p["name"],
                p["label"],
                p["split"],
                photo,
                p["audio"],
                p["sentence"] if p["audio"] == "speech" else None,
                p["voice"] if p["audio"] == "speech" else None,
                clip.frames,
            )  # fmt: skip
        )
    clips.sort(key=lambda c: c.name)
    for split in ("train", "test"):
        rows = [f"{c.name} {c.frames} {c.label} -10\n" for c in clips if c.split == split]
        atomic_write_text(out / f"labels_{split}.txt", "".join(rows))
    for split in ("train", "test"):  # media lists for `emollm analyze --list` (paths relative to this folder)
        atomic_write_text(
            out / f"clips_{split}.txt", "".join(f"clips/{c.name}.mp4\n" for c in clips if c.split == split)
        )
    # The clip `make demo` analyses at the end: held out, with speech, preferably not the face-only "happy".
    shown = next((c for c in clips if c.split == "test" and c.sentence and c.label != "happy"), None) or next(
        c for c in clips if c.split == "test"
    )
    atomic_write_text(out / "demo_clip.txt", f"clips/{shown.name}.mp4\n")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "sentence"])
    for c in clips:
        if c.sentence:
            w.writerow([c.name, c.sentence])
    atomic_write_text(out / "transcripts.csv", buf.getvalue())
    manifest = {
        "synthetic": True,
        "note": "Generated clips (real face photos + espeak-ng speech); says nothing about real-world accuracy.",
        "labels": list(DEMO_LABELS),
        "settings": settings,
        "counts": {s: sum(c.split == s for c in clips) for s in ("train", "test")},
        "audio": {k: sum(c.audio == k for c in clips) for k in ("speech", "none", "silence")},
        "clips": [asdict(c) for c in clips],
    }
    atomic_write_json(manifest_path, manifest)
    return manifest


# ------------------------------------------------------------------------------------------------ reproducibility

VERSIONED = ("emollm", "torch", "transformers", "peft", "accelerate", "numpy", "scikit-learn", "av", "decord",
             "opencv-python-headless", "mediapipe", "praat-parselmouth", "safetensors", "llama_cpp_python")  # fmt: skip
"""Distributions whose versions the demo's report records (a missing one is recorded as absent)."""


def _sha256_files(paths: list[Path]) -> str | None:
    import hashlib

    if not paths:
        return None
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _decoded_fingerprint(paths: list[Path]) -> str | None:
    """sha256 of the decoded frames and audio samples of ``paths`` (what the features see, unlike the bytes)."""
    import hashlib

    if not paths:
        return None
    import av

    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        try:
            for kind in ("video", "audio"):
                with av.open(str(p)) as c:
                    streams = getattr(c.streams, kind)
                    for frame in c.decode(streams[0]) if streams else ():
                        h.update(frame.to_ndarray().tobytes())
        except (av.error.FFmpegError, OSError):  # a clip that does not decode is part of the fingerprint, by name
            h.update(b"undecodable")
    return h.hexdigest()[:16]


def _clue_fingerprint(path: Path) -> str | None:
    """sha256 of the clue mode's answers (clip, label, probabilities), not of its timings and paths."""
    import hashlib

    if not path.is_file():
        return None
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
            rows.append([Path(rec["file"]).name, rec.get("label"), rec.get("probabilities")])
        except (ValueError, KeyError, TypeError):
            continue
    return hashlib.sha256(json.dumps(sorted(rows, key=str), sort_keys=True).encode()).hexdigest()[:16]


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def library_versions() -> dict[str, str | None]:
    """Python, the packages of :data:`VERSIONED`, espeak-ng, the machine and the thread setting."""
    import os
    import platform
    import shutil
    import subprocess
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    espeak = shutil.which("espeak-ng")
    if espeak:
        proc = subprocess.run([espeak, "--version"], capture_output=True, text=True, timeout=10)
        first = (proc.stdout.strip().splitlines() or [""])[0]
        out["espeak-ng"] = first.split("Data at:")[0].strip().removeprefix("eSpeak NG text-to-speech:").strip() or None
    out["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip() + f", {os.cpu_count()} cores"
    out["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS")
    return out


def record_reproducibility(demo: str | Path) -> dict[str, Any]:
    """What ``make demo`` ran with, from the files it wrote under ``demo``: every seed, how each stochastic step
    was made deterministic, fingerprints of each step's output (two runs whose fingerprints agree up to a step made
    the same files up to there) and the library versions. Written to ``report/reproducibility.json``, and a
    "Reproducibility" section is appended to ``report/compare.md``."""
    demo = Path(demo)
    manifest = _json(demo / "data" / "manifest.json") or {}
    merr = _json(demo / "merr" / "summary.json") or {}
    baseline = _json(demo / "eval" / "baseline" / "baseline.json") or {}
    compare = _json(demo / "report" / "compare.json") or {}

    def train_seed(stage: str) -> Any:
        return ((_json(demo / stage / "run_config.json") or {}).get("train") or {}).get("seed")

    evals = {k: _json(demo / "eval" / k / "metrics.json") or {} for k in ("untrained", "trained")}
    steps = {
        "data": {
            "seed": (manifest.get("settings") or {}).get("seed"),
            "what": "sentences, voice jitter, speakers and the stratified train/test split (random.Random(seed)); "
            "espeak-ng is deterministic; clips are encoded losslessly, so their decoded frames are the generated "
            "ones (the file bytes may differ, the pixels do not)",
            "pixels_sha256": _decoded_fingerprint(sorted((demo / "data" / "clips").glob("*.mp4"))),
            "sha256": {
                "clips": _sha256_files(list((demo / "data" / "clips").glob("*.mp4"))),
                "labels": _sha256_files(list((demo / "data").glob("labels_*.txt"))),
            },
        },
        "merr": {
            "sampling": [r.get("sampling") for r in merr.get("reasoning_produced_by", [])],
            "engine": [r.get("engine") for r in merr.get("reasoning_produced_by", [])],
            "sha256": _sha256_files(list((demo / "merr").glob("MERR_*_grained.json"))),
        },
        "features": {
            enc: _sha256_files(list((demo / "features" / enc).glob("*.npy"))) for enc in ("whisper", "fer")
        },
        "pretrain": {"seed": train_seed("pretrain/final"),
                     "sha256": _sha256_files(list((demo / "pretrain" / "final").glob("*.safetensors")))},
        "instruct": {"seed": train_seed("instruct/final"),
                     "sha256": _sha256_files(list((demo / "instruct" / "final").glob("*.safetensors")))},
        "untrained": {"seed": train_seed("untrained/init"),
                      "sha256": _sha256_files(list((demo / "untrained" / "init").glob("*.safetensors")))},
        "eval": {k: {"bootstrap_seed": v.get("bootstrap_seed"), "n_bootstrap": v.get("n_bootstrap"),
                     "sha256": _sha256_files(list((demo / "eval" / k).glob("predictions.jsonl")))}
                 for k, v in evals.items()},
        "clue mode": {"sha256": _clue_fingerprint(demo / "eval" / "clues.jsonl")},
        "fusion baseline": {
            "seed": baseline.get("seed"), "solver": baseline.get("solver"), "near_ties": baseline.get("near_ties"),
            "sha256": _sha256_files([p for p in [demo / "eval" / "baseline" / "predictions.csv"] if p.is_file()]),
        },
        "report": {"bootstrap_seed": compare.get("seed"), "n_bootstrap": compare.get("n_bootstrap")},
    }  # fmt: skip
    record = {"demo": str(demo), "steps": steps, "versions": library_versions()}
    atomic_write_json(demo / "report" / "reproducibility.json", record)
    ties = (steps["fusion baseline"]["near_ties"] or {}).get("n")
    md = demo / "report" / "compare.md"
    if md.is_file():
        text = md.read_text(encoding="utf-8").split("\n## Reproducibility")[0].rstrip("\n")
        v = record["versions"]
        lines = [
            "",
            "## Reproducibility",
            "",
            f"Seeds: data {steps['data']['seed']}, stage 1 {steps['pretrain']['seed']}, stage 2 "
            f"{steps['instruct']['seed']}, untrained {steps['untrained']['seed']}, bootstrap "
            f"{steps['report']['bootstrap_seed']}; MERR reasoning and evaluation decode greedily; the fusion "
            "baseline has no random step (zero init, float64 LBFGS on one thread)"
            + (
                f" and {ties} near-tie prediction(s) that float noise could flip on another machine."
                if ties
                else " and no near-tie predictions."
            ),  # fmt: skip
            f"Versions: python {v['python']}, emollm {v['emollm']}, torch {v['torch']}, transformers "
            f"{v['transformers']}, peft {v['peft']}, numpy {v['numpy']}, espeak-ng {v.get('espeak-ng')}; "
            f"OMP_NUM_THREADS={v['OMP_NUM_THREADS']}. Per-step fingerprints: reproducibility.json (two runs agree "
            "up to the first step whose sha256 differs).",
            "",
        ]
        atomic_write_text(md, text + "\n" + "\n".join(lines))
    return record
