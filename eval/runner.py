"""``emollm eval CONFIG.yaml``: run a checkpoint over an evaluation set and report.

One run = one output folder holding:

    run.json                 the resolved config and its hash (what produced the predictions)
    predictions.jsonl        one row per sample: name, gold, raw answer, parsed label (or null), parse reason,
                             modalities used, modalities whose feature file was missing
    metrics.json             the metrics (DFEW: UAR/WAR/per-class recall; MER2023: weighted F1/accuracy; 95%
                             bootstrap CIs), invalid-answer and missing-feature counts, the prompt and label order,
                             the precision generation ran in (``precision``: bf16 autocast or fp32)
    report.md                the same for people, with confusion_matrix.png and per_class_recall.png
    predictions.csv          EMER only: Emotion-LLaMA's ``names,chi_reasons`` format, for other scorers

**No model selection happens here.** The runner only reports numbers on the split it is given; picking a checkpoint,
a prompt or a label order must use a validation split. The one command that *selects* (``emollm eval label-order
--select``) refuses test splits (:func:`check_selection_allowed`).

Answers are parsed by :class:`emollm.labels.LabelParser`: an answer naming no label or several labels is invalid,
counted, and scored as wrong; it is never mapped to a class. A sample whose feature file is missing runs without that
modality (its placeholder is removed, nothing is zero-filled) and is counted per modality in the report.

The run is resumable: ``predictions.jsonl`` is appended and fsynced after every batch, and a rerun of the same
config skips the names already predicted (so a ``limit`` smoke run followed by the full run generates each sample
once). A rerun with a different config in the same folder is refused, naming the keys that differ. The keys that
cannot change predictions (``output_dir``, ``limit``, ``batch_size``, ``device``, bootstrap settings, ``split``,
``protocol``, judge settings) are left out of the hash. Final files are written atomically.

This module holds the run loop; the pieces it uses live in :mod:`emollm_eval.config` (the config schema),
:mod:`emollm_eval.resume` (fingerprints, config hash, ``predictions.jsonl``) and
:mod:`emollm_eval.classification` (the metrics, shared with ``emollm score``). Their public names are re-exported
here.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from emollm.data.merr_files import read_transcriptions_csv
from emollm.jobs.distributed import Job
from emollm.labels import LabelParser
from emollm.model.configuration import MARKER_RE, MODALITIES
from emollm.model.prompts import clean_subtitle, fill_prompt
from emollm.utils.io import atomic_write_json, atomic_write_text
from emollm_eval import parallel
from emollm_eval.classification import classification_report
from emollm_eval.config import (
    DATASET_KINDS,
    DEFAULT_LABEL_ORDER,
    DEFAULT_LABELS,
    DEFAULT_MAX_NEW_TOKENS,
    METRIC_NAMES,
    PRIMARY_METRICS,
    EvalConfig,
    check_selection_allowed,
    load_config,
)
from emollm_eval.datasets import (
    MER2023_PROTOCOLS,
    MER2023_VALENCE_PLACEHOLDER,
    read_dfew_split,
    read_emer,
    read_mer2023_labels,
    read_ncev,
)
from emollm_eval.resume import (
    ConfigMismatchError,
    append_rows,
    checkpoint_fingerprint,
    config_hash,
    prediction_fingerprint,
    read_rows,
    start_run,
)

__all__ = [
    "DATASET_KINDS",
    "DEFAULT_LABELS",
    "DEFAULT_LABEL_ORDER",
    "DEFAULT_MAX_NEW_TOKENS",
    "METRIC_NAMES",
    "PRIMARY_METRICS",
    "ConfigMismatchError",
    "EvalConfig",
    "EvalResult",
    "GoldItem",
    "check_selection_allowed",
    "checkpoint_fingerprint",
    "classification_metrics",
    "config_hash",
    "load_config",
    "prediction_fingerprint",
    "read_gold",
    "read_rows",
    "resolve_modalities",
    "run_eval",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------------
# Gold data and modalities


class GoldItem(NamedTuple):
    """One evaluated sample: its gold label (or reference reasoning for EMER) and transcript."""

    name: str
    gold: str
    subtitle: str | None = None
    valence: float | None = None


def _read_subtitles(path: str) -> dict[str, str]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"subtitles: {path} not found; check the path or set subtitles: null")
    return {name: sentence.strip() for name, sentence in read_transcriptions_csv(path).items()}


def read_gold(config: EvalConfig) -> list[GoldItem]:
    """The gold samples of ``config`` (all of them; ``limit`` is applied by the caller)."""
    labels = config.resolved_labels()
    kind = config.dataset
    if kind == "dfew":
        items = [GoldItem(s.name, s.label) for s in read_dfew_split(config.gold, labels)]
    elif kind == "mer2023":
        items = [
            GoldItem(s.name, s.discrete, valence=None if s.valence == MER2023_VALENCE_PLACEHOLDER else s.valence)
            for s in read_mer2023_labels(config.gold, labels)
        ]
    elif kind == "ncev":
        items = [GoldItem(s.name, s.label) for s in read_ncev(config.gold, config.ncev_format, labels)]  # type: ignore[arg-type]
    else:
        rows = read_emer(config.gold)
        gold_subs = config.subtitles == "gold"
        if gold_subs and rows and rows[0].version != "v1":
            raise ValueError(f"subtitles: 'gold' needs EMER v1 (gt-eng.csv); {config.gold} is v2 and has none")
        items = [GoldItem(r.name, r.reason, r.subtitle if gold_subs else None) for r in rows]
    if config.subtitles and config.subtitles != "gold":
        subs = _read_subtitles(config.subtitles)
        items = [it._replace(subtitle=subs.get(it.name)) for it in items]
    return items


def resolve_modalities(config: EvalConfig, model_modalities: Sequence[str]) -> dict[str, Any]:
    """Which modalities a run feeds, and why the others are left out.

    Returns:
        ``{"used": [...], "dropped": [...], "not_in_prompt": [...], "not_in_model": [...]}``: ``used`` = the
        checkpoint's modalities that the prompt refers to, minus ``drop_modalities``.
    """
    markers = list(dict.fromkeys(m.group(1) for m in MARKER_RE.finditer(config.resolved_prompt())))
    model_mods = [m for m in MODALITIES if m in model_modalities]
    return {
        "used": [m for m in model_mods if m in markers and m not in config.drop_modalities],
        "dropped": [m for m in model_mods if m in config.drop_modalities],
        "not_in_prompt": [m for m in model_mods if m not in markers],
        "not_in_model": [m for m in markers if m not in model_mods],
    }


# --------------------------------------------------------------------------------------------------------------------
# Metrics


def classification_metrics(
    rows: Sequence[dict[str, Any]],
    labels: Sequence[str],
    label_order: Sequence[str],
    primary: Sequence[str],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of prediction rows (``gold``, ``label`` or null, ``reason``): the shared classification report.

    Metrics use the gold classes plus any extra label the prompt offered (a valid answer naming an extra label is a
    wrong prediction); per-class values and the confusion-matrix rows cover the gold classes. Invalid answers are
    wrong and are counted (``invalid``, ``invalid_reasons``, ``invalid_by_class``).

    Args:
        rows: ``predictions.jsonl`` rows.
        labels: The gold classes, in report order.
        label_order: The labels the prompt listed.
        primary: Metrics that get 95% bootstrap intervals (``<name>_ci``).
        n_bootstrap: Bootstrap resamples (0: no intervals).
        seed: Bootstrap seed.

    Returns:
        See :func:`emollm_eval.classification.classification_report`.
    """
    return classification_report(
        [r["gold"] for r in rows],
        [r["label"] for r in rows],
        labels,
        extra_labels=label_order,
        reasons=[r["reason"] for r in rows],
        ci=primary if n_bootstrap else (),
        n_resamples=n_bootstrap,
        seed=seed,
    )


