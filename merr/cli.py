"""``emollm merr ...``: MERR construction tools.

``emollm merr build --config configs/merr/build.yaml [key=value ...] [--retry-errors] [--no-progress]`` runs (or
resumes) the whole pipeline (:mod:`emollm_merr.pipeline`) and prints a table of what it computed, reused and dropped.
``--llm-endpoint URL --llm-model NAME`` sends the reasoning prompts to an OpenAI-compatible server
(``--llm-concurrency`` at a time); a server that goes away stops the build with its answers cached: rerun to resume.

``emollm merr review export --config CFG [--out review.csv] [--limit N]`` writes the least confident / most
contradictory samples of the last build for a human; ``emollm merr review import FILE --config CFG [--reviewer
NAME]`` reads the filled-in CSV (or an Emotion-LLaMA MERR JSON/TXT label file) into the corrections the next build
uses (:mod:`emollm_merr.review`).

``emollm merr au-label OPENFACE.csv [--json] [--rule paper|sum_all] [--cues PATH] [--min-confidence X]``
picks the peak frame of one OpenFace CSV and pseudo-labels it from its AU combination. With ``--json`` it prints
one object whose first keys are exactly ``peak_index`` (int, 0-based CSV row), ``peak_AU_list`` and
``pseu_emotion`` (string or null), followed by diagnostic keys.

Bad input prints a one-line ``error:`` to stderr naming the file and the fix, and exits 2 (no traceback; every
subcommand takes ``--debug`` to show it). ``--min-confidence`` must be a number in [0, 1]. The JSON is strict (no
``NaN``/``Infinity``): an unknown timestamp or score is ``null``, and an OpenFace CSV with an infinite value or a
non-integer frame number is refused with ``file:line``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from emollm.aus.cues import CueResult, CueTable, describe_aus, label_csv, load_cue_table
from emollm.aus.openface import AUSequence, check_min_confidence
from emollm.aus.peaks import PEAK_RULES, PeakResult

__all__ = ["au_label_payload", "build_parser", "main"]

_CONFIG_HELP = "build config YAML (configs/merr/build.yaml)"


def build_parser() -> argparse.ArgumentParser:
    """The ``emollm merr`` parser; later stages add their own subcommands here."""
    parser = argparse.ArgumentParser(prog="emollm merr", description="MERR construction tools.")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    sub.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")

    p = sub.add_parser(
        "au-label",
        parents=[common],
        help="peak frame + AU pseudo-label of one OpenFace CSV",
        description="Choose the peak frame of an OpenFace 2 FeatureExtraction CSV and pseudo-label it from its AU "
        "combination (table: emollm/aus/au_cues.yaml).",
    )
    p.add_argument("csv", metavar="OPENFACE.csv", help="OpenFace 2 FeatureExtraction output (run with -aus)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument(
        "--rule", choices=PEAK_RULES, default=None, help="peak rule (default: the cue table's peak.rule, 'paper')"
    )
    p.add_argument("--cues", metavar="PATH", default=None, help="AU cue table YAML (default: emollm/aus/au_cues.yaml)")
    p.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        metavar="X",
        help="ignore frames below this OpenFace confidence (default: the cue table's openface.min_confidence)",
    )
    p.set_defaults(func=_au_label)

    b = sub.add_parser(
        "build",
        parents=[common],
        help="build MERR files (coarse/fine JSON, N C E V lists, training JSONL) from clips + OpenFace CSVs",
        description="Run or resume the MERR pipeline: AUs -> peak -> pseudo-label -> clues -> coarse caption -> "
        "LLM reasoning -> filters -> Emotion-LLaMA files. Finished clips are never redone.",
    )
    b.add_argument("--config", required=True, metavar="YAML", help=_CONFIG_HELP)
    b.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. reason.max_new_tokens=64")
    b.add_argument("--retry-errors", action="store_true", help="recompute clips whose stage failed last time")
    llm = b.add_argument_group("reasoning LLM (override reason.* of the config)")
    llm.add_argument("--llm-endpoint", metavar="URL", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    llm.add_argument("--llm-model", metavar="NAME", help="the served model's name (with --llm-endpoint)")
    llm.add_argument("--llm-api-key-env", metavar="VAR", help="environment variable with the server's API key")
    llm.add_argument("--llm-concurrency", type=int, metavar="N", help="server requests in flight at most")
    llm.add_argument("--llm-engine", choices=("auto", "transformers", "llama.cpp"), help="in-process engine")
    prog = b.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show bars")
    prog.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress bars")
    b.set_defaults(func=_build)

    r = sub.add_parser("review", help="export doubtful samples for a human; import the corrections")
    rsub = r.add_subparsers(dest="review_command", metavar="<export|import>")
    rsub.required = True
    e = rsub.add_parser("export", parents=[common], help="write the least confident / contradictory samples to a CSV")
    e.add_argument("--config", required=True, metavar="YAML", help=_CONFIG_HELP)
    e.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    e.add_argument("--out", metavar="CSV", help="output CSV (default: <output.dir>/review/review.csv)")
    e.add_argument("--limit", type=int, metavar="N", help="rows (default: the config's review.export_limit)")
    e.set_defaults(func=_review_export)
    i = rsub.add_parser(
        "import", parents=[common], help="import a filled-in review CSV (or an Emotion-LLaMA MERR JSON/TXT)"
    )
    i.add_argument("file", metavar="FILE", help="review CSV, MERR_*_grained.json or N C E V .txt")
    i.add_argument("--config", required=True, metavar="YAML", help=_CONFIG_HELP)
    i.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    i.add_argument("--reviewer", help="who reviewed (default: the CSV's reviewer column, else your login name)")
    i.set_defaults(func=_review_import)
    return parser


def _build(args: argparse.Namespace) -> int:
    from emollm_merr.config import load_build_config
    from emollm_merr.pipeline import run_build

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    merr_log = logging.getLogger("emollm_merr")
    merr_log.addHandler(handler)
    merr_log.setLevel(logging.INFO)
    try:
        cfg = load_build_config(args.config, args.overrides)
        for flag, key in (
            ("llm_endpoint", "endpoint"), ("llm_model", "model"), ("llm_api_key_env", "api_key_env"),
            ("llm_concurrency", "concurrency"), ("llm_engine", "engine"),
        ):  # fmt: skip
            if getattr(args, flag) is not None:
                setattr(cfg.reason, key, getattr(args, flag))
        result = run_build(cfg, progress=args.progress, retry_errors=args.retry_errors)
    finally:
        merr_log.removeHandler(handler)
    if result.main:  # under a launcher, rank 0 reports for the whole build
        print(result.table())
    return 0


def _known_names(cfg) -> list[str]:
    from emollm_merr.review import read_samples

    return [s["name"] for s in read_samples(cfg.output_dir / "samples.jsonl")]


def _review_export(args: argparse.Namespace) -> int:
    from emollm_merr.config import load_build_config
    from emollm_merr.review import export_review, load_corrections

    cfg = load_build_config(args.config, args.overrides)
    out = Path(args.out) if args.out else cfg.output_dir / "review" / "review.csv"
    limit = cfg.review.export_limit if args.limit is None else args.limit
    n = export_review(
        cfg.output_dir / "samples.jsonl", out, limit=limit, corrections=load_corrections(cfg.corrections_path)
    )
    print(
        f"wrote {n} rows to {out}: fill in corrected_label (a label or 'drop'), then "
        f"`emollm merr review import {out} --config {args.config}`"
    )
    return 0


def _review_import(args: argparse.Namespace) -> int:
    from emollm_merr.config import load_build_config
    from emollm_merr.review import import_review

    cfg = load_build_config(args.config, args.overrides)
    new, total = import_review(
        args.file, cfg.corrections_path, cfg.filter.labels, reviewer=args.reviewer, known_names=_known_names(cfg)
    )
    print(
        f"imported {new} correction(s) into {cfg.corrections_path} ({total} in total); "
        f"rebuild with `emollm merr build --config {args.config}` to apply them"
    )
    return 0


def _num(x: float) -> float | None:
    return round(float(x), 4) if math.isfinite(x) else None


def au_label_payload(seq: AUSequence, peak: PeakResult, cues: CueResult, table: CueTable) -> dict[str, Any]:
    """The ``au-label --json`` object (first three keys fixed, diagnostics after)."""
    return {
        "peak_index": int(peak.index),
        "peak_AU_list": list(cues.peak_AU_list),
        "pseu_emotion": cues.pseu_emotion,
        "strength": cues.strength,
        "candidates": [c.to_dict() for c in cues.candidates],
        "visual_expression": describe_aus(cues.peak_AU_list, table),
        "peak_frame": peak.frame,
        "peak_timestamp": _num(peak.timestamp),
        "peak_score": _num(peak.score),
        "rule": peak.rule,
        "rule_aus": peak.selected_aus,
        "frames": seq.n_frames,
        "valid_frames": seq.n_valid,
        "tie_break": table.tie_break,
        "au_source": str(seq.source) if seq.source is not None else None,
    }


def _human(seq: AUSequence, peak: PeakResult, cues: CueResult, table: CueTable) -> str:
    rule = peak.rule + (" (fallback: no AU ever active)" if peak.fallback else "")
    ts = "" if math.isnan(peak.timestamp) else f", t={peak.timestamp:.3f}s"
    lines = [
        f"{seq.describe_source()}: {seq.n_frames} frames, {seq.n_valid} valid",
        f"peak rule:    {rule} over {', '.join(peak.selected_aus)}",
        f"peak:         row {peak.index} (OpenFace frame {peak.frame}{ts}), score {peak.score:.3f}",
    ]
    if cues.peak_AU_list:
        phrases = describe_aus(cues.peak_AU_list, table)
        active = ", ".join(f"{au} {p}" for au, p in zip(cues.peak_AU_list, phrases, strict=True))
    else:
        active = "none"
    lines.append(f"active AUs:   {active}")
    if cues.pseu_emotion is not None:
        best = cues.candidates[0]
        lines.append(f"pseu_emotion: {cues.pseu_emotion} ({best.strength}, mean intensity {best.score:.3f})")
    else:
        why = "several emotions fired (tie_break: abstain)" if cues.candidates else "no AU combination fired"
        lines.append(f"pseu_emotion: none ({why}; the clip would be filtered out)")
    others = [c for c in cues.candidates if c.emotion != cues.pseu_emotion]
    if others:
        lines.append("also fired:   " + ", ".join(f"{c.emotion} ({c.strength}, {c.score:.3f})" for c in others))
    return "\n".join(lines)


def _au_label(args: argparse.Namespace) -> int:
    if args.min_confidence is not None:
        check_min_confidence(args.min_confidence, "--min-confidence")
    table = load_cue_table(args.cues)
    seq, peak, cues = label_csv(args.csv, table, rule=args.rule, min_confidence=args.min_confidence)
    if args.json:  # strict JSON: a NaN or infinity would print as NaN/Infinity, which JSON readers reject
        print(json.dumps(au_label_payload(seq, peak, cues, table), ensure_ascii=False, allow_nan=False))
    else:
        print(_human(seq, peak, cues, table))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``emollm merr`` (``argv`` is everything after ``merr``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2, message already printed)
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    try:
        return int(args.func(args))
    except (OSError, ValueError, IndexError, RuntimeError) as e:
        if getattr(args, "debug", False):
            raise
        cmd = args.command + (f" {args.review_command}" if getattr(args, "review_command", None) else "")
        print(f"emollm merr {cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
