"""``emollm assess``: an assistive assessment session for clinicians (never a diagnosis).

    emollm assess --topic "anxiety screen" --questions 5 --answers answers/ --out runs/assess --speak
    emollm assess compare CASES_DIR --judge smollm2 --out runs/assess-compare

The first form asks the LLM for N open questions (template bank when its JSON is invalid), optionally writes them as
speech, analyses one answer file per question (video or voice; a folder sorted by name, or paths in order with
``-`` for no answer), and writes ``report.md`` and ``assessment.json`` (an earlier report in ``--out`` is refused
unless ``--overwrite``). Exit status: 0 when every answer file given was analysed, 1 when some could not be, 2 when
none could (or on a bad flag or path). With ``--json`` stdout holds exactly one JSON document (the disclaimer is in
it, and on stderr). ``compare`` is the with/without-emotion study harness (the recipe ``emollm_eval.assess_compare``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from emollm.apps.assess.questions import MAX_QUESTIONS
from emollm.apps.assess.session import DISCLAIMER, DISCLAIMER_SHORT

__all__ = ["SUBCOMMANDS", "main"]

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "compare": ("emollm_eval.assess_compare", "main"),
}
"""``emollm assess <name>`` -> (module, function); the recipe is imported only when asked for."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emollm assess",
        description=f"{DISCLAIMER_SHORT} Questions, answers analysed for emotion and evidence, and a report for a "
        "clinician. 'emollm assess compare --help': the with/without-emotion comparison.",
    )
    parser.add_argument("--topic", required=True, help='what the session is about, e.g. "anxiety screen"')
    parser.add_argument("--questions", type=int, default=5, help=f"number of questions (1-{MAX_QUESTIONS})")
    parser.add_argument(
        "--answers", nargs="+", metavar="DIR_OR_FILE",
        help="a folder of answer files (sorted by name, matched to the questions in order) or one file per question "
        "in order ('-' for no answer)",
    )  # fmt: skip
    parser.add_argument("--speak", action="store_true", help="write each question as speech: OUT/question_<i>.wav")
    parser.add_argument("--out", metavar="DIR", help="write report.md and assessment.json here (else print the report)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report (and data) in --out")
    parser.add_argument("--checkpoint", help="a trained checkpoint for the answer analysis (default: clue mode)")
    parser.add_argument("--backbone", default="smollm2", help="the LLM that writes questions and conclusion")
    parser.add_argument("--llm-path", help="local weights of that LLM (with --checkpoint: also its base LLM)")
    parser.add_argument("--no-llm", action="store_true", help="template questions and conclusion; load no LLM")
    parser.add_argument("--labels", help="comma-separated emotion labels (default: MER2023's six)")
    parser.add_argument("--frames", type=int, default=None, help="clue mode: frames sampled per answer video")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--max-new-tokens", type=int, default=160, help="generation budget of the writing LLM")
    parser.add_argument("--json", action="store_true", help="print assessment.json's content instead of the report")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    from emollm.engines import add_engine_arguments

    add_engine_arguments(parser, concurrency=1)  # the writing LLM
    return parser


def main(argv: list[str]) -> int:
    """``emollm assess`` (and its subcommands)."""
    if argv and argv[0] in SUBCOMMANDS:
        module, func = SUBCOMMANDS[argv[0]]
        return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)
    args = _parser().parse_args(argv)
    from emollm.apps.assess.session import run_assessment
    from emollm.media import MediaError

    # With --json, stdout is the one JSON document (its "disclaimer" field); the disclaimer goes to stderr too.
    say = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    say(f"emollm assess: {DISCLAIMER}")
    try:
        if not 1 <= args.questions <= MAX_QUESTIONS:  # before anything counts questions
            raise ValueError(f"--questions must be between 1 and {MAX_QUESTIONS}, got {args.questions}")
        labels = None
        if args.labels:
            labels = [x.strip() for x in args.labels.split(",") if x.strip()]
            if len(labels) < 2:
                raise ValueError(f"--labels needs at least two labels, got {args.labels!r}")
        options = {} if args.frames is None or args.checkpoint else {"frames": args.frames}
        llm = None
        if not args.no_llm:  # the writer, through the engine the flags ask for (in process or a server)
            from emollm.engines import build_engine, engine_options

            llm = build_engine(
                args.backbone, args.llm_path, max_new_tokens=args.max_new_tokens, precision=args.precision,
                **engine_options(args),
            )  # fmt: skip
        assessment = run_assessment(
            args.topic, args.questions, args.answers, out_dir=args.out, speak=args.speak, use_llm=not args.no_llm,
            llm=llm, backbone=args.backbone, llm_path=args.llm_path, max_new_tokens=args.max_new_tokens,
            precision=args.precision, checkpoint=args.checkpoint, labels=labels, analyzer_options=options,
            log=lambda msg: print(msg, file=sys.stderr), overwrite=args.overwrite,
        )  # fmt: skip
    except (OSError, ValueError, ImportError, RuntimeError, MediaError) as e:
        if args.debug:
            raise
        print(f"emollm assess: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(assessment.to_dict(), indent=2, ensure_ascii=False))
    elif args.out:
        print(f"questions ({assessment.questions.describe}):")
        for i, q in enumerate(assessment.questions.questions, start=1):
            print(f"  {i}. {q}")
        if assessment.missing:
            print(f"missing answers: question(s) {', '.join(map(str, assessment.missing))}")
        if assessment.failed:
            print(f"answers that could not be analysed: question(s) {', '.join(map(str, assessment.failed))}")
        print(f"report: {assessment.files['report']}\ndata:   {assessment.files['json']}")
        if assessment.speech_files:
            print(f"spoken questions: {len(assessment.speech_files)} wav files in {args.out}")
    else:
        print(assessment.report())
    say(f"emollm assess: {DISCLAIMER_SHORT}")
    status = assessment.exit_status
    if status:
        failed = [a for a in assessment.answers if a.status == "failed"]
        given = [a for a in assessment.answers if a.status != "missing"]
        n = len(given)
        what = f"none of the {n} answer files could" if status == 2 else f"{len(failed)} of {n} answer files could not"
        first = f"question {failed[0].index}: {failed[0].reason}"
        print(f"emollm assess: {what} be analysed ({first})", file=sys.stderr)
    return status
