"""Typed run configuration for ``emollm train``: YAML + ``key=value`` overrides -> ``RunConfig``, and ``validate()``.

One recipe serves every stage; a stage is a config (trainable parts, data, task pool, learning rates). The schema is
the dataclasses below: each field has a type, a default and an attribute docstring, and the same definitions drive
loading, type checking, ``emollm validate --schema`` and the YAMLs' documentation, so they cannot drift.

Loading is strict: an unknown key is an error that names the dotted key, the allowed keys and the closest match
(``train.lr: unknown key; did you mean 'projector_lr'?``); a value of the wrong type names the key, the expected type
and the value. ``validate(cfg)`` adds cross-field checks (a val split that looks like a test split is refused, a task
without an instruction pool, streaming with a length-grouped sampler, ...) without building any model.

This module imports neither torch nor the trainer, so ``emollm validate`` answers in a fraction of a second.

Example:
    >>> cfg = load_config("configs/debug/tiny.yaml", ["train.max_steps=4", "train.lora.r=8"])
    >>> validate(cfg).warnings
    []
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import os
import string
import sys
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from emollm.data.config import AuxTextSource, DataConfig, SyntheticSettings
from emollm.data.splits import looks_like_test_split
from emollm.model.configuration import (
    EMOTION_LLAMA_FEATURE_DIRS,
    MODALITIES,
    PreFusionConfig,
    ProjectorConfig,
    check_fused_slot,
)
from emollm.model.prompts import TASKS
from emollm.settings import STAGES, LoraSettings, TrainableSpec
from emollm.utils import typed_config
from emollm.utils.typed_config import join as _join
from emollm.utils.typed_config import suggest as _suggest
from emollm.utils.typed_config import type_name as _type_name

__all__ = [
    "AuxTextSource",
    "ConfigError",
    "DataConfig",
    "GRPOConfig",
    "LoggingConfig",
    "ModalitySettings",
    "ModelConfig",
    "RunConfig",
    "SyntheticSettings",
    "TinyModel",
    "TrainConfig",
    "ValidationReport",
    "apply_overrides",
    "describe",
    "field_docs",
    "load_config",
    "looks_like_test_split",
    "validate",
    "validate_main",
]

# Kept here so that validate() needs no torch; tests/train/test_runconfig.py checks them against
# emollm.model.projectors.
_PROJECTOR_KINDS: tuple[str, ...] = (
    "identity",
    "linear",
    "mlp2x_gelu",
    "attn_pool",
    "affectgpt_attn_pool",
    "qformer",
    "emotion_llama_frame",
)

_PROMPT_FIELDS = {"media", "subtitle", "task", "instruction"}
_INSTRUCTION_FIELDS = {"labels"}
_ANSWER_FIELDS = {"label", "target"}
_SUBTITLE_FIELDS = {"text"}


class ConfigError(ValueError):
    """A config problem; the message starts with the dotted key it is about."""


# ====================================================================================================== schema


@dataclass
class TinyModel:
    """A random-initialised tiny LLM of the backbone's real transformers class with a tiny BPE tokenizer."""

    n_layers: int = 2
    """Decoder layers."""
    hidden: int = 64
    """Hidden size (heads = hidden // 16)."""
    vocab_size: int = 1000
    """Tokenizer vocabulary (step time is dominated by the vocabulary; keep it small)."""
    init_std: float = 0.02
    """``initializer_range`` of the random weights. With tied embeddings and the default 0.02 the logits of a frozen
    tiny model can hardly leave the uniform distribution; ~0.2 lets a projector-only stage learn."""


@dataclass
class ModalitySettings:
    """One modality branch: encoder -> projector -> placeholder tokens."""

    encoder: str = "precomputed"
    """Encoder registry name; ``precomputed`` reads cached per-sample features."""
    feature_dim: int = 1024
    """Width of the features (1024 for Emotion-LLaMA's FaceMAE / VideoMAE / HuBERT-large .npy files)."""
    feature_dir: str | None = None
    """Sub-folder of ``data.feature_root`` holding ``<name>.npy`` (``mae_340_UTT``, ``maeV_399_UTT``, ``HL-UTT``)."""
    encoder_path: str | None = None
    """Local weights of a live encoder; never downloaded."""
    encoder_options: dict[str, Any] = field(default_factory=dict)
    """Encoder-specific settings passed to its builder."""
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    """Projector kind (``identity``, ``linear``, ``mlp2x_gelu``, ``attn_pool``, ``affectgpt_attn_pool``,
    ``qformer``, ``emotion_llama_frame``) and its options."""
    media: dict[str, Any] = field(default_factory=dict)
    """Media settings a live encoder needs on raw clips (``frame_policy``, ``face_size``...; ``emollm analyze``)."""
    fuse: PreFusionConfig | None = None
    """Only for the fused slot ``multi``: ``{sources: [face, audio], kind: attention}``, AffectGPT's pre-LLM fusion of
    those branches' encoder features (no feature_dir, no encoder; ``feature_dim`` is the common width)."""