# --------------------------------------------------------------------------------------------------------------------
# Running


@dataclass
class EvalResult:
    """What a run produced."""

    output_dir: Path
    metrics: dict[str, Any]
    rows: list[dict[str, Any]]
    generated: int
    """Samples generated by this call (the others were reused from an earlier run)."""
    reused: int


def _load_features(stores: dict[str, Any], name: str) -> tuple[dict[str, Any], list[str]]:
    feats: dict[str, Any] = {}
    missing: list[str] = []
    for m, store in stores.items():
        if name in store:
            feats[m] = store.load(name)
        else:
            feats[m] = None  # missing modality: its placeholder is removed, nothing is zero-filled
            missing.append(m)
    return feats, missing


def _checkpoint_config(path: str) -> Any:
    """A checkpoint's ``EmoLLMConfig`` without loading any weights."""
    from emollm.checkpoints import read_checkpoint_meta
    from emollm.model.configuration import EmoLLMConfig

    read_checkpoint_meta(path)
    return EmoLLMConfig.load(Path(path) / "emollm_config.json")


def _llm_weights(config: EvalConfig, model: Any, model_config: Any) -> tuple[str, str]:
    """dtype name and device of the LLM's weights: those of ``model``, else what ``load_model`` will give (known
    without loading it, so a rerun with nothing to generate reports the same precision)."""
    if model is not None:
        param = next(model.language_model.parameters())
        return str(param.dtype).removeprefix("torch."), str(param.device)
    if config.dtype:
        weights = config.dtype
    elif (Path(config.checkpoint) / "llm").is_dir():  # load_model: weights stored in the checkpoint load as float32
        weights = "float32"
    else:
        from emollm.backbones import get_backbone

        weights = get_backbone(model_config.backbone).default_dtype
    return weights, config.device or "cpu"


