"""``emollm score``: score a prediction CSV against gold labels (DFEW, MER2023, open-vocabulary sets).

Examples::

    emollm score dfew --pred preds.csv --gold DFEW/EmoLabel_DataSplit/test(single-labeled)/set_1.csv --json
    emollm score mer2023 --pred submission.csv --gold test1-label.csv --protocol test1 --ci
    emollm score ov --pred track2-pred.csv --gold track2-gold.csv --json
    emollm score ov --protocol mer2026-track2 --wheels emotion_wheel/ --pred P.csv --gold track2_test.csv
    emollm score prefer --pred responses.csv --gold track3_gold.csv      # MER-Prefer (MER2026 track 3)

Predictions are ``name,prediction`` (free text or a label) or ``name,discrete[,valence]``. Each answer is parsed by
:class:`emollm.labels.LabelParser`; an answer naming zero or several labels is invalid, and so is every gold sample
that has no row in the prediction file. Invalid answers count as wrong and are reported separately (``invalid``).
A prediction row whose name is not in the gold file is an error, except under ``--protocol test3``: MER-SEMI's
official scorer takes a submission that predicts every test3 clip, labelled or not, and scores the labelled ones,
so there such rows are accepted, left out of every metric and counted in ``extra``. For DFEW a prediction may
also be the 1-indexed class number used by the split CSVs. All metric values are fractions in [0, 1].

Valence (MER2023 test1/test2): when the prediction file has a ``valence`` column, ``valence_mse`` and
``combined = weighted_f1 - 0.25 * valence_mse`` are reported. A sample without a predicted valence (no row, or an
empty cell) is scored as valence 0 (neutral) and counted in ``valence_missing``.

Open vocabulary (``ov``, MER2024-OV / MER2025 track 2): both files are ``name,openset`` with ``openset`` a Python list
literal (``"['happy', 'calm']"``) or a comma-separated string; a prediction cell may also be free text. Words are
grouped by synonym and inflection, negated mentions dropped (:mod:`emollm.scoring.openvocab`); reported: set precision,
recall, F-score (of the means), mean per-sample F-score, MER2024-OV's mean(precision, recall) and the MER-UniBench
hit rate. Gold rows with an empty set are skipped; a gold name without a prediction row scores 0.

MER2026 / MER-UniBench (``--protocol mer2026-track2`` / ``mer-unibench-hit`` of ``ov``; ``prefer``): the released
emotion-wheel F1 and hit rate over the five wheels read from ``--wheels`` (not shipped), with the released label
extraction through a local judge for free-text answers (``--judge``), and MER-Prefer's two-class weighted F1
(:mod:`emollm_eval.mer2026`, :mod:`emollm.scoring.mer2026`).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emollm.engines.base import EngineError
from emollm.labels import LabelParser, ParseResult
from emollm.utils.io import atomic_write_text, same_file
from emollm_eval.classification import classification_report
from emollm_eval.datasets import (
    DFEW_LABELS,
    MER2023_LABELS,
    MER2023_PROTOCOLS,
    MER2023_VALENCE_PLACEHOLDER,
    Prediction,
    read_dfew_split,
    read_mer2023_labels,
    read_predictions,
)
from emollm_eval.mer2026 import (
    PREFER_PROTOCOLS,
    add_ov_protocol_args,
    format_ov_protocol,
    format_prefer,
    format_sentiment,
    score_ov_protocol,
    score_prefer,
    score_sentiment,
)
from emollm_eval.metrics import ScoreFn, mer2023_combined, score_fn, valence_mse

__all__ = ["main"]

_MISSING = ParseResult(None, (), "missing from PRED")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emollm score",
        description="Score a prediction CSV against gold labels. Invalid answers (zero or several labels, or no row "
        "in PRED) count as wrong and are reported separately.",
    )
    sub = parser.add_subparsers(dest="task", required=True, metavar="{dfew,mer2023,ov,prefer}")

    def common(p: argparse.ArgumentParser, gold_help: str, default_labels: Sequence[str]) -> None:
        p.add_argument("--pred", required=True, type=Path, help="prediction CSV: name,prediction (free text or label)")
        p.add_argument("--gold", required=True, type=Path, help=gold_help)
        p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
        p.add_argument(
            "--labels",
            type=_label_list,
            default=tuple(default_labels),
            help=f"comma-separated label names (default: {','.join(default_labels)})",
        )
        p.add_argument("--ci", action="store_true", help="add 95%% bootstrap confidence intervals (<metric>_ci)")
        p.add_argument(
            "--n-resamples",
            type=_n_resamples,
            default=1000,
            help=f"bootstrap resamples for --ci, 1..{MAX_RESAMPLES:,} (default: 1000)",
        )
        p.add_argument("--seed", type=int, default=0, help="bootstrap seed for --ci (default: 0)")
        p.add_argument(
            "--per-sample", type=Path, metavar="OUT.csv", help="also write name,gold,answer,parsed,reason per sample"
        )
        p.add_argument("--overwrite", action="store_true", help="let --per-sample replace an existing file")
        p.add_argument("--debug", action="store_true", help="show tracebacks")

    dfew = sub.add_parser("dfew", help="DFEW: UAR, WAR, per-class recall", description="Score DFEW predictions.")
    common(
        dfew,
        "DFEW split CSV (video_name,label; labels 1-indexed), e.g. EmoLabel_DataSplit/test(single-labeled)/set_1.csv",
        DFEW_LABELS,
    )
    mer = sub.add_parser("mer2023", help="MER2023: weighted F1, accuracy, valence MSE", description="Score MER2023.")
    common(mer, "MER2023 label CSV (name,discrete,valence)", MER2023_LABELS)
    mer.add_argument(
        "--protocol",
        choices=sorted(MER2023_PROTOCOLS),
        help="test1/test2 require and score valence (combined = F1 - 0.25*MSE); test3 scores weighted F1 only and, "
        "like the official MER-SEMI scorer, accepts predictions for unlabelled test3 clips (not scored; counted "
        "as 'extra'). "
        "Default: score valence when PRED has a valence column; names outside GOLD are an error.",
    )
    ov = sub.add_parser(
        "ov",
        help="open-vocabulary emotion sets: set precision/recall/F, hit rate",
        description="Score open-vocabulary predictions (name,openset) against reference sets (name,openset).",
    )
    ov.add_argument("--pred", required=True, type=Path, help="prediction CSV: name,openset (list, comma list or text)")
    ov.add_argument("--gold", required=True, type=Path, help="reference CSV: name,openset (e.g. \"['happy', 'calm']\")")
    ov.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    ov.add_argument("--per-sample", type=Path, metavar="OUT.csv", help="also write name,gold,pred,precision,recall,f1")
    ov.add_argument("--overwrite", action="store_true", help="let --per-sample replace an existing file")
    ov.add_argument("--debug", action="store_true", help="show tracebacks")
    add_ov_protocol_args(ov)
    pref = sub.add_parser(
        "prefer",
        help="MER-Prefer (MER2026 track 3): 2-class weighted F1 of a1/a2 choices",
        description="Score preference responses (name,response) against labels (name,preference: a1, a2 or same).",
    )
    pref.add_argument("--pred", required=True, type=Path, help="CSV: name,<--pred-column> (the model's response)")
    pref.add_argument("--gold", required=True, type=Path, help="CSV: name,<--gold-column> (a1, a2 or same)")
    pref.add_argument("--protocol", choices=sorted(PREFER_PROTOCOLS), default="mer2026-track3")
    pref.add_argument("--pred-column", default="response", help="PRED column (default: response)")
    pref.add_argument("--gold-column", default="preference", help="GOLD column (default: preference)")
    pref.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    pref.add_argument("--per-sample", type=Path, metavar="OUT.csv", help="also write name,gold,response,parsed")
    pref.add_argument("--overwrite", action="store_true", help="let --per-sample replace an existing file")
    pref.add_argument("--debug", action="store_true", help="show tracebacks")
    sent = sub.add_parser(
        "sentiment",
        help="MER-UniBench sentiment (CMU-MOSI/MOSEI, SIMS): an LLM judge maps answers to positive/negative",
        description="Score answers on the dimensional sets as MER-UniBench does: (descriptions -> label lists ->) "
        "one of positive/negative/neutral from the sentiment judge -> 2-class weighted F1 and accuracy against the "
        "sign of the gold score (gold 0 dropped). Invalid judge answers count as wrong; the release's own mapping "
        "(invalid = neutral) is reported beside it.",
    )
    sent.add_argument("--pred", required=True, type=Path, help="CSV: name,<--pred-column> (label lists or text)")
    sent.add_argument("--gold", required=True, type=Path, help="CSV: name,<--gold-column> (a float score)")
    sent.add_argument("--pred-column", default="openset", help="PRED column (default openset: label lists)")
    sent.add_argument("--gold-column", default="sentiment", help="GOLD column (default sentiment)")
    sent.add_argument("--descriptions", action="store_true", help="PRED holds free text: extract label lists first")
    sent.add_argument(
        "--answers", type=Path, help="also write the sentiment judge's answers (name,answer with provenance); "
        "rewritten after each batch, and a rerun with the same judge resumes from it",
    )  # fmt: skip
    for action in [a for a in ov._actions if a.dest.startswith("judge") or a.dest == "extracted"]:
        sent._add_action(action)  # the same judge flags as score ov
    sent.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    sent.add_argument("--per-sample", type=Path, metavar="OUT.csv", help="also write name,gold,labels,answer,parsed")
    sent.add_argument("--overwrite", action="store_true", help="let --per-sample replace an existing file")
    sent.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


MAX_RESAMPLES = 20_000
"""Cap of ``--n-resamples``: 20x the default and twice SciPy's ``bootstrap`` default (9,999); more moves a 95%
interval's ends by less than their own Monte-Carlo noise and costs minutes (2,000 resamples of 2,000 samples: 0.6 s)."""


