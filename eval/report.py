"""Markdown tables and PNG plots for evaluation reports (written with :mod:`emollm.utils.io`).

Plots use matplotlib's object API with the Agg canvas (``Figure`` + ``FigureCanvasAgg``), never ``pyplot``, so no
global backend or figure state is touched and nothing needs a display.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emollm.utils.io import atomic_write, atomic_write_text

__all__ = [
    "fmt_metric",
    "markdown_table",
    "plot_bars",
    "plot_confusion_matrix",
    "plot_per_class_recall",
]


def fmt_metric(value: float | None, percent: bool = True) -> str:
    """``0.4559`` -> ``45.59`` (percent) or ``0.4559``; None -> ``n/a``."""
    if value is None:
        return "n/a"
    return f"{100 * value:.2f}" if percent else f"{value:.4f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells are converted with ``str`` and ``|`` is escaped."""

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _save(fig: Any, path: str | os.PathLike) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | os.PathLike,
    title: str = "Confusion matrix",
) -> Path:
    """Heat map of counts (rows: gold, columns: prediction; a last ``invalid`` column where given), each cell
    annotated with its count and its share of the row."""
    import numpy as np
    from matplotlib.figure import Figure

    cm = np.asarray(matrix, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    size = (1.0 + 0.75 * len(col_labels), 1.0 + 0.6 * len(row_labels))
    fig = Figure(figsize=(max(4.0, size[0]), max(3.0, size[1])))
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the gold class")
    ax.set_xticks(range(len(col_labels)), labels=list(col_labels), rotation=45, ha="right")
    ax.set_yticks(range(len(row_labels)), labels=list(row_labels))
    ax.set_xlabel("prediction")
    ax.set_ylabel("gold")
    ax.set_title(title)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", color="white" if share[i, j] > 0.5 else "black")
    return _save(fig, path)


def plot_per_class_recall(
    labels: Sequence[str],
    recall: Sequence[float | None],
    support: Sequence[int],
    path: str | os.PathLike,
    title: str = "Per-class recall",
) -> Path:
    """Bar chart of per-class recall (in %), each bar annotated with the class support (``n=``)."""
    from matplotlib.figure import Figure

    values = [0.0 if r is None else 100 * r for r in recall]
    fig = Figure(figsize=(max(4.0, 0.8 * len(labels) + 1.5), 3.5))
    ax = fig.add_subplot()
    bars = ax.bar(range(len(labels)), values, color="#4878a8")
    ax.set_xticks(range(len(labels)), labels=list(labels), rotation=30, ha="right")
    ax.set_ylim(0, 105)
    ax.set_ylabel("recall (%)")
    ax.set_title(title)
    for bar, n, r in zip(bars, support, recall, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 1, "-" if r is None else f"n={n}", ha="center")
    return _save(fig, path)


def plot_bars(
    names: Sequence[str], values: Sequence[float | None], path: str | os.PathLike, ylabel: str, title: str
) -> Path:
    """A plain bar chart (ablation variants, label orders); None values are drawn as empty bars."""
    from matplotlib.figure import Figure

    vals = [0.0 if v is None else v for v in values]
    fig = Figure(figsize=(max(4.0, 0.7 * len(names) + 1.5), 3.5))
    ax = fig.add_subplot()
    ax.bar(range(len(names)), vals, color="#6a9f58")
    ax.set_xticks(range(len(names)), labels=list(names), rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)


_METRIC_NAMES = {
    "uar": "UAR",
    "war": "WAR",
    "weighted_f1": "weighted F1",
    "accuracy": "accuracy",
    "macro_f1": "macro F1",
}


def _classification_sections(metrics: dict[str, Any], out: Path) -> list[str]:
    labels: list[str] = metrics["labels"]
    cols: list[str] = metrics["prediction_labels"]
    n = metrics["n"]
    primary = metrics.get("primary_metrics", [])
    rows = []
    for key in [*primary, *[k for k in _METRIC_NAMES if k not in primary]]:
        ci = metrics.get(f"{key}_ci")
        ci_text = f"[{fmt_metric(ci[0])}, {fmt_metric(ci[1])}]" if ci else ""
        rows.append([_METRIC_NAMES[key] + (" (headline)" if key in primary else ""), fmt_metric(metrics[key]), ci_text])
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(metrics["invalid_reasons"].items())) or "none"
    lines = [
        "## Metrics",
        "",
        f"Values in %, over {n} samples; "
        + (f"95% CIs from {metrics['n_bootstrap']} bootstrap resamples." if metrics.get("n_bootstrap") else "no CIs."),
        "",
        markdown_table(["metric", "value", "95% CI"], rows),
        "",
        f"**Invalid answers: {metrics['invalid']} / {n} ({fmt_metric(metrics['invalid_rate'])}%)** ({reasons}). An "
        "answer naming no label or several labels is counted as wrong and never mapped to a class.",
    ]
    extra = [c for c in cols if c not in labels]
    if extra:
        lines += [
            "",
            f"The prompt also offers {', '.join(extra)}, which are not gold classes here: an answer naming one of "
            "them is a valid but wrong prediction.",
        ]
    recall_rows = [
        [
            lab,
            metrics["support"][lab],
            "n/a" if metrics["per_class_recall"][lab] is None else fmt_metric(metrics["per_class_recall"][lab]),
            metrics["invalid_by_class"][lab],
        ]
        for lab in labels
    ]
    lines += [
        "",
        "## Per-class recall",
        "",
        markdown_table(["class", "support", "recall (%)", "invalid answers"], recall_rows),
        "",
        "![per-class recall](per_class_recall.png)",
        "",
        "## Confusion matrix",
        "",
        "Rows: gold class; columns: parsed prediction; the last column counts invalid answers.",
        "",
        markdown_table(
            ["gold \\ predicted", *cols, "invalid"],
            [
                [lab, *row, metrics["invalid_by_class"][lab]]
                for lab, row in zip(labels, metrics["confusion_matrix"], strict=True)
            ],
        ),
        "",
        "![confusion matrix](confusion_matrix.png)",
    ]
    plot_confusion_matrix(
        [
            [*row, metrics["invalid_by_class"][lab]]
            for lab, row in zip(labels, metrics["confusion_matrix"], strict=True)
        ],
        labels,
        [*cols, "invalid"],
        out / "confusion_matrix.png",
        title=f"{metrics['dataset']} {metrics['split']}: confusion matrix (n={n})",
    )
    plot_per_class_recall(
        labels,
        [metrics["per_class_recall"][lab] for lab in labels],
        [metrics["support"][lab] for lab in labels],
        out / "per_class_recall.png",
        title=f"{metrics['dataset']} {metrics['split']}: per-class recall",
    )
    return lines