def _feature_dirs(config: EvalConfig, model_config: Any, used: Sequence[str]) -> dict[str, str]:
    from emollm.model.configuration import EMOTION_LLAMA_FEATURE_DIRS

    dirs = {}
    for m in used:
        dirs[m] = config.features.get(m) or model_config.modalities[m].feature_dir or EMOTION_LLAMA_FEATURE_DIRS[m]
    return dirs


def run_eval(
    config: EvalConfig,
    *,
    model: Any = None,
    processor: Any = None,
    progress: bool | None = None,
    judge: Any = None,
) -> EvalResult:
    """Run ``config`` end to end (see the module docstring) and return the metrics.

    Args:
        config: The run.
        model: An already-loaded model (ablations reuse one); default: ``load_model(config.checkpoint)``.
        processor: Its processor.
        progress: tqdm progress bar (None: only on a terminal).
        judge: EMER only: a judge object to use instead of building ``config.judge``.
    """
    from tqdm.auto import tqdm

    from emollm.encoders.precomputed import FeatureStore
    from emollm.model.generation import chat
    from emollm.model.precision import autocast
    from emollm.model.processing import Sample

    gold_all = read_gold(config)
    items = gold_all[: config.limit] if config.limit else gold_all
    if model is not None and processor is None:
        raise ValueError("run_eval(model=...) needs the processor too")
    model_config = model.config if model is not None else _checkpoint_config(config.checkpoint)
    mods = resolve_modalities(config, list(model_config.modalities))
    if mods["not_in_prompt"]:
        warnings.warn(
            f"the prompt has no marker for {mods['not_in_prompt']}, so the checkpoint runs without them",
            stacklevel=2,
        )
    # Markers of modalities the checkpoint has no branch for, and of dropped ones, are removed from the prompt (a
    # dropped branch may still be loaded: a fused slot such as <multi> reads its sources' features).
    gone = {*mods["not_in_model"], *mods["dropped"]}
    template = MARKER_RE.sub(lambda m: "" if m.group(1) in gone else m.group(0), config.resolved_prompt())
    fused = {m: list(c.fuse.sources) for m, c in model_config.modalities.items() if getattr(c, "fuse", None)}
    loaded = [m for m in mods["used"] if m not in fused]
    loaded += [s for m in mods["used"] if m in fused for s in fused[m] if s not in loaded]
    dirs = _feature_dirs(config, model_config, loaded)
    if mods["used"] and not config.feature_root:
        raise ValueError(
            f"feature_root is not set but the run uses {mods['used']}; set feature_root, or "
            f"drop_modalities=[{','.join(mods['used'])}] for a text-only run"
        )
    root = config.feature_root or ""
    stores = {m: FeatureStore(root, dirs[m], model_config.modalities[m].feature_dim) for m in dirs}
    label_order = config.resolved_label_order()
    parser = LabelParser(label_order) if config.dataset != "emer" else None

    # Refuse to mix configs before paying for the model; a rerun with nothing left to generate never loads it.
    out = Path(config.output_dir)
    job = Job("eval", unit="sample")  # torchrun / accelerate launch: this rank's share (emollm_eval.parallel)
    if job.distributed:
        config = dataclasses.replace(config, device=job.resolve_device(config.device))  # `cuda`: this rank's GPU
    weights, device = _llm_weights(config, model, model_config)
    precision = config.resolved_precision(weights, device)
    fingerprint = prediction_fingerprint(config, dirs)
    # The resolved precision, not `auto`, decides the predictions; fp32 hashes as before precision existed, so
    # earlier (fp32) output folders still resume, and bf16 predictions are never mixed with fp32 ones.
    fingerprint.pop("precision", None)
    if precision != "fp32":
        fingerprint["precision"] = precision
    digest = config_hash(fingerprint)
    previous = parallel.start(job, out, lambda: start_run(out, config, fingerprint, digest), [i.name for i in items])
    shard = parallel.mine(job, [it.name for it in items])
    todo = [it for it in items if it.name not in previous and it.name in shard]
    owned = model is None
    if todo and model is None:
        import torch

        from emollm.checkpoints import load_model

        model, processor = load_model(
            config.checkpoint,
            llm_path=config.llm_path,
            dtype=getattr(torch, config.dtype) if config.dtype else None,
            device=config.device,
        )
    if model is not None:
        model.eval()
        if todo and owned:  # a model the caller passed in stays as it was given
            from emollm.model.packed_linear import pack_linears

            # Same numbers as autocast's linears (so not in metrics.json, which a rerun must reproduce unloaded).
            kernels = pack_linears(model.language_model, precision, device)
            log.info("generation: precision %s, linear kernels: %s", precision, kernels)
    disable = None if progress is None else not progress
    done = sum(it.name in previous for it in items)
    bar = parallel.progress(job, tqdm, total=len(items), initial=done, desc=f"eval {config.dataset}", disable=disable)
    max_new = config.resolved_max_new_tokens()
    with parallel.predictions_log(job, out) as f:
        for start in range(0, len(todo), config.batch_size):
            batch = todo[start : start + config.batch_size]
            samples, missing = [], []
            for it in batch:
                feats, miss = _load_features(stores, it.name)
                miss = [m for m in miss if m in mods["used"]]  # a source loaded only for a fused slot: not a slot
                miss += [m for m in mods["used"] if m in fused and any(feats.get(s) is None for s in fused[m])]
                prompt = fill_prompt(template, label_order, it.subtitle)
                samples.append(Sample(messages=[{"role": "user", "content": prompt}], features=feats, name=it.name))
                missing.append(miss)
            with autocast(precision, device):  # generation only: features were loaded above, in fp32
                if config.decoding == "greedy":
                    answers = chat(
                        model, processor, samples, max_new_tokens=max_new, do_sample=False, batch_size=len(samples)
                    )
                else:  # sampled: one call per sample, seeded by its name, so a resumed run draws the same answers
                    answers = [_sampled_answer(model, processor, s, config, max_new) for s in samples]
            rows = [
                _prediction_row(it, answer, miss, parser, mods["used"])
                for it, answer, miss in zip(batch, answers, missing, strict=True)
            ]
            append_rows(f, rows)
            previous.update((row["name"], row) for row in rows)
            bar.update(len(batch))
    bar.close()
    previous, generated = parallel.finish(job, out, items, previous, len(todo))  # rank 0 merges the parts
    rows = [previous[it.name] for it in items]
    if not job.is_main:  # rank 0 scores and reports alone
        return EvalResult(out, job.broadcast(None), rows, generated=generated, reused=len(items) - generated)
    metrics = _summarise_run(config, rows, mods, dirs, template, digest, len(gold_all), model_config)
    metrics.update(precision=precision, llm_dtype=weights)  # the autocast of generation; llm_dtype: its weights
    if config.dataset == "emer":
        metrics.update(_emer_scores(config, rows, out, judge, progress))
    if config.ov_gold:
        metrics["open_vocabulary"] = open_vocabulary_metrics(config.ov_gold, rows)
    from emollm_eval.report import write_run_report

    atomic_write_json(out / "metrics.json", metrics)
    write_run_report(out, metrics, config)
    if config.dataset == "emer":
        _write_emer_csv(out / "predictions.csv", rows)
    job.broadcast(metrics)
    return EvalResult(out, metrics, rows, generated=generated, reused=len(items) - generated)


