"""EMER scoring: clue overlap and label overlap between predicted and ground-truth emotion reasoning, by an LLM judge.

The protocol follows AffectGPT-v1's ``evaluation.py`` as described in REFERENCE.md §7.4, with the original Chinese
prompts paraphrased in English and frozen under :data:`EMER_PROMPTS_VERSION`:

- **Clue overlap** (one judge call per sample): the judge summarises the emotional clues of the ground truth and of
  the prediction, rates their overlap from 1 to 10 and answers ``"score; reason"``.
- **Label overlap** (three calls per sample): the judge reduces the ground truth and the prediction each to their
  emotion word(s) (one-shot example: "looks happy but is actually anxious" -> "anxious"), then rates the overlap of
  the two word sets from 1 to 10.

The score is the first number in the judge's answer (the original regex rule), after mentions of the scale itself
("1 to 10", "1-10", "0 to 10") are blanked: small judges often echo the prompt ("The score (an integer from 1 to 10)
is 10."), which the bare rule reads as 1. An answer with no number, or a number outside 0..10, is **invalid**: it is
counted, never replaced by a default score. The final score of each metric is the mean over valid samples, reported
with the number of invalid answers and of gold samples that have no prediction. Every row stores the judge id and
the prompt version; judge calls are cached on disk (:class:`emollm_eval.judge.JudgeCache`), so a rerun (or a killed run)
pays only for the prompts not answered yet.

The original judge (``gpt-3.5-turbo-16k-0613``) is retired, so published EMER numbers cannot be reproduced exactly:
compare models only under the same judge id and prompt version.

Command line::

    emollm eval emer --gold EMER/gt-eng.csv --pred Emotion-LLaMA_for_EMER.csv --judge smollm2 --out runs/emer
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from emollm.utils.io import atomic_write_text
from emollm_eval.datasets import EMERSample, read_emer
from emollm_eval.judge import CachedJudge, Judge, JudgeCache

__all__ = [
    "CLUE_OVERLAP_PROMPT",
    "EMER_METRICS",
    "EMER_PROMPTS_VERSION",
    "LABEL_EXTRACT_PROMPT",
    "LABEL_OVERLAP_PROMPT",
    "EmerResult",
    "EmerRow",
    "parse_score",
    "read_emer_predictions",
    "score_emer",
    "write_emer_outputs",
]

EMER_PROMPTS_VERSION = "1"
"""Version of the three prompt templates below. Change it whenever a template changes: it is part of every cache key
and is stored with every score."""

EmerMetric = Literal["clue_overlap", "label_overlap"]
EMER_METRICS: tuple[str, ...] = ("clue_overlap", "label_overlap")

CLUE_OVERLAP_PROMPT = (
    "You compare two descriptions of the emotional state of the same person in a video.\n\n"
    "Ground truth:\n{gt}\n\n"
    "Prediction:\n{pred}\n\n"
    "Step 1: summarise the clues about the person's emotional state in the ground truth.\n"
    "Step 2: summarise the clues about the person's emotional state in the prediction.\n"
    "Step 3: rate how much the two sets of emotional clues overlap, from 1 to 10 (1 = nothing in common, "
    "10 = the same clues). A higher score means more overlap.\n\n"
    "Do steps 1 and 2 silently. Answer with one line only: the score (an integer from 1 to 10), a semicolon, and a "
    "short reason. Format: score; reason"
)
"""Clue overlap, version 1. Fields: ``{gt}``, ``{pred}``."""

LABEL_EXTRACT_PROMPT = (
    "Read the description of a person in a video and name the emotion(s) the person most likely feels. "
    "Output emotion words only, separated by commas.\n\n"
    "Example\n"
    "Description: He looks happy on the surface, but his trembling voice and restless hands show that he is "
    "actually anxious.\n"
    "Emotion words: anxious\n\n"
    "Description: {text}\n"
    "Emotion words:"
)
"""Label overlap step 1 (once for the ground truth, once for the prediction), version 1. Field: ``{text}``."""

LABEL_OVERLAP_PROMPT = (
    "Two sets of emotion words describe the same person.\n"
    "Set 1 (ground truth): {gt_emotions}\n"
    "Set 2 (prediction): {pred_emotions}\n\n"
    "Rate how much the two sets overlap in meaning, from 1 to 10 (1 = unrelated emotions, 10 = the same emotions). "
    "A higher score means more overlap.\n\n"
    "Answer with one line only: the score (an integer from 1 to 10), a semicolon, and a short reason. "
    "Format: score; reason"
)
"""Label overlap step 2, version 1. Fields: ``{gt_emotions}``, ``{pred_emotions}``."""

SCORE_RANGE: tuple[float, float] = (0.0, 10.0)
"""Valid scores (inclusive). The prompts ask for 1..10; a 0 ("no overlap at all") is accepted, as on the 0-10 scale
of the published tables; anything else is invalid."""

_FIRST_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)")
_SCALE_ECHO = re.compile(r"(?<![\w.])[01]\s*(?:to|-|–|and)\s*10(?![\w.])", re.IGNORECASE)
_FORMAT = re.compile(r"^\s*\d+(?:\.\d+)?\s*;")
_MAX_EMOTION_CHARS = 200


def parse_score(response: str) -> tuple[float | None, str]:
    """The first number in a judge answer, as ``(score, "ok")``, or ``(None, why)`` when it is invalid.

    Mentions of the scale ("1 to 10", "1-10", "0 to 10") are skipped, so an answer echoing the prompt is read by its
    score, not by the scale's lower bound.

    Examples:
        >>> parse_score("7; both mention the frown")
        (7.0, 'ok')
        >>> parse_score("Score: 8/10")
        (8.0, 'ok')
        >>> parse_score("The score (an integer from 1 to 10) is 9.")
        (9.0, 'ok')
        >>> parse_score("They overlap a lot.")
        (None, 'no number')
        >>> parse_score("15; very similar")
        (None, 'out of range: 15')
    """
    match = _FIRST_NUMBER.search(_SCALE_ECHO.sub(" ", response or ""))
    if match is None:
        return None, "no number" if (response or "").strip() else "empty answer"
    value = float(match.group(1))
    low, high = SCORE_RANGE
    if not low <= value <= high:
        return None, f"out of range: {match.group(1)}"
    return value, "ok"


# --------------------------------------------------------------------------------------------------------------------
# Predictions


def read_emer_predictions(path: str | os.PathLike) -> dict[str, str]:
    """Read predicted reasoning: Emotion-LLaMA's CSV ``names,chi_reasons`` or our ``predictions.jsonl``.

    CSV files may also use ``name`` for the name column and ``reasons``/``reason``/``english``/``prediction``/
    ``answer`` for the text column (the ``chi_reasons`` name is historical: its content is English). JSONL rows need
    ``name`` and ``answer`` (``emollm eval`` output).

    Returns:
        name -> predicted text, in file order.

    Raises:
        ValueError: On a malformed file (message ``path:line: problem; fix``) or a duplicate name.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found; check the path") from None
    out: dict[str, str] = {}

    def add(name: str, value: str, line: int) -> None:
        if not name:
            raise ValueError(f"{path}:{line}: empty sample name; fill it in or delete the row")
        if name in out:
            raise ValueError(f"{path}:{line}: duplicate name {name!r}; keep one prediction per sample")
        out[name] = value

    if path.suffix == ".jsonl":
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                add(str(row["name"]), "" if row.get("answer") is None else str(row["answer"]), line_no)
            except (ValueError, KeyError, TypeError) as err:
                if isinstance(err, ValueError) and str(err).startswith(str(path)):
                    raise
                raise ValueError(
                    f"{path}:{line_no}: not a prediction row ({err}); expected JSON with 'name' and 'answer'"
                ) from None
        return out
    reader = csv.reader(io.StringIO(text, newline=""))
    rows = [(reader.line_num, r) for r in reader if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{path}:1: the file is empty; expected a CSV with the header 'names,chi_reasons'")
    header = [c.strip().lower() for c in rows[0][1]]
    name_col = next((c for c in ("names", "name") if c in header), None)
    text_col = next(
        (c for c in ("chi_reasons", "reasons", "reason", "english", "prediction", "answer") if c in header), None
    )
    if name_col is None or text_col is None:
        raise ValueError(
            f"{path}:{rows[0][0]}: header is {','.join(header)!r}; expected 'names,chi_reasons' (Emotion-LLaMA's "
            "EMER output) or 'name,reason'"
        )
    i_name, i_text = header.index(name_col), header.index(text_col)
    for line, cells in rows[1:]:
        if len(cells) != len(header):
            raise ValueError(
                f"{path}:{line}: {len(cells)} fields but the header has {len(header)}; quote fields with commas"
            )
        add(cells[i_name].strip(), cells[i_text].strip(), line)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Scoring


@dataclass
class EmerRow:
    """One sample's score for one metric.

    Attributes:
        name: Sample name.
        metric: ``clue_overlap`` or ``label_overlap``.
        score: The parsed score, or None when invalid or when the sample has no prediction.
        status: ``ok``, ``invalid`` or ``missing prediction``.
        parse: Why the answer parsed as it did (``ok``, ``no number``, ``out of range: 15``, ...).
        response: The judge's raw answer to the scoring prompt ("" when not judged).
        format_ok: Whether the answer followed the requested ``score; reason`` format exactly.
        cached: Whether the scoring answer came from the cache.
        judge_id: The judge's id.
        prompt_version: :data:`EMER_PROMPTS_VERSION`.
        gt_emotions: Label overlap: the emotion words the judge extracted from the ground truth.
        pred_emotions: Label overlap: the emotion words the judge extracted from the prediction.
    """

    name: str
    metric: str
    score: float | None
    status: str
    parse: str
    response: str
    format_ok: bool
    cached: bool
    judge_id: str
    prompt_version: str
    gt_emotions: str | None = None
    pred_emotions: str | None = None


@dataclass
class EmerResult:
    """Per-sample rows and the per-metric summary (mean over valid samples, counts, 95% bootstrap CI)."""

    rows: list[EmerRow]
    summary: dict[str, Any]
    judge_calls: int = 0
    cache_hits: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _clean_emotions(text: str) -> str:
    """One line of extracted emotion words, for the scoring prompt."""
    line = " ".join((text or "").split())
    return (line[:_MAX_EMOTION_CHARS] if line else "") or "(none)"


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _summarise(rows: list[EmerRow], n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    scores = [r.score for r in rows if r.score is not None]
    n = len(rows)
    out: dict[str, Any] = {
        "mean": float(np.mean(scores)) if scores else None,
        "n": n,
        "n_valid": len(scores),
        "n_invalid": sum(r.status == "invalid" for r in rows),
        "n_missing_prediction": sum(r.status == "missing prediction" for r in rows),
        "invalid_rate": (sum(r.status == "invalid" for r in rows) / n) if n else 0.0,
        "format_ok": sum(r.format_ok for r in rows),
        "invalid_reasons": {},
    }
    for r in rows:
        if r.status == "invalid":
            out["invalid_reasons"][r.parse] = out["invalid_reasons"].get(r.parse, 0) + 1
    if len(scores) >= 2:
        from emollm_eval.metrics import bootstrap_ci

        arr = np.asarray(scores, dtype=float)
        out["mean_ci95"] = list(bootstrap_ci(lambda t, _p: float(np.mean(t)), arr, arr, n_resamples, seed=seed))
    else:
        out["mean_ci95"] = None
    return out


def score_emer(
    gold: Sequence[EMERSample],
    predictions: dict[str, str],
    judge: Judge,
    *,
    cache: JudgeCache | None = None,
    metrics: Sequence[str] = EMER_METRICS,
    chunk_size: int = 16,
    progress: bool | None = None,
) -> EmerResult:
    """Score predicted reasoning against EMER ground truth with ``judge``.

    Args:
        gold: Ground-truth rows (:func:`emollm_eval.datasets.read_emer`).
        predictions: name -> predicted text. A gold sample without one is counted as ``missing prediction`` (not
            judged, not in the mean); a prediction whose name is not in ``gold`` raises.
        judge: Any :class:`emollm_eval.judge.Judge`.
        cache: On-disk cache of judge calls, or None.
        metrics: Which of ``clue_overlap``, ``label_overlap`` to compute.
        chunk_size: Prompts sent to the judge per call (and written to the cache per step, so a kill loses at most
            one chunk).
        progress: Show a tqdm bar (None: only on a terminal).

    Returns:
        An :class:`EmerResult`; ``summary`` has one entry per metric plus ``judge_id`` and ``prompt_version``.
    """
    from tqdm.auto import tqdm

    unknown = [m for m in metrics if m not in EMER_METRICS]
    if unknown or not metrics:
        raise ValueError(f"unknown EMER metric(s) {unknown}; choose from {', '.join(EMER_METRICS)}")
    gold_names = {g.name for g in gold}
    extra = [n for n in predictions if n not in gold_names]
    if extra:
        raise ValueError(
            f"{len(extra)} prediction name(s) are not in the ground truth, e.g. {', '.join(extra[:5])}; "
            "score against the ground-truth file they belong to"
        )
    cached = CachedJudge(judge, cache, EMER_PROMPTS_VERSION)
    answered: dict[str, tuple[str, bool]] = {}
    calls_before = getattr(judge, "calls", None)
    hits_before = cache.hits if cache is not None else 0

    def ask(prompts: list[str], desc: str) -> None:
        todo = [p for p in dict.fromkeys(prompts) if p not in answered]
        bar = tqdm(total=len(todo), desc=desc, disable=None if progress is None else not progress)
        for chunk in _chunks(todo, chunk_size):
            answers, hits = cached.complete_many(chunk)
            answered.update({p: (a, h) for p, a, h in zip(chunk, answers, hits, strict=True)})
            bar.update(len(chunk))
        bar.close()

    judged = [g for g in gold if g.name in predictions]
    rows: list[EmerRow] = []

    def make_row(name: str, metric: str, prompt: str | None, **kw: Any) -> EmerRow:
        if prompt is None:
            status = "missing prediction"
            return EmerRow(
                name, metric, None, status, "no prediction", "", False, False, judge.id, EMER_PROMPTS_VERSION, **kw
            )
        response, hit = answered[prompt]
        score, why = parse_score(response)
        return EmerRow(
            name,
            metric,
            score,
            "ok" if score is not None else "invalid",
            why,
            response,
            bool(_FORMAT.match(response or "")),
            hit,
            judge.id,
            EMER_PROMPTS_VERSION,
            **kw,
        )

    if "clue_overlap" in metrics:
        prompts = {g.name: CLUE_OVERLAP_PROMPT.format(gt=g.reason, pred=predictions[g.name]) for g in judged}
        ask(list(prompts.values()), "EMER clue overlap")
        rows += [make_row(g.name, "clue_overlap", prompts.get(g.name)) for g in gold]
    if "label_overlap" in metrics:
        gt_x = {g.name: LABEL_EXTRACT_PROMPT.format(text=g.reason) for g in judged}
        pred_x = {g.name: LABEL_EXTRACT_PROMPT.format(text=predictions[g.name]) for g in judged}
        ask([*gt_x.values(), *pred_x.values()], "EMER emotion words")
        words = {n: (_clean_emotions(answered[gt_x[n]][0]), _clean_emotions(answered[pred_x[n]][0])) for n in gt_x}
        prompts = {n: LABEL_OVERLAP_PROMPT.format(gt_emotions=a, pred_emotions=b) for n, (a, b) in words.items()}
        ask(list(prompts.values()), "EMER label overlap")
        for g in gold:
            gw, pw = words.get(g.name, (None, None))
            rows.append(make_row(g.name, "label_overlap", prompts.get(g.name), gt_emotions=gw, pred_emotions=pw))
    summary: dict[str, Any] = {
        "judge_id": judge.id,
        # engine judges: engine, model as the server names it, sampling sent (LocalJudge: its id says it all)
        "judge_produced_by": judge.produced_by() if callable(getattr(judge, "produced_by", None)) else None,
        "prompt_version": EMER_PROMPTS_VERSION,
        "n_gold": len(gold),
        "n_predicted": len(judged),
    }
    for metric in metrics:
        summary[metric] = _summarise([r for r in rows if r.metric == metric])
    calls = (getattr(judge, "calls", 0) - calls_before) if calls_before is not None else None
    hits = (cache.hits - hits_before) if cache is not None else 0
    summary["judge_calls"] = calls
    summary["cache_hits"] = hits
    return EmerResult(rows, summary, judge_calls=calls or 0, cache_hits=hits)


# --------------------------------------------------------------------------------------------------------------------
# Output


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def emer_markdown(result: EmerResult, *, gold_path: str = "", pred_path: str = "") -> str:
    """A markdown report of an EMER scoring run."""
    s = result.summary
    lines = [
        "# EMER scoring",
        "",
        f"- judge: `{s['judge_id']}`",
        f"- prompt version: {s['prompt_version']} (templates in `eval/emer.py`)",
    ]
    if gold_path:
        lines.append(f"- ground truth: `{gold_path}` ({s['n_gold']} samples)")
    if pred_path:
        lines.append(f"- predictions: `{pred_path}` ({s['n_predicted']} of the ground-truth samples)")
    lines += [
        f"- judge calls this run: {s.get('judge_calls')}, cache hits: {s.get('cache_hits')}",
        "",
        "Scores are means over valid samples (1-10; higher = more overlap). An answer without a number in 0..10 is "
        "invalid and counted, never given a default score. Published EMER numbers used the retired "
        "`gpt-3.5-turbo-16k-0613`; compare models only under one judge id and prompt version.",
        "",
        "| metric | mean | 95% CI | valid | invalid | missing prediction | `score; reason` format |",
        "|---|---|---|---|---|---|---|",
    ]
    for metric in EMER_METRICS:
        if metric not in s:
            continue
        m = s[metric]
        ci = m.get("mean_ci95")
        ci_text = f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "n/a"
        lines.append(
            f"| {metric.replace('_', ' ')} | {_fmt(m['mean'])} | {ci_text} | {m['n_valid']} | {m['n_invalid']} | "
            f"{m['n_missing_prediction']} | {m['format_ok']}/{m['n']} |"
        )
    reasons = {k: v for metric in EMER_METRICS if metric in s for k, v in s[metric]["invalid_reasons"].items()}
    if reasons:
        lines += ["", "Invalid answers: " + ", ".join(f"{k} ({v})" for k, v in sorted(reasons.items()))]
    return "\n".join(lines) + "\n"


def write_emer_outputs(
    result: EmerResult, out_dir: str | os.PathLike, *, gold_path: str = "", pred_path: str = "", prefix: str = "emer_"
) -> dict[str, Path]:
    """Write ``{prefix}scores.jsonl`` (one row per sample and metric), ``{prefix}metrics.json`` and
    ``{prefix}report.md`` atomically into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "scores": out / f"{prefix}scores.jsonl",
        "metrics": out / f"{prefix}metrics.json",
        "report": out / f"{prefix}report.md",
    }
    atomic_write_text(paths["scores"], "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in result.rows))
    meta = {**result.summary, "gold": gold_path, "predictions": pred_path}
    atomic_write_text(paths["metrics"], json.dumps(meta, indent=2) + "\n")
    atomic_write_text(paths["report"], emer_markdown(result, gold_path=gold_path, pred_path=pred_path))
    return paths


def run_emer(
    gold_path: str | os.PathLike,
    pred_path: str | os.PathLike,
    judge: Judge,
    out_dir: str | os.PathLike,
    *,
    cache_path: str | os.PathLike | None = None,
    metrics: Sequence[str] = EMER_METRICS,
    limit: int | None = None,
    progress: bool | None = None,
    predictions: dict[str, str] | None = None,
    log: Callable[[str], None] | None = None,
) -> EmerResult:
    """Read the files, score, write the outputs (see :func:`score_emer` and :func:`write_emer_outputs`).

    ``cache_path`` defaults to ``OUT/judge_cache.jsonl``; share one cache file between runs to reuse answers.
    ``limit`` scores only the first N ground-truth samples (smoke runs).
    """
    gold = read_emer(gold_path)
    if limit is not None:
        gold = gold[:limit]
    preds = read_emer_predictions(pred_path) if predictions is None else predictions
    if limit is not None:
        keep = {g.name for g in gold}
        preds = {k: v for k, v in preds.items() if k in keep}
    cache = JudgeCache(Path(cache_path) if cache_path else Path(out_dir) / "judge_cache.jsonl")
    result = score_emer(gold, preds, judge, cache=cache, metrics=metrics, progress=progress)
    write_emer_outputs(result, out_dir, gold_path=str(gold_path), pred_path=str(pred_path))
    if log is not None:
        log(emer_markdown(result, gold_path=str(gold_path), pred_path=str(pred_path)))
    return result
