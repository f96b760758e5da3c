"""``emollm assess compare``: does putting the emotion estimates in the prompt bring an assessment's conclusion
closer to a clinician's? (The with/without-emotion study of the assessment assistant's design.)

For every case the conclusion is written twice by the same LLM, from the same answers, with the same instruction
(:func:`emollm.apps.assess.conclusion.conclusion_prompt`): **with** the per-answer emotion estimates and their evidence,
and **without** them (transcripts only). Both are scored against the clinician's reference conclusion by an
EMER-style overlap judge (:func:`emollm_eval.emer.score_emer`: clue overlap by default, label overlap on request;
1-10, higher = closer), and the table gives the per-case scores, their difference and the means, with the judge id.
A conclusion that fails the checks is replaced by the template (as in a session); the table says which variant the
LLM wrote, so a difference between two templates is not mistaken for the LLM's.

Case files
----------
``CASES_DIR`` holds one case per ``NAME.json`` file or per ``NAME/case.json`` folder (names sorted)::

    {
      "topic": "anxiety screen",                      # optional (default: --topic)
      "answers": [
        {"question": "How have you been sleeping lately?",
         "transcript": "Badly, I keep waking up at four.",   # optional when media is given
         "media": "q1.mp4",                                 # optional; relative to the case file's folder
         "emotion": {"label": "sad", "confidence": 0.7,     # optional: a known estimate, used as given
                     "observations": ["Voice: low pitch; slow"]}}
      ],
      "reference": "The clinician's own conclusion of this interview."
    }

Each answer's emotion comes from, in this order: its ``emotion`` object; the analysis of its ``media`` (the
transcript, when given, is used instead of speech recognition); the analysis of its transcript as text (clue mode's
transcript-emotion model; off with ``--no-text-analysis``). An answer with neither media nor transcript is missing.

Outputs in ``--out``: ``compare.md`` (the table), ``compare.json`` (summary and rows), ``conclusions.jsonl`` (both
conclusions of each case with their prompts and sources), ``scores.jsonl`` (the judge's rows) and
``judge_cache.jsonl`` (shared judge cache; reruns pay only for new prompts).

Command line::

    emollm assess compare CASES_DIR --judge smollm2 --out runs/assess-compare [--metrics clue_overlap,label_overlap]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emollm.apps.assess.answers import AnswerResult, answer_from_analysis
from emollm.apps.assess.conclusion import Conclusion, conclusion_prompt, write_conclusion
from emollm.apps.assess.session import DISCLAIMER_SHORT
from emollm.utils.io import atomic_write_json, atomic_write_text
from emollm_eval.datasets import EMERSample
from emollm_eval.emer import EMER_METRICS, EMER_PROMPTS_VERSION, score_emer
from emollm_eval.judge import Judge, JudgeCache

__all__ = [
    "VARIANTS",
    "Case",
    "CaseAnswer",
    "CompareResult",
    "case_answers",
    "compare_cases",
    "compare_markdown",
    "main",
    "read_cases",
    "write_compare_outputs",
]

VARIANTS: tuple[str, str] = ("with", "without")
"""``with``: the emotion estimates and evidence are in the prompt; ``without``: transcripts only."""

_CASE_KEYS = {"topic", "answers", "reference"}
_ANSWER_KEYS = {"question", "transcript", "media", "emotion"}
_EMOTION_KEYS = {"label", "confidence", "observations"}


@dataclass
class CaseAnswer:
    """One answer of a case file (see the module docstring)."""

    question: str
    transcript: str | None = None
    media: Path | None = None
    emotion: dict[str, Any] | None = None


@dataclass
class Case:
    """One case: its answers and the clinician's reference conclusion."""

    name: str
    path: Path
    answers: list[CaseAnswer]
    reference: str
    topic: str | None = None


def _fail(path: Path, where: str, problem: str) -> ValueError:
    return ValueError(f"{path}: {where}: {problem}")


