"""The feature cache: run live encoders over media once, read the results with the ``precomputed`` encoder.

``emollm features extract --input DIR_OR_LIST --encoders whisper,fer --out CACHE`` writes, per encoder,

    CACHE/<folder>/manifest.json      encoder, modality, weights fingerprint, options, frame/face policy, output dim
    CACHE/<folder>/<name>.npy         (T, D) float32 features of sample <name> (the file stem)
    CACHE/<folder>/_missing/<name>.json   the sample has no such modality (no face, no audio track), with the reason
    CACHE/<folder>/failed.jsonl       samples that could not be read, with the reason (retried on the next run)

``<folder>`` is ``<encoder>-<hash of the manifest>`` unless ``--name`` fixes it (e.g. ``HL-UTT`` to mimic
Emotion-LLaMA's layout): a changed setting or changed weights never reuses stale features — it gets a new folder, or
with a fixed name, a refusal. Each feature file is written atomically, so a killed run resumes where it stopped and
never leaves a half-written file. ``modality_from_cache(folder)`` gives the ``ModalityConfig`` that trains on the
cache; it records how the features were made, so ``emollm analyze`` can recompute them live from a raw clip.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emollm.configuration import ModalityConfig
from emollm.encoders import ENCODERS, encoder_input
from emollm.utils.io import atomic_write_bytes

logger = logging.getLogger(__name__)

_LIVE_ENCODERS = [n for n, e in ENCODERS.items() if e.input != "features"]
MEDIA_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".wav", ".mp3", ".flac", ".m4a", ".jpg", ".jpeg", ".png"}
FORMAT_VERSION = 1


@dataclass
class ExtractSpec:
    """One encoder run over the inputs, with everything that changes its output."""

    encoder: str
    path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    frame_policy: str = "uniform:8"
    face_detector: str = "auto"
    min_audio_duration: float = 1.0

    def __post_init__(self) -> None:
        encoder_input(self.encoder)  # raises for an encoder that cannot extract from media

    @property
    def modality(self) -> str:
        return encoder_input(self.encoder)

    def media_kwargs(self) -> dict[str, Any]:
        """Arguments for ``emollm.media.load_sample`` that reproduce this spec's inputs."""
        return {
            "frame_policy": self.frame_policy,
            "face_detector": self.face_detector,
            "min_audio_duration": self.min_audio_duration,
        }


def build_live_encoder(spec: ExtractSpec) -> torch.nn.Module:
    from emollm.encoders import build_encoder

    encoder = build_encoder(spec.encoder, feature_dim=None, path=spec.path, **spec.options)
    return encoder.eval()


def weights_fingerprint(module: torch.nn.Module) -> str:
    """sha256 over the encoder's parameters and buffers (names, shapes, bytes): changes whenever the weights do."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)  # 1-D: 0-d tensors cannot be viewed as bytes
        digest.update(f"{name}:{tuple(tensor.shape)}:{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def make_manifest(spec: ExtractSpec, encoder: torch.nn.Module) -> dict[str, Any]:
    """The settings a cache folder's features depend on (no timestamps: equal settings give an equal manifest)."""
    return {
        "format": FORMAT_VERSION,
        "encoder": spec.encoder,
        "modality": spec.modality,
        "path": spec.path,
        "options": spec.options,
        "media": spec.media_kwargs(),
        "output_dim": int(encoder.output_dim),
        "weights_sha256": weights_fingerprint(encoder),
    }


def cache_folder_name(manifest: dict[str, Any]) -> str:
    blob = json.dumps(manifest, sort_keys=True).encode()
    return f"{manifest['encoder']}-{hashlib.sha256(blob).hexdigest()[:10]}"


