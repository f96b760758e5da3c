"""``emollm eval CONFIG.yaml``: run a checkpoint over an evaluation set and report.

One run = one output folder holding:

    run.json                 the resolved config and its hash (what produced the predictions)
    predictions.jsonl        one row per sample: name, gold, raw answer, parsed label (or null), parse reason,
                             modalities used, modalities whose feature file was missing
    metrics.json             the metrics (DFEW: UAR/WAR/per-class recall; MER2023: weighted F1/accuracy; 95%
                             bootstrap CIs), invalid-answer and missing-feature counts, the prompt and label order
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
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import os
import types
import typing
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from emollm_eval.datasets import (
    MER2023_PROTOCOLS,
    MER2023_VALENCE_PLACEHOLDER,
    read_dfew_split,
    read_emer,
    read_mer2023_labels,
    read_ncev,
)
from emollm_eval.metrics import (
    INVALID,
    accuracy,
    bootstrap_ci,
    confusion_matrix,
    precision_recall_f1_support,
    uar,
    war,
    weighted_f1,
)

from emollm.configuration import MARKER_RE, MODALITIES
from emollm.data.merr_files import read_transcriptions_csv
from emollm.data.splits import is_test_split, looks_like_test_split
from emollm.labels import DFEW_LABELS, MER2023_LABELS, MERR_LABELS, LabelParser, label_set
from emollm.prompts import EVAL_PROMPTS, clean_subtitle, fill_prompt

__all__ = [
    "DATASET_KINDS",
    "DEFAULT_LABEL_ORDER",
    "PRIMARY_METRICS",
    "ConfigMismatchError",
    "EvalConfig",
    "EvalResult",
    "check_selection_allowed",
    "classification_metrics",
    "load_config",
    "read_rows",
    "resolve_modalities",
    "run_eval",
]

log = logging.getLogger(__name__)

DatasetKind = Literal["dfew", "mer2023", "ncev", "emer"]
DATASET_KINDS: tuple[str, ...] = ("dfew", "mer2023", "ncev", "emer")

DEFAULT_LABEL_ORDER: dict[str, tuple[str, ...]] = {
    "dfew": label_set("dfew").prompt_order,  # Emotion-LLaMA's DFEW zero-shot
    "mer2023": label_set("mer2023").prompt_order,
    "ncev": label_set("merr").prompt_order,
}
DEFAULT_LABELS: dict[str, tuple[str, ...]] = {"dfew": DFEW_LABELS, "mer2023": MER2023_LABELS, "ncev": MERR_LABELS}
PRIMARY_METRICS: dict[str, tuple[str, ...]] = {
    "dfew": ("uar", "war"),
    "mer2023": ("weighted_f1", "accuracy"),
    "ncev": ("weighted_f1", "accuracy", "uar", "war"),
}
"""The headline metrics of each dataset kind (reported with bootstrap CIs, used by ablations)."""
METRIC_NAMES: dict[str, str] = {
    "uar": "UAR",
    "war": "WAR",
    "weighted_f1": "weighted F1",
    "accuracy": "accuracy",
    "macro_f1": "macro F1",
}
DEFAULT_MAX_NEW_TOKENS = {"dfew": 32, "mer2023": 32, "ncev": 32, "emer": 256}
_DTYPES = ("float32", "bfloat16", "float16")
_MODALITIES = MODALITIES
_MARKER = MARKER_RE

# Keys that cannot change a prediction: left out of the config hash, so they may differ between resumed runs.
_NOT_HASHED = frozenset(
    {
        *("output_dir", "limit", "batch_size", "device", "n_bootstrap", "seed", "split", "protocol"),
        *("judge", "judge_model", "judge_backbone", "judge_max_new_tokens", "judge_cache"),
    }
)


class ConfigMismatchError(ValueError):
    """An output folder holds predictions of another config."""


# --------------------------------------------------------------------------------------------------------------------
# Config


@dataclass
class EvalConfig:
    """Everything ``emollm eval`` needs; YAML keys are these field names (unknown keys are errors).

    Relative paths are relative to the current directory.
    """

    checkpoint: str = ""
    """Checkpoint folder saved by emollm (``load_model`` reads it)."""
    dataset: str = ""
    """``dfew`` (split CSV ``video_name,label``), ``mer2023`` (label CSV ``name,discrete,valence``), ``ncev``
    (Emotion-LLaMA list ``name frames label valence``) or ``emer`` (``gt-eng.csv``; free-text reasoning)."""
    gold: str = ""
    """The gold file of that dataset kind."""
    output_dir: str = ""
    """Where predictions, metrics and the report go."""
    llm_path: str | None = None
    """Base LLM folder or GGUF when the checkpoint cannot find its own."""
    split: str | None = None
    """Name of the evaluated split (``test``, ``val``, ``test3``, ...); default: ``test`` when the gold path contains
    "test", else ``unknown`` (treated as a test split: nothing may be selected on it)."""
    protocol: str | None = None
    """MER2023 only: ``test1``/``test2``/``test3`` (MER-MULTI/NOISE/SEMI), recorded with the metrics."""
    ncev_format: str = "auto"
    """``ncev`` only: ``auto``, ``ne``, ``nce`` or ``ncev``."""
    feature_root: str | None = None
    """Folder holding one sub-folder of ``<name>.npy`` per modality (Emotion-LLaMA layout)."""
    features: dict[str, str] = field(default_factory=dict)
    """modality -> sub-folder of ``feature_root``; unset modalities use the checkpoint's ``feature_dir``, else
    Emotion-LLaMA's ``mae_340_UTT`` (face), ``maeV_399_UTT`` (video), ``HL-UTT`` (audio). DFEW's released face
    features are ``mae_DFEW_ck16_UTT``."""
    drop_modalities: list[str] = field(default_factory=list)
    """Modalities to leave out at inference (their placeholders are removed); used by the ablations."""
    subtitles: str | None = None
    """Transcripts: a CSV ``name,sentence``, or ``gold`` for the EMER v1 ``subtitles`` column; null for none (the
    DFEW default: transcripts hurt there, REFERENCE.md §1.8)."""
    prompt: str | None = None
    """User prompt template with ``<video>``/``<face>``/``<audio>`` markers, ``{labels}`` and ``{subtitle}``; default:
    Emotion-LLaMA's ``emotion`` prompt (``reason`` prompt for EMER)."""
    labels: list[str] | None = None
    """Gold classes, in report order (default: the dataset's; DFEW's are in split-CSV index order)."""
    label_order: list[str] | None = None
    """Labels as listed in the prompt, in this order; must contain every gold class and may add more (default:
    DFEW ``happy, sad, neutral, angry, surprise, disgust, fear``; MER2023/NCEV Emotion-LLaMA's nine labels)."""
    max_new_tokens: int | None = None
    """Greedy generation limit (default 32 for labels, 256 for EMER reasoning)."""
    batch_size: int = 8
    """Samples per ``generate`` call."""
    limit: int | None = None
    """Evaluate only the first N gold samples (smoke runs); a later full run reuses their predictions."""
    device: str | None = None
    """``cpu``, ``cuda``, ``cuda:1``, ... (default: where the model loads)."""
    dtype: str | None = None
    """LLM dtype: ``float32``, ``bfloat16`` or ``float16`` (default: the backbone's)."""
    n_bootstrap: int = 1000
    """Bootstrap resamples for the 95% CIs (0: no CIs)."""
    seed: int = 0
    """Bootstrap seed."""
    judge: str | None = None
    """EMER only: score the generated reasoning with this judge (registry backbone, local path or http(s) URL)."""
    judge_model: str | None = None
    """EMER only: the model name of an http(s) judge."""
    judge_backbone: str | None = None
    """EMER only: the backbone of a local judge path whose family is ambiguous."""
    judge_max_new_tokens: int = 64
    """EMER only: judge answer length."""
    judge_cache: str | None = None
    """EMER only: judge-call cache file (default ``OUTPUT_DIR/judge_cache.jsonl``)."""

    def __post_init__(self) -> None:
        for key in ("checkpoint", "dataset", "gold", "output_dir"):
            if not getattr(self, key):
                raise ValueError(f"{key} is required; set it in the YAML or as {key}=...")
        if self.dataset not in DATASET_KINDS:
            raise ValueError(f"dataset: unknown kind {self.dataset!r}; allowed: {', '.join(DATASET_KINDS)}")
        if self.protocol is not None:
            if self.dataset != "mer2023":
                raise ValueError(f"protocol is for dataset: mer2023 only, not {self.dataset!r}; remove it")
            if self.protocol not in MER2023_PROTOCOLS:
                raise ValueError(f"protocol: {self.protocol!r} is not one of {', '.join(MER2023_PROTOCOLS)}")
        if self.ncev_format not in ("auto", "ne", "nce", "ncev"):
            raise ValueError(f"ncev_format: {self.ncev_format!r} is not one of auto, ne, nce, ncev")
        for key in ("batch_size", "limit", "max_new_tokens", "judge_max_new_tokens"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        if self.n_bootstrap < 0:
            raise ValueError(f"n_bootstrap must be >= 0 (0 = no CIs), got {self.n_bootstrap}")
        if self.dtype is not None and self.dtype not in _DTYPES:
            raise ValueError(f"dtype: {self.dtype!r} is not one of {', '.join(_DTYPES)}")
        for key, mods in (("features", list(self.features)), ("drop_modalities", self.drop_modalities)):
            bad = [m for m in mods if m not in _MODALITIES]
            if bad:
                raise ValueError(f"{key}: unknown modality {bad[0]!r}; allowed: {', '.join(_MODALITIES)}")
        if len(set(self.drop_modalities)) != len(self.drop_modalities):
            raise ValueError(f"drop_modalities lists a modality twice: {self.drop_modalities}")
        if self.dataset == "emer":
            for key in ("labels", "label_order"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: EMER answers are free-text reasoning, not labels; remove {key}")
        else:
            for key in ("judge", "judge_model", "judge_backbone", "judge_cache"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} is for dataset: emer only; remove it")
            if self.subtitles == "gold":
                raise ValueError("subtitles: 'gold' reads the EMER v1 subtitles column; use a name,sentence CSV here")
        for key in ("labels", "label_order"):
            value = getattr(self, key)
            if value is not None:
                if not value:
                    raise ValueError(f"{key} is empty; list the class names or remove {key} for the default")
                lowered = [v.lower().strip() for v in value]
                if len(set(lowered)) != len(lowered):
                    raise ValueError(f"{key} lists a label twice: {value}")
        if self.dataset != "emer":
            missing = [lab for lab in self.resolved_labels() if lab not in self.resolved_label_order()]
            if missing:
                raise ValueError(
                    f"label_order {self.resolved_label_order()} leaves out the gold label(s) {missing}; the prompt "
                    "must offer every class"
                )
        prompt = self.resolved_prompt()
        if self.dataset != "emer" and "{labels}" not in prompt:
            raise ValueError("prompt has no {labels} field; the model would not see the label list")

    # ---------------------------------------------------------------- resolved defaults
    def resolved_labels(self) -> tuple[str, ...]:
        """Gold classes (empty for EMER)."""
        if self.dataset == "emer":
            return ()
        return tuple(self.labels) if self.labels is not None else DEFAULT_LABELS[self.dataset]

    def resolved_label_order(self) -> tuple[str, ...]:
        """Labels as the prompt lists them (empty for EMER)."""
        if self.dataset == "emer":
            return ()
        if self.label_order is not None:
            return tuple(self.label_order)
        if self.labels is not None:
            return tuple(self.labels)
        return DEFAULT_LABEL_ORDER[self.dataset]

    def resolved_prompt(self) -> str:
        """The prompt template."""
        return self.prompt or EVAL_PROMPTS["reason" if self.dataset == "emer" else "emotion"]

    def resolved_max_new_tokens(self) -> int:
        return self.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[self.dataset]

    def resolved_split(self) -> str:
        if self.split:
            return self.split
        return "test" if looks_like_test_split(str(self.gold)) else "unknown"

    # ---------------------------------------------------------------- (de)serialisation
    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "eval config") -> EvalConfig:
        """Build from a mapping, checking key names and value types (errors name the key and what is allowed)."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping of keys to values, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            close = difflib.get_close_matches(unknown[0], names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{where}: unknown key(s) {unknown}{hint}; allowed keys: {', '.join(names)}")
        for key, value in data.items():
            if not _type_ok(value, hints[key]):
                raise ValueError(f"{where}: {key} must be {_type_name(hints[key])}, got {value!r}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is dict:
        k, v = typing.get_args(hint)
        return isinstance(value, dict) and all(_type_ok(a, k) and _type_ok(b, v) for a, b in value.items())
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is bool:
        return isinstance(value, bool)
    return True


def _type_name(hint: Any) -> str:
    """``list[str] | None`` -> ``a list of strings or null``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is list:
        return "a list of strings"
    if typing.get_origin(hint) is dict:
        return "a mapping of modality to sub-folder"
    return {int: "an integer", str: "a string", bool: "true or false"}.get(hint, str(hint))


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> EvalConfig:
    """Read a YAML config and apply ``key=value`` overrides (values are YAML: ``limit=10``,
    ``label_order=[happy,sad]``, ``features.face=mae_DFEW_ck16_UTT``, ``llm_path=null``).

    Args:
        path: The YAML file, or None to build from overrides alone.
        overrides: ``key=value`` strings, applied in order.
    """
    from emollm.utils import typed_config

    data: dict[str, Any] = {}
    where = "overrides"
    if path is not None:
        where = str(path)
        data = typed_config.load_yaml_mapping(path)
    data = typed_config.apply_overrides(data, overrides, example="limit=10", empty=None)
    return EvalConfig.from_dict(data, where)


# --------------------------------------------------------------------------------------------------------------------
# Splits


def check_selection_allowed(split: str, what: str) -> None:
    """Raise when ``what`` would be selected on a test split: selection on test data leaks it into the result.

    Raises:
        ValueError: Naming the split and what to do instead.
    """
    if is_test_split(split):
        raise ValueError(
            f"refusing to select {what} on split {split!r}: choosing anything by its test score leaks the test set. "
            "Select on a validation split (split=val with a validation gold file), then evaluate the choice on test"
        )


# --------------------------------------------------------------------------------------------------------------------
# Gold data and prompts


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
    markers = list(dict.fromkeys(_MARKER.findall(config.resolved_prompt())))
    model_mods = [m for m in _MODALITIES if m in model_modalities]
    return {
        "used": [m for m in model_mods if m in markers and m not in config.drop_modalities],
        "dropped": [m for m in model_mods if m in config.drop_modalities],
        "not_in_prompt": [m for m in model_mods if m not in markers],
        "not_in_model": [m for m in markers if m not in model_mods],
    }


# --------------------------------------------------------------------------------------------------------------------
# Fingerprints and resume


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
    """Digest of a checkpoint's small files (config, projectors, adapter) and of the names and sizes in ``llm/``."""
    path = Path(path)
    h = hashlib.sha256()
    for name in ("checkpoint.json", "emollm_config.json", "projectors.safetensors", "adapter_model.safetensors"):
        p = path / name
        h.update(f"{name}:{_sha256_file(p) if p.is_file() else '-'};".encode())
    llm = path / "llm"
    if llm.is_dir():
        for p in sorted(llm.rglob("*")):
            if p.is_file():
                h.update(f"llm/{p.relative_to(llm)}:{p.stat().st_size};".encode())
    return h.hexdigest()[:16]


def prediction_fingerprint(config: EvalConfig, feature_dirs: dict[str, str]) -> dict[str, Any]:
    """Everything that determines the predictions of a run (the config hash is the digest of this)."""
    data = {k: v for k, v in config.to_dict().items() if k not in _NOT_HASHED}
    csv_subtitles = config.subtitles not in (None, "gold")
    data.update(  # files by content, so a moved checkpoint or gold file still resumes
        checkpoint=checkpoint_fingerprint(config.checkpoint),
        gold=_sha256_file(Path(config.gold)),
        subtitles=_sha256_file(Path(config.subtitles)) if csv_subtitles else config.subtitles,  # type: ignore[arg-type]
        feature_root=str(Path(config.feature_root).resolve()) if config.feature_root else None,
        features=dict(sorted(feature_dirs.items())),
        drop_modalities=sorted(config.drop_modalities),
        prompt=config.resolved_prompt(),
        labels=list(config.resolved_labels()),
        label_order=list(config.resolved_label_order()),
        max_new_tokens=config.resolved_max_new_tokens(),
        decoding="greedy",
    )
    return data


def config_hash(fingerprint: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def read_rows(path: str | os.PathLike, *, repair: bool = False) -> list[dict[str, Any]]:
    """Rows of a ``predictions.jsonl``. A torn last line (a kill mid-write) is ignored, and cut off with ``repair``.

    Raises:
        ValueError: On a damaged line that is not the last one.
    """
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        if repair:
            with open(path, "r+b") as f:
                f.truncate(cut)
        data = data[:cut]
    rows = []
    for i, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as err:
            raise ValueError(f"{path}:{i}: damaged row ({err}); delete the file to start over") from None
    return rows


def _check_resume(out: Path, fingerprint: dict[str, Any], digest: str) -> None:
    run_file, pred_file = out / "run.json", out / "predictions.jsonl"
    has_rows = pred_file.is_file() and pred_file.stat().st_size > 0
    if not has_rows:
        return
    if not run_file.is_file():
        raise ConfigMismatchError(
            f"{pred_file} exists but {run_file} does not, so its config is unknown; refusing to mix predictions. "
            "Use another output_dir, or delete the predictions to start over"
        )
    old = json.loads(run_file.read_text())
    if old.get("config_hash") == digest:
        return
    before = old.get("fingerprint", {})
    diff = sorted(k for k in set(before) | set(fingerprint) if before.get(k) != fingerprint.get(k))
    details = "; ".join(f"{k}: {before.get(k)!r} -> {fingerprint.get(k)!r}" for k in diff[:6])
    raise ConfigMismatchError(
        f"{out} holds predictions of a different config (hash {old.get('config_hash')} vs {digest}); refusing to "
        f"mix them. Differences: {details}. Use another output_dir, or delete {pred_file} to start over"
    )


# --------------------------------------------------------------------------------------------------------------------
# Metrics


def _reason_group(reason: str) -> str:
    if reason.startswith("several labels"):
        return "several labels"
    if "empty" in reason:
        return "empty answer"
    return reason


def classification_metrics(
    rows: Sequence[dict[str, Any]],
    labels: Sequence[str],
    label_order: Sequence[str],
    primary: Sequence[str],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of prediction rows (``gold``, ``label`` or null, ``reason``) with :mod:`emollm_eval.metrics`.

    Metrics use the gold classes plus any extra label the prompt offered (a valid answer naming an extra label is a
    wrong prediction); per-class values and the confusion-matrix rows cover the gold classes. Invalid answers are
    wrong and are counted (``invalid``, ``invalid_reasons``, ``invalid_by_class``).
    """
    metric_labels = [*labels, *[lab for lab in label_order if lab not in labels]]
    yt = np.asarray([r["gold"] for r in rows], dtype=str)
    yp = np.asarray([INVALID if r["label"] is None else r["label"] for r in rows], dtype=str)
    fns: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "uar": lambda t, p: uar(t, p, metric_labels),
        "war": war,
        "weighted_f1": lambda t, p: weighted_f1(t, p, metric_labels),
        "accuracy": accuracy,
        "macro_f1": lambda t, p: _macro_f1_gold(t, p, labels, metric_labels),
    }
    out: dict[str, Any] = {"n": len(rows)}
    for name, fn in fns.items():
        out[name] = fn(yt, yp)
    for name in primary:
        if n_bootstrap:
            out[f"{name}_ci"] = list(bootstrap_ci(fns[name], yt, yp, n_bootstrap, seed=seed))
    invalid = [r for r in rows if r["label"] is None]
    out["invalid"] = len(invalid)
    out["invalid_rate"] = len(invalid) / len(rows) if rows else 0.0
    reasons: dict[str, int] = {}
    for r in invalid:
        reasons[_reason_group(r["reason"])] = reasons.get(_reason_group(r["reason"]), 0) + 1
    out["invalid_reasons"] = reasons
    _, recall, _, support = precision_recall_f1_support(yt, yp, metric_labels)
    k = len(labels)
    out["labels"] = list(labels)
    out["prediction_labels"] = metric_labels
    out["per_class_recall"] = {lab: float(recall[i]) if support[i] else None for i, lab in enumerate(labels)}
    out["support"] = {lab: int(support[i]) for i, lab in enumerate(labels)}
    cm = confusion_matrix(yt, yp, metric_labels, include_invalid=True)[:k]
    out["confusion_matrix"] = cm[:, :-1].tolist()
    out["invalid_by_class"] = {lab: int(cm[i, -1]) for i, lab in enumerate(labels)}
    return out


def _macro_f1_gold(yt: np.ndarray, yp: np.ndarray, labels: Sequence[str], metric_labels: Sequence[str]) -> float:
    """Mean F1 over the gold classes (predictions of extra prompt labels count as misses)."""
    f1 = precision_recall_f1_support(yt, yp, metric_labels)[2]
    return float(f1[: len(labels)].mean())


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
    from emollm.checkpoint import read_checkpoint_meta
    from emollm.configuration import EmoLLMConfig

    read_checkpoint_meta(path)
    return EmoLLMConfig.load(Path(path) / "emollm_config.json")


def _feature_dirs(config: EvalConfig, model_config: Any, used: Sequence[str]) -> dict[str, str]:
    from emollm.configuration import EMOTION_LLAMA_FEATURE_DIRS

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
    from emollm.generation import chat
    from emollm.processing import Sample

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
    template = _MARKER.sub(lambda m: "" if m.group(1) in mods["not_in_model"] else m.group(0), config.resolved_prompt())
    dirs = _feature_dirs(config, model_config, mods["used"])
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
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = prediction_fingerprint(config, dirs)
    digest = config_hash(fingerprint)
    _check_resume(out, fingerprint, digest)
    pred_file = out / "predictions.jsonl"
    previous = {r["name"]: r for r in read_rows(pred_file, repair=True)}
    if not (out / "run.json").is_file() or not previous:
        from emollm.utils.io import atomic_write_json

        atomic_write_json(
            out / "run.json", {"config_hash": digest, "fingerprint": fingerprint, "config": config.to_dict()}
        )
    todo = [it for it in items if it.name not in previous]
    if todo and model is None:
        import torch

        from emollm.checkpoint import load_model

        model, processor = load_model(
            config.checkpoint,
            llm_path=config.llm_path,
            dtype=getattr(torch, config.dtype) if config.dtype else None,
            device=config.device,
        )
    if model is not None:
        model.eval()
    disable = None if progress is None else not progress
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=f"eval {config.dataset}", disable=disable)
    max_new = config.resolved_max_new_tokens()
    with open(pred_file, "a", encoding="utf-8") as f:
        for start in range(0, len(todo), config.batch_size):
            batch = todo[start : start + config.batch_size]
            samples, missing = [], []
            for it in batch:
                feats, miss = _load_features(stores, it.name)
                prompt = fill_prompt(template, label_order, it.subtitle)
                samples.append(Sample(messages=[{"role": "user", "content": prompt}], features=feats, name=it.name))
                missing.append(miss)
            answers = chat(model, processor, samples, max_new_tokens=max_new, do_sample=False, batch_size=len(samples))
            for it, answer, miss in zip(batch, answers, missing, strict=True):
                row: dict[str, Any] = {"name": it.name, "gold": it.gold, "answer": answer}
                if parser is not None:
                    parsed = parser.parse(answer)
                    row.update(label=parsed.label, reason=parsed.reason)
                row.update(
                    modalities=[m for m in mods["used"] if m not in miss],
                    missing_features=miss,
                    subtitle=clean_subtitle(it.subtitle) is not None,
                )
                if it.valence is not None:
                    row["valence"] = it.valence
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                previous[it.name] = row
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(batch))
    bar.close()
    rows = [previous[it.name] for it in items]
    metrics = _summarise_run(config, rows, mods, dirs, template, digest, len(gold_all), model_config)
    if config.dataset == "emer":
        metrics.update(_emer_scores(config, rows, out, judge, progress))
    from emollm_eval.report import write_run_report

    from emollm.utils.io import atomic_write_json

    atomic_write_json(out / "metrics.json", metrics)
    write_run_report(out, metrics, config)
    if config.dataset == "emer":
        _write_emer_csv(out / "predictions.csv", rows)
    return EvalResult(out, metrics, rows, generated=len(todo), reused=len(items) - len(todo))


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
        "decoding": "greedy",
        "modalities_used": mods["used"],
        "modalities_dropped": mods["dropped"],
        "modalities_not_in_prompt": mods["not_in_prompt"],
        "prompt_markers_without_branch": mods["not_in_model"],
        "feature_root": config.feature_root,
        "feature_dirs": dirs,
        "missing_features": {m: sum(m in r["missing_features"] for r in rows) for m in mods["used"]},
    }
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
    from emollm_eval.datasets import read_emer
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
    import csv
    import io

    from emollm.utils.io import atomic_write_text

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["names", "chi_reasons"])
    writer.writerows([r["name"], r["answer"]] for r in rows)
    atomic_write_text(path, buf.getvalue())