def _read_case(path: Path, name: str) -> Case:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: not a readable JSON case file ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a case file is a JSON object with 'answers' and 'reference'")
    unknown = sorted(set(data) - _CASE_KEYS)
    if unknown:
        raise _fail(path, unknown[0], f"unknown key (expected {', '.join(sorted(_CASE_KEYS))})")
    reference = data.get("reference")
    if not isinstance(reference, str) or not reference.strip():
        raise _fail(path, "reference", "must be the clinician's conclusion (a non-empty string)")
    topic = data.get("topic")
    if topic is not None and (not isinstance(topic, str) or not topic.strip()):
        raise _fail(path, "topic", "must be a non-empty string when given")
    items = data.get("answers")
    if not isinstance(items, list) or not items:
        raise _fail(path, "answers", "must be a non-empty list of {question, transcript, media, emotion}")
    answers = []
    for i, item in enumerate(items):
        where = f"answers[{i}]"
        if not isinstance(item, dict):
            raise _fail(path, where, "must be an object")
        unknown = sorted(set(item) - _ANSWER_KEYS)
        if unknown:
            raise _fail(path, f"{where}.{unknown[0]}", f"unknown key (expected {', '.join(sorted(_ANSWER_KEYS))})")
        question = item.get("question")
        if not isinstance(question, str) or not question.strip():
            raise _fail(path, f"{where}.question", "must be a non-empty string")
        transcript = item.get("transcript")
        if transcript is not None and not isinstance(transcript, str):
            raise _fail(path, f"{where}.transcript", "must be a string")
        media = item.get("media")
        if media is not None:
            if not isinstance(media, str) or not media:
                raise _fail(path, f"{where}.media", "must be a path (relative to the case file's folder)")
            media = Path(media) if Path(media).is_absolute() else path.parent / media
            if not media.is_file():
                raise _fail(path, f"{where}.media", f"file not found: {media}")
        emotion = item.get("emotion")
        if emotion is not None:
            if not isinstance(emotion, dict) or not isinstance(emotion.get("label"), str):
                raise _fail(path, f"{where}.emotion", "must be an object with a 'label' string")
            bad = sorted(set(emotion) - _EMOTION_KEYS)
            if bad:
                raise _fail(
                    path, f"{where}.emotion.{bad[0]}", f"unknown key (expected {', '.join(sorted(_EMOTION_KEYS))})"
                )
            conf = emotion.get("confidence")
            if conf is not None and not (isinstance(conf, (int, float)) and 0.0 <= conf <= 1.0):
                raise _fail(path, f"{where}.emotion.confidence", f"must be a number in [0, 1], got {conf!r}")
            obs = emotion.get("observations", [])
            if not isinstance(obs, list) or not all(isinstance(o, str) for o in obs):
                raise _fail(path, f"{where}.emotion.observations", "must be a list of strings")
        answers.append(CaseAnswer(" ".join(question.split()), transcript, media, emotion))
    return Case(name, path, answers, reference.strip(), topic)