def save_features(path: Path, features: np.ndarray) -> None:
    """Write a (T, D) float32 array as .npy, atomically."""
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(features, dtype=np.float32), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def open_cache_folder(root: Path, manifest: dict[str, Any], name: str | None = None) -> Path:
    """The folder for ``manifest`` under ``root`` (created); a fixed ``name`` holding other settings is refused."""
    folder = root / (name or cache_folder_name(manifest))
    folder.mkdir(parents=True, exist_ok=True)
    mfile = folder / "manifest.json"
    if mfile.exists():
        old = json.loads(mfile.read_text())
        if old != manifest:
            diff = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            raise ValueError(
                f"{folder} holds features made with other settings (differing: {', '.join(diff)}); "
                "use another --out or --name, or delete the folder to re-extract"
            )
    else:
        atomic_write_bytes(mfile, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return folder


def encoder_inputs(modality: str, sample) -> tuple[Any, torch.Tensor]:
    """(inputs batch of one, lengths) for a live tower from an ``emollm.media.MediaSample``."""
    if modality == "audio":
        wave = torch.from_numpy(np.ascontiguousarray(sample.audio, dtype=np.float32))
        return wave[None], torch.tensor([wave.shape[0]])  # (1, T_samples)
    if modality == "face":
        return torch.from_numpy(sample.faces)[None], torch.tensor([sample.faces.shape[0]])  # (1, N, S, S, 3)
    if modality == "video":
        return torch.from_numpy(sample.frames)[None], torch.tensor([sample.frames.shape[0]])  # (1, N, H, W, 3)
    if modality == "text":
        return [sample.text], torch.tensor([1])
    raise ValueError(f"unknown modality {modality!r}")


def sample_has(modality: str, sample) -> bool:
    value = {"audio": sample.audio, "face": sample.faces, "video": sample.frames, "text": sample.text}[modality]
    return value is not None


@torch.no_grad()
def encode_sample(encoder: torch.nn.Module, modality: str, sample) -> np.ndarray:
    """(T', D) float32 features of one MediaSample."""
    inputs, lengths = encoder_inputs(modality, sample)
    feats, out_lengths = encoder(inputs, lengths)  # (1, T', D)
    return feats[0, : int(out_lengths[0])].float().cpu().numpy()


def list_inputs(source: str | os.PathLike) -> list[Path]:
    """Media files of a folder (sorted, non-recursive), or the paths listed one per line in a text file."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in MEDIA_SUFFIXES and p.is_file())
        if not files:
            raise FileNotFoundError(f"{source} holds no media files ({', '.join(sorted(MEDIA_SUFFIXES))})")
    elif source.is_file():
        lines = [ln.strip() for ln in source.read_text().splitlines()]
        files = [
            Path(ln) if Path(ln).is_absolute() else source.parent / ln for ln in lines if ln and not ln.startswith("#")
        ]
        if not files:
            raise ValueError(f"{source} lists no files")
    else:
        raise FileNotFoundError(f"--input {source}: no such folder or list file")
    seen: dict[str, Path] = {}
    dups = []
    for f in files:
        if f.stem in seen:
            dups.append(f"{seen[f.stem]} / {f}")
        seen[f.stem] = f
    if dups:
        raise ValueError(f"sample names (file stems) must be unique; duplicates: {'; '.join(dups[:5])}")
    return files


@dataclass
class ExtractSummary:
    folder: Path
    extracted: int = 0
    cached: int = 0
    missing: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"{self.folder}: {self.extracted} extracted, {self.cached} already cached, "
            f"{len(self.missing)} missing the modality, {len(self.failed)} failed ({self.seconds:.1f}s)"
        )


def extract(
    inputs: Sequence[Path],
    spec: ExtractSpec,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    workers: int = 2,
    progress: bool = True,
    subtitles: dict[str, str] | None = None,
) -> ExtractSummary:
    """Extract ``spec``'s features for ``inputs`` into the cache under ``out``; resumable, atomic per sample."""
    from tqdm import tqdm

    from emollm.media import MediaError

    t0 = time.perf_counter()
    encoder = build_live_encoder(spec)
    folder = open_cache_folder(Path(out), make_manifest(spec, encoder), name)
    summary = ExtractSummary(folder)
    (folder / "_missing").mkdir(exist_ok=True)
    todo = []
    for path in inputs:
        if (folder / f"{path.stem}.npy").exists() or (folder / "_missing" / f"{path.stem}.json").exists():
            summary.cached += 1
        else:
            todo.append(path)
    modality = spec.modality
    bar = tqdm(total=len(todo), desc=f"{spec.encoder}", unit="clip", disable=not progress)
    failures: list[dict[str, str]] = []
    for path, result in _load(todo, spec, workers, subtitles or {}):
        stem = Path(path).stem
        if isinstance(result, MediaError):
            summary.failed[stem] = str(result)
            failures.append({"name": stem, "path": str(path), "reason": str(result)})
        elif not sample_has(modality, result):
            reason = result.missing.get(modality) or f"{path}: no {modality} (for text: no subtitle for {stem!r})"
            summary.missing[stem] = reason
            atomic_write_bytes(folder / "_missing" / f"{stem}.json", json.dumps({"reason": reason}).encode())
        else:
            try:
                save_features(folder / f"{stem}.npy", encode_sample(encoder, modality, result))
                summary.extracted += 1
            except (RuntimeError, ValueError) as e:  # a sample the encoder rejects must not stop the run
                summary.failed[stem] = f"{path}: {e}"
                failures.append({"name": stem, "path": str(path), "reason": str(e)})
        bar.update(1)
    bar.close()
    lines = "".join(json.dumps(f) + "\n" for f in failures)
    atomic_write_bytes(folder / "failed.jsonl", lines.encode())
    summary.seconds = time.perf_counter() - t0
    return summary


def _load(paths: Sequence[Path], spec: ExtractSpec, workers: int, subtitles: dict[str, str]):
    """(path, MediaSample | MediaError) in order: decoded media, or for text, the subtitle (CSV, else a .txt file)."""
    from types import SimpleNamespace

    from emollm.media import load_many

    if spec.modality == "text":
        for p in paths:
            text = subtitles.get(p.stem)
            if text is None and p.suffix == ".txt":
                text = p.read_text(encoding="utf-8").strip() or None
            yield p, SimpleNamespace(text=text, missing={} if text else {"text": f"no subtitle for {p.stem!r}"})
        return
    if spec.modality == "audio":
        kwargs = {"modalities": ["audio"], "min_audio_duration": spec.min_audio_duration}
    else:
        kwargs = {"modalities": [spec.modality], "frame_policy": spec.frame_policy, "face_detector": spec.face_detector}
    yield from load_many([str(p) for p in paths], workers=workers, **kwargs)


def modality_from_cache(folder: str | os.PathLike, projector: dict[str, Any] | None = None) -> ModalityConfig:
    """A ``precomputed`` branch reading ``folder``, remembering how its features were made."""
    folder = Path(folder)
    mfile = folder / "manifest.json"
    if not mfile.is_file():
        raise FileNotFoundError(f"{folder} is not an emollm feature cache (no manifest.json)")
    manifest = json.loads(mfile.read_text())
    data: dict[str, Any] = {
        "encoder": "precomputed",
        "feature_dim": manifest["output_dim"],
        "feature_dir": folder.name,
        "encoder_options": {"extracted_with": manifest},
    }
    if projector:
        data["projector"] = projector
    return ModalityConfig.from_dict(data, f"cache {folder}")


def spec_from_manifest(manifest: dict[str, Any]) -> ExtractSpec:
    """The ExtractSpec that made a cache (for recomputing its features live)."""
    media = manifest.get("media", {})
    return ExtractSpec(
        encoder=manifest["encoder"],
        path=manifest.get("path"),
        options=manifest.get("options", {}),
        frame_policy=media.get("frame_policy", "uniform:8"),
        face_detector=media.get("face_detector", "auto"),
        min_audio_duration=media.get("min_audio_duration", 1.0),
    )


def _parse_kv(items: Iterable[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"{what} expects NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def main(argv: list[str]) -> int:
    """``emollm features extract ...``."""
    parser = argparse.ArgumentParser(prog="emollm features", description="Feature cache for live encoders.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("extract", help="extract features of media files into a cache")
    ex.add_argument("--input", required=True, help="a folder of media files or a text file listing paths")
    ex.add_argument("--encoders", required=True, help=f"comma-separated: {', '.join(sorted(_LIVE_ENCODERS))}")
    ex.add_argument("--out", required=True, help="cache root")
    ex.add_argument("--encoder-path", action="append", default=[], metavar="ENC=PATH", help="local weights per encoder")
    ex.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="ENC.KEY=VALUE",
        help='encoder option (JSON value), e.g. whisper.pooling="utterance" or hubert.layer=-1',
    )
    ex.add_argument("--frame-policy", default="uniform:8")
    ex.add_argument("--face-detector", default="auto", choices=["auto", "mtcnn", "haar"])
    ex.add_argument("--min-audio-duration", type=float, default=1.0)
    ex.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="ENC=FOLDER",
        help="fixed folder name per encoder (e.g. hubert=HL-UTT)",
    )
    ex.add_argument("--subtitles", help="CSV name,sentence for the minilm text encoder")
    ex.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        files = list_inputs(args.input)
        paths = _parse_kv(args.encoder_path, "--encoder-path")
        names = _parse_kv(args.name, "--name")
        options: dict[str, dict[str, Any]] = {}
        for key, value in _parse_kv(args.option, "--option").items():
            enc, _, opt = key.partition(".")
            if not opt:
                raise ValueError(f"--option expects ENC.KEY=VALUE, got {key!r}")
            try:
                options.setdefault(enc, {})[opt] = json.loads(value)
            except json.JSONDecodeError:
                options.setdefault(enc, {})[opt] = value
        subtitles = None
        if args.subtitles:
            from emollm.data.merr_files import read_transcriptions_csv

            subtitles = dict(read_transcriptions_csv(args.subtitles))
        specs = [
            ExtractSpec(
                e.strip(),
                path=paths.get(e.strip()),
                options=options.get(e.strip(), {}),
                frame_policy=args.frame_policy,
                face_detector=args.face_detector,
                min_audio_duration=args.min_audio_duration,
            )
            for e in args.encoders.split(",")
            if e.strip()
        ]
    except (OSError, ValueError) as e:
        print(f"emollm features: {e}", file=sys.stderr)
        return 2
    status = 0
    for spec in specs:
        try:
            summary = extract(
                files, spec, args.out, name=names.get(spec.encoder), workers=args.workers, subtitles=subtitles
            )
        except (OSError, ValueError, ImportError) as e:
            print(f"emollm features: {spec.encoder}: {e}", file=sys.stderr)
            status = 2
            continue
        print(summary.line())
        for stem, reason in list(summary.missing.items())[:10]:
            print(f"  missing {stem}: {reason}")
        for stem, reason in list(summary.failed.items())[:10]:
            print(f"  failed  {stem}: {reason}")
        if len(summary.missing) + len(summary.failed) > 20:
            print(f"  (all reasons: {summary.folder}/_missing/ and {summary.folder}/failed.jsonl)")
    return status