def _emer_sections(metrics: dict[str, Any]) -> list[str]:
    emer = metrics.get("emer")
    if not isinstance(emer, dict):
        return ["## EMER scores", "", f"Not scored: no judge configured. Score with `{metrics.get('score_with')}`."]
    lines = ["## EMER scores", "", f"Judge `{emer['judge_id']}`, prompt version {emer['prompt_version']}.", ""]
    rows = []
    for key in ("clue_overlap", "label_overlap"):
        if key in emer:
            m = emer[key]
            ci = m.get("mean_ci95")
            rows.append(
                [
                    key.replace("_", " "),
                    "n/a" if m["mean"] is None else f"{m['mean']:.2f}",
                    f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "",
                    m["n_valid"],
                    m["n_invalid"],
                    m["n_missing_prediction"],
                ]
            )
    lines.append(markdown_table(["metric", "mean (1-10)", "95% CI", "valid", "invalid", "no prediction"], rows))
    lines += ["", "Per-sample judge answers: `emer_scores.jsonl`; details: `emer_report.md`."]
    return lines


def _open_vocabulary_section(ov: dict[str, Any]) -> list[str]:
    """The ``report.md`` section of the answers scored as emotion-word sets (``ov_gold``)."""
    rows = [
        [key.replace("_", " "), fmt_metric(ov[key])]
        for key in ("precision", "recall", "f1", "sample_f1", "mer_ov", "hit_rate")
    ]
    return [
        "## Open-vocabulary emotions",
        "",
        f"Each answer parsed as a set of emotion words ({ov['parser']}) against `{ov['gold_file']}`: "
        f"{ov['n']} samples scored, {ov['skipped']} with an empty reference skipped, {ov['without_reference']} "
        f"not in the file, {ov['empty_pred']} answers naming no emotion word (scored 0).",
        "",
        markdown_table(["metric", "value"], rows),
        "",
        "f1: F-score of the mean precision and recall; sample f1: mean per-sample F-score; mer ov: mean of precision "
        "and recall (MER2024-OV); hit rate: samples sharing at least one word with the reference.",
    ]