def sample_seed(seed: int, name: str) -> int:
    """The per-sample seed of sampled decoding: ``seed * 1000003 + crc32(name)``."""
    import zlib

    return seed * 1_000_003 + zlib.crc32(name.encode("utf-8"))


def decoding_settings(config: EvalConfig, generation_config: Any = None) -> dict[str, Any]:
    """What ``metrics.json`` records about decoding (and, for sampling, the ``generate`` keyword arguments)."""
    if config.decoding == "greedy":
        return {"name": "greedy", "do_sample": False}
    from emollm.checkpoints.published.affectgpt import AFFECTGPT_SAMPLING

    settings = {k: v for k, v in AFFECTGPT_SAMPLING.items() if k != "max_new_tokens"}
    top_k = getattr(generation_config, "top_k", None)
    source = "the LLM's generation_config.json (the release passes none)"
    if top_k is None:
        top_k, source = 50, "transformers' default: the LLM folder has no generation_config.json with top_k"
    return {
        "name": "affectgpt",
        **settings,
        "top_k": top_k,
        "top_k_source": source,
        "seed": config.decoding_seed,
        "seeding": "torch.manual_seed(seed * 1000003 + crc32(name)) before each sample's generate call",
    }


def _sampled_answer(model: Any, processor: Any, sample: Any, config: EvalConfig, max_new: int) -> str:
    import torch

    from emollm.model.generation import chat

    settings = decoding_settings(config, _generation_config(config))
    kwargs = {k: settings[k] for k in ("temperature", "top_p", "repetition_penalty", "num_beams", "top_k")}
    torch.manual_seed(sample_seed(config.decoding_seed, sample.name or ""))
    return chat(model, processor, [sample], max_new_tokens=max_new, do_sample=True, batch_size=1, **kwargs)[0]


