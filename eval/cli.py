"""``emollm eval``: evaluation runs, EMER judge scoring, modality ablation and label-order sensitivity.

Usage::

    emollm eval CONFIG.yaml [key=value ...]                 # run a checkpoint over a dataset and report
    emollm eval ablate CONFIG.yaml [key=value ...]          # modality ablation (all, no_m, only_m, text only)
    emollm eval label-order CONFIG.yaml --orders N [--seed S] [--select] [key=value ...]
    emollm eval emer --gold GT.csv --pred PRED.csv --judge smollm2|PATH|http://HOST/v1 --out DIR
    emollm eval compare --gold TEST.txt --labels a,b,c --run NAME=PATH [--run ...] --out DIR
    emollm eval baseline --features ROOT --modality audio=whisper [...] --train TRAIN.txt --test TEST.txt \
        --labels a,b,c --out DIR                            # late-fusion logistic regression on cached features

Overrides are YAML values: ``limit=10``, ``label_order=[happy,sad,neutral]``, ``features.face=mae_DFEW_ck16_UTT``.
Exit codes: 0 on success, 2 on a usage, config or input-file error (the message names the key or file), 1 when a
judge or the model fails at run time.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

_SUBCOMMANDS = ("emer", "ablate", "label-order", "compare", "baseline")


def _usage() -> str:
    body = (__doc__ or "").split("Usage::", 1)[1].split("Exit codes", 1)[0].strip("\n")
    lines = [line.removeprefix("    ") for line in body.splitlines()]
    tail = "Run 'emollm eval <subcommand> --help' for options; configs/eval/*.yaml are annotated examples."
    return "usage:\n" + "\n".join(lines).rstrip() + "\n\n" + tail


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emollm eval",
        description="Run a checkpoint over an evaluation set: predictions.jsonl, metrics.json, report.md, plots. "
        "Reporting only: nothing is selected on the evaluated split.",
    )
    p.add_argument("config", help="YAML config (see configs/eval/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (YAML values)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--json", action="store_true", help="print metrics.json instead of a summary")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _ablate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emollm eval ablate",
        description="Modality ablation: rerun with each modality dropped, each alone and none; report metric "
        "changes and per-modality contributions (OUTPUT_DIR/ablation/ablation.md).",
    )
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--no-text-only", action="store_true", help="skip the text-only run (no Shapley values)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _orders_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emollm eval label-order",
        description="Label-order sensitivity: rerun with N label orders in the prompt (given, reversed, "
        "alphabetical, random) and report the metric per order and its spread (OUTPUT_DIR/label_order/).",
    )
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--orders", type=int, default=4, help="number of label orders (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random orders (default 0)")
    p.add_argument(
        "--select", action="store_true", help="also name the best order (refused on test splits: use validation data)"
    )
    p.add_argument("--no-progress", action="store_true")
    return p


def _emer_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emollm eval emer",
        description="Score EMER reasoning (clue overlap, label overlap; 1-10) with an LLM judge. Judge calls are "
        "cached; every score row stores the judge id and prompt version.",
    )
    p.add_argument("--gold", required=True, help="EMER ground truth: gt-eng.csv (v1) or final-EMER-reason.csv (v2)")
    p.add_argument("--pred", required=True, help="predictions: names,chi_reasons CSV or emollm predictions.jsonl")
    p.add_argument(
        "--judge", "--llm-endpoint", dest="judge", required=True,
        help="registry backbone (smollm2), local path (checkpoint/HF folder/.gguf) or an OpenAI-compatible server URL",
    )  # fmt: skip
    p.add_argument("--out", required=True, help="output folder (emer_scores.jsonl, emer_metrics.json, emer_report.md)")
    p.add_argument("--judge-model", "--llm-model", dest="judge_model", help="model name for an http(s) judge")
    p.add_argument(
        "--judge-engine", "--llm-engine", dest="judge_engine", choices=("auto", "transformers", "llama.cpp"),
        default="auto", help="registry backbone / .gguf judge: auto = llama.cpp on CPU when installed",
    )  # fmt: skip
    p.add_argument(
        "--judge-concurrency", "--llm-concurrency", dest="judge_concurrency", type=int, default=4,
        help="http(s) judge: requests in flight at most (default 4)",
    )  # fmt: skip
    p.add_argument("--judge-backbone", help="backbone of a local judge path when its family is ambiguous")
    p.add_argument("--judge-llm-path", help="local weights for a registry-backbone judge without embedded weights")
    p.add_argument(
        "--api-key-env", "--llm-api-key-env", dest="api_key_env", default="OPENAI_API_KEY",
        help="env var with the API key of an http(s) judge",
    )  # fmt: skip
    p.add_argument("--cache", help="judge-call cache file (default OUT/judge_cache.jsonl); share it between runs")
    p.add_argument(
        "--metrics", default="clue_overlap,label_overlap", help="comma-separated: clue_overlap,label_overlap"
    )
    p.add_argument("--limit", type=int, help="score only the first N ground-truth samples")
    p.add_argument("--max-new-tokens", type=int, default=64, help="judge answer length (default 64)")
    p.add_argument("--batch-size", type=int, default=8, help="local judge: prompts per generate call")
    p.add_argument("--json", action="store_true", help="print emer_metrics.json instead of the report")
    p.add_argument("--no-progress", action="store_true")
    return p


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace | int:
    try:
        return parser.parse_intermixed_args(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


def _summary(metrics: dict) -> str:
    from emollm_eval.report import fmt_metric
    from emollm_eval.runner import METRIC_NAMES

    head = f"{metrics['dataset']} ({metrics['split']}): {metrics['n']} samples"
    if metrics["dataset"] == "emer":
        emer = metrics.get("emer")
        if isinstance(emer, dict):
            parts = [
                f"{k.replace('_', ' ')} {emer[k]['mean']:.2f} ({emer[k]['n_invalid']} invalid)"
                if emer[k]["mean"] is not None
                else f"{k.replace('_', ' ')} n/a ({emer[k]['n_invalid']} invalid)"
                for k in ("clue_overlap", "label_overlap")
                if k in emer
            ]
            return f"{head}; " + "; ".join(parts) + f"; judge {emer['judge_id']}"
        return f"{head}; not scored (no judge): {metrics['score_with']}"
    parts = [f"{METRIC_NAMES[k]} {fmt_metric(metrics[k])}" for k in metrics["primary_metrics"]]
    missing = ", ".join(f"{m} {c}" for m, c in metrics["missing_features"].items() if c)
    return (
        f"{head}; "
        + ", ".join(parts)
        + f"; invalid {metrics['invalid']} ({fmt_metric(metrics['invalid_rate'])}%)"
        + (f"; missing features: {missing}" if missing else "")
    )


def _pairs(items: Sequence[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{flag} {item!r}: expected NAME=PATH")
        out.append((key.strip(), value.strip()))
    return out


def _compare_or_baseline(command: str, rest: list[str]) -> int:
    p = argparse.ArgumentParser(prog=f"emollm eval {command}")
    p.add_argument("--labels", required=True, help="comma-separated classes (report order)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    if command == "compare":
        p.add_argument("--gold", required=True, help="N C E V list of the evaluated split")
        p.add_argument("--run", action="append", required=True, metavar="NAME=PATH", help="a prediction source")
        p.add_argument("--note", action="append", default=[], metavar="NAME=TEXT", help="a note for a row")
        p.add_argument("--n-bootstrap", type=int, default=1000)
    else:
        p.add_argument("--features", required=True, help="feature cache root")
        p.add_argument("--modality", action="append", required=True, metavar="MOD=FOLDER")
        p.add_argument("--train", required=True, help="N C E V list of the training clips")
        p.add_argument("--test", required=True, help="N C E V list of the clips to predict")
    args = _parse(p, rest)
    if isinstance(args, int):
        return args
    labels = [x.strip() for x in args.labels.split(",") if x.strip()]
    if command == "compare":
        from emollm_eval.side_by_side import compare_sources

        notes = dict(_pairs(args.note, "--note"))
        res = compare_sources(args.gold, _pairs(args.run, "--run"), args.out, labels,
                              n_bootstrap=args.n_bootstrap, seed=args.seed, notes=notes)  # fmt: skip
        print((Path(args.out) / "compare.md").read_text(), end="")
        return 0 if res["sources"] else 2
    from emollm_eval.baseline import late_fusion_baseline

    summary = late_fusion_baseline(args.features, dict(_pairs(args.modality, "--modality")), args.train, args.test,
                                   labels, args.out, seed=args.seed)  # fmt: skip
    print(json.dumps(summary, indent=2))
    return 0


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    from emollm_eval.runner import load_config

    command = argv[0] if argv[0] in _SUBCOMMANDS else "run"
    rest = argv[1:] if command != "run" else argv
    if command in ("compare", "baseline"):
        return _compare_or_baseline(command, rest)
    if command == "emer":
        args = _parse(_emer_parser(), rest)
        if isinstance(args, int):
            return args
        from emollm_eval.emer import run_emer
        from emollm_eval.judge import make_judge

        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        judge = make_judge(
            args.judge,
            model=args.judge_model,
            backbone=args.judge_backbone,
            llm_path=args.judge_llm_path,
            api_key_env=args.api_key_env,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            engine=args.judge_engine,
            concurrency=args.judge_concurrency,
        )
        result = run_emer(
            args.gold,
            args.pred,
            judge,
            args.out,
            cache_path=args.cache,
            metrics=metrics,
            limit=args.limit,
            progress=False if args.no_progress else None,
        )
        if args.json:
            print(json.dumps(result.summary, indent=2))
        else:
            from emollm_eval.emer import emer_markdown

            print(emer_markdown(result, gold_path=args.gold, pred_path=args.pred), end="")
        return 0
    parser = {"run": _run_parser, "ablate": _ablate_parser, "label-order": _orders_parser}[command]()
    args = _parse(parser, rest)
    if isinstance(args, int):
        return args
    config = load_config(args.config, args.overrides)
    progress = False if args.no_progress else None
    if command == "run":
        if args.print_config:
            import yaml

            print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
            return 0
        from emollm_eval.runner import run_eval

        result = run_eval(config, progress=progress)
        if args.json:
            print(json.dumps(result.metrics, indent=2))
        else:
            print(_summary(result.metrics))
            print(f"generated {result.generated}, reused {result.reused}; report: {result.output_dir / 'report.md'}")
        return 0
    if command == "ablate":
        from emollm_eval.ablation import modality_ablation

        res = modality_ablation(config, include_text_only=not args.no_text_only, progress=progress)
    else:
        from emollm_eval.ablation import label_order_sensitivity

        res = label_order_sensitivity(config, args.orders, seed=args.seed, select=args.select, progress=progress)
    print(res.markdown, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``emollm eval`` with ``argv`` (the arguments after ``eval``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from emollm_eval.judge import JudgeError

    try:
        return _main(argv)
    except (ValueError, FileNotFoundError, IsADirectoryError) as err:
        print(f"emollm eval: error: {err}", file=sys.stderr)
        return 2
    except JudgeError as err:
        print(f"emollm eval: judge error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
