"""Modality ablation and label-order sensitivity: reruns of one eval config with one thing changed.

**Modality ablation** (``emollm eval ablate CONFIG``) runs the config with every modality, with each modality dropped,
with each modality alone, and with none (text only); a dropped modality's features are set to None, so its
placeholder disappears from the prompt exactly as for a sample whose feature file is missing. It reports each
variant's headline metrics and their change from the full run, and a per-modality contribution table:

- *drop Δ*: metric(all) - metric(without m), what is lost when m is removed;
- *alone*: metric(m only) - metric(text only), what m gives by itself;
- *Shapley*: m's average marginal gain over all subsets of the other modalities. It needs the metric of every
  subset, which the variants above cover for up to three modalities (Emotion-LLaMA's face, video, audio: 2^3 = 8
  runs); the values add up to metric(all) - metric(text only).

**Label-order sensitivity** (``emollm eval label-order CONFIG --orders N``) runs the config with N orders of the
labels in the prompt (the given order, reversed, alphabetical, then random permutations from a seed) and reports the
metric per order and its spread (max - min). On DFEW the order moves UAR by 16 points (REFERENCE.md §1.8). With
``select=True`` it also names the best order, which is refused on a test split
(:func:`emollm_eval.runner.check_selection_allowed`): pick the order on validation data.

Every variant is a normal eval run in its own folder (the full / given-order run is the config's own
``output_dir``), so each is resumable and has its own report; one model is loaded once and shared.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emollm.utils.io import atomic_write_json, atomic_write_text
from emollm_eval.report import fmt_metric, markdown_table, plot_bars
from emollm_eval.runner import (
    METRIC_NAMES,
    PRIMARY_METRICS,
    EvalConfig,
    check_selection_allowed,
    resolve_modalities,
    run_eval,
)

__all__ = ["AblationResult", "label_order_sensitivity", "label_orders", "modality_ablation", "shapley_values"]


@dataclass
class AblationResult:
    """Rows (one per variant) and the JSON summary written next to the markdown."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    markdown: str
    output_dir: Path


def _load(config: EvalConfig, model: Any, processor: Any) -> tuple[Any, Any]:
    if config.dataset == "emer":
        raise ValueError(
            "ablations need a label metric; EMER reasoning is scored by a judge (run the EMER config with "
            "drop_modalities=[...] and compare the judge scores instead)"
        )
    if model is not None:
        return model, processor
    import torch

    from emollm.checkpoints import load_model

    return load_model(
        config.checkpoint,
        llm_path=config.llm_path,
        dtype=getattr(torch, config.dtype) if config.dtype else None,
        device=config.device,
    )


def _metric_row(name: str, result: Any, primary: Sequence[str], **extra: Any) -> dict[str, Any]:
    m = result.metrics
    row = {"variant": name, **extra, "output_dir": str(result.output_dir), "n": m["n"]}
    row.update({k: m[k] for k in primary})
    row.update(invalid=m["invalid"], invalid_rate=m["invalid_rate"], missing_features=m["missing_features"])
    row["per_class_recall"] = m["per_class_recall"]
    return row


# --------------------------------------------------------------------------------------------------------------------
# Modality ablation


def shapley_values(values: dict[frozenset[str], float], players: Sequence[str]) -> dict[str, float] | None:
    """Shapley value of each player from the value of every coalition; None when a coalition is missing."""
    n = len(players)
    out: dict[str, float] = {}
    for p in players:
        others = [q for q in players if q != p]
        total = 0.0
        for k in range(len(others) + 1):
            weight = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            for subset in itertools.combinations(others, k):
                s = frozenset(subset)
                if s not in values or s | {p} not in values:
                    return None
                total += weight * (values[s | {p}] - values[s])
        out[p] = total
    return out


def _variants(used: Sequence[str], include_text_only: bool) -> list[tuple[str, frozenset[str]]]:
    """(name, kept modalities), deduplicated by the kept set, the full run first."""
    cands = [("all", frozenset(used))]
    cands += [(f"no_{m}", frozenset(used) - {m}) for m in used]
    cands += [(f"only_{m}", frozenset({m})) for m in used]
    if include_text_only:
        cands.append(("text_only", frozenset()))
    seen: set[frozenset[str]] = set()
    out = []
    for name, kept in cands:
        if kept not in seen:
            seen.add(kept)
            out.append((name, kept))
    return out


