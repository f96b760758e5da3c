"""The ``data:`` section of a run config (torch-free dataclasses with attribute docstrings): which records, label
set, tasks, prompts and auxiliary text a training run reads. ``emollm.runconfig`` composes it into ``RunConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from emollm.labels import EMOTION_LLAMA_LABEL_ORDER
from emollm.model.prompts import DEFAULT_ANSWERS, DEFAULT_INSTRUCTIONS

__all__ = ["AuxTextSource", "DataConfig", "SyntheticSettings"]


@dataclass
class SyntheticSettings:
    """``data.format: synthetic``: class-dependent random features + templated targets (no files needed)."""

    num_train: int = 256
    """Training samples."""
    num_val: int = 32
    """Validation samples (a different seed: never the training samples); 0 = no validation."""
    noise: float = 0.5
    """Noise around each class prototype (prototypes have unit scale)."""
    seed: int = 0
    """Seed of the prototypes (keep it equal across stages, so stage 2 sees the same classes)."""
    subtitle_words: int = 0
    """Extra filler words in each subtitle (to benchmark long sequences)."""


@dataclass
class AuxTextSource:
    """A local text-emotion data set (text, label) mixed into training as text-only ``emotion`` samples."""

    path: str = ""
    """A JSON / JSONL / CSV / parquet file (e.g. GoEmotions or EmpatheticDialogues exported by the user)."""
    ratio: float = 0.1
    """Aux samples per epoch, as a fraction of the main training set's size."""
    text_field: str = "text"
    """Column holding the text."""
    label_field: str = "label"
    """Column holding the label."""
    label_map: dict[str, str] = field(default_factory=dict)
    """Aux label -> one of ``data.labels`` (e.g. ``joy: happy``, or ``"17": happy`` for numeric ids); rows whose
    label maps to no known label are dropped."""


@dataclass
class DataConfig:
    """Where samples come from and how each becomes a conversation."""

    format: Literal["merr_json", "ncev", "jsonl", "synthetic"] = "synthetic"
    """``merr_json``: Emotion-LLaMA ``MERR_{coarse,fine}_grained.json``; ``ncev``: whitespace ``N [C] E [V]`` lists;
    ``jsonl``: our records (``.jsonl``/``.json``/``.csv``/``.parquet`` with ``name``, ``label``, optional ``text``,
    ``reason``, ``caption``) read through Hugging Face ``datasets``; ``synthetic``: generated, for smoke tests."""
    train: str | None = None
    """Training file (unused for ``synthetic``)."""
    val: str | None = None
    """Validation file in the same format, used for the ``best`` checkpoint. Never a test split."""
    val_fraction: float = 0.0
    """Instead of ``val``: hold out this fraction of ``train`` (deterministic, by sample name)."""
    feature_root: str | None = None
    """Folder whose sub-folders (``model.modalities.<m>.feature_dir``) hold ``<name>.npy`` features."""
    transcripts: str | None = None
    """``name,sentence`` CSV of subtitles (Emotion-LLaMA's ``transcription_en_all.csv``), joined by name."""
    missing_features: Literal["drop_modality", "drop_sample", "error"] = "drop_modality"
    """A sample without a modality's feature file: train without that modality, skip the sample, or stop."""
    streaming: bool = False
    """Stream ``jsonl`` files instead of loading them (large pseudo-label pools); needs ``train.max_steps``."""
    shuffle_buffer: int = 10000
    """Shuffle buffer of a streamed data set."""
    labels: list[str] = field(default_factory=lambda: list(EMOTION_LLAMA_LABEL_ORDER))
    """Label vocabulary listed in the ``emotion`` prompt."""
    label_order: Literal["listed", "alphabetical", "shuffle"] = "listed"
    """Order of the labels in the prompt: as listed above, alphabetical, or shuffled per sample. It matters: on DFEW
    it moves WAR by up to 21 points (REFERENCE.md §1.8)."""
    tasks: dict[str, float] = field(default_factory=lambda: {"emotion": 1.0})
    """Task pool with sampling weights: ``emotion`` (answer = the label), ``reason`` (answer = the reasoning text,
    ``smp_reason_caption`` or ``caption``), ``caption`` (answer = ``caption``). A sample lacking a task's target is
    given one of the other tasks."""
    val_tasks: list[str] = field(default_factory=lambda: ["emotion"])
    """Tasks of the validation conversations (``emotion`` also gives the accuracy metric)."""
    instructions: dict[str, list[str]] = field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_INSTRUCTIONS.items()}
    )
    """Task -> instruction templates (one is drawn per sample; ``{labels}`` = the label list). Merged into the
    defaults, so overriding one task keeps the others."""
    answers: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ANSWERS))
    """Task -> answer template (``{label}``, ``{target}``). Merged into the defaults."""
    prompt_template: str = "{media} {subtitle}[{task}] {instruction}"
    """User turn: ``{media}`` = modality markers, ``{subtitle}`` = ``subtitle_template`` or nothing, ``{task}`` = the
    task identifier (MiniGPT-v2 style), ``{instruction}``."""
    subtitle_template: str = "The person in video says: {text}. "
    """How a subtitle enters the prompt (omitted when a sample has none)."""
    system_prompt: str | None = None
    """System message; None keeps the chat format's default."""
    aux: list[AuxTextSource] = field(default_factory=list)
    """Auxiliary text-emotion data sets mixed in by ratio."""
    modality_dropout: float = 0.0
    """Per-modality probability of dropping a training sample's feature (at least one modality is kept), so a clip
    without audio or face still works."""
    balance: Literal["none", "sampler", "loss"] = "none"
    """Class-imbalance handling: inverse-frequency weighted sampling, or inverse-frequency loss weights."""
    group_by_length: bool = True
    """Batch samples of similar length together (less padding)."""
    max_length: int = 1024
    """Token limit per sample; longer samples are truncated at the end (never inside modality tokens)."""
    num_workers: int = 0
    """DataLoader worker processes."""
    synthetic: SyntheticSettings = field(default_factory=SyntheticSettings)
    """Settings of ``format: synthetic``."""
