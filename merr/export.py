"""The outputs of ``emollm merr build`` (layouts in :mod:`emollm_merr.pipeline`'s docstring).

:func:`sample_row` and :func:`build_record` turn one clip's stage results into its ``samples.jsonl`` row and its
:class:`~emollm.data.merr_schema.MERRRecord`; :func:`write_outputs` writes the Emotion-LLaMA JSON/TXT files,
``merr_train.jsonl`` (rows by :func:`train_record`), ``samples.jsonl`` and ``errors.jsonl``; :func:`build_summary`
makes ``summary.json`` (with the sha256 of every other output), :func:`write_manifest` ``manifest.json`` and
:func:`append_run_log` a line of ``runs.jsonl``. Every file is written atomically (:mod:`emollm.utils.io`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from emollm.data.merr_files import write_label_txt, write_merr_json
from emollm.data.merr_schema import MERRExtras, MERRRecord
from emollm.model.prompts import coarse_caption
from emollm.utils.io import atomic_write_text
from emollm.utils.stage_cache import StageStats, file_sha256, write_json_compact
from emollm_merr.clue import Clue
from emollm_merr.config import BuildConfig
from emollm_merr.filter import label_confidence, sample_confidence
from emollm_merr.stages import CLUE_STAGES, FORMAT, STAGES, VERSION, FilterResult

__all__ = [
    "append_run_log",
    "build_record",
    "build_summary",
    "sample_row",
    "train_record",
    "write_json_atomic",
    "write_manifest",
    "write_outputs",
]

log = logging.getLogger(__name__)

write_json_atomic = write_json_compact
"""Compact, key-sorted JSON written atomically (``summary.json``, ``manifest.json``, cache files)."""

_MARKERS = {
    "audio": "<audio>",
    "face": "<face>",
    "video": "<video>",
}  # = emollm.model.processing.MARKERS (no torch here)


# ================================================================================================ per clip


def sample_row(
    n: str,
    status: str,
    au: dict[str, Any] | None,
    label: str | None,
    source: str | None,
    clues: dict[str, Clue] | None,
    reasoning: str | None,
    filt: FilterResult,
    corr: Any,
) -> dict[str, Any]:
    """The ``samples.jsonl`` row of one clip.

    Args:
        n: Clip name.
        status: Its status (``labelled``, ``no_label``, ``error``, ...).
        au: Its AU record (None: stage 1 failed).
        label: Its label (None: not labelled; then ``source``, ``clues`` and ``corr`` are unused).
        source: Label source.
        clues: Clue kind -> clue.
        reasoning: Its reasoning (None: none).
        filt: The filter decisions of the build.
        corr: Its review correction or None.
    """
    row: dict[str, Any] = {"name": n, "status": status}
    if au is not None:
        row |= {"au_source": au["au_source"], "au_label": au["pseu_emotion"], "frame_count": au["frame_count"]}
    if label is None:
        return row
    assert au is not None and source is not None and clues is not None
    cons = filt.consistency.get(n)
    quality = filt.quality.get(n)
    n_ok = sum(1 for c in clues.values() if c.ok)
    verdict = quality or (cons.status if cons else None)
    conf = sample_confidence(label_confidence(au, source), verdict, n_ok)
    issue = cons.issue if cons else ("reasoning failed" if filt.drop.get(n) == "reason_error" else "")
    if quality:
        issue = f"{issue}; {quality}" if issue else quality
    return row | {
        "label": label,
        "label_source": source,
        "confidence": conf,
        "clues": {k: (c.text if c.ok else c.reason) for k, c in clues.items()},
        "reasoning": reasoning,
        "consistency": cons.status if cons else None,
        "issue": issue,
        "flagged": bool(issue),
        "in_coarse": n in filt.coarse,
        "in_fine": n in filt.fine,
        "dropped": filt.drop.get(n),
        "review": {"reviewer": corr.reviewer, "reviewed_at": corr.reviewed_at} if corr else None,
    }


def build_record(
    n: str,
    r: dict[str, Any],
    lab: str,
    src: str,
    texts: dict[str, str | None],
    clues: dict[str, Clue],
    reasoning: str | None,
    row: dict[str, Any],
    corr: Any,
    valence: float,
) -> MERRRecord:
    """The MERR record of one labelled clip.

    Args:
        n: Clip name.
        r: Its AU record.
        lab: Its label.
        src: Label source.
        texts: Its clue texts (``emollm_merr.stages.clue_texts``).
        clues: Clue kind -> clue.
        reasoning: Its reasoning or None.
        row: Its :func:`sample_row` (confidence, consistency).
        corr: Its review correction or None.
        valence: ``output.valence``.
    """
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
            valence=float(valence),
            peak_rule=r["peak_rule"],
            peak_frame=r.get("peak_frame"),
            more=more,
        ),
    )


def train_record(rec: MERRRecord) -> dict[str, Any]:
    """Our training JSONL row for a record (schema in :mod:`emollm_merr.pipeline`'s docstring)."""
    from emollm.data.config import DataConfig
    from emollm.model.prompts import DEFAULT_INSTRUCTIONS

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


# ================================================================================================ files


def _jsonl(rows: list[dict[str, Any]], *, sort_keys: bool) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=sort_keys) + "\n" for r in rows)