def _emotion_llama_branches() -> dict[str, ModalitySettings]:
    return {m: ModalitySettings(feature_dir=d) for m, d in EMOTION_LLAMA_FEATURE_DIRS.items()}


@dataclass
class ModelConfig:
    """Which LLM, which modality branches, and how the LLM is loaded."""

    backbone: str = "smollm2"
    """Registry name (``emollm backbones``)."""
    llm_path: str | None = None
    """Local HF folder or ``.gguf`` of the LLM; None uses the backbone's embedded weights (smollm2 only)."""
    tiny: TinyModel | None = None
    """Build a tiny random-initialised LLM of the backbone's class instead of loading weights (CI, debugging)."""
    modalities: dict[str, ModalitySettings] = field(default_factory=_emotion_llama_branches)
    """Modality -> branch; keys from audio, face, video, frame (one image of the clip for a global visual encoder, e.g.
    ``eva_vitg``). Default: Emotion-LLaMA's three 1024-d feature branches."""
    modality_type_embeddings: bool = True
    """Add a learned per-modality type embedding to every modality token."""
    quantization: Literal["4bit", "8bit"] | None = None
    """Load the LLM in 4 bit (QLoRA, nf4 + double quant; fits 7-8B training on a 24 GB GPU) or 8 bit."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """LLM dtype; ``auto`` is the backbone's default on a GPU and float32 on CPU."""


@dataclass
class LoggingConfig:
    """Where progress goes."""

    tensorboard: bool | Literal["auto"] = "auto"
    """TensorBoard event files in ``output_dir/tensorboard``; ``auto`` = when the ``tensorboard`` package is
    installed."""
    wandb: bool = False
    """Log to Weights & Biases (needs ``pip install wandb`` and a login)."""
    wandb_project: str = "emollm"
    """W&B project name."""
    progress: bool = True
    """tqdm progress bar with loss, learning rate and tokens per second."""
    log_every: int = 1
    """Steps between progress-bar / TensorBoard updates (``train_log.jsonl`` gets every step)."""


@dataclass
class GRPOConfig:
    """``train.stage: grpo``: group-relative policy optimisation with verifiable rewards (``train/grpo.py``)."""

    group_size: int = 4
    """Completions sampled per prompt (G); rewards are normalised within each group."""
    beta: float = 0.04
    """Weight of the KL penalty to the reference (the policy with its LoRA adapter disabled); 0 = none."""
    epsilon: float = 0.2
    """PPO clip range of the probability ratio to the sampling-time policy."""
    rewards: dict[str, float] = field(default_factory=lambda: {"accuracy": 1.0, "format": 0.5})
    """Reward name (``emollm.scoring.rewards.REWARDS``: accuracy, format, length, ov_f1) -> weight."""
    max_completion_tokens: int = 64
    """New tokens sampled per completion."""
    temperature: float = 1.0
    """Sampling temperature."""
    top_p: float = 1.0
    """Nucleus sampling mass (1 = off)."""
    iterations: int = 1
    """Optimizer updates per batch of completions (GRPO's mu); 1 = the sampling policy is the updated one."""
    length_budget: int = 48
    """Words a completion may use before the ``length`` reward penalises it."""
    std_eps: float = 1e-4
    """Added to the group's reward standard deviation when normalising."""


