"""``emollm score ov --protocol mer2026-track2|mer-unibench-hit``, ``emollm score prefer`` and ``score sentiment``:
MER2026 / MER-UniBench scoring from CSV files (the metrics live in :mod:`emollm.scoring.mer2026`; this module reads
files, runs the label extraction and sentiment judges and prints).

Examples::

    emollm score ov --protocol mer2026-track2 --wheels MERTools/MER2026/MER2026_Track2/emotion_wheel \\
        --pred track2-pred.csv --gold track2_test.csv --json              # name,openset lists on both sides
    emollm score ov --protocol mer2026-track2 --wheels WHEELS --pred descriptions.csv --pred-column reason \\
        --judge qwen2 --judge-llm-path /models/Qwen2.5-7B-Instruct --extracted extracted.csv   # free text -> labels
    emollm score ov --protocol mer-unibench-hit --wheels WHEELS --pred P.csv --gold G.csv   # discrete: gold = 1 label
    emollm score prefer --pred responses.csv --gold track3_gold.csv      # MER-Prefer 2-class weighted F1
    emollm score sentiment --pred answers.csv --pred-column reason --descriptions --gold mosi.csv \\
        --judge qwen2 --judge-llm-path /models/Qwen2.5-7B-Instruct        # MER-UniBench sentiment (MOSI/MOSEI/SIMS)

Label extraction samples like the release (temperature 0.7, top-p 0.8, repetition penalty 1.05, 512 new tokens, no
top-k, batches of 8) from any local judge; ``--judge-seed`` seeds each batch, ``--judge-greedy`` decodes greedily.
The judge, its settings and the seed are stored in the report (``extraction``) and in ``--extracted``'s header line.

The release runs its judge on vLLM; ``--judge http://HOST:PORT/v1 --judge-model NAME`` does the same through any
OpenAI-compatible server (vLLM, SGLang, llama.cpp's server), ``--judge-concurrency`` requests at a time, with the
released sampling sent as ``temperature``/``top_p``/``seed`` and the repetition penalty as vLLM's
``repetition_penalty`` field (``--judge-extra '{"repeat_penalty": 1.05}'`` for llama.cpp's name; a server that
ignores the field does not apply it). ``--extracted FILE`` is also the extraction's checkpoint: it is rewritten
after every batch, and a rerun with the same judge settings extracts only the names it does not hold yet (a server
that goes away mid-job stops the run with what was extracted kept; another judge's file is refused, not mixed).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any

from emollm.utils.io import atomic_write_text

__all__ = [
    "OV_PROTOCOLS",
    "PREFER_PROTOCOLS",
    "EndpointJudge",
    "SampledJudge",
    "add_ov_protocol_args",
    "score_ov_protocol",
    "score_sentiment",
]

OV_PROTOCOLS: dict[str, str] = {
    "set": "emollm's synonym-group set scores (emollm.scoring.openvocab; the default)",
    "mer2026-track2": "MER2026 Track 2 / OV-MERD+ / MER-FG emotion-wheel F1 (5 wheels, level 1; as released)",
    "mer-unibench-hit": "MER-UniBench hit rate of discrete data sets (MER2023/24, MELD, IEMOCAP; 5 wheels, level 1)",
}
PREFER_PROTOCOLS: dict[str, str] = {"mer2026-track3": "MER-Prefer: 2-class weighted-average F1 (same dropped)"}


class SampledJudge:
    """A local LLM answering one user turn per prompt with the release's sampling (or greedily), seeded per batch.

    Args:
        spec: A registry backbone name, an HF model folder / GGUF, or an emollm checkpoint (nothing is downloaded).
        llm_path: Local weights of a registry backbone that has none embedded.
        backbone: The backbone of a local folder whose family is ambiguous.
        greedy: Decode greedily instead of sampling.
        seed: Seed of each batch (``seed * 1_000_003 + first prompt index``), so a batch's answers do not depend on
            the batches before it.
        temperature / top_p / repetition_penalty / max_new_tokens / batch_size: The decoding settings
            (defaults: :data:`emollm.scoring.mer2026.RELEASED_JUDGE_SETTINGS`).
    """

    def __init__(
        self,
        spec: str,
        *,
        llm_path: str | None = None,
        backbone: str | None = None,
        greedy: bool = False,
        seed: int = 0,
        temperature: float = 0.7,
        top_p: float = 0.8,
        repetition_penalty: float = 1.05,
        max_new_tokens: int = 512,
        batch_size: int = 8,
        model: Any = None,
        processor: Any = None,
    ):
        if model is None:
            from emollm.backbones import list_backbones
            from emollm_eval.judge import LocalJudge

            if spec in list_backbones():
                judge = LocalJudge.from_backbone(spec, llm_path)
            elif Path(spec).expanduser().exists():
                judge = LocalJudge.from_path(spec, backbone)
            else:
                raise ValueError(
                    f"--judge {spec!r} is not a registry backbone ({', '.join(list_backbones())}) or an existing "
                    "local model folder / GGUF / emollm checkpoint"
                )
            model, processor, spec = judge.model, judge.processor, judge.id.split("|")[0]
        self.model, self.processor, self.id = model, processor, spec
        self.seed, self.batch_size = seed, batch_size
        self.decoding: dict[str, Any] = (
            {"do_sample": False, "max_new_tokens": max_new_tokens}
            if greedy
            else {
                "do_sample": True,
                "temperature": temperature,
                "top_p": top_p,
                "top_k": 0,  # vLLM's default: no top-k
                "repetition_penalty": repetition_penalty,
                "max_new_tokens": max_new_tokens,
            }
        )
        self.offset = 0

    def settings(self) -> dict[str, Any]:
        """What produced the extracted labels (stored with the score)."""
        return {
            "judge": self.id,
            **self.decoding,
            "seed": self.seed,
            "seeding": "torch.manual_seed(seed * 1000003 + index of the batch's first prompt) before each batch",
            "batch_size": self.batch_size,
            "prompt": "emollm.scoring.mer2026.EXTRACTION_PROMPT (the released one)",
        }

    def __call__(self, prompts: list[str]) -> list[str]:
        import torch

        from emollm.model.generation import chat
        from emollm.model.processing import Sample

        torch.manual_seed(self.seed * 1_000_003 + self.offset)
        self.offset += len(prompts)
        samples = [Sample([{"role": "user", "content": p}], name=f"extract-{i}") for i, p in enumerate(prompts)]
        kwargs = dict(self.decoding)
        max_new = kwargs.pop("max_new_tokens")
        do_sample = kwargs.pop("do_sample")
        self.model.eval()
        return chat(
            self.model,
            self.processor,
            samples,
            max_new_tokens=max_new,
            do_sample=do_sample,
            batch_size=len(samples),
            **kwargs,
        )


class EndpointJudge:
    """The extraction judge behind an OpenAI-compatible server, as the release runs it on vLLM: one user turn per
    prompt, the released sampling (or greedy), ``concurrency`` requests in flight, a seed per prompt derived from
    ``seed`` and the prompt (so an answer does not depend on which batch or rank asked for it).

    Args:
        url: The server's base URL, up to ``/v1``.
        model: The served model's name.
        api_key_env: Environment variable holding the API key (never stored).
        greedy / seed / temperature / top_p / repetition_penalty / max_new_tokens / batch_size: As
            :class:`SampledJudge`.
        extra: Extra request fields (replace ``{"repetition_penalty": ...}``, e.g. llama.cpp's ``repeat_penalty``).
        concurrency / timeout / retries: Of the HTTP client (:class:`emollm.engines.endpoint.EndpointEngine`).
        engine: A ready engine (tests).
    """

    def __init__(
        self,
        url: str,
        model: str | None,
        *,
        api_key_env: str | None = None,
        greedy: bool = False,
        seed: int = 0,
        temperature: float = 0.7,
        top_p: float = 0.8,
        repetition_penalty: float = 1.05,
        max_new_tokens: int = 512,
        batch_size: int = 8,
        extra: dict[str, Any] | None = None,
        concurrency: int = 8,
        timeout: float = 300.0,
        retries: int = 3,
        engine: Any = None,
    ):
        from emollm.engines.endpoint import DEFAULT_API_KEY_ENV, EndpointEngine

        if not model:
            raise ValueError(f"--judge {url} is a server: name its model with --judge-model NAME")
        if extra is not None:
            extra_body = dict(extra)
        else:  # the released penalty goes with the released sampling, not with greedy decoding
            extra_body = {} if greedy else {"repetition_penalty": repetition_penalty}
        self.engine = engine or EndpointEngine(
            url,
            model,
            api_key_env=api_key_env or DEFAULT_API_KEY_ENV,
            max_new_tokens=max_new_tokens,
            do_sample=not greedy,
            temperature=temperature,
            top_p=top_p,
            concurrency=concurrency,
            timeout=timeout,
            retries=retries,
            extra_body=extra_body,
        )
        self.id, self.seed, self.batch_size = self.engine.id, seed, batch_size

    def settings(self) -> dict[str, Any]:
        """What produced the extracted labels (the request settings; the model as served is in :meth:`served`)."""
        return {
            "judge": f"{self.engine.kind}:{self.engine.model}",
            "endpoint": self.engine.base_url,
            **self.engine.sampling.to_dict(),
            "extra_body": self.engine.extra_body,
            "seed": self.seed,
            "seeding": "each request's seed = emollm.engines.base.conversation_seed(seed, its messages)",
            "batch_size": self.batch_size,
            "prompt": "emollm.scoring.mer2026.EXTRACTION_PROMPT (the released one)",
        }

    def served(self) -> dict[str, Any]:
        """The server's own account: model id as served, fingerprint, endpoint."""
        info = self.engine.produced_by()
        return {k: info[k] for k in ("served_model", "system_fingerprint", "endpoint") if k in info}

    def __call__(self, prompts: list[str]) -> list[str]:
        done = self.engine.complete_many([[{"role": "user", "content": p}] for p in prompts], seed=self.seed)
        return [c.text for c in done]


def make_extraction_judge(args: argparse.Namespace) -> Any:
    """The judge ``score ov --judge`` names: a server URL, a registry backbone or a local model path."""
    if str(args.judge).startswith(("http://", "https://")):
        from emollm.engines.select import parse_extra_body

        extra = parse_extra_body(getattr(args, "judge_extra", None), "--judge-extra")
        return EndpointJudge(
            args.judge,
            getattr(args, "judge_model", None),
            api_key_env=getattr(args, "judge_api_key_env", None),
            greedy=args.judge_greedy,
            seed=args.judge_seed,
            max_new_tokens=args.judge_max_new_tokens,
            extra=extra,
            concurrency=getattr(args, "judge_concurrency", 8),
        )
    if getattr(args, "judge_model", None) or getattr(args, "judge_extra", None):
        raise ValueError("--judge-model and --judge-extra are for a server judge (--judge http://HOST:PORT/v1)")
    return SampledJudge(
        args.judge,
        llm_path=args.judge_llm_path,
        backbone=args.judge_backbone,
        greedy=args.judge_greedy,
        seed=args.judge_seed,
        max_new_tokens=args.judge_max_new_tokens,
    )


def add_ov_protocol_args(p: argparse.ArgumentParser) -> None:
    """The ``score ov`` options of the MER2026 / MER-UniBench protocols."""
    p.add_argument(
        "--protocol",
        choices=sorted(OV_PROTOCOLS),
        default="set",
        help="; ".join(f"{k}: {v}" for k, v in OV_PROTOCOLS.items()),
    )
    p.add_argument("--wheels", type=Path, help="emotion-wheel folder (wheel1..5, synonym, format.csv; not shipped)")
    p.add_argument("--level", choices=("level1", "level2"), default="level1", help="wheel level (official: level1)")
    p.add_argument("--pred-column", default="openset", help="PRED column: openset (lists) or free text (with --judge)")
    p.add_argument("--gold-column", default="openset", help="GOLD column (default openset; a label column for hit)")
    p.add_argument(
        "--judge",
        help="extract labels from free-text PRED with this LLM: a backbone name, a local path, or an "
        "OpenAI-compatible server http://HOST:PORT/v1 (the release uses vLLM)",
    )
    p.add_argument("--judge-model", help="the served model's name (a server --judge)")
    p.add_argument("--judge-api-key-env", help="env var with a server judge's API key (default EMOLLM_LLM_API_KEY)")
    p.add_argument("--judge-concurrency", type=int, default=8, help="a server judge's requests in flight (default 8)")
    p.add_argument(
        "--judge-extra",
        help="a server judge's extra request fields as JSON (default {\"repetition_penalty\": 1.05}, vLLM's name)",
    )
    p.add_argument("--judge-llm-path", help="local weights of a --judge backbone without embedded weights")
    p.add_argument("--judge-backbone", help="backbone of a --judge folder whose family is ambiguous")
    p.add_argument("--judge-seed", type=int, default=0, help="sampling seed of the extraction (default 0)")
    p.add_argument("--judge-greedy", action="store_true", help="greedy extraction instead of the released sampling")
    p.add_argument("--judge-max-new-tokens", type=int, default=512, help="extraction answer limit (released: 512)")
    p.add_argument(
        "--extracted",
        type=Path,
        help="also write the extracted labels as name,openset (with provenance); rewritten after each batch, and a "
        "rerun with the same judge settings resumes from it",
    )


_RESUMABLE_ACROSS = {"endpoint"}
"""Settings an extraction may change between a run and its resumption (a server restarted on another port)."""


def _is_word_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


def _read_extracted(
    path: Path,
    settings: dict[str, Any],
    *,
    flag: str = "--extracted",
    column: str = "openset",
    valid: Any = _is_word_list,
) -> dict[str, Any]:
    """Judge outputs already written to ``path`` by a judge with these ``settings`` (empty when there is no file):
    ``name -> value`` of its ``column`` (JSON cells: word lists for extracted labels, strings for answers).

    Raises:
        ValueError: The file is not a judge-output file of ours, or another judge (or other settings) wrote it.
    """
    if not path.exists():
        return {}
    if not path.is_file():
        raise ValueError(f"{flag} {path} is not a file")
    head = path.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
    if not head.startswith("# extracted by {"):
        raise ValueError(f"{flag} {path} exists and is not a judge-output file of emollm; name another file")
    try:
        old = json.loads(head.removeprefix("# extracted by "))
    except ValueError:
        raise ValueError(f"{flag} {path}: its provenance line is damaged; remove the file to start over") from None
    now = json.loads(json.dumps(settings, sort_keys=True))
    changed = sorted(k for k in set(old) | set(now) if k not in _RESUMABLE_ACROSS and old.get(k) != now.get(k))
    if changed:
        raise ValueError(
            f"{flag} {path} was made by another judge or settings ({', '.join(changed)} differ); "
            "name another file, or remove it to start again"
        )
    from emollm.scoring.mer2026 import read_name_column

    out: dict[str, Any] = {}
    for name, cell in read_name_column(path, column).items():
        try:
            value = json.loads(cell)
        except ValueError:
            value = None
        if not valid(value):
            raise ValueError(f"{flag} {path}: the {column} of {name!r} is not what this judge writes ({cell[:60]!r})")
        out[name] = value
    return out


def _write_extracted(path: Path, values: dict[str, Any], settings: dict[str, Any], column: str = "openset") -> None:
    buf = io.StringIO(newline="")
    buf.write(f"# extracted by {json.dumps(settings, sort_keys=True)}\n")
    writer = csv.writer(buf)
    writer.writerow(["name", column])
    for name, value in values.items():
        writer.writerow([name, json.dumps(value)])
    atomic_write_text(path, buf.getvalue())


def _read_column(path: Path, column: str) -> dict[str, str]:
    from emollm.scoring.mer2026 import read_name_column

    return read_name_column(path, column)


def _extract_resumable(
    pred_text: dict[str, str], judge: Any, path: Path | None
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Free-text answers -> label lists through ``judge``, checkpointed in ``path`` after every batch and resumed from
    it: (labels, the extraction's settings as stored with the score)."""
    from emollm.scoring.mer2026 import extract_openset

    settings = judge.settings()
    done = _read_extracted(path, settings) if path is not None else {}
    _align_seeds(judge, list(pred_text), done)

    def save(so_far: dict[str, list[str]]) -> None:
        if path is not None:
            _write_extracted(path, {**done, **so_far}, settings)

    new = extract_openset({n: t for n, t in pred_text.items() if n not in done}, judge,
                          batch_size=judge.batch_size, on_batch=save)  # fmt: skip
    save(new)
    labels = {**done, **new}
    info = {**settings, "resumed": len(done)}
    if hasattr(judge, "served"):
        info["served"] = judge.served()
    return {n: labels[n] for n in pred_text if n in labels}, info


def score_ov_protocol(args: argparse.Namespace, judge: Any = None) -> tuple[dict[str, Any], list[list[str]]]:
    """``score ov`` under ``mer2026-track2`` / ``mer-unibench-hit``: (report, per-sample rows)."""
    from emollm.scoring.mer2026 import ew_scores, hit_rate, load_wheels, string_to_list

    if args.wheels is None:
        raise ValueError(
            f"--protocol {args.protocol} needs --wheels DIR: the emotion_wheel folder of MERTools "
            "MER2026/MER2026_Track2 (wheel1..5.xlsx, synonym.xlsx, format.csv); emollm does not ship it"
        )
    wheels = load_wheels(args.wheels)
    gold = _read_column(args.gold, args.gold_column)
    pred_text = _read_column(args.pred, args.pred_column)
    extraction: dict[str, Any] | None = None
    if args.judge is not None or judge is not None:
        if judge is None:
            judge = make_extraction_judge(args)
        pred, extraction = _extract_resumable(pred_text, judge, args.extracted)
    else:
        pred = {n: [x.lower().strip() for x in string_to_list(v)] for n, v in pred_text.items()}
    if args.protocol == "mer2026-track2":
        report = {"task": "ov", "protocol": args.protocol, **ew_scores(gold, pred, wheels, level=args.level)}
    else:
        report = {"task": "ov", "protocol": args.protocol, **hit_rate(gold, pred, wheels)}
    report["extraction"] = extraction or "none: PRED holds label lists (the released extraction is --judge)"
    rows = []
    for n in gold:
        g = string_to_list(gold[n])
        p = pred.get(n, [])
        cells = []
        for w in ("wheel1", "wheel2", "wheel3", "wheel4", "wheel5"):
            gold_clusters, pred_clusters = wheels.map_set(g, w, args.level), wheels.map_set(p, w, args.level)
            cells.append("|".join(sorted(gold_clusters)) + " / " + "|".join(sorted(pred_clusters)))
        rows.append([n, "|".join(g), "|".join(p), *cells])
    return report, rows


def format_ov_protocol(report: dict[str, Any]) -> str:
    """A short table of a wheel-protocol report."""
    lines = [f"{report['protocol']}: {report['n_gold']} gold samples, {report['missing']} missing from PRED"]
    if "f1" in report:
        lines.append(f"  EW {report['level']}: F1 {100 * report['f1']:.2f}  P {100 * report['precision']:.2f}  "
                     f"R {100 * report['recall']:.2f}  (mean of 5 wheels)")  # fmt: skip
        for w, s in report["per_wheel"].items():
            lines.append(f"    {w}: F1 {100 * s['f1']:.2f}  P {100 * s['precision']:.2f}  R {100 * s['recall']:.2f}  "
                         f"n {s['n']}  skipped {s['skipped']}")  # fmt: skip
    else:
        lines.append(f"  hit rate {100 * report['hit_rate']:.2f} (mean of 5 wheels)")
        for w, s in report["per_wheel"].items():
            lines.append(f"    {w}: {100 * s['hit_rate']:.2f}  n {s['n']}")
    if isinstance(report.get("extraction"), dict):
        lines.append(f"  labels extracted by {report['extraction']['judge']} (seed {report['extraction']['seed']})")
    return "\n".join(lines)


def _align_seeds(judge: Any, names: list[str], done: dict[str, Any]) -> None:
    """A local judge seeds each batch by the index of its first prompt in this stage: resumed after the names in
    ``done`` (the first ones, in order), it goes on with the seeds an uninterrupted run would have used, whatever
    ran before this stage in the process. A server judge seeds each prompt by its content and needs nothing."""
    if isinstance(judge, SampledJudge) and names[: len(done)] == list(done):
        judge.offset = len(done)


def _judge_resumable(prompts: dict[str, str], judge: Any, done: dict[str, str], save: Any) -> dict[str, str]:
    """``judge``'s answers to every prompt, those in ``done`` kept; ``save`` gets all answers so far after each
    batch (the resumable checkpoint)."""
    from emollm.scoring.mer2026 import judge_in_batches

    _align_seeds(judge, list(prompts), done)
    out = dict(done)

    def keep(batch: dict[str, str]) -> None:
        out.update(batch)
        save(out)

    judge_in_batches({n: p for n, p in prompts.items() if n not in done}, judge, batch_size=judge.batch_size,
                     on_batch=keep)  # fmt: skip
    return out


def score_sentiment(args: argparse.Namespace, judge: Any = None) -> tuple[dict[str, Any], list[list[str]]]:
    """``score sentiment``: MER-UniBench's sentiment score of CMU-MOSI / CMU-MOSEI / SIMS / SIMS v2 answers, as
    released: free-text descriptions -> open-vocabulary labels (``--descriptions``: the extraction judge) -> one of
    positive / negative / neutral (the sentiment judge, :data:`emollm.scoring.mer2026.SENTIMENT_PROMPT`) -> the
    two-class score against the sign of the gold score (:func:`emollm.scoring.mer2026.sentiment_scores`)."""
    from emollm.scoring.mer2026 import SENTIMENT_PROMPT, parse_sentiment, sentiment_scores

    if args.judge is None and judge is None:
        raise ValueError(
            "score sentiment needs --judge (the released protocol asks an LLM for each sample's sentiment)"
        )
    gold_text = _read_column(args.gold, args.gold_column)
    gold: dict[str, float] = {}
    for name, cell in gold_text.items():
        try:
            gold[name] = float(cell)
        except ValueError:
            raise ValueError(
                f"{args.gold}: the {args.gold_column} of {name!r} is {cell!r}, not a number (gold sentiment scores "
                "are floats, e.g. -1.4 or 0.8; name the score column with --gold-column)"
            ) from None
        if gold[name] != gold[name] or abs(gold[name]) == float("inf"):
            raise ValueError(f"{args.gold}: the {args.gold_column} of {name!r} is {cell!r}, not a finite number")
    pred_text = _read_column(args.pred, args.pred_column)
    judge = judge or make_extraction_judge(args)
    settings = judge.settings()
    extraction: dict[str, Any] | str = "none: PRED holds label lists (--descriptions extracts them first)"
    if args.descriptions:
        labels, extraction = _extract_resumable(pred_text, judge, args.extracted)
        openset = {n: "[" + ", ".join(labels[n]) + "]" for n in pred_text}
    else:
        openset = dict(pred_text)
    answers_settings = {**settings, "prompt": "emollm.scoring.mer2026.SENTIMENT_PROMPT (the released one)"}
    done = (
        _read_extracted(
            args.answers, answers_settings, flag="--answers", column="answer", valid=lambda v: isinstance(v, str)
        )  # fmt: skip
        if args.answers is not None
        else {}
    )

    def save_answers(so_far: dict[str, str]) -> None:
        if args.answers is not None:
            _write_extracted(args.answers, so_far, answers_settings, column="answer")

    prompts = {n: SENTIMENT_PROMPT.format(reason=t) for n, t in openset.items()}
    answers = _judge_resumable(prompts, judge, done, save_answers)
    parsed = {n: parse_sentiment(a) for n, a in answers.items()}
    report: dict[str, Any] = {
        "task": "sentiment",
        "protocol": "mer-unibench-sentiment",
        **sentiment_scores(gold, parsed),
        "judge": {**answers_settings, "resumed": len(done)},
        "extraction": extraction,
    }
    if hasattr(judge, "served"):
        report["judge"]["served"] = judge.served()
    rows = [[n, gold_text[n], openset.get(n, ""), answers.get(n, ""), parsed.get(n) or "invalid"] for n in gold]
    return report, rows


def format_sentiment(report: dict[str, Any]) -> str:
    r = report["as_released"]
    return (
        f"{report['protocol']}: {report['n']} samples ({report['dropped_zero']} with gold score 0 dropped, "
        f"{report['invalid']} invalid answers, {report['missing']} missing)\n"
        f"  weighted F1 {100 * report['weighted_f1']:.2f}  accuracy {100 * report['accuracy']:.2f}  (invalid = wrong)\n"
        f"  as released: weighted F1 {100 * r['weighted_f1']:.2f}  accuracy {100 * r['accuracy']:.2f}  "
        "(invalid = neutral)\n"
        f"  sentiment judge {report['judge']['judge']} (seed {report['judge']['seed']})"
    )


def score_prefer(args: argparse.Namespace) -> tuple[dict[str, Any], list[list[str]]]:
    """``score prefer``: MER-Prefer from ``name,<pred-column>`` responses and ``name,<gold-column>`` labels."""
    from emollm.scoring.mer2026 import parse_preference, prefer_scores

    gold = _read_column(args.gold, args.gold_column)
    pred = _read_column(args.pred, args.pred_column)
    report = {"task": "prefer", "protocol": args.protocol, **prefer_scores(gold, pred)}
    rows = [[n, gold[n], pred.get(n, ""), parse_preference(pred.get(n))] for n in gold]
    return report, rows


def format_prefer(report: dict[str, Any]) -> str:
    return (
        f"{report['protocol']}: {report['n']} samples ({report['dropped_same']} gold 'same' dropped, "
        f"{report['pred_same']} predicted 'same' counted as a1, {report['missing']} missing)\n"
        f"  weighted F1 {100 * report['weighted_f1']:.2f}  accuracy {100 * report['accuracy']:.2f}"
    )