def write_run_report(out: str | os.PathLike, metrics: dict[str, Any], config: Any) -> Path:
    """Write ``report.md`` (and, for classification, ``confusion_matrix.png`` and ``per_class_recall.png``) of one
    ``emollm eval`` run into ``out``, atomically."""
    import yaml

    out = Path(out)
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    metrics = {**metrics, "n_bootstrap": cfg.get("n_bootstrap")}
    missing = ", ".join(f"{m}: {c}" for m, c in metrics["missing_features"].items()) or "no modality used"
    order = metrics["label_order"]
    lines = [
        f"# Evaluation: {metrics['dataset']} ({metrics['split']})",
        "",
        "> Reporting only: no model selection happens here (no checkpoint, prompt or label order is chosen by "
        "these numbers).",
        "",
        "## Setup",
        "",
        f"- checkpoint: `{metrics['checkpoint']}` (backbone `{metrics['backbone']}`)",
        f"- gold: `{cfg['gold']}`: {metrics['n']} samples evaluated of {metrics['n_gold_file']}"
        + (f" (limit {metrics['limit']})" if metrics["limit"] else ""),
        f"- config hash: `{metrics['config_hash']}`",
        f"- decoding: greedy, max_new_tokens {metrics['max_new_tokens']}, batch size {cfg['batch_size']}",
        f"- modalities used: {', '.join(metrics['modalities_used']) or 'none (text only)'}"
        + (f"; dropped: {', '.join(metrics['modalities_dropped'])}" if metrics["modalities_dropped"] else "")
        + (
            f"; not referenced by the prompt: {', '.join(metrics['modalities_not_in_prompt'])}"
            if metrics["modalities_not_in_prompt"]
            else ""
        ),
        f"- features: `{metrics['feature_root']}` "
        + ", ".join(f"{m}=`{d}`" for m, d in metrics["feature_dirs"].items()),
        f"- **missing feature files** (the sample ran without that modality; never zero-filled): {missing}",
        f"- subtitles: {metrics['subtitles'] or 'none'} ({metrics['samples_with_subtitle']} samples have one)",
        "",
        "## Prompt",
        "",
        "As sent (markers become placeholder tokens; a sample without a transcript loses the sentence holding it):",
        "",
        "```text",
        metrics["prompt"],
        "```",
        "",
    ]
    if order:
        lines += ["Label order in the prompt: " + ", ".join(f"{i}. {lab}" for i, lab in enumerate(order, 1)), ""]
    if metrics["dataset"] == "emer":
        lines += _emer_sections(metrics)
    else:
        lines += _classification_sections(metrics, out)
        if metrics.get("valence"):
            lines += ["", f"Valence: {metrics['valence']}."]
    if metrics.get("open_vocabulary"):
        lines += ["", *_open_vocabulary_section(metrics["open_vocabulary"])]
    lines += ["", "## Config", "", "```yaml", yaml.safe_dump(cfg, sort_keys=False).rstrip(), "```", ""]
    return atomic_write_text(out / "report.md", "\n".join(lines))