@dataclass
class TrainConfig:
    """The optimisation: stage, trainable parts, learning rates, schedule, checkpoints, evaluation."""

    stage: Literal["pretrain", "instruct", "finetune", "grpo"] = "pretrain"
    """``pretrain``: align the projectors (LLM frozen); ``instruct`` / ``finetune``: projectors + LoRA; ``grpo``:
    reinforcement learning with rewards (projectors + LoRA, settings in ``grpo``). Sets the default of
    ``trainable``."""
    trainable: TrainableSpec | None = None
    """Which parts train; None takes the stage's preset (``train/stages.py``)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA settings (used when ``trainable.llm`` is ``lora``)."""
    init_from: str | None = None
    """A checkpoint (normally stage 1's ``final``) whose projectors seed this run."""
    init_adapter: bool = True
    """Also take ``init_from``'s LoRA adapter when it has one."""
    projector_lr: float = 1e-3
    """Learning rate of projectors / type embeddings / fusion (LLaVA stage 1: 1e-3; ``mm_projector_lr`` 2e-5)."""
    lora_lr: float = 2e-4
    """Learning rate of the LoRA adapters."""
    llm_lr: float = 2e-5
    """Learning rate of LLM weights trained in full (``trainable.llm: full`` or ``trainable.extra``)."""
    encoder_lr: float = 1e-5
    """Learning rate of trainable live encoders."""
    weight_decay: float = 0.0
    """AdamW weight decay (never on biases, norms and 1-D parameters)."""
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """LR decay after warmup."""
    warmup_steps: int = 0
    """Linear warmup steps; 0 uses ``warmup_ratio``."""
    warmup_ratio: float = 0.03
    """Warmup as a fraction of the total steps (when ``warmup_steps`` is 0)."""
    min_lr_ratio: float = 0.0
    """Final LR as a fraction of the peak (Emotion-LLaMA: 0.1)."""
    epochs: int = 1
    """Passes over the training data."""
    max_steps: int | None = None
    """Optimizer steps; overrides ``epochs`` when set."""
    batch_size: int = 4
    """Samples per device per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (global batch = batch_size x grad_accum x processes)."""
    max_grad_norm: float | None = 1.0
    """Gradient clipping; None disables it."""
    gradient_checkpointing: bool = False
    """Recompute LLM activations in the backward pass (less memory, ~30% slower)."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """bf16/fp16 autocast over fp32 weights (``no``: none). ``auto`` = bf16 on a GPU that supports it and on a CPU
    with native bf16 (AVX512-BF16 or AMX; a SmolLM2 LoRA step 2.5x faster), otherwise ``no``; the choice and its
    reason are in the setup record of ``train_log.jsonl``. fp16 needs a CUDA GPU."""
    seed: int = 42
    """Seed of model init, data order, task choice and dropout."""
    output_dir: str = "runs/emollm"
    """Run folder: ``checkpoints/step-N``, ``final``, ``best``, ``train_log.jsonl``, ``tensorboard/``."""
    save_every: int = 0
    """Steps between resumable checkpoints (0: only at the end)."""
    keep_last: int = 2
    """Resumable checkpoints to keep."""
    resume: str = "auto"
    """``auto``: continue from the newest checkpoint in ``output_dir`` if any; ``never``; or a checkpoint path."""
    eval_every: int = 0
    """Steps between validations (0: only at the end). Validation needs ``data.val`` or ``data.val_fraction``."""
    eval_max_samples: int = 256
    """Validation samples used (the first N of the split)."""
    eval_generate_tokens: int = 16
    """New tokens generated per sample for the accuracy metric."""
    best_metric: Literal["val_loss", "val_accuracy"] = "val_loss"
    """Metric that picks the ``best`` checkpoint (on the validation split only)."""
    threads: int | None = None
    """torch CPU threads (default: ``OMP_NUM_THREADS`` or torch's choice)."""
    release_memory: bool = False
    """CPU runs on Linux: return freed activation memory to the OS (glibc mmap threshold fixed at 1 MiB), so peak RSS
    follows live memory instead of glibc's heap high-water mark (SmolLM2 LoRA 4 x 512 tokens with gradient
    checkpointing: 2.0 instead of 4.7 GB) at the price of page faults (~50% longer CPU steps there)."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Progress bar, TensorBoard, W&B."""
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    """Settings of ``stage: grpo``."""


@dataclass
class RunConfig:
    """A training run: model, data, train."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The model to build."""
    data: DataConfig = field(default_factory=DataConfig)
    """The data and prompts."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The optimisation."""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON friendly) of the resolved config."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RunConfig:
        """Build from a nested dict; raises ``ConfigError`` naming the first bad key."""
        return typed_config.convert(RunConfig, data or {}, "", error=ConfigError, merged=_MERGED_DICTS)


