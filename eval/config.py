"""The ``emollm eval`` config: the :class:`EvalConfig` schema, its defaults per dataset kind, and YAML loading.

Values are type-checked and converted by :mod:`emollm.utils.typed_config` (the converter shared with ``emollm train``
and ``emollm merr build``); :meth:`EvalConfig.__post_init__` checks what types cannot say. Errors name the key and
what is allowed. No torch here: ``emollm eval --help`` and config checks must answer fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from emollm.data.splits import is_test_split, looks_like_test_split
from emollm.labels import DFEW_LABELS, MER2023_LABELS, MERR_LABELS, label_set
from emollm.model.configuration import MODALITIES
from emollm.model.prompts import EVAL_PROMPTS
from emollm.utils import typed_config
from emollm_eval.datasets import MER2023_PROTOCOLS

__all__ = [
    "DATASET_KINDS",
    "DEFAULT_LABELS",
    "DEFAULT_LABEL_ORDER",
    "DEFAULT_MAX_NEW_TOKENS",
    "METRIC_NAMES",
    "PRIMARY_METRICS",
    "EvalConfig",
    "check_selection_allowed",
    "load_config",
]

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
    """Generation limit (default 32 for labels, 256 for EMER reasoning; AffectGPT's release used 1200)."""
    decoding: Literal["greedy", "affectgpt"] = "greedy"
    """``greedy`` (deterministic, the default) or ``affectgpt``: AffectGPT's released sampling (temperature 1, top-p
    0.9, repetition penalty 1, top-k from the LLM's generation config), one sample per call, seeded per sample from
    ``decoding_seed`` and its name. Recorded in ``metrics.json`` and in the config hash."""
    decoding_seed: int = 0
    """Seed of the ``affectgpt`` sampling (ignored, and not hashed, for greedy)."""
    batch_size: int = 8
    """Samples per ``generate`` call."""
    limit: int | None = None
    """Evaluate only the first N gold samples (smoke runs); a later full run reuses their predictions."""
    device: str | None = None
    """``cpu``, ``cuda``, ``cuda:1``, ... (default: where the model loads)."""
    dtype: str | None = None
    """LLM dtype: ``float32``, ``bfloat16`` or ``float16`` (default: the backbone's)."""
    precision: Literal["auto", "fp32", "bf16", "no"] = "auto"
    """Autocast of generation (LLM and projectors; feature loading stays fp32): ``bf16`` autocast over the weights,
    or ``fp32`` / ``no`` for none. ``auto`` = bf16 on a device with native bf16 (a CPU with AVX512-BF16 or AMX:
    SmolLM2 prefill 2.8x, decode 1.4x faster) when the LLM weights are float32, else none. The resolved value is in
    ``metrics.json`` (``precision``) and, when bf16, in the config hash."""
    n_bootstrap: int = 1000
    """Bootstrap resamples for the 95% CIs (0: no CIs)."""
    seed: int = 0
    """Bootstrap seed."""
    ov_gold: str | None = None
    """Open-vocabulary references: a MER-OV CSV ``name,openset`` (``openset`` a list literal such as
    ``"['happy', 'calm']"``). Each free-text answer is parsed into a set of emotion words
    (``emollm.scoring.openvocab``) and
    scored against it: set precision, recall, F-score and hit rate in ``metrics.json`` (``open_vocabulary``) and
    ``report.md``. Scoring only: not in the config hash, so it may be added to a finished run."""
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
        if self.decoding not in ("greedy", "affectgpt"):  # EvalConfig(...) built in code, not through the loader
            raise ValueError(f"decoding must be 'greedy' | 'affectgpt', got {self.decoding!r}")
        if self.n_bootstrap < 0:
            raise ValueError(f"n_bootstrap must be >= 0 (0 = no CIs), got {self.n_bootstrap}")
        if self.dtype is not None and self.dtype not in _DTYPES:
            raise ValueError(f"dtype: {self.dtype!r} is not one of {', '.join(_DTYPES)}")
        if self.precision == "bf16" and self.dtype == "float16":
            raise ValueError("precision: bf16 autocast over dtype: float16 weights rounds them to bf16; pick one")
        for key, mods in (("features", list(self.features)), ("drop_modalities", self.drop_modalities)):
            bad = [m for m in mods if m not in MODALITIES]
            if bad:
                raise ValueError(f"{key}: unknown modality {bad[0]!r}; allowed: {', '.join(MODALITIES)}")
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
        """Greedy generation limit (32 for labels, 256 for EMER reasoning, unless set)."""
        return self.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[self.dataset]

    def resolved_precision(self, weights: str, device: str | None = None) -> str:
        """``bf16`` (autocast) or ``fp32`` (none) for an LLM whose weights have dtype ``weights`` on ``device``
        (default: ``device``, else ``cpu``); see :func:`emollm.model.precision.resolve_precision`."""
        from emollm.model.precision import resolve_precision

        return resolve_precision(self.precision, device or self.device or "cpu", weights=weights)

    def resolved_split(self) -> str:
        """The evaluated split: ``split``, else ``test`` when the gold path looks like one, else ``unknown``."""
        if self.split:
            return self.split
        return "test" if looks_like_test_split(str(self.gold)) else "unknown"

    # ---------------------------------------------------------------- (de)serialisation
    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "eval config") -> EvalConfig:
        """Build from a raw (YAML) mapping, checking key names and value types.

        Args:
            data: Key -> value, as read from YAML.
            where: The source, named in errors (a file path, or ``overrides``).

        Raises:
            ValueError: Naming the key and what is allowed (``limit must be an integer or null, got 'ten'``), or the
                closest key name for an unknown one.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping of keys to values, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            close = difflib.get_close_matches(unknown[0], names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{where}: unknown key(s) {unknown}{hint}; allowed keys: {', '.join(names)}")
        values = {}
        for key, value in data.items():
            try:
                values[key] = typed_config.convert(hints[key], value, key)
            except ValueError:  # reworded: eval's messages say what a key takes in words
                raise ValueError(f"{where}: {key} must be {_describe(hints[key])}, got {value!r}") from None
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready mapping (what ``run.json`` records)."""
        return dataclasses.asdict(self)


def _describe(hint: Any) -> str:
    """A type hint in words for error messages: ``list[str] | None`` -> ``a list of strings or null``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is list:
        return "a list of strings"
    if typing.get_origin(hint) is dict:
        return "a mapping of modality to sub-folder"
    return {int: "an integer", str: "a string", bool: "true or false"}.get(hint, typed_config.type_name(hint))


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> EvalConfig:
    """Read a YAML config and apply ``key=value`` overrides.

    Override values are YAML: ``limit=10``, ``label_order=[happy,sad]``, ``features.face=mae_DFEW_ck16_UTT``,
    ``llm_path=null``; ``key=`` sets null.

    Args:
        path: The YAML file, or None to build from overrides alone.
        overrides: ``key=value`` strings, applied in order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Invalid YAML, an unknown key, or a bad value (the message names the key).
    """
    data: dict[str, Any] = {}
    where = "overrides"
    if path is not None:
        where = str(path)
        data = typed_config.load_yaml_mapping(path)
    data = typed_config.apply_overrides(data, overrides, example="limit=10", empty=None)
    return EvalConfig.from_dict(data, where)


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