def modality_ablation(
    config: EvalConfig,
    *,
    model: Any = None,
    processor: Any = None,
    include_text_only: bool = True,
    progress: bool | None = None,
) -> AblationResult:
    """Run the modality ablation of ``config`` and write ``OUTPUT_DIR/ablation/ablation.{json,md}``.

    Args:
        config: The full run; its ``drop_modalities`` stay dropped in every variant.
        model: A loaded model to share (default: loaded once from ``config.checkpoint``).
        processor: Its processor.
        include_text_only: Also run with no modality (needed for *alone* and Shapley values).
        progress: tqdm progress bars.
    """
    model, processor = _load(config, model, processor)
    used = resolve_modalities(config, list(model.config.modalities))["used"]
    if not used:
        raise ValueError("the run uses no modality (check the prompt markers and drop_modalities); nothing to ablate")
    primary = PRIMARY_METRICS[config.dataset]
    out = Path(config.output_dir) / "ablation"
    rows = []
    for name, kept in _variants(used, include_text_only):
        dropped = sorted({*config.drop_modalities, *(m for m in used if m not in kept)})
        cfg = dataclasses.replace(
            config,
            drop_modalities=dropped,
            output_dir=config.output_dir if name == "all" else str(out / name),
        )
        result = run_eval(cfg, model=model, processor=processor, progress=progress)
        rows.append(_metric_row(name, result, primary, modalities=sorted(kept, key=used.index)))
    full = rows[0]
    for row in rows:
        row["delta"] = {k: row[k] - full[k] for k in primary}
    by_set = {frozenset(r["modalities"]): r for r in rows}
    contributions: dict[str, dict[str, Any]] = {}
    for key in primary:
        values = {s: r[key] for s, r in by_set.items()}
        shap = shapley_values(values, used)
        text_only = values.get(frozenset())
        contributions[key] = {
            m: {
                "drop_delta": full[key] - values[frozenset(used) - {m}] if frozenset(used) - {m} in values else None,
                "alone": values[frozenset({m})] if frozenset({m}) in values else None,
                "alone_gain": (
                    values[frozenset({m})] - text_only if text_only is not None and frozenset({m}) in values else None
                ),
                "shapley": None if shap is None else shap[m],
            }
            for m in used
        }
    summary = {
        "kind": "modality_ablation",
        "dataset": config.dataset,
        "split": config.resolved_split(),
        "modalities": used,
        "primary_metrics": list(primary),
        "variants": rows,
        "contributions": contributions,
        "note": "reporting only: no variant is selected on this split",
    }
    md = _ablation_markdown(summary)
    _write_outputs(
        out, "ablation", summary, md, rows, primary[0], f"Modality ablation: {config.dataset} {config.resolved_split()}"
    )
    return AblationResult(rows, summary, md, out)


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.2f}"