def open_vocabulary_metrics(ov_gold: str | Path, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Score the free-text answers of ``rows`` as emotion-word sets against a MER-OV ``name,openset`` CSV.

    Each answer is parsed with :func:`emollm.scoring.openvocab.parse_emotions` (synonyms grouped, negated words
    dropped), each reference with :func:`~emollm.scoring.openvocab.normalize_set`; only rows whose name has a
    non-empty reference are scored (``ov_scores`` skips empty ones).

    Returns:
        :func:`~emollm.scoring.openvocab.ov_scores`'s keys plus ``gold_file``, ``without_reference`` (evaluated
        samples the CSV lacks) and ``parser``.
    """
    from emollm.scoring.openvocab import normalize_set, ov_scores, parse_emotions
    from emollm_eval.datasets import read_ov_labels

    gold = {s.name: normalize_set(s.openset) for s in read_ov_labels(ov_gold)}
    scored = [r for r in rows if r["name"] in gold]
    preds = [parse_emotions(r.get("answer")) for r in scored]
    scores = ov_scores(preds, [gold[r["name"]] for r in scored])
    return {
        **scores,
        "gold_file": str(ov_gold),
        "without_reference": len(rows) - len(scored),
        "parser": "emollm.scoring.openvocab.parse_emotions (synonym groups, negations dropped)",
    }


def _prediction_row(
    it: GoldItem, answer: str, missing: list[str], parser: LabelParser | None, used: Sequence[str]
) -> dict[str, Any]:
    """One ``predictions.jsonl`` row: the answer, its parse (label tasks), and the modalities it ran with."""
    row: dict[str, Any] = {"name": it.name, "gold": it.gold, "answer": answer}
    if parser is not None:
        parsed = parser.parse(answer)
        row.update(label=parsed.label, reason=parsed.reason)
    row.update(
        modalities=[m for m in used if m not in missing],
        missing_features=missing,
        subtitle=clean_subtitle(it.subtitle) is not None,
    )
    if it.valence is not None:
        row["valence"] = it.valence
    return row


def _generation_config(config: EvalConfig) -> Any:
    """The LLM's generation config (for the top-k sampled decoding takes from it), read without loading weights."""
    import json as _json

    from emollm.model.configuration import EmoLLMConfig

    meta = Path(config.checkpoint)
    saved = meta / "emollm_config.json"
    source = EmoLLMConfig.load(saved).llm_source if saved.is_file() else None
    for folder in ([meta / "llm"] if (meta / "llm").is_dir() else []) + ([Path(source)] if source else []):
        file = folder / "generation_config.json"
        if file.is_file():
            from types import SimpleNamespace

            return SimpleNamespace(**_json.loads(file.read_text()))
    return None