def read_cases(folder: str | os.PathLike[str]) -> list[Case]:
    """The cases of ``folder``: every ``NAME.json`` and every ``NAME/case.json``, sorted by name.

    Raises:
        ValueError: No cases, a malformed case file (the message names the file and the key), a duplicate name.
        FileNotFoundError: The folder does not exist.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: cases folder not found")
    cases: dict[str, Case] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix == ".json":
            case = _read_case(entry, entry.stem)
        elif entry.is_dir() and (entry / "case.json").is_file():
            case = _read_case(entry / "case.json", entry.name)
        else:
            continue
        if case.name in cases:
            raise ValueError(f"{case.path}: case name {case.name!r} is also {cases[case.name].path}; rename one")
        cases[case.name] = case
    if not cases:
        raise ValueError(f"{root}: no cases (expected NAME.json files or NAME/case.json folders)")
    return list(cases.values())


def case_answers(
    case: Case, analyzer: Callable[[], Any] | None, *, analyse_transcripts: bool = True
) -> tuple[list[AnswerResult], list[str]]:
    """The case's answers as :class:`~emollm.apps.assess.answers.AnswerResult`, and where each emotion came from
    (``case file``, ``media``, ``transcript``, ``none`` or ``failed``).

    Args:
        case: The case.
        analyzer: Returns the analyzer (``analyzer(path, subtitle=None) -> Analysis``) when first needed; None: no
            analysis (answers without an ``emotion`` object get none).
        analyse_transcripts: Analyse a transcript-only answer as text.
    """
    from emollm.media import MediaError

    results: list[AnswerResult] = []
    sources: list[str] = []
    for i, a in enumerate(case.answers, start=1):
        if a.emotion is not None:
            conf = a.emotion.get("confidence")
            results.append(AnswerResult(
                i, a.question, file=None if a.media is None else str(a.media), status="analysed",
                transcript=a.transcript, emotion=a.emotion["label"], confidence=None if conf is None else float(conf),
                observations=list(a.emotion.get("observations", [])),
            ))  # fmt: skip
            sources.append("case file")
            continue
        if a.media is None and not a.transcript:
            results.append(AnswerResult(i, a.question, status="missing", reason="no transcript or media in the case"))
            sources.append("none")
            continue
        if analyzer is None or (a.media is None and not analyse_transcripts):
            results.append(AnswerResult(i, a.question, status="analysed", transcript=a.transcript))
            sources.append("none")
            continue
        try:
            if a.media is not None:
                analysis = analyzer()(a.media, subtitle=a.transcript or None)
                result, source = answer_from_analysis(i, a.question, a.media, analysis), "media"
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    text = Path(tmp) / f"{case.name}_answer_{i}.txt"
                    text.write_text(a.transcript or "", encoding="utf-8")
                    analysis = analyzer()(text)
                result, source = answer_from_analysis(i, a.question, "(transcript)", analysis), "transcript"
                result.file = None
        except (MediaError, OSError, ValueError) as e:
            status = "analysed" if a.transcript else "failed"  # a transcript is still an answer
            result = AnswerResult(i, a.question, status=status, transcript=a.transcript, reason=str(e))
            source = "failed"
        if a.transcript:
            result.transcript = a.transcript
        results.append(result)
        sources.append(source)
    return results, sources


@dataclass
class CompareResult:
    """Per-case rows, per-metric summary, and every conclusion."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    conclusions: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def compare_cases(
    cases: Sequence[Case],
    *,
    llm: Any | None,
    judge: Judge,
    analyzer: Callable[[], Any] | None = None,
    topic: str = "general",
    metrics: Sequence[str] = ("clue_overlap",),
    cache: JudgeCache | None = None,
    analyse_transcripts: bool = True,
    log: Callable[[str], None] | None = None,
) -> CompareResult:
    """Write each case's conclusion with and without emotion, and score both against the reference.

    Args:
        cases: From :func:`read_cases`.
        llm: The conclusion writer (a ``ReasoningClient``); None: template conclusions only.
        judge: Any :class:`emollm_eval.judge.Judge` (``make_judge``, or a fake in tests).
        analyzer: Returns the answer analyzer when first needed (see :func:`case_answers`).
        topic: Topic of cases that do not name one.
        metrics: EMER metrics (``clue_overlap``, ``label_overlap``).
        cache: Judge-call cache.
        analyse_transcripts: Analyse transcript-only answers as text.
        log: Progress lines.
    """
    unknown = [m for m in metrics if m not in EMER_METRICS]
    if unknown or not metrics:
        raise ValueError(f"--metrics: unknown {unknown or '(none)'}; choose from {', '.join(EMER_METRICS)}")
    say = log or (lambda _msg: None)
    conclusions: dict[str, dict[str, Conclusion]] = {}
    records: list[dict[str, Any]] = []
    for case in cases:
        say(f"case {case.name}: {len(case.answers)} answers")
        answers, sources = case_answers(case, analyzer, analyse_transcripts=analyse_transcripts)
        case_topic = case.topic or topic
        conclusions[case.name] = {}
        prompts = {}
        for variant in VARIANTS:
            with_emotion = variant == "with"
            conclusions[case.name][variant] = write_conclusion(case_topic, answers, llm, with_emotion=with_emotion)
            prompts[variant] = conclusion_prompt(case_topic, answers, with_emotion=with_emotion)[1]
            records.append({
                "case": case.name, "variant": variant, "prompt": prompts[variant],
                **conclusions[case.name][variant].to_dict(),
            })  # fmt: skip
        records[-2]["emotion_sources"] = records[-1]["emotion_sources"] = sources
        records[-2]["same_prompt"] = records[-1]["same_prompt"] = prompts["with"] == prompts["without"]
    gold = [EMERSample(c.name, c.reference, "v1") for c in cases]
    scores: dict[str, dict[str, dict[str, float | None]]] = {v: {} for v in VARIANTS}
    score_rows: list[dict[str, Any]] = []
    judge_calls = 0
    for variant in VARIANTS:
        say(f"judging the conclusions {variant} emotion")
        preds = {name: c[variant].text for name, c in conclusions.items()}
        result = score_emer(gold, preds, judge, cache=cache, metrics=metrics, progress=False)
        judge_calls += result.judge_calls
        for r in result.rows:
            scores[variant].setdefault(r.name, {})[r.metric] = r.score
            score_rows.append({"variant": variant, **asdict(r)})
    rows = []
    for case in cases:
        row: dict[str, Any] = {"case": case.name}
        for metric in metrics:
            w, wo = scores["with"][case.name][metric], scores["without"][case.name][metric]
            row[metric] = {"with": w, "without": wo, "delta": None if w is None or wo is None else w - wo}
        for variant in VARIANTS:
            c = conclusions[case.name][variant]
            row[f"{variant}_source"] = c.source if c.source == "llm" else f"template ({c.reason})"
        rec = next(r for r in records if r["case"] == case.name)
        row["same_prompt"] = rec["same_prompt"]
        row["emotion_sources"] = rec["emotion_sources"]
        rows.append(row)
    summary: dict[str, Any] = {
        "judge_id": judge.id,
        "prompt_version": EMER_PROMPTS_VERSION,
        "writer": getattr(llm, "id", None) or "template",
        "n_cases": len(cases),
        "judge_calls": judge_calls,
    }
    for metric in metrics:
        cells = [r[metric] for r in rows]
        pairs = [c["delta"] for c in cells if c["delta"] is not None]
        summary[metric] = {
            "mean_with": _mean([c["with"] for c in cells if c["with"] is not None]),
            "mean_without": _mean([c["without"] for c in cells if c["without"] is not None]),
            "mean_delta": _mean(pairs),
            "n_pairs": len(pairs),
            "wins": sum(d > 0 for d in pairs),
            "ties": sum(d == 0 for d in pairs),
            "losses": sum(d < 0 for d in pairs),
            "n_invalid_with": sum(c["with"] is None for c in cells),
            "n_invalid_without": sum(c["without"] is None for c in cells),
        }
    return CompareResult(rows, summary, records, score_rows)