# Dict fields whose user value is merged into the default instead of replacing it.
_MERGED_DICTS = {("DataConfig", "instructions"), ("DataConfig", "answers")}


# ============================================================================================ YAML + overrides


def apply_overrides(data: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML: ``null``, ``true``, ``[a, b]``) to a raw dict."""
    return typed_config.apply_overrides(data, overrides, error=ConfigError, example="train.lora.r=8")


def load_config(path: str | os.PathLike | None, overrides: typing.Sequence[str] = ()) -> RunConfig:
    """Read a YAML run config (or start from the defaults when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = typed_config.load_yaml_mapping(path, error=ConfigError, expected=" with model/data/train")
    return RunConfig.from_dict(apply_overrides(data, overrides))


# ================================================================================================= validation


@dataclass
class ValidationReport:
    """Problems found by ``validate``: errors stop a run, warnings are printed."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_if_errors(self) -> None:
        if len(self.errors) == 1:
            raise ConfigError(f"invalid config: {self.errors[0]}")
        if self.errors:
            raise ConfigError("invalid config:\n  " + "\n  ".join(self.errors))


def _format_fields(template: str) -> set[str]:
    try:
        return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError as e:
        raise ValueError(f"bad template {template!r}: {e}") from None


def _check_template(
    report: ValidationReport, key: str, template: str, allowed: set[str], required: frozenset[str] = frozenset()
) -> None:
    try:
        names = _format_fields(template)
    except ValueError as e:
        report.errors.append(f"{key}: {e}")
        return
    bad = names - allowed
    if bad:
        report.errors.append(
            f"{key}: unknown placeholder(s) {sorted(bad)} in {template!r}; allowed: {', '.join(sorted(allowed))}"
        )
    for r in sorted(required - names):
        report.errors.append(f"{key}: {template!r} must contain {{{r}}}")


def validate(cfg: RunConfig, *, check_paths: bool = False) -> ValidationReport:
    """Cross-field checks that need no model.

    ``check_paths`` also checks that input files exist and, when the config is otherwise valid, opens the data they
    name (``emollm.data.datasets.check_data``): every record of the data files (UTF-8, JSON, a name, the label set),
    the transcripts, the auxiliary files and the feature files of the first rows (shape, width, dtype, NaN)."""
    from emollm.backbones import get_backbone, list_backbones

    rep = ValidationReport()
    err, warn = rep.errors.append, rep.warnings.append
    m, d, t = cfg.model, cfg.data, cfg.train

    # ---- model
    spec = None
    if m.backbone not in list_backbones():
        err(
            f"model.backbone: unknown backbone {m.backbone!r}{_suggest(m.backbone, list_backbones())}; "
            f"registered: {', '.join(list_backbones())}"
        )
    else:
        spec = get_backbone(m.backbone)
    if m.tiny is not None:
        if m.llm_path is not None:
            err("model.tiny: a tiny random model and model.llm_path exclude each other; set one of them to null")
        if m.quantization is not None:
            err("model.quantization: needs real weights; a tiny random model (model.tiny) cannot be quantized")
        for k in ("n_layers", "hidden", "vocab_size"):
            if getattr(m.tiny, k) < 1:
                err(f"model.tiny.{k}: must be >= 1, got {getattr(m.tiny, k)}")
        if m.tiny.hidden % 16:
            err(f"model.tiny.hidden: must be a multiple of 16 (heads = hidden // 16), got {m.tiny.hidden}")
    elif spec is not None and spec.embedded is None and m.llm_path is None:
        err(
            f"model.llm_path: backbone {m.backbone!r} ({spec.hf_id}) needs local weights; set model.llm_path to the "
            "downloaded folder or .gguf (emollm never downloads), or use model.tiny for a random debug model"
        )
    if check_paths and m.llm_path is not None and not Path(m.llm_path).expanduser().exists():
        err(f"model.llm_path: {m.llm_path} does not exist")
    if not m.modalities:
        warn("model.modalities: empty; the model is a text-only LLM")
    for name, mod in m.modalities.items():
        key = f"model.modalities.{name}"
        if name not in MODALITIES:
            err(f"{key}: unknown modality {name!r}{_suggest(name, MODALITIES)}; allowed: {', '.join(MODALITIES)}")
        if mod.feature_dim < 1:
            err(f"{key}.feature_dim: must be >= 1, got {mod.feature_dim}")
        try:
            fused = check_fused_slot(name, mod, m.modalities, key)
        except ValueError as e:
            err(str(e))
            fused = mod.fuse is not None
        if fused:
            if mod.feature_dir:
                err(f"{key}.feature_dir: a fused slot has no features of its own; remove feature_dir")
        elif mod.encoder != "precomputed":
            from emollm.encoders import list_encoders  # imports torch; only for live encoders

            if mod.encoder not in list_encoders():
                err(
                    f"{key}.encoder: unknown encoder {mod.encoder!r}{_suggest(mod.encoder, list_encoders())}; "
                    f"known: {', '.join(list_encoders())}"
                )
        elif d.format != "synthetic" and not mod.feature_dir:
            err(
                f"{key}.feature_dir: a precomputed branch needs the sub-folder of data.feature_root holding its "
                f"<name>.npy files (Emotion-LLaMA: {EMOTION_LLAMA_FEATURE_DIRS.get(name, '...')})"
            )
        kind = mod.projector.kind
        if kind not in _PROJECTOR_KINDS:
            err(
                f"{key}.projector.kind: unknown projector {kind!r}{_suggest(kind, _PROJECTOR_KINDS)}; "
                f"allowed: {', '.join(_PROJECTOR_KINDS)}"
            )
        if mod.projector.merge < 1 or mod.projector.num_queries < 1:
            err(f"{key}.projector: merge and num_queries must be >= 1")

    # ---- data
    if d.format == "synthetic":
        if d.train is not None:
            warn("data.train: ignored with data.format=synthetic")
        if d.synthetic.num_train < 1:
            err(f"data.synthetic.num_train: must be >= 1, got {d.synthetic.num_train}")
        if d.synthetic.num_val < 0 or d.synthetic.subtitle_words < 0:
            err("data.synthetic.num_val and subtitle_words must be >= 0")
        if len(d.labels) < 2:
            err("data.labels: synthetic data needs at least two labels")
    else:
        if not d.train:
            err(f"data.train: required for data.format={d.format!r} (the training file)")
        elif check_paths and not Path(d.train).exists():
            err(f"data.train: {d.train} does not exist")
        if any(mod.encoder == "precomputed" for mod in m.modalities.values()) and not d.feature_root:
            err("data.feature_root: required for precomputed feature branches (folder holding the feature sub-folders)")
        elif check_paths and d.feature_root:
            for name, mod in m.modalities.items():
                if mod.feature_dir and not (Path(d.feature_root) / mod.feature_dir).is_dir():
                    err(
                        f"model.modalities.{name}.feature_dir: {Path(d.feature_root) / mod.feature_dir} is not a folder"
                    )
    if d.val is not None:
        if d.format == "synthetic":
            warn("data.val: ignored with data.format=synthetic (a separate synthetic split is generated)")
        if looks_like_test_split(d.val):
            err(
                f"data.val: {d.val!r} looks like a test split; the best checkpoint must be chosen on a validation "
                "split, never on the test set. Use a held-out part of the training data (data.val_fraction) or a "
                "real validation file (rename it if it is not a test split)"
            )
        if d.val_fraction:
            err("data.val_fraction: set either data.val or data.val_fraction, not both")
        if check_paths and d.format != "synthetic" and not Path(d.val).exists():
            err(f"data.val: {d.val} does not exist")
    if not 0.0 <= d.val_fraction < 0.5:
        err(f"data.val_fraction: must be in [0, 0.5), got {d.val_fraction}")
    if d.transcripts and check_paths and not Path(d.transcripts).is_file():
        err(f"data.transcripts: {d.transcripts} does not exist")
    if not d.labels:
        err(
            "data.labels: empty; list the emotion labels of the data (e.g. [neutral, angry, happy, sad, worried, "
            "surprise]): the emotion prompt names them and a sample whose label is not listed is skipped"
        )
    elif len(set(d.labels)) != len(d.labels) or any(not lab or lab != lab.strip() for lab in d.labels):
        err(f"data.labels: labels must be unique, non-empty words, got {d.labels}")
    if not d.tasks:
        err(f"data.tasks: the task pool is empty; use some of {', '.join(TASKS)}")
    for task, weight in d.tasks.items():
        if task not in TASKS:
            err(f"data.tasks.{task}: unknown task{_suggest(task, TASKS)}; allowed: {', '.join(TASKS)}")
        if weight < 0:
            err(f"data.tasks.{task}: weight must be >= 0, got {weight}")
    if d.tasks and sum(d.tasks.values()) <= 0:
        err("data.tasks: all weights are 0")
    for task in d.val_tasks:
        if task not in TASKS:
            err(f"data.val_tasks: unknown task {task!r}{_suggest(task, TASKS)}; allowed: {', '.join(TASKS)}")
    if d.format == "ncev" and set(d.tasks) - {"emotion"}:
        err(
            f"data.tasks: {sorted(set(d.tasks) - {'emotion'})} need text targets, which ncev label lists do not have; "
            "use data.format=merr_json or jsonl, or tasks {emotion: 1}"
        )
    for task in set(d.tasks) | set(d.val_tasks):
        if task not in TASKS:
            continue
        pool = d.instructions.get(task)
        if not pool:
            err(f"data.instructions.{task}: task {task!r} is in the pool but has no instruction templates")
        for i, tmpl in enumerate(pool or []):
            _check_template(rep, f"data.instructions.{task}[{i}]", tmpl, _INSTRUCTION_FIELDS)
        if task not in d.answers:
            err(f"data.answers.{task}: task {task!r} has no answer template (e.g. '{{label}}' or '{{target}}')")
        else:
            _check_template(rep, f"data.answers.{task}", d.answers[task], _ANSWER_FIELDS)
    for task in set(d.instructions) - set(TASKS):
        err(f"data.instructions.{task}: unknown task{_suggest(task, TASKS)}; allowed: {', '.join(TASKS)}")
    _check_template(rep, "data.prompt_template", d.prompt_template, _PROMPT_FIELDS, frozenset({"instruction"}))
    _check_template(rep, "data.subtitle_template", d.subtitle_template, _SUBTITLE_FIELDS, frozenset({"text"}))
    if "{media}" not in d.prompt_template.replace(" ", "") and m.modalities:
        err("data.prompt_template: must contain {media}, where the modality tokens go")
    for i, aux in enumerate(d.aux):
        key = f"data.aux[{i}]"
        if not aux.path:
            err(f"{key}.path: required (a JSON/JSONL/CSV/parquet file of text,label rows)")
        elif check_paths and not Path(aux.path).is_file():
            err(f"{key}.path: {aux.path} does not exist")
        if aux.ratio <= 0:
            err(f"{key}.ratio: must be > 0, got {aux.ratio}")
        bad = sorted(set(aux.label_map.values()) - set(d.labels))
        if bad:
            err(f"{key}.label_map: maps to {bad}, which are not in data.labels {d.labels}")
        if d.streaming:
            err(f"{key}: auxiliary data cannot be mixed into a streamed data set; load the main set (streaming=false)")
    if not 0.0 <= d.modality_dropout < 1.0:
        err(f"data.modality_dropout: must be in [0, 1), got {d.modality_dropout}")
    if d.modality_dropout and len(m.modalities) < 2:
        warn("data.modality_dropout: has no effect with fewer than two modalities (one is always kept)")
    if d.max_length < 16:
        err(f"data.max_length: must be >= 16, got {d.max_length}")
    if d.num_workers < 0:
        err(f"data.num_workers: must be >= 0, got {d.num_workers}")
    if d.streaming:
        if d.format != "jsonl":
            err(f"data.streaming: only for data.format=jsonl (got {d.format!r}); MERR and ncev files are read whole")
        if t.max_steps is None:
            err("train.max_steps: a streamed data set has no known length; set train.max_steps")
        if d.balance == "sampler":
            err("data.balance: 'sampler' needs the whole data set's labels; with streaming use 'loss' or 'none'")
        if d.group_by_length:
            err("data.group_by_length: needs every sample's length; set it to false with data.streaming")
        if d.val_fraction:
            err("data.val_fraction: cannot hold out part of a streamed data set; give data.val")
        if d.shuffle_buffer < 1:
            err(f"data.shuffle_buffer: must be >= 1, got {d.shuffle_buffer}")

    # ---- train
    trainable = t.trainable or STAGES.get(t.stage, STAGES["instruct"])
    if trainable.llm == "full" and m.quantization == "4bit":
        err("train.trainable.llm: 'full' is impossible on a 4-bit model; use 'lora' (QLoRA)")
    if m.quantization is not None and trainable.llm == "frozen" and t.stage == "pretrain":
        warn("model.quantization: a quantized LLM in a projector-only stage only saves memory; results differ slightly")
    if not (trainable.projectors or trainable.encoders or trainable.llm != "frozen" or trainable.extra):
        err("train.trainable: nothing would train; enable projectors, encoders, llm or extra")
    if t.stage in ("instruct", "finetune") and t.init_from is None:
        warn(
            f"train.init_from: stage {t.stage!r} normally starts from stage-1 projectors; without init_from they are "
            "trained from scratch (REFERENCE.md §1.2: backbone swaps failed without an alignment stage)"
        )
    if t.stage == "grpo":
        _validate_grpo(t, trainable, err)
    if t.init_from is not None and check_paths and not (Path(t.init_from) / "checkpoint.json").is_file():
        err(f"train.init_from: {t.init_from} is not an emollm checkpoint folder (no checkpoint.json)")
    for k in ("projector_lr", "lora_lr", "llm_lr", "encoder_lr"):
        if getattr(t, k) <= 0:
            err(f"train.{k}: must be > 0, got {getattr(t, k)}")
    if t.weight_decay < 0:
        err(f"train.weight_decay: must be >= 0, got {t.weight_decay}")
    if len(t.adam_betas) != 2 or not all(0 <= b < 1 for b in t.adam_betas):
        err(f"train.adam_betas: two numbers in [0, 1), got {t.adam_betas}")
    if t.warmup_steps < 0 or not 0.0 <= t.warmup_ratio < 1.0:
        err("train.warmup_steps must be >= 0 and train.warmup_ratio in [0, 1)")
    if not 0.0 <= t.min_lr_ratio <= 1.0:
        err(f"train.min_lr_ratio: must be in [0, 1], got {t.min_lr_ratio}")
    if t.epochs < 1:
        err(f"train.epochs: must be >= 1, got {t.epochs}")
    if t.max_steps is not None and t.max_steps < 1:
        err(f"train.max_steps: must be >= 1 (or null), got {t.max_steps}")
    for k in ("batch_size", "grad_accum", "keep_last", "eval_max_samples", "eval_generate_tokens"):
        if getattr(t, k) < 1:
            err(f"train.{k}: must be >= 1, got {getattr(t, k)}")
    for k in ("save_every", "eval_every"):
        if getattr(t, k) < 0:
            err(f"train.{k}: must be >= 0 (0 = only at the end), got {getattr(t, k)}")
    if t.max_grad_norm is not None and t.max_grad_norm <= 0:
        err(f"train.max_grad_norm: must be > 0 or null, got {t.max_grad_norm}")
    if t.best_metric == "val_accuracy" and "emotion" not in d.val_tasks:
        err("train.best_metric: 'val_accuracy' needs 'emotion' in data.val_tasks")
    has_val = (d.format == "synthetic" and d.synthetic.num_val > 0) or d.val is not None or d.val_fraction > 0
    if not has_val:
        warn(
            "data.val: no validation split; no validation metric and no 'best' checkpoint (set data.val or "
            "data.val_fraction)"
        )
    if t.resume not in ("auto", "never") and check_paths and not Path(t.resume).is_dir():
        err(f"train.resume: {t.resume} is not a checkpoint folder; use 'auto', 'never' or a checkpoints/step-N path")
    if t.threads is not None and t.threads < 1:
        err(f"train.threads: must be >= 1, got {t.threads}")
    if t.logging.log_every < 1:
        err(f"train.logging.log_every: must be >= 1, got {t.logging.log_every}")
    if t.logging.tensorboard is True and importlib.util.find_spec("tensorboard") is None:
        err(
            "train.logging.tensorboard: the tensorboard package is not installed (pip install tensorboard), or set "
            "it to 'auto' / false"
        )
    if t.logging.wandb and importlib.util.find_spec("wandb") is None:
        err("train.logging.wandb: the wandb package is not installed (pip install wandb), or set it to false")
    if check_paths and d.format != "synthetic" and rep.ok:
        # Open what the paths name (records, labels, the first rows' feature files), so that validate refuses what
        # train would. numpy only: still no torch.
        from emollm.data.datasets import check_data

        check_data(cfg.data, cfg.model.modalities, rep.errors, rep.warnings)
    return rep


def _validate_grpo(t: TrainConfig, trainable: TrainableSpec, err: typing.Callable[[str], None]) -> None:
    from emollm.scoring.rewards import list_rewards

    g = t.grpo
    if g.group_size < 2:
        err(f"train.grpo.group_size: must be >= 2 (rewards are normalised within a group), got {g.group_size}")
    if g.beta < 0:
        err(f"train.grpo.beta: must be >= 0, got {g.beta}")
    if g.beta > 0 and trainable.llm != "lora":
        err(
            "train.grpo.beta: the KL reference is the policy with its LoRA adapter disabled, so it needs "
            f"trainable.llm=lora (got {trainable.llm!r}); or set beta=0"
        )
    if not 0 < g.epsilon < 1:
        err(f"train.grpo.epsilon: must be in (0, 1), got {g.epsilon}")
    if not g.rewards:
        err(f"train.grpo.rewards: empty; weight some of {', '.join(list_rewards())}")
    for name in g.rewards:
        if name not in list_rewards():
            err(f"train.grpo.rewards.{name}: unknown reward{_suggest(name, list_rewards())}; registered: "
                f"{', '.join(list_rewards())}")  # fmt: skip
    for k in ("max_completion_tokens", "iterations", "length_budget"):
        if getattr(g, k) < 1:
            err(f"train.grpo.{k}: must be >= 1, got {getattr(g, k)}")
    if g.temperature <= 0 or not 0 < g.top_p <= 1:
        err(f"train.grpo: temperature must be > 0 and top_p in (0, 1], got {g.temperature}, {g.top_p}")
    if t.gradient_checkpointing:
        err("train.gradient_checkpointing: not supported with stage grpo (generation needs the KV cache)")


# ===================================================================================================== schema docs


def field_docs(cls) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal under each field)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def describe(cls=RunConfig, prefix: str = "") -> list[str]:
    """One line per key: ``dotted.key (type, default): doc``, recursing into nested sections."""
    lines: list[str] = []
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        key = _join(prefix, f.name)
        tp = hints[f.name]
        union = typing.get_origin(tp) in (typing.Union, types.UnionType)
        inner = (
            [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
            if union
            else ([tp] if dataclasses.is_dataclass(tp) else [])
        )
        dict_of = typing.get_args(tp)[1] if typing.get_origin(tp) is dict else None
        list_of = typing.get_args(tp)[0] if typing.get_origin(tp) is list else None
        if inner:
            lines.append(f"{key}: {docs.get(f.name, '')}")
            lines += describe(inner[0], key)
        elif dataclasses.is_dataclass(dict_of) or dataclasses.is_dataclass(list_of):
            sub = dict_of or list_of
            lines.append(f"{key} ({_type_name(tp)}): {docs.get(f.name, '')}")
            lines += describe(sub, key + (".<name>" if dict_of else "[i]"))
        else:
            default = getattr(defaults, f.name)
            shown = repr(default) if not isinstance(default, (dict, list)) or len(repr(default)) < 60 else "..."
            lines.append(f"{key} ({_type_name(tp)}, default {shown}): {docs.get(f.name, '')}")
    return lines


# ========================================================================================================= CLI


def validate_main(argv: list[str]) -> int:
    """``emollm validate CONFIG [key=value ...] [--check-paths] [--print] [--schema]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="emollm validate",
        description="Check a training config without building a model: unknown keys, types, allowed values and "
        "cross-field rules. Exit status 0 when valid, 1 otherwise.",
    )
    parser.add_argument("config", nargs="?", help="YAML run config (e.g. configs/pretrain/smollm2.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lora_lr=1e-4")
    parser.add_argument(
        "--check-paths",
        action="store_true",
        help="also check that data/model/feature paths exist and open the data: every record of the data files "
        "(UTF-8, JSON, names, labels) and the feature files of the first rows (shape, width, dtype, NaN)",
    )
    parser.add_argument("--print", dest="print_config", action="store_true", help="print the resolved config as YAML")
    parser.add_argument("--schema", action="store_true", help="print every key with its type, default and meaning")
    args = parser.parse_intermixed_args(argv)
    if args.schema:
        print("\n".join(describe()))
        return 0
    if not args.config:
        parser.error("CONFIG is required (or --schema)")
    try:
        cfg = load_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as e:
        print(f"emollm validate: {e}", file=sys.stderr)
        return 1
    report = validate(cfg, check_paths=args.check_paths)
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    for e in report.errors:
        print(f"error: {e}", file=sys.stderr)
    if args.print_config:
        print(cfg.to_yaml(), end="")
    if report.ok:
        print(f"{args.config}: OK", file=sys.stderr)
        return 0
    return 1
