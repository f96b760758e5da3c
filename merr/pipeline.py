"""``emollm merr build``: the MERR construction pipeline as cached, resumable per-clip stages.

Stages (REFERENCE.md §1.5), run stage by stage over every clip, each with a progress bar:

=========== ============================================================================================
``au``      probe the clip; AUs from ``<openface_dir>/<name>.csv`` (or the FER fallback), peak frame, AU
            pseudo-label (``emollm_merr.au`` / ``emollm_merr.peaks`` / ``emollm_merr.cues``)
``visual``  visual objective description (``describe.visual``; offline default: unavailable, marked)
``audio``   audio tone (``describe.audio``; offline default: measured pitch / loudness / rate)
``subtitle``subtitle (``inputs.subtitles``: CSV, offline Whisper, or none)
``reason``  fine-grained reasoning by an LLM (``emollm_merr.reason``), cached by prompt
=========== ============================================================================================

then, over the whole set (cheap, recomputed every run from the cached stages): corrections from review, label
vocabulary, neutral samples, coarse captions (template), contradiction filter, dedup, class balancing, confidence,
and the exports. Clue stages run only for clips that get a label (and the chosen neutral clips), so a 70k-clip pool
where few AU combinations fire costs little beyond stage ``au``.

**Caching and resume.** Each stage of each clip is one JSON artifact ``cache/<stage>/<name>.json`` holding a *key*:
``sha256(stage, the stage's settings id, the clip's input fingerprints, upstream values it uses)``. A run reuses an
artifact whose key matches and recomputes otherwise, so a changed setting invalidates exactly the stages it feeds
(e.g. ``describe.audio`` re-runs ``audio`` only; reasonings are then regenerated only where the prompt text
changed). Reasonings are content-addressed by ``(llm id, prompt version, prompt)`` in ``cache/reason/``.
Fingerprints: files up to 4 MiB are hashed whole, larger ones by size + first and last MiB, and memoised by
``(path, size, mtime_ns)`` in ``cache/fingerprints.json`` so a resume does not re-read the pool. Artifacts are written
to a temp file and ``os.replace``d (atomic; no fsync: after a power cut a torn artifact fails to parse and is simply
recomputed). A failure of one clip (corrupt file, no face, no CSV without fallback) is stored as an error artifact
(``--retry-errors`` recomputes them) and listed in ``errors.jsonl``; it never stops the run. A SIGKILL at any point
loses at most the clips in flight; stale temp files are removed and a ``build.lock`` left by a dead process is
taken over on the next run.

**Outputs** (written atomically with fsync after all stages; ``summary.json`` last, with the sha256 of every other
output, so a complete set can be verified). Deterministic: same inputs + config + seed -> identical bytes (records
in name order, seeded choices by ``sha256(seed:name)``, greedy or per-prompt-seeded generation one prompt at a time).

=============================== ==================================================================================
``MERR_coarse_grained.json``    Emotion-LLaMA layout (``merr_files``): every labelled clip (AU or FER label or
                                reviewer label; not the added neutral ones: MERR-coarse has no neutral) with the
                                template caption
``MERR_fine_grained.json``      the clips whose reasoning passed the filters (+ added neutral), with
                                ``smp_reason_caption`` and ``text``
``MERR_*_grained.txt``          ``N C E V`` lists: C = frame count from the media probe, V = ``output.valence``
                                (Emotion-LLaMA's placeholder -10: no valence is measured)
``merr_train.jsonl``            our training records, one per fine-grained clip (per coarse clip when reasoning is
                                off): ``name``, ``label``, ``text`` (subtitle or null), ``reason``, ``caption``,
                                ``messages`` (a ready ``[user, assistant]`` reason/caption conversation in the
                                training prompt layout of ``emollm.runconfig.DataConfig`` defaults: markers
                                ``<audio><face><video>``, ``<audio>`` left out for clips without audio). Loads with
                                ``emollm.data.datasets.load_records("jsonl", ...)`` (``data.format: jsonl``)
``samples.jsonl``               every clip: label and its source, clue status, consistency, issue, confidence,
                                which exports it is in and why not (input of ``emollm merr review export``)
``errors.jsonl``                one row per failed clip/stage: ``name``, ``stage``, ``type``, ``message``
``summary.json``                counts per stage, label, filter; sha256 of the outputs above
``manifest.json``               the resolved config and per-stage settings ids (a changed stage is logged)
``runs.jsonl``                  appended per run: time, seconds, computed/cached/error counts per stage (the only
                                output that differs between runs)
=============================== ==================================================================================

``AU_list`` is the AUs active (``AUxx_r > 0.8``) in at least one valid frame, in AU order; ``peak_AU_list`` the AUs
active at the peak; ``visual_prior_list`` their phrases; ``audio_prior_list`` the audio-tone text ("" when
unavailable); ``peak_index`` the 0-based peak row/frame.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from emollm_merr.config import BuildConfig
from emollm_merr.describe import FER_ADJECTIVES, ClipContext, Clue, Describer, FERFallbackAU, build_describer
from emollm_merr.filter import (
    balance,
    check_quality,
    check_reasoning,
    dedup_key,
    label_confidence,
    sample_confidence,
    select_neutral,
)
from emollm_merr.reason import ReasoningCache, ReasoningClient, build_reasoning_client

from emollm.data.merr_files import VIDEO_EXTENSIONS, write_label_txt, write_merr_json
from emollm.data.merr_schema import MERRExtras, MERRRecord
from emollm.prompts import build_reasoning_prompt, coarse_caption
from emollm.utils.io import atomic_write_json, atomic_write_text

__all__ = [
    "STAGES",
    "BuildResult",
    "MERRBuilder",
    "StageStats",
    "discover_clips",
    "file_fingerprint",
    "run_build",
    "write_json_atomic",
]

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("au", "visual", "audio", "subtitle", "reason")
CLUE_STAGES: tuple[str, ...] = ("visual", "audio", "subtitle")
FORMAT = "emollm-merr-build"
VERSION = 1
_MARKERS = {"audio": "<audio>", "face": "<face>", "video": "<video>"}  # = emollm.processing.MARKERS (no torch here)


# ================================================================================================ small helpers


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, fsync: bool = False) -> Path:
    """Compact, key-sorted JSON written atomically (cache artifacts: no fsync unless asked)."""
    return atomic_write_json(path, obj, indent=None, sort_keys=True, fsync=fsync)


_FULL_HASH_LIMIT = 4 << 20
_CHUNK = 1 << 20


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """Content fingerprint: sha256 of the whole file up to 4 MiB, else of size + first and last MiB (memoised per
    run folder by :class:`FingerprintIndex`)."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= _FULL_HASH_LIMIT:
            h.update(f.read())
        else:
            h.update(f.read(_CHUNK))
            f.seek(size - _CHUNK)
            h.update(f.read(_CHUNK))
    return h.hexdigest()


