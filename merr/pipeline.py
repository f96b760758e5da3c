"""``emollm merr build``: the MERR construction pipeline as cached, resumable per-clip stages.

Stages (REFERENCE.md §1.5), run stage by stage over every clip, each with a progress bar:

=========== ============================================================================================
``au``      probe the clip; AUs from ``<openface_dir>/<name>.csv`` (or the FER fallback), peak frame, AU
            pseudo-label (``emollm.aus.openface`` / ``emollm.aus.peaks`` / ``emollm.aus.cues``)
``visual``  visual objective description (``describe.visual``; offline default: unavailable, marked)
``audio``   audio tone (``describe.audio``; offline default: measured pitch / loudness / rate)
``subtitle``subtitle (``inputs.subtitles``: CSV, offline Whisper, or none)
``reason``  fine-grained reasoning by an LLM (``emollm_merr.reason``), cached by prompt
=========== ============================================================================================

then, over the whole set (cheap, recomputed every run from the cached stages): corrections from review, label
vocabulary, neutral samples, coarse captions (template), contradiction filter, dedup, class balancing, confidence,
and the exports. Clue stages run only for clips that get a label (and the chosen neutral clips), so a 70k-clip pool
where few AU combinations fire costs little beyond stage ``au``.

**Caching and resume** (the generic mechanism is :mod:`emollm.utils.stage_cache`; the stages themselves are in
:mod:`emollm_merr.stages`, the outputs in :mod:`emollm_merr.export`). Each stage of each clip is one JSON artifact
``cache/<stage>/<name>.json`` holding a *key*:
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

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emollm.apps.reasoning import ReasoningClient
from emollm.data.merr_schema import MERRRecord
from emollm.jobs.distributed import Job
from emollm.utils.stage_cache import (
    FingerprintIndex,
    RunLock,
    StageCache,
    StageStats,
    file_fingerprint,
    remove_temp_files,
    stable_hash,
)
from emollm_merr import parallel
from emollm_merr.clue import ClipContext, Clue, Describer
from emollm_merr.config import BuildConfig
from emollm_merr.describe import build_describer
from emollm_merr.export import (
    append_run_log,
    build_record,
    build_summary,
    sample_row,
    train_record,
    write_json_atomic,
    write_manifest,
    write_outputs,
)
from emollm_merr.fer import FERFallbackAU
from emollm_merr.reason import build_reasoning_client
from emollm_merr.stages import (
    CLUE_STAGES,
    STAGES,
    AUStage,
    ClipInput,
    apply_filters,
    assign_labels,
    clue_texts,
    describe_clip,
    discover_clips,
    read_names,
    run_reasoning,
)

__all__ = [
    "STAGES",
    "BuildResult",
    "ClipInput",
    "MERRBuilder",
    "StageStats",
    "discover_clips",
    "file_fingerprint",
    "run_build",
    "train_record",
    "write_json_atomic",
]

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    """What a build produced."""

    output_dir: Path
    summary: dict[str, Any]
    stats: dict[str, StageStats]
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    main: bool = True
    """False on ranks other than 0 of a data-parallel build (rank 0 reports)."""

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


class MERRBuilder:
    """Runs the pipeline for a :class:`~emollm_merr.config.BuildConfig`.

    Args:
        cfg: The configuration.
        reasoner: A :class:`~emollm.apps.reasoning.ReasoningClient` (default: from ``cfg.reason``, loaded lazily).
        describers: Clue -> describer overrides (``visual`` / ``audio`` / ``subtitle``).
        fer: The stage-1 fallback (default: :class:`~emollm_merr.describe.FERFallbackAU` from ``cfg.au``).
        progress: Show progress bars (None: when stderr is a terminal).
        job: The data-parallel job (default: from the launcher's environment; one process without one).
    """

    def __init__(
        self,
        cfg: BuildConfig,
        *,
        reasoner: ReasoningClient | None = None,
        describers: dict[str, Describer] | None = None,
        fer: FERFallbackAU | None = None,
        progress: bool | None = None,
        job: Job | None = None,
    ):
        self.cfg = cfg
        self.out = cfg.output_dir
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.au_stage = AUStage(cfg, fer)
        self.table = self.au_stage.table
        self.fer = self.au_stage.fer
        self._describers = dict(describers or {})
        self._reasoner = reasoner
        self.cache = StageCache(self.out / "cache", workers=cfg.workers, progress=self.progress, label="merr")
        self.stats = {s: StageStats() for s in STAGES}
        self.cache.stats.update(self.stats)
        self.errors: list[dict[str, Any]] = []
        self.job = job if job is not None else Job("merr")  # a launcher's rank, or the single process
        self.costs: dict[str, float] | None = None

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
        out: dict[str, Any] = {"au": self.au_stage.settings()}
        for clue in CLUE_STAGES:
            out[clue] = {"describer": self.describer(clue).id}
        out["reason"] = (
            {
                "client": self.reasoner.id,
                "prompt": self.cfg.reason.prompt_version,
                "precision": getattr(self.reasoner, "precision", None),  # None: a python: client decides its own
                "engine": getattr(self.reasoner, "kind", None),  # transformers, llama.cpp, openai-compatible
                "engine_chosen": getattr(self.reasoner, "chosen", None),
            }
            if self.cfg.reason.enabled
            else None
        )
        return out

    def _error(self, name: str, stage: str, err: dict[str, str]) -> None:
        self.errors.append({"name": name, "stage": stage, **err})

    def _run_stage(self, stage: str, jobs: list[tuple[str, str, Any]], **kwargs: Any) -> dict[str, dict[str, Any]]:
        """Cached ``(name, key, compute)`` jobs of one stage (:meth:`StageCache.run`); failures are recorded."""
        arts = parallel.run_stage(self.job, self.cache, stage, jobs, self.costs, **kwargs)  # this rank's shard
        for name in sorted(arts):
            if not arts[name].get("ok"):
                self._error(name, stage, arts[name]["error"])
        return arts

    # ----------------------------------------------------------------------------------------- main
    def run(self, *, retry_errors: bool = False) -> BuildResult:
        """Run (or resume) the build; returns the summary and the written files."""
        import shutil

        t0 = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        if self.job.distributed:  # torchrun / accelerate launch: rank 0 holds the lock (emollm_merr.parallel)
            with parallel.run_lock(self.job, self.out):
                return self._run(retry_errors, t0)
        with RunLock(self.out / "build.lock", owner="`emollm merr build`"):
            remove_temp_files(self.out)
            for p in (self.out / "openface").glob(".tmp-*"):  # OpenFace runs of a killed build
                shutil.rmtree(p, ignore_errors=True)
            return self._run(retry_errors, t0)

    def _run(self, retry_errors: bool, t0: float) -> BuildResult:
        from emollm_merr.review import load_corrections

        cfg = self.cfg
        names = read_names(Path(cfg.inputs.names)) if cfg.inputs.names else None
        clips = discover_clips(cfg.inputs.video_dir, cfg.inputs.openface_dir, names)
        if cfg.inputs.limit is not None:
            clips = clips[: cfg.inputs.limit]
        settings = self.stage_settings()
        if self.job.is_main:
            write_manifest(self.out, cfg, settings)
        corrections = load_corrections(cfg.corrections_path)
        ctxs = {c.name: ClipContext(c.name, c.video) for c in clips}
        index = FingerprintIndex(self.out / "cache" / "fingerprints.json")
        fps, csv_fps, self.costs = parallel.fingerprints(self.job, clips, index)  # (distributed: + durations)
        by_name = {c.name: c for c in clips}

        # ---- stage 1-3: AUs, peak, pseudo-label
        au_id = stable_hash(settings["au"])
        jobs = [
            (
                c.name,
                stable_hash(["au", au_id, fps[c.name], csv_fps[c.name]]),
                (lambda c=c: self.au_stage(c, ctxs[c.name])),
            )
            for c in clips
        ]
        au_arts = self._run_stage("au", jobs, thread_safe=True, retry_errors=retry_errors)
        au = {n: a["result"] for n, a in au_arts.items() if a.get("ok")}

        # ---- labels: review corrections > AU/FER pseudo-label; vocabulary; neutral augmentation
        label, source, labelled_status, neutral_added = assign_labels(au, corrections, cfg.filter, cfg.seed)
        status = {n: "error" for n in by_name if n not in au} | labelled_status
        chosen = sorted(label)

        # ---- stage 4: clues
        clues: dict[str, dict[str, Clue]] = {n: {} for n in chosen}
        for clue in CLUE_STAGES:
            d = self.describer(clue)
            sid = stable_hash(settings[clue])
            jobs = []
            for n in chosen:
                ctxs[n].peak_index = au[n]["peak_index"]
                upstream = au[n]["peak_index"] if clue == "visual" else None
                key = stable_hash([clue, sid, fps[n], upstream])
                jobs.append((n, key, (lambda n=n, d=d: describe_clip(d, ctxs[n]))))
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
        texts = {n: clue_texts(au[n], clues[n]) for n in chosen}

        # ---- stage 5: reasoning
        reasoning: dict[str, str] = {}
        produced: dict[str, dict[str, Any]] = {}
        if cfg.reason.enabled and chosen:
            reasoning = parallel.reasoning(
                self.job,
                run_reasoning,
                chosen,
                texts,
                label,
                client=self.reasoner,
                cache_dir=self.out / "cache" / "reason",
                prompt_version=cfg.reason.prompt_version,
                seed=cfg.seed,
                stats=self.stats["reason"],
                on_error=lambda n, err: self._error(n, "reason", err),
                progress=self.progress,
                produced=produced,
            )

        # ---- filters, records, exports (rank 0 alone: the other ranks' part ends with the last per-clip stage)
        ranks = parallel.merge_stats(self.job, self.stats)
        if not self.job.is_main:
            summary, files = self.job.broadcast(None)
            return BuildResult(self.out, summary, self.stats, files, time.perf_counter() - t0, main=False)
        filt = apply_filters(chosen, reasoning, label, source, cfg)
        records: dict[str, MERRRecord] = {}
        rows = []
        for n in sorted(by_name):
            corr = corrections.get(n) if n in label else None
            row = sample_row(
                n, status[n], au.get(n), label.get(n), source.get(n), clues.get(n), reasoning.get(n), filt, corr
            )
            if n in label:
                records[n] = build_record(
                    n, au[n], label[n], source[n], texts[n], clues[n], reasoning.get(n), row, corr, cfg.output.valence
                )
            rows.append(row)
        files = write_outputs(self.out, cfg, records, filt, rows, self.errors)
        summary = build_summary(len(by_name), au, status, label, source, neutral_added, filt, clues, self.errors, files)
        summary["reasoning_precision"] = settings["reason"]["precision"] if settings["reason"] else None
        # How the reasonings were produced (engine, model as served, sampling), once per distinct setting; read from
        # the cache entries, so a resumed or fully cached run writes the same summary.
        distinct = {json.dumps(produced[n], sort_keys=True): produced[n] for n in sorted(produced)}
        summary["reasoning_produced_by"] = [distinct[k] for k in sorted(distinct)]
        files["summary"] = write_json_atomic(self.out / "summary.json", summary, fsync=True)
        seconds = time.perf_counter() - t0
        append_run_log(self.out, seconds, len(clips), self.stats, **({"ranks": ranks} if ranks else {}))
        self.job.broadcast((summary, files))
        return BuildResult(self.out, summary, self.stats, files, seconds)


def run_build(cfg: BuildConfig, **kwargs: Any) -> BuildResult:
    """Build MERR files for ``cfg`` (see :class:`MERRBuilder`); ``retry_errors`` goes to ``run``."""
    retry = kwargs.pop("retry_errors", False)
    return MERRBuilder(cfg, **kwargs).run(retry_errors=retry)
