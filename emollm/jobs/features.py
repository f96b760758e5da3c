"""The feature cache: run live encoders over media once, read the results with the ``precomputed`` encoder.

``emollm features extract --input DIR_OR_LIST --encoders whisper,fer --out CACHE`` writes, per encoder,

    CACHE/<folder>/manifest.json      encoder, modality, weights fingerprint, options, frame/face policy, output dim
    CACHE/<folder>/<name>.npy         (T, D) float32 features of sample <name> (the file stem)
    CACHE/<folder>/_missing/<name>.json   the sample has no such modality (no face, no audio track), with the reason
    CACHE/<folder>/failed.jsonl       samples that could not be read, with the reason (retried on the next run)

``<folder>`` is ``<encoder>-<hash of the manifest>`` unless ``--name`` fixes it (e.g. ``HL-UTT`` to mimic
Emotion-LLaMA's layout; one plain folder name, never a path): a changed setting or changed weights never reuses stale
features — it gets a new folder, or with a fixed name, a refusal. Each feature file is written atomically, so a killed
run resumes where it stopped and never leaves a half-written file; a run removes the temp files (``.*.tmp``) a killed
run left. ``modality_from_cache(folder)`` gives the ``ModalityConfig`` that trains on the cache; it records how the
features were made, so ``emollm analyze`` can recompute them live from a raw clip.

Reliability:

* One writer per folder: a run holds an exclusive lock (``flock``) on ``<folder>/.lock``, which names its pid; a
  second run on the same folder is refused with a message naming the folder and that process.
* Options are checked once, before any file is read (frame policy, padding length, ``--option`` keys, ``--name``);
  a bad value exits 2 with one line naming the option (``--debug`` shows the traceback).
* Media are decoded in child processes (``--no-isolate`` to decode in threads instead): a decoder that aborts on a
  hostile file costs that file, reported as failed, not the batch. Headers are checked against
  :class:`emollm.media.MediaLimits` first (raise them with ``EMOLLM_MAX_*``).
* Every input that fails is reported with its reason (folders, FIFOs and symlink loops in a folder included).
  Exit status: 0 when every input was extracted, cached or recorded as missing its modality; 1 when some failed;
  2 when none succeeded or the run could not start.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emollm.encoders import ENCODERS, encoder_input
from emollm.jobs.distributed import Job
from emollm.model.configuration import ModalityConfig
from emollm.utils.io import atomic_write_bytes

logger = logging.getLogger(__name__)

_LIVE_ENCODERS = [n for n, e in ENCODERS.items() if e.input != "features"]
MEDIA_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".wav", ".mp3", ".flac", ".m4a", ".jpg", ".jpeg", ".png"}
FORMAT_VERSION = 1
LOCK_NAME = ".lock"


class CacheBusy(RuntimeError):
    """Another process is writing the same cache folder; the message names the folder and that process."""


def check_folder_name(name: str, what: str = "--name") -> str:
    """Returns ``name`` if it is one plain folder name (no separators, ``..``, absolute paths); else ``ValueError``."""
    bad = (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or (os.altsep is not None and os.altsep in name)
        or os.path.isabs(name)
    )
    if bad:
        raise ValueError(
            f"{what} {name!r}: must be one plain folder name inside --out (no '/', '\\', '..' or absolute path), "
            "e.g. HL-UTT"
        )
    return name


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
        from emollm.media.load import check_min_audio_duration
        from emollm.media.video import sample_frame_indices

        modality = encoder_input(self.encoder)  # raises for an encoder that cannot extract from media
        if not isinstance(self.options, dict):
            raise ValueError(f"options of {self.encoder} must be a dict, got {type(self.options).__name__}")
        if modality in ("face", "video"):
            if self.frame_policy.strip().lower() == "peak":
                raise ValueError("--frame-policy peak needs per-frame scores, which extraction has none of; use middle")
            try:
                sample_frame_indices(1, self.frame_policy, scores=[0.0], fps=1.0)
            except ValueError as e:
                raise ValueError(f"--frame-policy {self.frame_policy}: {e}") from None
        if self.face_detector not in ("auto", "mtcnn", "haar"):
            raise ValueError(f"--face-detector {self.face_detector!r}: choose auto, mtcnn or haar")
        check_min_audio_duration(self.min_audio_duration, 16000, name="--min-audio-duration")

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
    """The spec's encoder in eval mode.

    Raises:
        ValueError: An option the encoder does not take (naming ``--option ENC.KEY``) or a value it rejects.
    """
    from emollm.encoders import build_encoder

    try:
        encoder = build_encoder(spec.encoder, feature_dim=None, path=spec.path, **spec.options)
    except TypeError as e:  # an unknown keyword: name the option, not the class deep inside
        bad = [k for k in spec.options if repr(k) in str(e) or f"'{k}'" in str(e)]
        key = bad[0] if bad else next(iter(spec.options), "?")
        raise ValueError(
            f"--option {spec.encoder}.{key}: {spec.encoder} does not take option {key!r} ({e}); "
            f"given options: {', '.join(sorted(spec.options)) or 'none'}"
        ) from e
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


@contextlib.contextmanager
def lock_cache_folder(folder: Path) -> Iterator[Path]:
    """Holds an exclusive lock on ``folder`` (created) for one writer; removes temp files a killed writer left.

    The lock is ``flock`` on ``<folder>/.lock``, released by the kernel when the process dies, so a killed run never
    leaves a stale lock; the file holds the owner's pid, host and start time for the refusal message.

    Raises:
        CacheBusy: Another process (or another call in this one) holds the lock.
    """
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): unlocked, as before
        fcntl = None
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
                raise CacheBusy(
                    f"{folder} is being written by another `emollm features extract` ({owner}); wait for it to "
                    "finish, or use another --out or --name"
                ) from None
        stamp = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, stamp.encode() + b"\n", 0)
        for sub in (folder, folder / "_missing"):  # temp files of a killed writer: never trusted, never kept
            for tmp in sub.glob(".*.tmp") if sub.is_dir() else ():
                with contextlib.suppress(OSError):
                    tmp.unlink()
        yield folder
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # releases the lock


def open_cache_folder(root: Path, manifest: dict[str, Any], name: str | None = None) -> Path:
    """The folder for ``manifest`` under ``root`` (created); a fixed ``name`` holding other settings is refused.

    Call it while holding :func:`lock_cache_folder` on the folder, so two writers cannot both write a manifest.

    Raises:
        ValueError: ``name`` is not one plain folder name, the folder holds other settings, or its manifest is
            unreadable.
    """
    if name is not None:
        check_folder_name(name)
    folder = root / (name or cache_folder_name(manifest))
    folder.mkdir(parents=True, exist_ok=True)
    mfile = folder / "manifest.json"
    if mfile.exists():
        try:
            old = json.loads(mfile.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{mfile} is unreadable ({e}); delete the folder to re-extract") from None
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
def encode_sample(encoder: torch.nn.Module, modality: str, sample, device: str | None = None) -> np.ndarray:
    """(T', D) float32 features of one MediaSample (inputs moved to ``device`` when given: the encoder's device)."""
    inputs, lengths = encoder_inputs(modality, sample)
    if device is not None and isinstance(inputs, torch.Tensor):
        inputs, lengths = inputs.to(device), lengths.to(device)
    feats, out_lengths = encoder(inputs, lengths)  # (1, T', D)
    return feats[0, : int(out_lengths[0])].float().cpu().numpy()


def list_inputs(source: str | os.PathLike, *, skipped: list[str] | None = None) -> list[Path]:
    """Media files of a folder (sorted, non-recursive), or the paths listed one per line in a text file.

    In a folder, every entry named like a media file is an input even when it is not a regular file (a folder or a
    FIFO named ``clip.mp4``, a broken symlink, a symlink loop): extraction then reports it as failed with the real
    reason. Every other entry (sub-folders, other file types, hidden media files) gets a line in ``skipped``.
    """
    source = Path(source)
    if source.is_dir():
        files, skipped = [], skipped if skipped is not None else []
        for p in sorted(source.iterdir()):
            if p.name.startswith("."):  # hidden: macOS ._clip.mp4 twins, editors' temp files
                if p.suffix.lower() in MEDIA_SUFFIXES:
                    skipped.append(f"{p}: a hidden file, skipped")
            elif p.suffix.lower() in MEDIA_SUFFIXES:
                files.append(p)
            else:
                skipped.append(f"{p}: {_entry_kind(p)}, skipped")
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


def _entry_kind(p: Path) -> str:
    import errno
    import stat

    try:
        mode = os.stat(p).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symlink loop"
        if e.errno == errno.ENOENT and p.is_symlink():
            return "a broken symlink"
        return f"unreadable ({e.strerror})"
    if stat.S_ISDIR(mode):
        return "a folder (not searched: only the top level of --input is read)"
    if stat.S_ISREG(mode):
        return f"not a media file ({p.suffix or 'no extension'})"
    return "not a regular file"


@dataclass
class ExtractSummary:
    folder: Path
    extracted: int = 0
    cached: int = 0
    missing: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)
    """The rows of ``failed.jsonl`` (name, path, reason), in input order."""

    def line(self) -> str:
        return (
            f"{self.folder}: {self.extracted} extracted, {self.cached} already cached, "
            f"{len(self.missing)} missing the modality, {len(self.failed)} failed ({self.seconds:.1f}s)"
        )

    @property
    def succeeded(self) -> int:
        """Inputs with a usable outcome: features written (now or before) or the modality recorded as missing."""
        return self.extracted + self.cached + len(self.missing)


def extract(
    inputs: Sequence[Path],
    spec: ExtractSpec,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    workers: int = 2,
    progress: bool = True,
    subtitles: dict[str, str] | None = None,
    encoder: torch.nn.Module | None = None,
    isolate: bool = True,
    debug: bool = False,
    job: Job | None = None,
    device: str | None = None,
) -> ExtractSummary:
    """Extract ``spec``'s features for ``inputs`` into the cache under ``out``; resumable, atomic per sample.

    Under a launcher (``job`` distributed), each rank extracts its cost-balanced shard of ``inputs`` into the same
    folder (rank 0 holds the folder's lock for the whole job and writes ``failed.jsonl``); every rank returns the
    summary of the whole job, equal to the single process's.

    Args:
        inputs: Media files (e.g. from :func:`list_inputs`).
        spec: The encoder and media settings.
        out: The cache root.
        name: A fixed folder name (one plain name) instead of ``<encoder>-<hash>``.
        workers: Parallel decoders.
        progress: Show a progress bar.
        subtitles: Name -> transcript, for text encoders.
        encoder: The already built encoder of ``spec`` (built here when ``None``).
        isolate: Decode in child processes, so a decoder that aborts costs one file (~1 s to start them).
        debug: Re-raise unexpected per-file errors instead of recording them.
        job: The data-parallel job (:mod:`emollm.jobs.distributed`); None or one process: the whole list here.
        device: Where the encoder runs (``cuda`` = this rank's GPU under a launcher); None: where it is.

    Raises:
        CacheBusy: Another process is writing the folder.
        ValueError: A bad ``name``, the folder holds features made with other settings, or (distributed) the ranks
            built the encoder with different weights.
    """
    t0 = time.perf_counter()
    encoder = build_live_encoder(spec) if encoder is None else encoder
    if device is not None:
        device = job.resolve_device(device) if job is not None else device
        encoder = encoder.to(device)
    manifest = make_manifest(spec, encoder)
    if name is not None:
        check_folder_name(name)
    folder = Path(out) / (name or cache_folder_name(manifest))
    if job is not None and job.distributed:
        summary = _extract_distributed(job, inputs, spec, encoder, manifest, Path(out), name, folder, progress,
                                       dict(workers=workers, subtitles=subtitles, isolate=isolate, debug=debug,
                                            device=device))  # fmt: skip
    else:
        with lock_cache_folder(folder):
            folder = open_cache_folder(Path(out), manifest, name)
            summary = _extract_locked(inputs, spec, encoder, folder, progress=progress, workers=workers,
                                      subtitles=subtitles, isolate=isolate, debug=debug, device=device)  # fmt: skip
        _write_failed(folder, summary.failures)
    summary.seconds = time.perf_counter() - t0
    return summary


def _write_failed(folder: Path, failures: list[dict[str, str]]) -> None:
    lines = "".join(json.dumps(f) + "\n" for f in failures)
    atomic_write_bytes(folder / "failed.jsonl", lines.encode())


def _extract_distributed(job, inputs, spec, encoder, manifest, out, name, folder, progress, options) -> ExtractSummary:
    """One rank's part of a data-parallel extraction; every rank returns the merged summary."""
    import contextlib

    from emollm.jobs.distributed import media_cost

    manifests = job.gather(manifest)
    odd = [r for r, m in enumerate(manifests) if m != manifest]
    if odd:
        diff = sorted(k for k in manifest if manifests[odd[0]].get(k) != manifest.get(k))
        raise ValueError(
            f"{spec.encoder}: rank {odd[0]} built the encoder differently from rank {job.rank} (differing: "
            f"{', '.join(diff)}); every rank must load the same weights and settings"
        )
    with contextlib.ExitStack() as held:

        def take() -> Path:  # rank 0 holds the folder's lock until every rank is done
            held.enter_context(lock_cache_folder(folder))
            opened = open_cache_folder(out, manifest, name)
            (opened / "_missing").mkdir(exist_ok=True)
            return opened

        folder = job.on_main(take)
        by_name = {p.stem: p for p in inputs}
        costs = job.estimate(list(by_name), lambda n: media_cost(by_name[n]))
        mine = [by_name[n] for n in job.mine(list(by_name), costs)]
        part = _extract_locked(mine, spec, encoder, folder, progress=progress, job=job, total=len(inputs),
                               costs=costs, **options)  # fmt: skip
        parts = job.gather(part)
        summary = ExtractSummary(folder)
        for p in parts:
            summary.extracted += p.extracted
            summary.cached += p.cached
        position = {p.stem: i for i, p in enumerate(inputs)}
        for attr in ("missing", "failed"):
            merged = {k: v for p in parts for k, v in getattr(p, attr).items()}
            setattr(summary, attr, {k: merged[k] for k in sorted(merged, key=position.__getitem__)})
        summary.failures = sorted((f for p in parts for f in p.failures), key=lambda f: position[f["name"]])
        if job.is_main:
            _write_failed(folder, summary.failures)
        job.barrier()  # the lock is released only after failed.jsonl is written
    return summary


def _extract_locked(inputs, spec, encoder, folder, *, progress, workers, subtitles, isolate, debug, device=None,
                    job=None, total=None, costs=None) -> ExtractSummary:  # fmt: skip
    from tqdm import tqdm

    from emollm.media import MediaError

    summary = ExtractSummary(folder)
    (folder / "_missing").mkdir(exist_ok=True)
    todo = []
    for path in inputs:
        if (folder / f"{path.stem}.npy").exists() or (folder / "_missing" / f"{path.stem}.json").exists():
            summary.cached += 1
        else:
            todo.append(path)
    modality = spec.modality
    if job is not None:  # one bar for the whole job on rank 0
        bar = job.progress(total or len(inputs), desc=spec.encoder, enabled=progress)
        bar.update(summary.cached)
    else:
        bar = tqdm(total=len(todo), desc=f"{spec.encoder}", unit="clip", disable=not progress)
    failures = summary.failures
    for path, result in _load(todo, spec, workers, subtitles or {}, isolate):
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
                save_features(folder / f"{stem}.npy", encode_sample(encoder, modality, result, device))
                summary.extracted += 1
            except OSError:
                raise  # the cache cannot be written (disk full, permissions): every later sample would fail too
            except Exception as e:  # a sample the encoder rejects must not stop the run
                if debug:
                    raise
                reason = f"{path}: the encoder failed: {type(e).__name__}: {e}"
                summary.failed[stem] = reason
                failures.append({"name": stem, "path": str(path), "reason": reason})
        bar.update(1)
        if job is not None:
            job.count(done=int(stem not in summary.failed), failed=int(stem in summary.failed),
                      cost=(costs or {}).get(stem, 0.0))  # fmt: skip
    bar.close()
    return summary


def _load(paths: Sequence[Path], spec: ExtractSpec, workers: int, subtitles: dict[str, str], isolate: bool = True):
    """(path, MediaSample | MediaError) in order: decoded media, or for text, the subtitle (CSV, else a .txt file)."""
    from types import SimpleNamespace

    from emollm.media import load_many

    if spec.modality == "text":
        from emollm.media import MediaError
        from emollm.media.video import check_file, read_text

        for p in paths:
            text = subtitles.get(p.stem)
            if text is None and p.suffix == ".txt":
                try:
                    check_file(p)
                    text = read_text(p) or None
                except MediaError as e:
                    yield p, e
                    continue
            yield p, SimpleNamespace(text=text, missing={} if text else {"text": f"no subtitle for {p.stem!r}"})
        return
    if spec.modality == "audio":
        kwargs = {"modalities": ["audio"], "min_audio_duration": spec.min_audio_duration}
    else:
        kwargs = {"modalities": [spec.modality], "frame_policy": spec.frame_policy, "face_detector": spec.face_detector}
        if spec.modality == "face" and isolate:
            from emollm.media.faces import cached_face_detector

            cached_face_detector(spec.face_detector)  # fail once here (ImportError), not once per file in the workers
    if not paths:
        return
    executor = "process" if isolate else "thread"
    yield from load_many([str(p) for p in paths], workers=workers, executor=executor, **kwargs)


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
    """``emollm features extract ...``: exit 0 when every input succeeded, 1 when some failed, 2 when none did."""
    parser = argparse.ArgumentParser(prog="emollm features", description="Feature cache for live encoders.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser(
        "extract",
        help="extract features of media files into a cache",
        epilog="Exit status: 0 every input extracted, cached or recorded as missing its modality; 1 some failed; "
        "2 none succeeded, or a bad option. Header limits: EMOLLM_MAX_DURATION_S, EMOLLM_MAX_FRAMES, "
        "EMOLLM_MAX_PIXELS, EMOLLM_MAX_BYTES (see emollm.media.MediaLimits).",
    )
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
        help="fixed folder name per encoder (e.g. hubert=HL-UTT); one plain name inside --out",
    )
    ex.add_argument("--subtitles", help="CSV name,sentence for the minilm text encoder")
    ex.add_argument("--workers", type=int, default=2)
    ex.add_argument(
        "--no-isolate",
        dest="isolate",
        action="store_false",
        help="decode in threads of this process (faster start; a decoder crash then ends the run)",
    )
    ex.add_argument(
        "--device", default="cpu", help="where the encoders run: cpu, cuda (under a launcher: this rank's GPU)"
    )
    ex.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    args = parser.parse_args(argv)
    try:
        job = Job("features")  # torchrun / accelerate launch: this rank's shard; else the whole list
        specs, encoders, files, names, subtitles, skipped = _setup(args)
    except (OSError, ValueError, ImportError) as e:
        if args.debug:
            raise
        print(f"emollm features: {e}", file=sys.stderr)
        return 2
    say = print if job.is_main else _quiet  # rank 0 reports for the whole job
    for line in skipped[:10]:
        say(f"  skipped {line}", file=sys.stderr)
    if len(skipped) > 10:
        say(f"  ... and {len(skipped) - 10} more entries skipped", file=sys.stderr)
    ok = bad = 0
    for spec in specs:
        try:
            summary = extract(
                files,
                spec,
                args.out,
                name=names.get(spec.encoder),
                workers=args.workers,
                subtitles=subtitles,
                encoder=encoders.pop(spec.encoder),
                isolate=args.isolate,
                debug=args.debug,
                job=job,
                device=args.device,
            )
        except (OSError, ValueError, ImportError, CacheBusy) as e:
            if args.debug:
                raise
            say(f"emollm features: {spec.encoder}: {e}", file=sys.stderr)
            bad += len(files)
            continue
        ok += summary.succeeded
        bad += len(summary.failed)
        say(summary.line())
        for stem, reason in list(summary.missing.items())[:10]:
            say(f"  missing {stem}: {reason}")
        for stem, reason in summary.failed.items():
            say(f"  failed  {stem}: {reason}")
        if len(summary.missing) > 10:
            say(f"  ({len(summary.missing) - 10} more missing: {summary.folder}/_missing/)")
    if job.distributed:
        from emollm.jobs.distributed import format_summary

        rows = job.summary()
        say(f"emollm features: {job.world} processes ({job.launch.launcher})\n{format_summary(rows)}", file=sys.stderr)
    total = len(files) * len(specs)
    if bad and not ok:
        say(f"emollm features: nothing extracted: all {total} inputs failed (reasons above)", file=sys.stderr)
        return 2 if job.is_main else 0
    if bad:
        say(f"emollm features: {bad} of {total} inputs failed (reasons above and in failed.jsonl)", file=sys.stderr)
        return 1 if job.is_main else 0  # the launcher reports rank 0's status; the others finished their part
    return 0


def _quiet(*args: Any, **kwargs: Any) -> None:
    """Ranks other than 0 print nothing: rank 0 reports the whole job."""


def _setup(args: argparse.Namespace):
    """Checks every option once, before any file is read; builds the encoders (so a bad --option fails here)."""
    from emollm.media import MediaLimits

    MediaLimits.from_env()  # a malformed EMOLLM_MAX_* fails now, not once per file
    if args.workers < 1:
        raise ValueError(f"--workers {args.workers}: must be >= 1")
    enc_names = [e.strip() for e in args.encoders.split(",") if e.strip()]
    if not enc_names:
        raise ValueError("--encoders: give at least one encoder")
    paths = _parse_kv(args.encoder_path, "--encoder-path")
    names = {k: check_folder_name(v, f"--name {k}=") for k, v in _parse_kv(args.name, "--name").items()}
    options: dict[str, dict[str, Any]] = {}
    for key, value in _parse_kv(args.option, "--option").items():
        enc, _, opt = key.partition(".")
        if not opt:
            raise ValueError(f"--option expects ENC.KEY=VALUE, got {key!r}")
        try:
            options.setdefault(enc, {})[opt] = json.loads(value)
        except json.JSONDecodeError:
            options.setdefault(enc, {})[opt] = value
    for flag, given in (("--encoder-path", paths), ("--name", names), ("--option", options)):
        stray = sorted(set(given) - set(enc_names))
        if stray:
            raise ValueError(f"{flag} {stray[0]}...: {stray[0]!r} is not in --encoders {','.join(enc_names)}")
    if len(set(names.values())) < len(names):
        raise ValueError(f"--name: two encoders share a folder name ({names})")
    specs = [
        ExtractSpec(
            e,
            path=paths.get(e),
            options=options.get(e, {}),
            frame_policy=args.frame_policy,
            face_detector=args.face_detector,
            min_audio_duration=args.min_audio_duration,
        )
        for e in enc_names
    ]
    skipped: list[str] = []
    files = list_inputs(args.input, skipped=skipped)
    subtitles = None
    if args.subtitles:
        from emollm.data.merr_files import read_transcriptions_csv

        subtitles = dict(read_transcriptions_csv(args.subtitles))
    encoders = {spec.encoder: build_live_encoder(spec) for spec in specs}
    return specs, encoders, files, names, subtitles, skipped