class FingerprintIndex:
    """:func:`file_fingerprint` memoised by ``(path, size, mtime_ns)`` in one JSON file, so a resumed run over a
    large pool reads each clip's bytes once, not on every run (a changed size or mtime re-hashes the file)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            self.entries: dict[str, list[Any]] = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            self.entries = {}
        self.dirty = False

    def get(self, file: Path) -> str:
        """The fingerprint of ``file`` (hashed now if unknown or changed)."""
        st = file.stat()
        key = str(file.resolve())
        hit = self.entries.get(key)
        if isinstance(hit, list) and len(hit) == 3 and hit[:2] == [st.st_size, st.st_mtime_ns]:
            return str(hit[2])
        fp = file_fingerprint(file)
        self.entries[key] = [st.st_size, st.st_mtime_ns, fp]
        self.dirty = True
        return fp

    def save(self) -> None:
        """Write the index (atomically) if it changed."""
        if self.dirty:
            write_json_atomic(self.path, self.entries)
            self.dirty = False


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def _sha_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class ClipInput:
    """One clip to build."""

    name: str
    video: Path
    csv: Path | None


def discover_clips(
    video_dir: str | os.PathLike[str],
    openface_dir: str | os.PathLike[str] | None = None,
    names: Iterable[str] | None = None,
) -> list[ClipInput]:
    """Clips of ``video_dir`` (``.mp4`` before ``.avi`` for the same stem), sorted by name, with their CSVs.

    Raises:
        FileNotFoundError: the folder does not exist, or a requested name has no video.
    """
    video_dir = Path(video_dir)
    if not video_dir.is_dir():
        raise FileNotFoundError(f"inputs.video_dir {video_dir}: no such folder")
    found: dict[str, Path] = {}
    for ext in VIDEO_EXTENSIONS:
        for p in sorted(video_dir.glob(f"*{ext}")):
            if p.is_file() and not p.name.startswith("."):
                found.setdefault(p.stem, p)
    if names is not None:
        wanted = list(dict.fromkeys(names))
        missing = [n for n in wanted if n not in found]
        if missing:
            raise FileNotFoundError(f"no video in {video_dir} for {len(missing)} listed name(s): {missing[:5]}")
        found = {n: found[n] for n in wanted}
    csv_dir = None if openface_dir is None else Path(openface_dir)
    if csv_dir is not None and not csv_dir.is_dir():
        raise FileNotFoundError(f"inputs.openface_dir {csv_dir}: no such folder")
    out = []
    for name in sorted(found):
        csv = csv_dir / f"{name}.csv" if csv_dir is not None else None
        out.append(ClipInput(name, found[name], csv if csv is not None and csv.is_file() else None))
    return out


def _read_names(path: Path) -> list[str]:
    names = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#"):
            names.append(parts[0])
    return names


@dataclass
class StageStats:
    """Per-stage counters of one run."""

    computed: int = 0
    """Clips whose result was produced (and cached) in this run."""
    cached: int = 0
    """Clips whose cached result was reused."""
    instant: int = 0
    """Clips served by a describer not worth caching (``none``, CSV lookups), answered again every run."""
    errors: int = 0
    """Clips whose stage failed (cached failures included)."""


@dataclass
class BuildResult:
    """What a build produced."""

    output_dir: Path
    summary: dict[str, Any]
    stats: dict[str, StageStats]
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    def table(self) -> str:
        """A short human-readable report."""
        s = self.summary
        lines = [
            f"MERR build -> {self.output_dir} ({self.seconds:.1f} s)",
            f"{'stage':<9} {'computed':>9} {'cached':>7} {'instant':>8} {'errors':>7}",
        ]
        for stage, st in self.stats.items():
            lines.append(f"{stage:<9} {st.computed:>9} {st.cached:>7} {st.instant:>8} {st.errors:>7}")
        lines.append(
            f"clips {s['clips']}: {s['errors']} failed, {s['labelled']} labelled, "
            f"{s['neutral_added']} neutral added; coarse {s['coarse']}, fine {s['fine']}"
        )
        if s["dropped"]:
            lines.append("dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(s["dropped"].items())))
        return "\n".join(lines)


# ================================================================================================ the builder


class MERRBuilder:
    """Runs the pipeline for a :class:`~emollm_merr.config.BuildConfig`.

    Args:
        cfg: The configuration.
        reasoner: A :class:`~emollm_merr.reason.ReasoningClient` (default: from ``cfg.reason``, loaded lazily).
        describers: Clue -> describer overrides (``visual`` / ``audio`` / ``subtitle``).
        fer: The stage-1 fallback (default: :class:`~emollm_merr.describe.FERFallbackAU` from ``cfg.au``).
        progress: Show progress bars (None: when stderr is a terminal).
    """

    def __init__(
        self,
        cfg: BuildConfig,
        *,
        reasoner: ReasoningClient | None = None,
        describers: dict[str, Describer] | None = None,
        fer: FERFallbackAU | None = None,
        progress: bool | None = None,
    ):
        from emollm_merr.cues import load_cue_table

        self.cfg = cfg
        self.out = cfg.output_dir
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.table = load_cue_table(cfg.cues_path())
        self.rule = cfg.au.peak_rule or self.table.peak_rule
        self.min_conf = self.table.min_confidence if cfg.au.min_confidence is None else cfg.au.min_confidence
        self.fer = fer if fer is not None else FERFallbackAU(cfg.au.fer_frames, cfg.au.face_detector)
        self._describers = dict(describers or {})
        self._reasoner = reasoner
        self.stats = {s: StageStats() for s in STAGES}
        self.errors: list[dict[str, Any]] = []

    # ----------------------------------------------------------------------------------------- components
    def describer(self, clue: str) -> Describer:
        """The describer of a clue (built on first use)."""
        if clue not in self._describers:
            spec = {
                "visual": self.cfg.describe.visual,
                "audio": self.cfg.describe.audio,
                "subtitle": self.cfg.inputs.subtitles,
            }[clue]
            self._describers[clue] = build_describer(
                clue,
                spec,
                max_new_tokens=self.cfg.describe.max_new_tokens,
                device=self.cfg.describe.device,
                face_detector=self.cfg.au.face_detector,
                options=self.cfg.describe.options.get(clue),
            )
        return self._describers[clue]

    @property
    def reasoner(self) -> ReasoningClient:
        """The reasoning client (built on first use)."""
        if self._reasoner is None:
            self._reasoner = build_reasoning_client(self.cfg.reason)
        return self._reasoner

    def stage_settings(self) -> dict[str, Any]:
        """Settings id of each stage (what its cache keys depend on besides the clip)."""
        cues = self.table.source
        if self.cfg.au.run_openface:
            from emollm_merr.au import OpenFaceRunner

            openface = str(OpenFaceRunner(binary=self.cfg.au.openface_bin).find_binary())  # fails early
        else:
            openface = None
        au = {
            "version": VERSION,
            "run_openface": openface,
            "cues": _sha_file(cues) if cues is not None else None,
            "rule": self.rule,
            "min_confidence": self.min_conf,
            "fallback": self.cfg.au.fallback,
            "fer": self.fer.id if self.cfg.au.fallback == "fer" else None,
        }
        out: dict[str, Any] = {"au": au}
        for clue in CLUE_STAGES:
            out[clue] = {"describer": self.describer(clue).id}
        out["reason"] = (
            {"client": self.reasoner.id, "prompt": self.cfg.reason.prompt_version} if self.cfg.reason.enabled else None
        )
        return out

    # ----------------------------------------------------------------------------------------- artifacts
    def _artifact_path(self, stage: str, name: str) -> Path:
        return self.out / "cache" / stage / f"{name}.json"

    def _load(self, stage: str, name: str, key: str, retry_errors: bool) -> dict[str, Any] | None:
        try:
            art = json.loads(self._artifact_path(stage, name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(art, dict) or art.get("key") != key:
            return None
        if retry_errors and not art.get("ok"):
            return None
        return art

    def _error(self, name: str, stage: str, err: dict[str, str]) -> None:
        self.errors.append({"name": name, "stage": stage, **err})

    def _run_stage(
        self,
        stage: str,
        jobs: list[tuple[str, str, Callable[[], Any]]],
        *,
        thread_safe: bool,
        cacheable: bool = True,
        retry_errors: bool = False,
    ) -> dict[str, dict[str, Any]]:
        """Run ``(name, key, compute)`` jobs, reusing artifacts; returns name -> artifact."""
        from tqdm import tqdm

        results: dict[str, dict[str, Any]] = {}
        todo = []
        for name, key, fn in jobs:
            art = self._load(stage, name, key, retry_errors) if cacheable else None
            if art is not None:
                results[name] = art
                self.stats[stage].cached += 1
            else:
                todo.append((name, key, fn))

        def work(name: str, key: str, fn: Callable[[], Any]) -> dict[str, Any]:
            try:
                art = {"key": key, "name": name, "stage": stage, "ok": True, "result": fn()}
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:  # one bad clip never stops the run: it becomes an error artifact
                log.debug("%s failed on %s", stage, name, exc_info=True)
                art = {
                    "key": key,
                    "name": name,
                    "stage": stage,
                    "ok": False,
                    "error": {"type": type(e).__name__, "message": str(e)},
                }
            if cacheable:
                write_json_atomic(self._artifact_path(stage, name), art)
            return art

        bar = tqdm(
            total=len(jobs),
            initial=len(jobs) - len(todo),
            desc=f"merr {stage}",
            unit="clip",
            disable=not self.progress,
            leave=False,
        )
        try:
            if self.cfg.workers > 1 and thread_safe and len(todo) > 1:
                with ThreadPoolExecutor(self.cfg.workers, thread_name_prefix=f"merr-{stage}") as pool:
                    futures = {pool.submit(work, *job): job[0] for job in todo}
                    for fut in as_completed(futures):
                        results[futures[fut]] = fut.result()
                        bar.update()
            else:
                for job in todo:
                    results[job[0]] = work(*job)
                    bar.update()
        finally:
            bar.close()
        if cacheable:
            self.stats[stage].computed += len(todo)
        else:
            self.stats[stage].instant += len(todo)
        for name in sorted(results):
            art = results[name]
            if not art.get("ok"):
                self.stats[stage].errors += 1
                self._error(name, stage, art["error"])
        return results

    # ----------------------------------------------------------------------------------------- stage 1-3
    def _au(self, clip: ClipInput, ctx: ClipContext) -> dict[str, Any]:
        from emollm_merr.au import read_openface_csv
        from emollm_merr.cues import describe_aus, label_from_peak
        from emollm_merr.peaks import select_peak

        from emollm.media import probe

        info = probe(clip.video)
        if info.kind != "video" or info.frames < 1:
            raise ValueError(f"{clip.video}: no video stream (probed as {info.kind}); MERR needs video clips")
        ctx.info = info
        base = {
            "frame_count": int(info.frames),
            "fps": round(float(info.fps), 4),
            "duration": round(float(info.duration), 4),
            "has_audio": bool(info.has_audio),
        }
        csv = clip.csv
        if csv is None and self.cfg.au.run_openface:
            csv = self._run_openface(clip)
        if csv is not None:
            seq = read_openface_csv(csv, self.min_conf)
            peak = select_peak(seq, self.rule, self.table.active_intensity, top_k=self.table.peak_top_k)
            cues = label_from_peak(seq, peak, self.table)
            return base | {
                "au_source": "openface",
                "au_file": csv.name,
                "AU_list": [a for a in seq.intensity if peak.counts.get(a, 0) > 0],
                "peak_index": int(peak.index),
                "peak_frame": int(peak.frame),
                "peak_rule": peak.rule,
                "peak_AU_list": list(cues.peak_AU_list),
                "pseu_emotion": cues.pseu_emotion,
                "strength": cues.strength,
                "candidates": [c.to_dict() for c in cues.candidates],
                "visual_expression": describe_aus(cues.peak_AU_list, self.table),
                "threshold": self.table.mean_intensity,
                "csv_frames": int(seq.n_frames),
            }
        if self.cfg.au.fallback != "fer":
            where = (
                "no inputs.openface_dir"
                if self.cfg.inputs.openface_dir is None
                else f"no {clip.name}.csv in inputs.openface_dir"
            )
            raise FileNotFoundError(f"{where} and au.fallback is 'none': no AU source for {clip.name}")
        r = self.fer.analyze(ctx)
        return base | {
            "au_source": "fer",
            "au_file": None,
            "AU_list": [],
            "peak_index": r.peak_index,
            "peak_frame": None,
            "peak_rule": "fer",
            "peak_AU_list": [],
            "pseu_emotion": r.pseu_emotion,
            "strength": None,
            "candidates": [{"emotion": r.dominant, "score": r.peak_probs[r.dominant], "strength": None, "present": []}],
            "visual_expression": [f"{FER_ADJECTIVES.get(r.dominant, r.dominant)} facial expression"],
            "fer": {"dominant": r.dominant, "peak_probs": r.peak_probs, "frames": list(map(int, r.frame_indices))},
            "au_note": "no OpenFace CSV: FER2013 expression probabilities used as the intensity curve",
        }

    def _run_openface(self, clip: ClipInput) -> Path:
        """OpenFace on one clip into ``<out>/openface/<name>.csv`` (via a temp folder, so a kill leaves no half CSV)."""
        import shutil

        from emollm_merr.au import OpenFaceRunner

        final = self.out / "openface" / f"{clip.name}.csv"
        if final.is_file():
            return final
        tmp = self.out / "openface" / f".tmp-{clip.name}-{os.getpid()}"
        try:
            made = OpenFaceRunner(binary=self.cfg.au.openface_bin).run(clip.video, tmp, overwrite=True)
            os.replace(made, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    # ----------------------------------------------------------------------------------------- main
    def run(self, *, retry_errors: bool = False) -> BuildResult:
        """Run (or resume) the build; returns the summary and the written files."""
        t0 = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        with _BuildLock(self.out / "build.lock"):
            _clean_temp_files(self.out)
            return self._run(retry_errors, t0)

    def _run(self, retry_errors: bool, t0: float) -> BuildResult:
        from emollm_merr.review import DROP, load_corrections

        cfg = self.cfg
        names = _read_names(Path(cfg.inputs.names)) if cfg.inputs.names else None
        clips = discover_clips(cfg.inputs.video_dir, cfg.inputs.openface_dir, names)
        if cfg.inputs.limit is not None:
            clips = clips[: cfg.inputs.limit]
        settings = self.stage_settings()
        self._write_manifest(settings)
        corrections = load_corrections(cfg.corrections_path)
        labels = list(cfg.filter.labels)
        ctxs = {c.name: ClipContext(c.name, c.video) for c in clips}
        index = FingerprintIndex(self.out / "cache" / "fingerprints.json")
        fps = {c.name: index.get(c.video) for c in clips}
        csv_fps = {c.name: index.get(c.csv) if c.csv is not None else None for c in clips}
        index.save()
        by_name = {c.name: c for c in clips}

        # ---- stage 1-3: AUs, peak, pseudo-label
        au_id = _sha(settings["au"])
        jobs = [
            (c.name, _sha(["au", au_id, fps[c.name], csv_fps[c.name]]), (lambda c=c: self._au(c, ctxs[c.name])))
            for c in clips
        ]
        au_arts = self._run_stage("au", jobs, thread_safe=True, retry_errors=retry_errors)
        au = {n: a["result"] for n, a in au_arts.items() if a.get("ok")}

        # ---- labels: review corrections > AU/FER pseudo-label; vocabulary; neutral augmentation
        label: dict[str, str] = {}
        source: dict[str, str] = {}
        status: dict[str, str] = {n: "error" for n in by_name if n not in au}
        for n in sorted(au):
            r = au[n]
            corr = corrections.get(n)
            lab, src = (corr.label, "review") if corr else (r["pseu_emotion"], r["au_source"])
            if lab == DROP:
                status[n] = "dropped_by_review"
            elif lab is None:
                status[n] = "no_label"
            elif lab not in labels:
                status[n] = "label_not_in_vocabulary"
            else:
                label[n], source[n], status[n] = lab, src, "labelled"
        neutral_added: list[str] = []
        if cfg.filter.add_neutral:
            cands = [
                n
                for n in sorted(au)
                if status[n] == "no_label"
                and au[n]["au_source"] == "openface"
                and not au[n]["candidates"]
                and len(au[n]["peak_AU_list"]) <= cfg.filter.neutral_max_active_aus
            ]
            counts = Counter(lab for lab in label.values() if lab != "neutral")
            want = cfg.filter.neutral_count
            if want is None:
                want = round(sum(counts.values()) / len(counts)) if counts else 0
            neutral_added = select_neutral(cands, want, cfg.seed)
            for n in neutral_added:
                label[n], source[n], status[n] = "neutral", "neutral_added", "labelled"
        chosen = sorted(label)

        # ---- stage 4: clues
        clues: dict[str, dict[str, Clue]] = {n: {} for n in chosen}
        for clue in CLUE_STAGES:
            d = self.describer(clue)
            sid = _sha(settings[clue])
            jobs = []
            for n in chosen:
                ctxs[n].peak_index = au[n]["peak_index"]
                upstream = au[n]["peak_index"] if clue == "visual" else None
                jobs.append((n, _sha([clue, sid, fps[n], upstream]), (lambda n=n, d=d: _describe(d, ctxs[n]))))
            arts = self._run_stage(
                clue,
                jobs,
                thread_safe=bool(getattr(d, "thread_safe", False)),
                cacheable=bool(getattr(d, "cacheable", True)),
                retry_errors=retry_errors,
            )
            for n in chosen:
                a = arts[n]
                clues[n][clue] = (
                    Clue.from_dict(a["result"])
                    if a.get("ok")
                    else Clue.unavailable(d.id, f"describer failed ({a['error']['type']}; see errors.jsonl)")
                )
        texts: dict[str, dict[str, str | None]] = {}
        for n in chosen:
            phrases = au[n]["visual_expression"]
            texts[n] = {"visual_expression": ", ".join(phrases) if phrases else None}
            texts[n] |= {k: (c.text if c.ok else None) for k, c in clues[n].items()}

        # ---- stage 5: reasoning
        reasoning: dict[str, str] = {}
        prompts: dict[str, tuple[str, str]] = {}
        if cfg.reason.enabled and chosen:
            reasoning = self._reason(chosen, texts, label, prompts)

        # ---- filters
        parser = _label_parser(labels)
        consistency: dict[str, Any] = {}
        quality: dict[str, str | None] = {}
        drop: dict[str, str] = {}
        for n in chosen:
            if not cfg.reason.enabled:
                drop[n] = "reasoning_disabled"
                continue
            if n not in reasoning:
                drop[n] = "reason_error"
                continue
            consistency[n] = check_reasoning(reasoning[n], label[n], labels, parser)
            quality[n] = check_quality(reasoning[n])
            if cfg.filter.contradiction and not consistency[n].ok:
                drop[n] = consistency[n].status
            elif cfg.filter.degenerate and quality[n]:
                drop[n] = quality[n]
        if cfg.filter.dedup:
            first: dict[str, str] = {}
            for n in chosen:
                if n in drop:
                    continue
                k = dedup_key(reasoning[n])
                if k in first:
                    drop[n] = "duplicate"
                else:
                    first[k] = n
        by_label: dict[str, list[str]] = defaultdict(list)
        for n in chosen:
            if n not in drop:
                by_label[label[n]].append(n)
        for n in balance(by_label, cfg.filter.max_per_class, cfg.seed):
            drop[n] = "balance"
        fine = [n for n in chosen if n not in drop]
        coarse = [n for n in chosen if source[n] != "neutral_added"]

        # ---- records and exports
        records: dict[str, MERRRecord] = {}
        rows = []
        for n in sorted(by_name):
            row: dict[str, Any] = {"name": n, "status": status[n]}
            if n in au:
                r = au[n]
                row |= {"au_source": r["au_source"], "au_label": r["pseu_emotion"], "frame_count": r["frame_count"]}
            if n in label:
                cons = consistency.get(n)
                n_ok = sum(1 for c in clues[n].values() if c.ok)
                verdict = quality.get(n) or (cons.status if cons else None)
                conf = sample_confidence(label_confidence(au[n], source[n]), verdict, n_ok)
                corr = corrections.get(n)
                issue = cons.issue if cons else ("reasoning failed" if drop.get(n) == "reason_error" else "")
                if quality.get(n):
                    issue = f"{issue}; {quality[n]}" if issue else quality[n]
                row |= {
                    "label": label[n],
                    "label_source": source[n],
                    "confidence": conf,
                    "clues": {k: (c.text if c.ok else c.reason) for k, c in clues[n].items()},
                    "reasoning": reasoning.get(n),
                    "consistency": cons.status if cons else None,
                    "issue": issue,
                    "flagged": bool(issue),
                    "in_coarse": n in coarse,
                    "in_fine": n in fine,
                    "dropped": drop.get(n),
                    "review": {"reviewer": corr.reviewer, "reviewed_at": corr.reviewed_at} if corr else None,
                }
                records[n] = self._record(
                    n, au[n], label[n], source[n], texts[n], clues[n], reasoning.get(n), row, corr
                )
            rows.append(row)
        files = self._write_outputs(records, coarse, fine, rows)
        summary = self._summary(by_name, au, status, label, source, neutral_added, coarse, fine, drop, clues, files)
        files["summary"] = write_json_atomic(self.out / "summary.json", summary, fsync=True)
        seconds = time.perf_counter() - t0
        self._log_run(seconds, len(clips))
        return BuildResult(self.out, summary, self.stats, files, seconds)

    def _reason(
        self,
        chosen: list[str],
        texts: dict[str, dict[str, str | None]],
        label: dict[str, str],
        prompts: dict[str, tuple[str, str]],
    ) -> dict[str, str]:
        from tqdm import tqdm

        cfg = self.cfg
        cache = ReasoningCache(self.out / "cache" / "reason")
        client = self.reasoner
        out: dict[str, str] = {}
        todo = []
        for n in chosen:
            system, user = build_reasoning_prompt(texts[n], label[n], cfg.reason.prompt_version)
            prompts[n] = (system, user)
            key = ReasoningCache.key(client.id, cfg.reason.prompt_version, system, user)
            hit = cache.get(key)
            if hit is not None:
                out[n] = hit
                self.stats["reason"].cached += 1
            else:
                todo.append((n, key, system, user))
        done: dict[str, str] = {}  # same prompt twice in one run: generate once
        for n, key, system, user in tqdm(todo, desc="merr reason", unit="clip", disable=not self.progress, leave=False):
            if key in done:
                out[n] = done[key]
                self.stats["reason"].cached += 1
                continue
            try:
                answer = client.generate(system, user, seed=cfg.seed)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:
                log.debug("reasoning failed on %s", n, exc_info=True)
                self.stats["reason"].errors += 1
                self._error(n, "reason", {"type": type(e).__name__, "message": str(e)})
                continue
            answer = " ".join(str(answer).split())
            cache.put(key, answer, client=client.id, prompt_version=cfg.reason.prompt_version, system=system, user=user)
            self.stats["reason"].computed += 1
            out[n] = done[key] = answer
        return out

    def _record(
        self,
        n: str,
        r: dict[str, Any],
        lab: str,
        src: str,
        texts: dict[str, str | None],
        clues: dict[str, Clue],
        reasoning: str | None,
        row: dict[str, Any],
        corr: Any,
    ) -> MERRRecord:
        audio = clues["audio"]
        more = {
            "au_file": r.get("au_file"),
            "label_source": src,
            "au_label": r["pseu_emotion"],
            "strength": r.get("strength"),
            "confidence": row["confidence"],
            "consistency": row["consistency"],
            "clues": {k: {"status": c.status, "source": c.source, "reason": c.reason} for k, c in clues.items()},
            "visual_objective": texts.get("visual"),
            "has_audio": bool(r.get("has_audio", True)),
        }
        if corr is not None:
            more["review"] = {"reviewer": corr.reviewer, "reviewed_at": corr.reviewed_at, "previous": corr.previous}
        return MERRRecord(
            name=n,
            AU_list=list(r["AU_list"]),
            visual_prior_list=list(r["visual_expression"]),
            audio_prior_list=audio.text if audio.ok else "",
            peak_index=int(r["peak_index"]),
            peak_AU_list=list(r["peak_AU_list"]),
            pseu_emotion=lab,
            caption=coarse_caption(texts),
            smp_reason_caption=reasoning,
            text=texts.get("subtitle") or "",
            extras=MERRExtras(
                au_source=r["au_source"],
                frame_count=int(r["frame_count"]),
                valence=float(self.cfg.output.valence),
                peak_rule=r["peak_rule"],
                peak_frame=r.get("peak_frame"),
                more=more,
            ),
        )

    # ----------------------------------------------------------------------------------------- outputs
    def _write_outputs(
        self, records: dict[str, MERRRecord], coarse: list[str], fine: list[str], rows: list[dict[str, Any]]
    ) -> dict[str, Path]:
        out, extras = self.out, self.cfg.output.include_extras
        files: dict[str, Path] = {}
        coarse_recs = [records[n] for n in coarse]
        files["coarse_json"] = write_merr_json(
            out / "MERR_coarse_grained.json", coarse_recs, "coarse", include_extras=extras
        )
        files["coarse_txt"] = write_label_txt(out / "MERR_coarse_grained.txt", coarse_recs)
        if self.cfg.reason.enabled:
            fine_recs = [records[n] for n in fine]
            files["fine_json"] = write_merr_json(
                out / "MERR_fine_grained.json", fine_recs, "fine", include_extras=extras
            )
            files["fine_txt"] = write_label_txt(out / "MERR_fine_grained.txt", fine_recs)
        else:
            for stale in ("MERR_fine_grained.json", "MERR_fine_grained.txt"):
                with contextlib.suppress(FileNotFoundError):
                    (out / stale).unlink()
        train = [records[n] for n in (fine if self.cfg.reason.enabled else coarse)]
        files["train_jsonl"] = atomic_write_text(
            out / "merr_train.jsonl", "".join(json.dumps(train_record(r), ensure_ascii=False) + "\n" for r in train)
        )
        files["samples"] = atomic_write_text(
            out / "samples.jsonl", "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
        )
        errors = sorted(self.errors, key=lambda e: (e["name"], STAGES.index(e["stage"])))
        files["errors"] = atomic_write_text(
            out / "errors.jsonl", "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in errors)
        )
        return files

    def _summary(
        self, by_name, au, status, label, source, neutral_added, coarse, fine, drop, clues, files
    ) -> dict[str, Any]:
        unavailable = {k: sum(1 for n in clues if not clues[n][k].ok) for k in CLUE_STAGES}
        return {
            "format": FORMAT,
            "version": VERSION,
            "clips": len(by_name),
            "errors": sum(1 for s in status.values() if s == "error"),
            "errors_by_stage": dict(sorted(Counter(e["stage"] for e in self.errors).items())),
            "au_source": dict(sorted(Counter(r["au_source"] for r in au.values()).items())),
            "status": dict(sorted(Counter(status.values()).items())),
            "labelled": sum(1 for s in source.values() if s != "neutral_added"),
            "label_source": dict(sorted(Counter(source.values()).items())),
            "neutral_added": len(neutral_added),
            "coarse": len(coarse),
            "fine": len(fine),
            "coarse_by_label": dict(sorted(Counter(label[n] for n in coarse).items())),
            "fine_by_label": dict(sorted(Counter(label[n] for n in fine).items())),
            "dropped": dict(sorted(Counter(drop.values()).items())),
            "clues_unavailable": unavailable,
            "files": {k: {"path": p.name, "sha256": _sha_file(p)} for k, p in sorted(files.items())},
        }

    def _write_manifest(self, settings: dict[str, Any]) -> None:
        path = self.out / "manifest.json"
        try:
            old = json.loads(path.read_text(encoding="utf-8")).get("stages", {})
        except (OSError, ValueError):
            old = {}
        for stage, value in settings.items():
            if stage in old and old[stage] != value:
                log.info("merr build: %s settings changed since the last run; its cached results will be redone", stage)
        write_json_atomic(
            path, {"format": FORMAT, "version": VERSION, "config": self.cfg.to_dict(), "stages": settings}, fsync=True
        )

    def _log_run(self, seconds: float, clips: int) -> None:
        entry = {
            "finished": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "seconds": round(seconds, 3),
            "clips": clips,
            "stats": {s: vars(st) for s, st in self.stats.items()},
        }
        with open(self.out / "runs.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


def _describe(d: Describer, ctx: ClipContext) -> dict[str, Any]:
    try:
        return d.describe(ctx).to_dict()
    finally:
        ctx._audio = None  # decoded audio lives only while its clip is described (70k clips would not fit)


def _label_parser(labels: list[str]):
    from emollm.labels import LabelParser

    return LabelParser(labels)


def train_record(rec: MERRRecord) -> dict[str, Any]:
    """Our training JSONL row for a record (schema in the module docstring)."""
    from emollm.runconfig import DEFAULT_INSTRUCTIONS, DataConfig

    d = DataConfig()
    task = "reason" if rec.smp_reason_caption else "caption"
    target = rec.smp_reason_caption or rec.caption or ""
    text = (rec.text or "").strip()
    has_audio = bool(rec.extras.more.get("has_audio", True))
    media = "".join(_MARKERS[m] for m in ("audio", "face", "video") if m != "audio" or has_audio)
    subtitle = d.subtitle_template.format(text=text.rstrip(".")) if text else ""
    user = d.prompt_template.format(
        media=media, subtitle=subtitle, task=task, instruction=DEFAULT_INSTRUCTIONS[task][0]
    )
    user = re.sub(r"[ \t]{2,}", " ", user).strip()
    return {
        "name": rec.name,
        "label": rec.pseu_emotion,
        "text": text or None,
        "reason": rec.smp_reason_caption,
        "caption": rec.caption,
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": target}],
    }


# ================================================================================================ run hygiene


class _BuildLock:
    """``build.lock`` with the owner's pid: a second live build in the same folder is refused; a lock left by a
    killed process is taken over."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> _BuildLock:
        for _ in range(2):
            try:
                self.fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                os.write(self.fd, str(os.getpid()).encode())
                return self
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _alive(pid):
                    raise RuntimeError(
                        f"{self.path.parent}: another `emollm merr build` (pid {pid}) is running "
                        f"in this output folder; wait for it or remove {self.path}"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()  # stale: its process is gone
        raise RuntimeError(f"could not take {self.path}")

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_temp_files(root: Path) -> None:
    """Remove temp files a killed run left behind (``.<name>.*.tmp`` of our atomic writers, ``openface/.tmp-*``)."""
    import shutil

    for p in root.rglob(".*.tmp"):
        with contextlib.suppress(OSError):
            p.unlink()
    for p in (root / "openface").glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


def run_build(cfg: BuildConfig, **kwargs: Any) -> BuildResult:
    """Build MERR files for ``cfg`` (see :class:`MERRBuilder`); ``retry_errors`` goes to ``run``."""
    retry = kwargs.pop("retry_errors", False)
    return MERRBuilder(cfg, **kwargs).run(retry_errors=retry)
