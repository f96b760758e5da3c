"""The steps of ``emollm merr build`` (:mod:`emollm_merr.pipeline` runs them in order and caches the per-clip ones).

Per clip, cached by :class:`emollm.utils.stage_cache.StageCache`: :class:`AUStage` (probe, AUs from OpenFace or the
FER fallback, peak, pseudo-label), :func:`describe_clip` (one clue), :func:`run_reasoning` (LLM reasoning, cached
by prompt in ``cache/reason/``). Over the whole set, recomputed every run: :func:`discover_clips`,
:func:`assign_labels` (review corrections, vocabulary, neutral augmentation), :func:`clue_texts`,
:func:`apply_filters` (contradiction, degenerate, dedup, balance).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emollm.apps.reasoning import ReasoningClient, check_quality, check_reasoning
from emollm.data.merr_files import VIDEO_EXTENSIONS
from emollm.model.prompts import build_reasoning_prompt
from emollm.utils.stage_cache import StageStats, file_sha256, stable_hash
from emollm_merr.clue import ClipContext, Clue, Describer
from emollm_merr.config import BuildConfig, FilterConfig
from emollm_merr.fer import FER_ADJECTIVES, FERFallbackAU
from emollm_merr.filter import balance, dedup_key, select_neutral
from emollm_merr.reason import ReasoningCache

__all__ = [
    "CLUE_STAGES",
    "FORMAT",
    "STAGES",
    "VERSION",
    "AUStage",
    "ClipInput",
    "FilterResult",
    "apply_filters",
    "assign_labels",
    "clue_texts",
    "describe_clip",
    "discover_clips",
    "read_names",
    "run_openface",
    "run_reasoning",
]

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("au", "visual", "audio", "subtitle", "reason")
CLUE_STAGES: tuple[str, ...] = ("visual", "audio", "subtitle")
FORMAT = "emollm-merr-build"
VERSION = 1


# ================================================================================================ inputs


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

    Args:
        video_dir: Folder of clips.
        openface_dir: Folder of ``<name>.csv`` OpenFace files (None: no CSVs).
        names: Only these names (each must have a video).

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


def read_names(path: Path) -> list[str]:
    """Names of a list file: the first column of each line (``N C E V`` lists work), ``#`` lines skipped."""
    names = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#"):
            names.append(parts[0])
    return names


# ================================================================================================ stage 1-3