def _n_resamples(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= n <= MAX_RESAMPLES:
        raise argparse.ArgumentTypeError(f"must be in 1..{MAX_RESAMPLES:,}, got {n:,}")
    return n


def _label_list(text: str) -> tuple[str, ...]:
    labels = tuple(x.strip() for x in text.split(",") if x.strip())
    if not labels:
        raise argparse.ArgumentTypeError("--labels needs comma-separated names, e.g. happy,sad,neutral")
    return labels


def _align(
    gold_names: list[str], preds: list[Prediction], pred_path: Path, gold_path: Path, *, allow_extra: bool = False
) -> tuple[dict[str, Prediction], list[str]]:
    """Index predictions by name; return them with the prediction names that are not in the gold file.

    Unless ``allow_extra`` (MER2023 test3, whose official scorer takes predictions for unlabelled clips too), such
    names raise, listed in the message.
    """
    gold_set = set(gold_names)
    extra = [p.name for p in preds if p.name not in gold_set]
    if allow_extra:
        return {p.name: p for p in preds if p.name in gold_set}, extra
    if extra:
        shown = ", ".join(extra[:20]) + (f", ... ({len(extra) - 20} more)" if len(extra) > 20 else "")
        hint = ""
        stripped = {g.lstrip("0") for g in gold_set}
        if all(e.isdigit() and e.lstrip("0") in stripped for e in extra):
            hint = " (they differ from gold names only by leading zeros; write the names exactly as in the gold file)"
        raise ValueError(
            f"{pred_path}: {len(extra)} prediction name(s) not in {gold_path}: {shown}{hint}; "
            "remove these rows or score against the gold file they belong to"
        )
    return {p.name: p for p in preds}, []


def _parse(parser: LabelParser, answer: str, numeric: bool) -> ParseResult:
    """Parse one answer; with ``numeric``, a bare 1-indexed class number (DFEW's convention) is accepted too."""
    text = answer.strip()
    if numeric and text.isdigit() and 1 <= int(text) <= len(parser.labels):
        label = parser.labels[int(text) - 1]
        return ParseResult(label, (label,), "ok")
    return parser.parse(text)


def _classification(
    args: argparse.Namespace,
    y_true: list[str],
    results: list[ParseResult],
    headline: Sequence[str],
    extra_ci: Mapping[str, ScoreFn] | None = None,
) -> dict[str, Any]:
    """The shared classification report of the parsed answers, headline metrics first, plus ``missing``.

    With ``--ci`` the headline metrics and ``extra_ci`` get intervals, all from the same bootstrap resamples.
    """
    labels: tuple[str, ...] = args.labels
    ci: dict[str, ScoreFn] = {}
    if args.ci:
        ci = {name: score_fn(name) for name in headline} | dict(extra_ci or {})
    report = classification_report(
        y_true,
        [r.label for r in results],
        labels,
        reasons=[r.reason for r in results],
        ci=ci,
        n_resamples=args.n_resamples,
        seed=args.seed,
    )
    head = {"task": args.task, **{name: report[name] for name in headline}}
    return {**head, **report, "missing": sum(r is _MISSING for r in results)}


def _score_dfew(args: argparse.Namespace) -> tuple[dict[str, Any], list[list[str]]]:
    labels: tuple[str, ...] = args.labels
    gold = read_dfew_split(args.gold, labels)
    by_name, _ = _align([g.name for g in gold], read_predictions(args.pred), args.pred, args.gold)
    parser = LabelParser(labels)
    results = [_MISSING if g.name not in by_name else _parse(parser, by_name[g.name].prediction, True) for g in gold]
    names = [g.name for g in gold]
    report = _classification(args, [g.label for g in gold], results, ("uar", "war"))
    answers = [by_name[n].prediction if n in by_name else "" for n in names]
    return report, _sample_rows(names, [g.label for g in gold], answers, results)


def _score_mer2023(args: argparse.Namespace) -> tuple[dict[str, Any], list[list[str]]]:
    labels: tuple[str, ...] = args.labels
    gold = read_mer2023_labels(args.gold, labels)
    preds = read_predictions(args.pred)
    protocol = MER2023_PROTOCOLS[args.protocol] if args.protocol else None
    allow_extra = protocol is not None and protocol.extra_names
    by_name, extra = _align([g.name for g in gold], preds, args.pred, args.gold, allow_extra=allow_extra)
    preds = list(by_name.values())  # the rows that are scored (test3: the labelled clips)
    has_valence = any(p.valence is not None for p in preds)
    score_valence = protocol.uses_valence if protocol else has_valence
    if score_valence and not has_valence:
        raise ValueError(
            f"{args.pred}: protocol {args.protocol} scores valence but no prediction has one; "
            "add a 'valence' column, or use --protocol test3"
        )
    if score_valence:
        bad = [g.name for g in gold if g.valence is None or g.valence == MER2023_VALENCE_PLACEHOLDER]
        if bad:
            raise ValueError(
                f"{args.gold}: {len(bad)} gold sample(s) have no valence (no column, or the unlabelled placeholder "
                f"{MER2023_VALENCE_PLACEHOLDER:g}), e.g. {', '.join(bad[:5])}; use a labelled gold file, or score "
                "without valence (--protocol test3)"
            )
    parser = LabelParser(labels)
    names = [g.name for g in gold]
    results = [_MISSING if n not in by_name else parser.parse(by_name[n].prediction) for n in names]
    extra_ci: dict[str, ScoreFn] = {}
    if score_valence:
        vt = np.asarray([g.valence for g in gold], dtype=float)
        pv = [by_name[n].valence if n in by_name else None for n in names]
        vp = np.asarray([0.0 if v is None else v for v in pv], dtype=float)
        extra_ci = {
            "valence_mse": lambda _s, i: valence_mse(vt[i], vp[i]),
            "combined": lambda s, i: mer2023_combined(s.weighted_f1, valence_mse(vt[i], vp[i])),
        }
    report = _classification(args, [g.discrete for g in gold], results, ("weighted_f1", "accuracy"), extra_ci)
    if protocol:
        report["protocol"] = protocol.split
    if allow_extra:
        report["extra"] = len(extra)  # predictions for clips outside the gold file: accepted, not scored
    if score_valence:
        mse = valence_mse(vt, vp)
        report.update(
            valence_mse=mse,
            combined=mer2023_combined(report["weighted_f1"], mse),
            valence_missing=sum(v is None for v in pv),
        )
    answers = [by_name[n].prediction if n in by_name else "" for n in names]
    return report, _sample_rows(names, [g.discrete for g in gold], answers, results)


def _read_openset_csv(path: Path) -> dict[str, list[str]]:
    """``name -> openset items`` of a ``name,openset`` CSV (:func:`emollm.scoring.openvocab.parse_openset_cell`)."""
    from emollm.scoring.openvocab import parse_openset_cell
    from emollm_eval.datasets import _Csv, _UniqueNames

    table = _Csv(path, "name,openset")
    i_name, i_set = table.require("name", "openset")
    names = _UniqueNames(table.fail)
    out: dict[str, list[str]] = {}
    for line, cells in table.rows:
        name = names.add(cells[i_name], line)
        try:
            out[name] = parse_openset_cell(cells[i_set])
        except ValueError as err:
            table.fail(line, str(err).split("; ")[0], "write it like \"['happy', 'calm']\" or happy, calm")
    return out


def _score_ov(args: argparse.Namespace) -> tuple[dict[str, Any], list[list[str]]]:
    from emollm.scoring.openvocab import normalize_set, ov_scores, set_scores

    gold = _read_openset_csv(args.gold)
    pred = _read_openset_csv(args.pred)
    extra = [n for n in pred if n not in gold]
    if extra:
        shown = ", ".join(extra[:20]) + (f", ... ({len(extra) - 20} more)" if len(extra) > 20 else "")
        raise ValueError(f"{args.pred}: {len(extra)} prediction name(s) not in {args.gold}: {shown}")
    names = list(gold)
    g_sets = [normalize_set(gold[n]) for n in names]
    p_sets = [normalize_set(pred.get(n, [])) for n in names]
    report: dict[str, Any] = {"task": "ov", **ov_scores(p_sets, g_sets), "missing": sum(n not in pred for n in names)}
    rows = []
    for n, g, p in zip(names, g_sets, p_sets, strict=True):
        scores = [f"{x:.4f}" for x in set_scores(p, g)] if g else ["", "", ""]
        rows.append([n, "|".join(sorted(g)), "|".join(sorted(p)), *scores])
    return report, rows


def _sample_rows(names: list[str], gold: list[str], answers: list[str], results: list[ParseResult]) -> list[list[str]]:
    return [[n, g, a, r.label or "", r.reason] for n, g, a, r in zip(names, gold, answers, results, strict=True)]


def _check_per_sample_target(args: argparse.Namespace) -> None:
    """Refuse a ``--per-sample`` path that would destroy a file: an input of this command (always), a folder
    (always), an existing file (unless ``--overwrite``)."""
    out: Path = args.per_sample
    for flag, given in (("--pred", args.pred), ("--gold", args.gold)):
        if same_file(out, given):
            raise ValueError(
                f"--per-sample {out} is the {flag} input {given}; writing it would destroy the input "
                "(even with --overwrite): choose another output file"
            )
    if out.is_dir():
        raise ValueError(f"--per-sample {out} is a folder; give a file path, e.g. {out / 'per_sample.csv'}")
    if (out.exists() or out.is_symlink()) and not args.overwrite:
        raise ValueError(
            f"--per-sample {out} already exists; pass --overwrite to replace it, or choose another output file"
        )


def _write_per_sample(path: Path, rows: list[list[str]], header: Sequence[str] | None = None) -> None:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(header or ["name", "gold", "answer", "parsed", "reason"])
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


_DISPLAY = {
    "uar": "UAR",
    "war": "WAR",
    "weighted_f1": "weighted F1",
    "accuracy": "accuracy",
    "valence_mse": "valence MSE",
    "combined": "combined",
}


def _pct(x: float) -> str:
    return f"{100 * x:6.2f}%"


def _format_ov_table(report: dict[str, Any]) -> str:
    lines = [
        f"OV: {report['n']} samples scored, {report['skipped']} skipped (empty reference), "
        f"{report['missing']} missing from PRED, {report['empty_pred']} empty predictions"
    ]
    for key, name in (("precision", "precision"), ("recall", "recall"), ("f1", "F-score"), ("sample_f1", "sample F"),
                      ("mer_ov", "MER-OV"), ("hit_rate", "hit rate")):  # fmt: skip
        lines.append(f"  {name:<12}{_pct(report[key])}")
    return "\n".join(lines)


def _format_table(report: dict[str, Any]) -> str:
    labels: list[str] = report["labels"]
    head = f"{report['task'].upper()}"
    if "protocol" in report:
        head += f" ({report['protocol']})"
    lines = [
        f"{head}: {report['n']} samples, {report['invalid']} invalid ({_pct(report['invalid_rate']).strip()}; "
        f"{report['missing']} missing from PRED)"
    ]
    metrics = ["uar", "war"] if report["task"] == "dfew" else ["weighted_f1", "accuracy", "valence_mse", "combined"]
    for key in metrics:
        if key not in report:
            continue
        value = f"{report[key]:7.4f}" if key in ("valence_mse", "combined") else _pct(report[key])
        ci = report.get(f"{key}_ci")
        ci_text = f"   95% CI [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""
        lines.append(f"  {_DISPLAY[key]:<12}{value}{ci_text}")
    if "extra" in report:
        lines.append(f"  extra predictions (not in the gold file, not scored): {report['extra']}")
    if "valence_missing" in report:
        lines.append(f"  valence missing (scored as 0): {report['valence_missing']}")
    width = max(8, *(len(lab) for lab in labels))
    lines += ["", f"  {'class':<{width}}  support   recall  invalid"]
    for lab in labels:
        recall = report["per_class_recall"][lab]
        recall_text = _pct(recall) if recall is not None else f"{'-':>7}"
        lines.append(
            f"  {lab:<{width}}  {report['support'][lab]:7d}  {recall_text}  {report['invalid_by_class'][lab]:7d}"
        )
    cols = [*labels, "invalid"]
    cw = max(7, *(len(c) for c in cols))
    lines += ["", "  confusion matrix (rows: gold, columns: prediction)"]
    lines.append("  " + " " * width + "".join(f" {c:>{cw}}" for c in cols))
    for lab, row in zip(labels, report["confusion_matrix"], strict=True):
        cells = [*row, report["invalid_by_class"][lab]]
        lines.append(f"  {lab:<{width}}" + "".join(f" {c:>{cw}d}" for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``emollm score`` with ``argv`` (the arguments after ``score``); return the exit code.

    Exit codes: 0 on success, 2 on a usage error, an unreadable/malformed/mismatched input file, or a refused
    ``--per-sample`` target (an input of the command, a folder, or an existing file without ``--overwrite``); the
    one-line message on stderr names the file and the fix (``--debug`` shows the traceback).
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse has printed the usage or --help
        return exc.code if isinstance(exc.code, int) else 2
    if args.task == "ov":
        return _main_ov(args)
    if args.task == "prefer":
        return _main_prefer(args)
    if args.task == "sentiment":
        return _main_sentiment(args)
    if args.n_resamples < 1:
        print("emollm score: error: --n-resamples must be at least 1", file=sys.stderr)
        return 2
    try:
        LabelParser(args.labels)  # validates --labels before any file is read
        if args.per_sample is not None:
            _check_per_sample_target(args)  # before scoring: a refused run spends nothing
        report, rows = (_score_dfew if args.task == "dfew" else _score_mer2023)(args)
        if args.per_sample is not None:
            _write_per_sample(args.per_sample, rows)
    except (ValueError, OSError) as err:
        if args.debug:
            raise
        print(f"emollm score {args.task}: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else _format_table(report))
    return 0


def _main_ov(args: argparse.Namespace) -> int:
    wheel = args.protocol != "set"
    try:
        if not wheel and (args.wheels or args.judge):
            raise ValueError("--wheels and --judge belong to --protocol mer2026-track2 / mer-unibench-hit")
        if args.per_sample is not None:
            _check_per_sample_target(args)
        if wheel:
            report, rows = score_ov_protocol(args)
            header = ["name", "gold", "pred", *(f"wheel{i} gold / pred" for i in range(1, 6))]
        else:
            report, rows = _score_ov(args)
            header = ["name", "gold", "pred", "precision", "recall", "f1"]
        if args.per_sample is not None:
            _write_per_sample(args.per_sample, rows, header)
    except (ValueError, OSError, EngineError) as err:
        if args.debug:
            raise
        print(f"emollm score ov: error: {err}{_kept_hint(err, args)}", file=sys.stderr)
        return 2
    text = format_ov_protocol(report) if wheel else _format_ov_table(report)
    print(json.dumps(report, indent=2) if args.json else text)
    return 0


def _kept_hint(err: BaseException, args: argparse.Namespace) -> str:
    """After a judge's server failed: which checkpoint files hold what it answered, so the same command goes on."""
    files = [getattr(args, "extracted", None), getattr(args, "answers", None)]
    kept = [str(f) for f in files if f is not None and Path(f).is_file()]
    if not isinstance(err, EngineError) or not kept:
        return ""
    return f"; what the judge answered so far is kept in {', '.join(kept)}: run the same command to go on"


def _main_sentiment(args: argparse.Namespace) -> int:
    return _main_file_scorer(args, score_sentiment, ["name", "gold", "labels", "answer", "parsed"], format_sentiment)


def _main_prefer(args: argparse.Namespace) -> int:
    return _main_file_scorer(args, score_prefer, ["name", "gold", "response", "parsed"], format_prefer)


def _main_file_scorer(args: argparse.Namespace, score: Any, header: list[str], fmt: Any) -> int:
    """``score prefer`` / ``score sentiment``: refuse a bad ``--per-sample`` first, score, write, print."""
    try:
        if args.per_sample is not None:
            _check_per_sample_target(args)
        report, rows = score(args)
        if args.per_sample is not None:
            _write_per_sample(args.per_sample, rows, header)
    except (ValueError, OSError, EngineError) as err:
        if args.debug:
            raise
        print(f"emollm score {args.task}: error: {err}{_kept_hint(err, args)}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else fmt(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