def _ablation_markdown(s: dict[str, Any]) -> str:
    primary = s["primary_metrics"]
    header = ["variant", "modalities"]
    for k in primary:
        header += [f"{METRIC_NAMES[k]} (%)", "Δ vs all"]
    header += ["invalid (%)"]
    rows = []
    for r in s["variants"]:
        cells: list[Any] = [r["variant"], ", ".join(r["modalities"]) or "none (text only)"]
        for k in primary:
            cells += [fmt_metric(r[k]), "" if r["variant"] == "all" else _signed(r["delta"][k])]
        cells.append(fmt_metric(r["invalid_rate"]))
        rows.append(cells)
    lines = [
        f"# Modality ablation: {s['dataset']} ({s['split']})",
        "",
        "Each variant reruns the full config with the other modalities' features set to None (their placeholders "
        "are removed from the prompt). Reporting only: nothing is selected here.",
        "",
        markdown_table(header, rows),
        "",
        "## Per-modality contribution",
        "",
        "Percentage points. *drop Δ* = all - without it; *alone* = it alone - text only; *Shapley* = its average "
        "marginal gain over all subsets of the other modalities (sums to all - text only).",
    ]
    for k in primary:
        contrib = s["contributions"][k]
        lines += [
            "",
            f"{METRIC_NAMES[k]}:",
            "",
            markdown_table(
                ["modality", "drop Δ", "alone", "Shapley"],
                [
                    [m, _signed(c["drop_delta"]), _signed(c["alone_gain"]), _signed(c["shapley"])]
                    for m, c in contrib.items()
                ],
            ),
        ]
    labels = list(s["variants"][0]["per_class_recall"])
    lines += [
        "",
        "## Per-class recall by variant (%)",
        "",
        markdown_table(
            ["variant", *labels],
            [[r["variant"], *(fmt_metric(r["per_class_recall"][lab]) for lab in labels)] for r in s["variants"]],
        ),
        "",
        "![ablation](ablation.png)",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# Label-order sensitivity


def label_orders(given: Sequence[str], n: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """``n`` distinct label orders: the given one, reversed, alphabetical, then seeded random permutations.

    Fewer are returned when the labels have fewer distinct orders than ``n``.
    """
    if n < 1:
        raise ValueError(f"the number of orders must be >= 1, got {n}")
    given = list(given)
    cands = [("given", given), ("reversed", given[::-1]), ("alphabetical", sorted(given))]
    out: list[tuple[str, list[str]]] = []
    seen: set[tuple[str, ...]] = set()
    for name, order in cands:
        if len(out) < n and tuple(order) not in seen:
            seen.add(tuple(order))
            out.append((name, order))
    rng = random.Random(seed)
    k = 0
    for _ in range(100 * n):
        if len(out) >= n or len(seen) >= math.factorial(len(given)):
            break
        order = given[:]
        rng.shuffle(order)
        if tuple(order) not in seen:
            seen.add(tuple(order))
            k += 1
            out.append((f"random_{k}", order))
    return out


def label_order_sensitivity(
    config: EvalConfig,
    n_orders: int = 4,
    *,
    seed: int = 0,
    select: bool = False,
    model: Any = None,
    processor: Any = None,
    progress: bool | None = None,
) -> AblationResult:
    """Run ``config`` with ``n_orders`` label orders; write ``OUTPUT_DIR/label_order/label_order.{json,md}``.

    Args:
        config: The run; its (resolved) ``label_order`` is the given order.
        n_orders: Number of orders (given, reversed, alphabetical, random...).
        seed: Seed of the random orders.
        select: Also name the order with the best headline metrics (compared in order). Refused on a test split.
        model: A loaded model to share.
        processor: Its processor.
        progress: tqdm progress bars.
    """
    if select:
        check_selection_allowed(config.resolved_split(), "a label order")
    orders = label_orders(config.resolved_label_order(), n_orders, seed)
    model, processor = _load(config, model, processor)
    primary = PRIMARY_METRICS[config.dataset]
    out = Path(config.output_dir) / "label_order"
    rows = []
    for name, order in orders:
        cfg = dataclasses.replace(
            config, label_order=order, output_dir=config.output_dir if name == "given" else str(out / name)
        )
        result = run_eval(cfg, model=model, processor=processor, progress=progress)
        rows.append(_metric_row(name, result, primary, order=order))
    spread = {k: max(r[k] for r in rows) - min(r[k] for r in rows) for k in primary}
    summary: dict[str, Any] = {
        "kind": "label_order_sensitivity",
        "dataset": config.dataset,
        "split": config.resolved_split(),
        "seed": seed,
        "primary_metrics": list(primary),
        "orders": rows,
        "spread": spread,
        "invalid_rate_spread": max(r["invalid_rate"] for r in rows) - min(r["invalid_rate"] for r in rows),
    }
    if select:
        best = max(rows, key=lambda r: tuple(r[k] for k in primary))  # ties broken by the next headline metric
        summary["selected"] = {"by": list(primary), "order_name": best["variant"], "label_order": best["order"]}
    else:
        summary["note"] = "reporting only: no order is selected (select on a validation split with --select)"
    md = _orders_markdown(summary)
    _write_outputs(
        out,
        "label_order",
        summary,
        md,
        rows,
        primary[0],
        f"Label-order sensitivity: {config.dataset} {config.resolved_split()}",
    )
    return AblationResult(rows, summary, md, out)


def _orders_markdown(s: dict[str, Any]) -> str:
    primary = s["primary_metrics"]
    header = ["order", "labels in the prompt", *(f"{METRIC_NAMES[k]} (%)" for k in primary), "invalid (%)"]
    rows = [
        [r["variant"], ", ".join(r["order"]), *(fmt_metric(r[k]) for k in primary), fmt_metric(r["invalid_rate"])]
        for r in s["orders"]
    ]
    spread = [fmt_metric(s["spread"][k]) for k in primary]
    rows.append(["**spread (max - min)**", "", *spread, fmt_metric(s["invalid_rate_spread"])])
    lines = [
        f"# Label-order sensitivity: {s['dataset']} ({s['split']})",
        "",
        f"The same checkpoint and prompt with the labels listed in {len(s['orders'])} orders (random orders: seed "
        f"{s['seed']}).",
        "",
        markdown_table(header, rows),
        "",
    ]
    if "selected" in s:
        sel = s["selected"]
        order = ", ".join(sel["label_order"])
        by = " then ".join(METRIC_NAMES[k] for k in sel["by"])
        lines += [f"Selected by {by}: **{sel['order_name']}** ({order}).", ""]
    else:
        lines += [s["note"].capitalize() + ".", ""]
    lines += ["![label orders](label_order.png)", ""]
    return "\n".join(lines)


def _write_outputs(out: Path, stem: str, summary: dict, md: str, rows: list[dict], key: str, title: str) -> None:
    """``<stem>.json``, ``<stem>.md`` and a bar plot of ``key`` per variant, written atomically."""
    atomic_write_json(out / f"{stem}.json", summary)
    atomic_write_text(out / f"{stem}.md", md)
    plot_bars(
        [r["variant"] for r in rows],
        [100 * r[key] for r in rows],
        out / f"{stem}.png",
        f"{METRIC_NAMES[key]} (%)",
        title,
    )