class AUStage:
    """Stage 1-3 of one clip: probe, AUs (OpenFace CSV, OpenFace run, or the FER fallback), peak, pseudo-label.

    Args:
        cfg: The build configuration.
        fer: The FER fallback (default: from ``cfg.au``).
    """

    def __init__(self, cfg: BuildConfig, fer: FERFallbackAU | None = None):
        from emollm.aus.cues import load_cue_table

        self.cfg = cfg
        self.table = load_cue_table(cfg.cues_path())
        self.rule = cfg.au.peak_rule or self.table.peak_rule
        self.min_conf = self.table.min_confidence if cfg.au.min_confidence is None else cfg.au.min_confidence
        self.fer = fer if fer is not None else FERFallbackAU(cfg.au.fer_frames, cfg.au.face_detector)
        self._landmarker: Any = None  # MediaPipe, built on first use by the blendshapes source
        self._lock = threading.Lock()

    def settings(self) -> dict[str, Any]:
        """What the stage's results depend on besides the clip (its part of the cache keys).

        Raises:
            FileNotFoundError: ``au.run_openface`` is on and no OpenFace binary is found (fails before any work).
        """
        cues = self.table.source
        if self.cfg.au.run_openface:
            from emollm.aus.openface import OpenFaceRunner

            openface = str(OpenFaceRunner(binary=self.cfg.au.openface_bin).find_binary())  # fails early
        else:
            openface = None
        return {
            "version": VERSION,
            "run_openface": openface,
            "cues": file_sha256(cues) if cues is not None else None,
            "rule": self.rule,
            "min_confidence": self.min_conf,
            "fallback": self.cfg.au.fallback,
            "fer": self.fer.id if self.cfg.au.fallback == "fer" else None,
            **({"blendshapes": self._blendshapes_id()} if self.cfg.au.fallback == "blendshapes" else {}),
        }

    def _blendshapes_id(self) -> str:
        from emollm.clues.blendshapes import AU_SOURCES, face_landmarker_path

        table = stable_hash([[s.au, list(s.shapes), list(s.minus), list(s.gate)] for s in AU_SOURCES])
        model = file_sha256(face_landmarker_path())[:12]
        return f"blendshapes:{model}:{table[:12]}:{self.cfg.au.fer_frames}:{self.cfg.au.face_detector}"

    def _blendshapes(self, clip: ClipInput) -> tuple[Any, list[int]]:
        """AUs of the main face from MediaPipe blendshapes over the sampled frames, as an ``AUSequence``."""
        from emollm.aus.openface import AUSequence, NoFaceError
        from emollm.clues.blendshapes import BlendshapeAUs, au_arrays
        from emollm.media import load_sample

        sample = load_sample(
            clip.video, modalities=("face",), frame_policy=self.cfg.au.fer_frames,
            face_detector=self.cfg.au.face_detector, min_audio_duration=None,
        )  # fmt: skip
        if sample.faces is None:
            raise NoFaceError(f"{clip.video}: no face for the blendshapes AU source ({sample.missing.get('face', '')})")
        with self._lock:
            if self._landmarker is None:
                self._landmarker = BlendshapeAUs()
            frames = self._landmarker.from_images(list(sample.faces))
        arrays = au_arrays(frames, fps=sample.info.fps or None)
        kwargs = arrays.to_au_sequence_kwargs()
        kwargs["frames"] = np.asarray(sample.face_indices, dtype=np.int64) + 1  # OpenFace-style 1-based numbers
        return AUSequence(**kwargs, min_confidence=self.min_conf), list(sample.face_indices)

    def _peak_record(self, seq, source: str, au_file: str | None) -> dict[str, Any]:
        """Peak frame -> AU-combination label fields of an AU record, for either AU source (``peak_index`` is the
        peak's row in ``seq``, ``peak_frame`` its frame number as ``seq`` gives it)."""
        from emollm.aus.cues import describe_aus, label_from_peak
        from emollm.aus.peaks import select_peak

        peak = select_peak(seq, self.rule, self.table.active_intensity, top_k=self.table.peak_top_k)
        cues = label_from_peak(seq, peak, self.table)
        return {
            "au_source": source,
            "au_file": au_file,
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
        }

    def __call__(self, clip: ClipInput, ctx: ClipContext) -> dict[str, Any]:
        """The AU record of ``clip`` (JSON-ready); sets ``ctx.info``.

        Raises:
            ValueError: the file has no video stream.
            FileNotFoundError: no CSV and ``au.fallback: none``.
        """
        from emollm.aus.openface import read_openface_csv
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
            csv = run_openface(clip, self.cfg.output_dir, self.cfg.au.openface_bin)
        if csv is not None:
            seq = read_openface_csv(csv, self.min_conf)
            return base | self._peak_record(seq, "openface", csv.name) | {"csv_frames": int(seq.n_frames)}
        if self.cfg.au.fallback == "blendshapes":
            seq, indices = self._blendshapes(clip)
            record = self._peak_record(seq, "blendshapes", None)
            video_frame = int(indices[record["peak_index"]])  # the sampled video frame, like OpenFace's CSV row
            return (
                base
                | record
                | {
                    "peak_index": video_frame,  # replaces the row in seq, keeping the key's place
                    "peak_frame": video_frame + 1,
                    "au_frames": [int(i) for i in indices],
                    "au_note": "no OpenFace CSV: AUs estimated from MediaPipe blendshapes (emollm.clues.blendshapes)",
                }
            )
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