def write_outputs(
    out: Path,
    cfg: BuildConfig,
    records: dict[str, MERRRecord],
    filt: FilterResult,
    rows: list[dict[str, Any]],
    errors: list[dict[str, Any]],
) -> dict[str, Path]:
    """Write every output but ``summary.json`` (fsynced); a fine-grained pair left by an earlier build with
    reasoning on is removed when it is off.

    Args:
        out: The output folder.
        cfg: The build configuration (``output.include_extras``, ``reason.enabled``).
        records: Clip -> record (labelled clips).
        filt: The filter decisions (``coarse`` and ``fine`` lists).
        rows: ``samples.jsonl`` rows in name order.
        errors: One dict per failed clip/stage (``name``, ``stage``, ``type``, ``message``).

    Returns:
        Output id -> path.
    """
    extras = cfg.output.include_extras
    files: dict[str, Path] = {}
    coarse_recs = [records[n] for n in filt.coarse]
    files["coarse_json"] = write_merr_json(
        out / "MERR_coarse_grained.json", coarse_recs, "coarse", include_extras=extras
    )
    files["coarse_txt"] = write_label_txt(out / "MERR_coarse_grained.txt", coarse_recs)
    if cfg.reason.enabled:
        fine_recs = [records[n] for n in filt.fine]
        files["fine_json"] = write_merr_json(out / "MERR_fine_grained.json", fine_recs, "fine", include_extras=extras)
        files["fine_txt"] = write_label_txt(out / "MERR_fine_grained.txt", fine_recs)
    else:
        for stale in ("MERR_fine_grained.json", "MERR_fine_grained.txt"):
            with contextlib.suppress(FileNotFoundError):
                (out / stale).unlink()
    train = [records[n] for n in (filt.fine if cfg.reason.enabled else filt.coarse)]
    files["train_jsonl"] = atomic_write_text(
        out / "merr_train.jsonl", "".join(json.dumps(train_record(r), ensure_ascii=False) + "\n" for r in train)
    )
    files["samples"] = atomic_write_text(out / "samples.jsonl", _jsonl(rows, sort_keys=True))
    errors = sorted(errors, key=lambda e: (e["name"], STAGES.index(e["stage"])))
    files["errors"] = atomic_write_text(out / "errors.jsonl", _jsonl(errors, sort_keys=True))
    return files


def build_summary(
    clips: int,
    au: dict[str, dict[str, Any]],
    status: dict[str, str],
    label: dict[str, str],
    source: dict[str, str],
    neutral_added: list[str],
    filt: FilterResult,
    clues: dict[str, dict[str, Clue]],
    errors: list[dict[str, Any]],
    files: dict[str, Path],
) -> dict[str, Any]:
    """The content of ``summary.json``: counts per stage, label and filter, and the sha256 of ``files``."""
    unavailable = {k: sum(1 for n in clues if not clues[n][k].ok) for k in CLUE_STAGES}
    return {
        "format": FORMAT,
        "version": VERSION,
        "clips": clips,
        "errors": sum(1 for s in status.values() if s == "error"),
        "errors_by_stage": dict(sorted(Counter(e["stage"] for e in errors).items())),
        "au_source": dict(sorted(Counter(r["au_source"] for r in au.values()).items())),
        "status": dict(sorted(Counter(status.values()).items())),
        "labelled": sum(1 for s in source.values() if s != "neutral_added"),
        "label_source": dict(sorted(Counter(source.values()).items())),
        "neutral_added": len(neutral_added),
        "coarse": len(filt.coarse),
        "fine": len(filt.fine),
        "coarse_by_label": dict(sorted(Counter(label[n] for n in filt.coarse).items())),
        "fine_by_label": dict(sorted(Counter(label[n] for n in filt.fine).items())),
        "dropped": dict(sorted(Counter(filt.drop.values()).items())),
        "clues_unavailable": unavailable,
        "files": {k: {"path": p.name, "sha256": file_sha256(p)} for k, p in sorted(files.items())},
    }


def write_manifest(out: Path, cfg: BuildConfig, settings: dict[str, Any]) -> Path:
    """Write ``manifest.json`` (resolved config, per-stage settings); log the stages whose settings changed."""
    path = out / "manifest.json"
    try:
        old = json.loads(path.read_text(encoding="utf-8")).get("stages", {})
    except (OSError, ValueError):
        old = {}
    for stage, value in settings.items():
        if stage in old and old[stage] != value:
            log.info("merr build: %s settings changed since the last run; its cached results will be redone", stage)
    return write_json_atomic(
        path, {"format": FORMAT, "version": VERSION, "config": cfg.to_dict(), "stages": settings}, fsync=True
    )


def append_run_log(out: Path, seconds: float, clips: int, stats: dict[str, StageStats], **extra: Any) -> None:
    """Append this run's line to ``runs.jsonl`` (time, seconds, per-stage counters, and ``extra`` such as the
    per-rank throughput of a data-parallel build)."""
    entry = {
        "finished": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(seconds, 3),
        "clips": clips,
        "stats": {s: vars(st) for s, st in stats.items()},
        **extra,
    }
    with open(out / "runs.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
