"""``emollm eval compare``: several prediction sets on one gold split, side by side, with the same metrics.

Sources, each ``NAME=PATH``:

- an ``emollm eval`` output folder (its ``predictions.jsonl``: free-text answers, parsed with
  :class:`emollm.labels.LabelParser` over the gold labels; an answer naming no label or several is invalid);
- an ``emollm analyze`` batch JSONL (``label`` per file; ``null`` — no evidence — is invalid);
- a ``name,pred`` CSV (e.g. ``emollm eval baseline``; an empty ``pred`` is invalid).

A gold sample a source did not predict counts as invalid for it (so every row is over the same samples). Every
metric comes from :func:`emollm_eval.classification.classification_report` with 95% bootstrap intervals. The
report (``compare.md``, ``compare.json``) says which source is which and that nothing was selected on this split.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emollm.data.merr_files import read_label_txt
from emollm.labels import LabelParser
from emollm.utils.io import atomic_write_json, atomic_write_text
from emollm_eval.classification import classification_report
from emollm_eval.report import fmt_metric, markdown_table

__all__ = ["compare_sources", "read_source"]


def read_source(path: str | Path, labels: Sequence[str]) -> tuple[dict[str, str | None], str]:
    """``name -> predicted label (None: invalid)`` of one source, and what kind of source it is.

    Raises:
        FileNotFoundError, ValueError: A missing or unreadable source, naming it.
    """
    path = Path(path)
    parser = LabelParser(labels)
    if path.is_dir():
        rows_file = path / "predictions.jsonl"
        if not rows_file.is_file():
            raise FileNotFoundError(f"{path}: no predictions.jsonl (give an `emollm eval` output folder)")
        from emollm_eval.resume import read_rows

        return {r["name"]: parser.parse(r.get("answer")).label for r in read_rows(rows_file)}, "emollm eval"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.suffix == ".jsonl":
        out: dict[str, str | None] = {}
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                name = Path(rec["file"]).stem
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"{path}:{i}: not an `emollm analyze` result line") from None
            label = rec.get("label")
            out[name] = parser.parse(label).label if label else None
        return out, f"emollm analyze ({_mode_of(path)})"
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"name", "pred"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected a CSV with columns name,pred")
        return {r["name"]: (parser.parse(r["pred"]).label if r["pred"] else None) for r in reader}, "name,pred CSV"


def _mode_of(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            return str(json.loads(line).get("mode", "?"))
        except json.JSONDecodeError:
            continue
    return "?"


def compare_sources(
    gold_path: str | Path,
    sources: Sequence[tuple[str, str]],
    out_dir: str | Path,
    labels: Sequence[str],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    notes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Score every source on the gold list (``N C E V`` text) and write ``compare.md`` / ``compare.json``.

    Returns:
        ``{"gold": ..., "n": ..., "sources": {name: report}}``.
    """
    gold = {r.name: r.label for r in read_label_txt(gold_path)}
    names = sorted(gold)
    out: dict[str, Any] = {"gold": str(gold_path), "n": len(names), "labels": list(labels),
                           "n_bootstrap": n_bootstrap, "seed": seed, "sources": {}}  # fmt: skip
    rows = []
    for name, path in sources:
        preds, kind = read_source(path, labels)
        y_pred = [preds.get(n) for n in names]
        missing = sum(n not in preds for n in names)
        rep = classification_report(
            [gold[n] for n in names], y_pred, labels, ci=("accuracy", "uar"), n_resamples=n_bootstrap, seed=seed
        )
        rep.update(source=str(path), kind=kind, missing=missing, note=(notes or {}).get(name, ""))
        out["sources"][name] = rep

        def ci(key: str, rep: dict = rep) -> str:
            lo, hi = rep[f"{key}_ci"]
            return f"{fmt_metric(rep[key])} [{fmt_metric(lo)}, {fmt_metric(hi)}]"

        rows.append([name, kind, ci("accuracy"), ci("uar"), fmt_metric(rep["weighted_f1"]),
                     fmt_metric(rep["invalid_rate"]), rep["note"]])  # fmt: skip
    out_dir = Path(out_dir)
    header = ["model", "source", "accuracy % [95% CI]", "UAR % [95% CI]", "weighted F1 %", "invalid %", "note"]
    md = [
        f"# Side by side on {gold_path} ({len(names)} samples; labels: {', '.join(labels)})",
        "",
        markdown_table(header, rows),
        "",
        f"Intervals: {n_bootstrap} bootstrap resamples (seed {seed}). An answer naming no label or several, or a "
        "sample without a prediction, is invalid and counts as wrong. Nothing is selected on this split.",
        "",
    ]
    atomic_write_text(out_dir / "compare.md", "\n".join(md))
    atomic_write_json(out_dir / "compare.json", out)
    return out