def _summarise_run(
    config: EvalConfig,
    rows: list[dict[str, Any]],
    mods: dict[str, Any],
    dirs: dict[str, str],
    template: str,
    digest: str,
    n_total: int,
    model_config: Any,
) -> dict[str, Any]:
    split = config.resolved_split()
    label_order = list(config.resolved_label_order())
    subs = "gold (EMER v1 subtitles column)" if config.subtitles == "gold" else config.subtitles
    metrics: dict[str, Any] = {
        "dataset": config.dataset,
        "split": split,
        "protocol": config.protocol,
        "selection": "none (this run only reports; no checkpoint, prompt or label order is selected on it)",
        "checkpoint": str(config.checkpoint),
        "backbone": getattr(model_config, "backbone", None),
        "config_hash": digest,
        "n": len(rows),
        "n_gold_file": n_total,
        "limit": config.limit,
        "prompt_template": template,
        "prompt": fill_prompt(template, label_order, "{subtitle}" if config.subtitles else None),
        "label_order": label_order,
        "subtitles": subs,
        "samples_with_subtitle": sum(bool(r.get("subtitle")) for r in rows),
        "max_new_tokens": config.resolved_max_new_tokens(),
        "decoding": "greedy" if config.decoding == "greedy" else decoding_settings(config, _generation_config(config)),
        "modalities_used": mods["used"],
        "modalities_dropped": mods["dropped"],
        "modalities_not_in_prompt": mods["not_in_prompt"],
        "prompt_markers_without_branch": mods["not_in_model"],
        "feature_root": config.feature_root,
        "feature_dirs": dirs,
        "missing_features": {m: sum(m in r["missing_features"] for r in rows) for m in mods["used"]},
    }
    fused = {m: list(c.fuse.sources) for m, c in model_config.modalities.items() if getattr(c, "fuse", None)}
    if fused:
        metrics["fused_slots"] = fused  # slot -> the modalities whose features it is computed from
    if config.dataset == "emer":
        return metrics
    primary = PRIMARY_METRICS[config.dataset]
    metrics["primary_metrics"] = list(primary)
    metrics.update(
        classification_metrics(
            rows,
            config.resolved_labels(),
            label_order,
            primary,
            n_bootstrap=config.n_bootstrap,
            seed=config.seed,
        )
    )
    if config.dataset == "mer2023":
        has_valence = any("valence" in r for r in rows)
        protocol = MER2023_PROTOCOLS.get(config.protocol or "")
        metrics["valence"] = (
            "gold valence present, but the model predicts no valence: valence MSE and combined (F1 - 0.25 MSE) "
            "are not reported"
            if has_valence or (protocol and protocol.uses_valence)
            else "no gold valence"
        )
    return metrics


def _emer_scores(
    config: EvalConfig, rows: list[dict[str, Any]], out: Path, judge: Any, progress: bool | None
) -> dict[str, Any]:
    if judge is None and config.judge is None:
        return {
            "emer": "not scored: no judge configured",
            "score_with": f"emollm eval emer --gold {config.gold} --pred {out / 'predictions.jsonl'} "
            f"--judge smollm2 --out {out}",
        }
    from emollm_eval.emer import score_emer, write_emer_outputs
    from emollm_eval.judge import JudgeCache, make_judge

    if judge is None:
        judge = make_judge(
            config.judge,  # type: ignore[arg-type]
            model=config.judge_model,
            backbone=config.judge_backbone,
            max_new_tokens=config.judge_max_new_tokens,
        )
    names = {r["name"] for r in rows}
    gold = [g for g in read_emer(config.gold) if g.name in names]
    cache = JudgeCache(config.judge_cache or out / "judge_cache.jsonl")
    result = score_emer(gold, {r["name"]: r["answer"] for r in rows}, judge, cache=cache, progress=progress)
    write_emer_outputs(result, out, gold_path=config.gold, pred_path=str(out / "predictions.jsonl"))
    return {"emer": result.summary}


def _write_emer_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["names", "chi_reasons"])
    writer.writerows([r["name"], r["answer"]] for r in rows)
    atomic_write_text(path, buf.getvalue())