def _fmt(value: float | None, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def compare_markdown(result: CompareResult, *, cases_dir: str = "") -> str:
    """The comparison table as markdown."""
    s = result.summary
    metrics = [m for m in EMER_METRICS if m in s]
    lines = [
        "# Assessment conclusions with and without emotion",
        "",
        f"- judge: `{s['judge_id']}` (EMER prompt version {s['prompt_version']}, templates in `eval/emer.py`)",
        f"- conclusion writer: `{s['writer']}`",
        f"- cases: {s['n_cases']}" + (f" (`{cases_dir}`)" if cases_dir else ""),
        "",
        "Scores are the judge's overlap with the clinician's reference conclusion (1-10, higher = closer); Δ = with "
        "minus without; n/a = the judge's answer had no valid score. Compare numbers only under one judge id. "
        f"{DISCLAIMER_SHORT}",
        "",
    ]
    head = ["case"]
    for m in metrics:
        name = m.replace("_", " ")
        head += [f"{name} with", f"{name} without", "Δ"]
    head += ["with: written by", "without: written by"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result.rows:
        cells = [r["case"] + (" (same prompt)" if r["same_prompt"] else "")]
        for m in metrics:
            cells += [_fmt(r[m]["with"]), _fmt(r[m]["without"]), _fmt(r[m]["delta"], sign=True)]
        cells += [r["with_source"], r["without_source"]]
        lines.append("| " + " | ".join(cells) + " |")
    mean = ["**mean**"]
    for m in metrics:
        x = s[m]
        mean += [
            _fmt(x["mean_with"]),
            _fmt(x["mean_without"]),
            f"{_fmt(x['mean_delta'], sign=True)} ({x['n_pairs']} pairs)",
        ]
    lines.append("| " + " | ".join([*mean, "", ""]) + " |")
    lines.append("")
    for m in metrics:
        x = s[m]
        lines.append(
            f"- {m.replace('_', ' ')}: with emotion better in {x['wins']}, equal in {x['ties']}, worse in "
            f"{x['losses']} of {x['n_pairs']} cases; invalid judge answers: {x['n_invalid_with']} with, "
            f"{x['n_invalid_without']} without"
        )
    if any(r["same_prompt"] for r in result.rows):
        lines.append("- (same prompt): no answer of the case had an emotion estimate, so both prompts are identical")
    return "\n".join(lines) + "\n"


def write_compare_outputs(
    result: CompareResult, out_dir: str | os.PathLike[str], *, cases_dir: str = ""
) -> dict[str, Path]:
    """Write ``compare.md``, ``compare.json``, ``conclusions.jsonl`` and ``scores.jsonl`` atomically."""
    out = Path(out_dir)
    paths = {
        "table": out / "compare.md",
        "json": out / "compare.json",
        "conclusions": out / "conclusions.jsonl",
        "scores": out / "scores.jsonl",
    }
    atomic_write_text(paths["table"], compare_markdown(result, cases_dir=cases_dir))
    atomic_write_json(paths["json"], {"summary": result.summary, "rows": result.rows, "cases_dir": cases_dir})
    jsonl = lambda rows: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)  # noqa: E731
    atomic_write_text(paths["conclusions"], jsonl(result.conclusions))
    atomic_write_text(paths["scores"], jsonl(result.scores))
    return paths


def main(argv: list[str]) -> int:
    """``emollm assess compare``."""
    p = argparse.ArgumentParser(
        prog="emollm assess compare",
        description="Score assessment conclusions written with and without the emotion evidence against clinicians' "
        "reference conclusions (EMER-style overlap judge). Case format: see eval/assess_compare.py.",
    )
    p.add_argument("cases", metavar="CASES_DIR", help="NAME.json case files or NAME/case.json folders")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--judge", required=True, help="registry backbone (smollm2), local path (checkpoint/HF/.gguf) or URL"
    )
    p.add_argument("--judge-model", help="model name for an http(s) judge")
    p.add_argument("--judge-backbone", help="backbone of a local judge path when its family is ambiguous")
    p.add_argument("--judge-llm-path", help="local weights for a registry-backbone judge without embedded weights")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env var with the API key of an http(s) judge")
    p.add_argument("--judge-max-new-tokens", type=int, default=64, help="judge answer length")
    p.add_argument("--cache", help="judge-call cache file (default OUT/judge_cache.jsonl)")
    p.add_argument("--metrics", default="clue_overlap", help=f"comma-separated, from {', '.join(EMER_METRICS)}")
    p.add_argument("--topic", default="general", help="topic of cases that do not name one")
    p.add_argument("--backbone", default="smollm2", help="the LLM that writes the conclusions")
    p.add_argument("--llm-path", help="local weights of that LLM")
    p.add_argument("--no-llm", action="store_true", help="template conclusions (a baseline; loads no writing LLM)")
    p.add_argument("--max-new-tokens", type=int, default=160, help="generation budget of the writing LLM")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--checkpoint", help="a trained checkpoint for the answer analysis (default: clue mode)")
    p.add_argument("--frames", type=int, default=12, help="clue mode: frames sampled per answer video")
    p.add_argument("--no-text-analysis", action="store_true", help="do not analyse transcript-only answers as text")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)

    from emollm_eval.judge import JudgeError, make_judge

    analyzers: list[Any] = []

    def analyzer() -> Any:
        if not analyzers:
            from emollm.apps.analyze import load_analyzer

            opts: dict[str, Any] = (
                {"reasoning": "template", "frames": args.frames, "precision": args.precision}
                if args.checkpoint is None
                else {"precision": args.precision, "asr": True}
            )
            analyzers.append(load_analyzer(args.checkpoint, None, **opts))
        return analyzers[0]

    try:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        cases = read_cases(args.cases)
        judge = make_judge(
            args.judge, model=args.judge_model, backbone=args.judge_backbone, llm_path=args.judge_llm_path,
            api_key_env=args.api_key_env, max_new_tokens=args.judge_max_new_tokens,
        )  # fmt: skip
        llm = None
        if not args.no_llm:
            from emollm.apps.reasoning import LLMReasoner

            llm = LLMReasoner(
                args.backbone, args.llm_path, max_new_tokens=args.max_new_tokens, precision=args.precision
            )
        cache = JudgeCache(args.cache or Path(args.out) / "judge_cache.jsonl")
        result = compare_cases(
            cases, llm=llm, judge=judge, analyzer=analyzer, topic=args.topic, metrics=metrics, cache=cache,
            analyse_transcripts=not args.no_text_analysis, log=lambda msg: print(msg, file=sys.stderr),
        )  # fmt: skip
        paths = write_compare_outputs(result, args.out, cases_dir=str(args.cases))
    except (OSError, ValueError, ImportError, RuntimeError, JudgeError) as e:
        if args.debug:
            raise
        print(f"emollm assess compare: {e}", file=sys.stderr)
        return 2
    finally:
        for a in analyzers:
            a.close()
    print(compare_markdown(result, cases_dir=str(args.cases)))
    print(f"table: {paths['table']}\ndata:  {paths['json']}")
    return 0
