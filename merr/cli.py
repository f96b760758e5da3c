"""``emollm merr ...``: MERR construction tools.

``emollm merr au-label OPENFACE.csv [--json] [--rule paper|sum_all] [--cues PATH] [--min-confidence X]``
picks the peak frame of one OpenFace CSV and pseudo-labels it from its AU combination. With ``--json`` it prints
one object whose first keys are exactly ``peak_index`` (int, 0-based CSV row), ``peak_AU_list`` and
``pseu_emotion`` (string or null), followed by diagnostic keys.

Bad input prints a one-line ``error:`` to stderr naming the file and the fix, and exits 2 (no traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from merr.au import AUSequence
from merr.cues import CueResult, CueTable, describe_aus, label_csv, load_cue_table
from merr.peaks import PEAK_RULES, PeakResult

__all__ = ["au_label_payload", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``emollm merr`` parser; later stages add their own subcommands here."""
    parser = argparse.ArgumentParser(prog="emollm merr", description="MERR construction tools.")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    sub.required = True

    p = sub.add_parser(
        "au-label",
        help="peak frame + AU pseudo-label of one OpenFace CSV",
        description="Choose the peak frame of an OpenFace 2 FeatureExtraction CSV and pseudo-label it from its AU "
        "combination (table: configs/merr/au_cues.yaml).",
    )
    p.add_argument("csv", metavar="OPENFACE.csv", help="OpenFace 2 FeatureExtraction output (run with -aus)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument(
        "--rule", choices=PEAK_RULES, default=None, help="peak rule (default: the cue table's peak.rule, 'paper')"
    )
    p.add_argument(
        "--cues", metavar="PATH", default=None, help="AU cue table YAML (default: configs/merr/au_cues.yaml)"
    )
    p.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        metavar="X",
        help="ignore frames below this OpenFace confidence (default: the cue table's openface.min_confidence)",
    )
    p.set_defaults(func=_au_label)
    return parser


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 4)


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
    table = load_cue_table(args.cues)
    seq, peak, cues = label_csv(args.csv, table, rule=args.rule, min_confidence=args.min_confidence)
    if args.json:
        print(json.dumps(au_label_payload(seq, peak, cues, table), ensure_ascii=False))
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
    except (OSError, ValueError, IndexError) as e:
        print(f"emollm merr {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