def run_openface(clip: ClipInput, out: Path, binary: str | None = None) -> Path:
    """OpenFace on one clip into ``<out>/openface/<name>.csv`` (via a temp folder, so a kill leaves no half CSV).

    Args:
        clip: The clip.
        out: The build's output folder.
        binary: ``FeatureExtraction`` path (None: found on PATH / ``OPENFACE_BIN``).

    Returns:
        The CSV (an existing one is reused).
    """
    import shutil

    from emollm.aus.openface import OpenFaceRunner

    final = out / "openface" / f"{clip.name}.csv"
    if final.is_file():
        return final
    tmp = out / "openface" / f".tmp-{clip.name}-{os.getpid()}"
    try:
        made = OpenFaceRunner(binary=binary).run(clip.video, tmp, overwrite=True)
        os.replace(made, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# ================================================================================================ labels


def assign_labels(
    au: dict[str, dict[str, Any]], corrections: dict[str, Any], filt: FilterConfig, seed: int
) -> tuple[dict[str, str], dict[str, str], dict[str, str], list[str]]:
    """Labels of the clips that passed stage 1: review corrections > AU/FER pseudo-label; vocabulary; neutral.

    Args:
        au: Clip -> AU record (clips whose stage 1 succeeded).
        corrections: Clip -> review correction (``emollm_merr.review.load_corrections``).
        filt: ``filter`` settings (vocabulary, neutral augmentation).
        seed: Seed of the neutral choice.

    Returns:
        ``(label, source, status, neutral_added)``: clip -> label and its source for labelled clips, clip ->
        status for every clip of ``au``, and the added neutral clips.
    """
    from emollm_merr.review import DROP

    labels = list(filt.labels)
    label: dict[str, str] = {}
    source: dict[str, str] = {}
    status: dict[str, str] = {}
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
    if filt.add_neutral:
        cands = [
            n
            for n in sorted(au)
            if status[n] == "no_label"
            and au[n]["au_source"] == "openface"
            and not au[n]["candidates"]
            and len(au[n]["peak_AU_list"]) <= filt.neutral_max_active_aus
        ]
        counts = Counter(lab for lab in label.values() if lab != "neutral")
        want = filt.neutral_count
        if want is None:
            want = round(sum(counts.values()) / len(counts)) if counts else 0
        neutral_added = select_neutral(cands, want, seed)
        for n in neutral_added:
            label[n], source[n], status[n] = "neutral", "neutral_added", "labelled"
    return label, source, status, neutral_added


# ================================================================================================ stage 4-5


def describe_clip(d: Describer, ctx: ClipContext) -> dict[str, Any]:
    """One clue of one clip as a JSON-ready dict; the decoded audio is dropped afterwards (70k clips would not
    fit in memory)."""
    try:
        return d.describe(ctx).to_dict()
    finally:
        ctx._audio = None


def clue_texts(au: dict[str, Any], clues: dict[str, Clue]) -> dict[str, str | None]:
    """The texts the caption and the reasoning prompt are made of: AU phrases and the available clues."""
    phrases = au["visual_expression"]
    texts: dict[str, str | None] = {"visual_expression": ", ".join(phrases) if phrases else None}
    return texts | {k: (c.text if c.ok else None) for k, c in clues.items()}


def run_reasoning(
    chosen: list[str],
    texts: dict[str, dict[str, str | None]],
    label: dict[str, str],
    *,
    client: ReasoningClient,
    cache_dir: Path,
    prompt_version: str,
    seed: int,
    stats: StageStats,
    on_error: Callable[[str, dict[str, str]], None],
    progress: bool = False,
    produced: dict[str, dict[str, Any]] | None = None,
) -> dict[str, str]:
    """Stage 5: the reasoning of each chosen clip, from ``cache_dir`` (content-addressed by client, prompt version
    and prompt) or generated (a prompt seen twice in one run is generated once). An engine of
    :mod:`emollm.engines` answers through its ``imap``: a server ``concurrency`` prompts at a time, each answer cached
    as it arrives; other clients one prompt at a time through ``generate``.

    Args:
        chosen: Clips to reason about, in order.
        texts: Clip -> :func:`clue_texts`.
        label: Clip -> label.
        client: The LLM client.
        cache_dir: The :class:`~emollm_merr.reason.ReasoningCache` folder.
        prompt_version: ``reason.prompt_version``.
        seed: Generation seed.
        stats: Counters to update.
        on_error: Called with ``(clip, {"type", "message"})`` for a failed generation.
        progress: Show a progress bar.
        produced: Filled with clip -> how its reasoning was produced (the engine's ``produced_by`` stored with the
            answer; absent for clients that have none).

    Returns:
        Clip -> whitespace-normalised reasoning (failed clips are missing).

    Raises:
        EngineError: A fatal engine error (the server is gone or answers garbage). Every answer received before it
            is cached, so rerunning the build resumes where it stopped.
    """
    from tqdm import tqdm

    cache = ReasoningCache(cache_dir)
    out: dict[str, str] = {}
    produced = {} if produced is None else produced
    todo: dict[str, tuple[str, str, list[str]]] = {}  # key -> (system, user, clips); same prompt twice: asked once
    for n in chosen:
        system, user = build_reasoning_prompt(texts[n], label[n], prompt_version)
        key = ReasoningCache.key(client.id, prompt_version, system, user)
        entry = cache.get_entry(key)
        if entry is not None:
            out[n] = entry["answer"]
            if isinstance(entry.get("produced_by"), dict):
                produced[n] = entry["produced_by"]
            stats.cached += 1
        elif key in todo:
            todo[key][2].append(n)
        else:
            todo[key] = (system, user, [n])

    def store(key: str, answer: Any, meta: dict[str, Any] | None) -> None:
        system, user, clips = todo[key]
        answer = " ".join(str(answer).split())
        extra = {"produced_by": meta} if meta else {}
        cache.put(key, answer, client=client.id, prompt_version=prompt_version, system=system, user=user, **extra)
        stats.computed += 1
        stats.cached += len(clips) - 1
        for n in clips:
            out[n] = answer
            if meta:
                produced[n] = meta

    def fail(key: str, e: BaseException) -> None:
        for n in todo[key][2]:
            log.debug("reasoning failed on %s", n, exc_info=e)
            stats.errors += 1
            on_error(n, {"type": type(e).__name__, "message": str(e)})

    keys = list(todo)
    bar = tqdm(total=len(keys), desc="merr reason", unit="clip", disable=not progress, leave=False)
    imap = getattr(client, "imap", None)
    try:
        if callable(imap):
            from emollm.engines.base import EngineError, postprocess

            conversations = [
                [{"role": "system", "content": todo[k][0]}, {"role": "user", "content": todo[k][1]}] for k in keys
            ]
            try:
                for i, done in imap(conversations, seed=seed):
                    if isinstance(done, BaseException):
                        fail(keys[i], done)
                    else:
                        meta = {k: v for k, v in done.produced_by.items() if k not in ("usage", "prompt_tokens")}
                        store(keys[i], postprocess(done), meta)
                    bar.update(1)
            except EngineError as e:
                finished = sum(1 for k in keys if todo[k][2][0] in out)
                raise type(e)(
                    f"{e}. {finished} of {len(keys)} new reasonings were received and cached in {cache_dir}: fix the "
                    "server and rerun the same command to resume"
                ) from e
        else:
            for key in keys:
                system, user, _ = todo[key]
                try:
                    answer = client.generate(system, user, seed=seed)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:
                    fail(key, e)
                else:
                    store(key, answer, None)
                bar.update(1)
    finally:
        bar.close()
    return out


# ================================================================================================ filters


@dataclass
class FilterResult:
    """What :func:`apply_filters` decided."""

    consistency: dict[str, Any] = field(default_factory=dict)
    """Clip -> ``check_reasoning`` verdict (clips with a reasoning)."""
    quality: dict[str, str | None] = field(default_factory=dict)
    """Clip -> degenerate-text issue or None (clips with a reasoning)."""
    drop: dict[str, str] = field(default_factory=dict)
    """Clip -> why it is not in the fine-grained set."""
    fine: list[str] = field(default_factory=list)
    """Clips of the fine-grained set, in order."""
    coarse: list[str] = field(default_factory=list)
    """Clips of the coarse-grained set (every chosen clip but the added neutral ones)."""


def apply_filters(
    chosen: list[str],
    reasoning: dict[str, str],
    label: dict[str, str],
    source: dict[str, str],
    cfg: BuildConfig,
) -> FilterResult:
    """Contradiction and degenerate-text checks, dedup and class balancing of the reasonings.

    Args:
        chosen: The labelled clips, in order.
        reasoning: Clip -> reasoning (missing: generation failed).
        label: Clip -> label.
        source: Clip -> label source.
        cfg: The build configuration (``filter``, ``reason.enabled``, ``seed``).
    """
    from emollm.labels import LabelParser

    labels = list(cfg.filter.labels)
    parser = LabelParser(labels)
    res = FilterResult()
    drop = res.drop
    for n in chosen:
        if not cfg.reason.enabled:
            drop[n] = "reasoning_disabled"
            continue
        if n not in reasoning:
            drop[n] = "reason_error"
            continue
        res.consistency[n] = check_reasoning(reasoning[n], label[n], labels, parser)
        res.quality[n] = check_quality(reasoning[n])
        if cfg.filter.contradiction and not res.consistency[n].ok:
            drop[n] = res.consistency[n].status
        elif cfg.filter.degenerate and res.quality[n]:
            drop[n] = res.quality[n]
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
    res.fine = [n for n in chosen if n not in drop]
    res.coarse = [n for n in chosen if source[n] != "neutral_added"]
    return res
