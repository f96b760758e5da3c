"""Typed config of ``emollm fusion train|eval`` (YAML + dotted ``key=value`` overrides, checked before any work).

Example (``configs/fusion/synthetic_transformer.yaml``)::

    data:
      labels: runs/fusion-synth/labels.csv       # name,label[,speaker][,split]
      features: {audio: runs/fusion-synth/audio, face: runs/fusion-synth/face}
      steps: 8
    split: {by: speaker, folds: 5, fold: 0}
    model: {method: transformer, hidden: 64, modality_dropout: 0.3}
    train: {epochs: 30, batch_size: 32, lr: 0.001, patience: 8}
    out: runs/fusion/synthetic_transformer
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from emollm.utils.typed_config import apply_overrides, bounds, check_fields, convert, load_yaml_mapping

__all__ = [
    "DataConfig",
    "FusionConfig",
    "FusionConfigError",
    "ModelConfig",
    "SplitConfig",
    "TrainConfig",
    "load_config",
]


class FusionConfigError(ValueError):
    """A fusion config is invalid (the message names the key)."""


@dataclass
class DataConfig:
    labels: str | None = None
    """Labels CSV ``name,label[,speaker][,split]`` (or use ``corpus`` + ``root``)."""
    corpus: str | None = None
    """A corpus of ``emollm data list`` (labels and speakers from the corpus reader)."""
    root: str | None = None
    """The corpus' local copy (with ``corpus``)."""
    corpus_options: dict[str, str] = field(default_factory=dict)
    """Reader options (IEMOCAP: ``{classes: "4"}``)."""
    features: dict[str, str] = field(default_factory=dict)
    """Modality (audio, face, video, text) -> feature cache folder of ``<name>.npy``."""
    steps: int = field(default=16, metadata=bounds(ge=1))
    """Time steps every sequence is aligned to."""
    classes: list[str] | None = None
    """Class order (default: the sorted labels); clips of other labels are left out, counted in the log."""
    missing: Literal["error", "zero"] = "error"
    """A clip without a feature file (and no ``_missing`` marker): refuse, or treat the modality as absent."""

    def __post_init__(self) -> None:
        check_fields(self, "data")
        if (self.labels is None) == (self.corpus is None):
            raise ValueError("data: give exactly one of labels (a CSV) or corpus (+ root)")
        if self.corpus is not None and self.root is None:
            raise ValueError("data.root: the corpus' local folder is required with data.corpus")
        if not self.features:
            raise ValueError("data.features: name at least one modality's feature folder")


@dataclass
class SplitConfig:
    by: Literal["speaker", "published", "column", "file"] = "speaker"
    """speaker: k speaker-independent folds; published: the corpus' folds; column: the labels CSV's split column;
    file: a fold file of ``emollm data split --out``."""
    folds: int = field(default=5, metadata=bounds(ge=2))
    fold: int = field(default=0, metadata=bounds(ge=0))
    """Which fold to train/evaluate (0-based)."""
    seed: int = 0
    val: bool = True
    """Hold out a validation split (the next fold's speakers) for early stopping and model selection."""
    file: str | None = None

    def __post_init__(self) -> None:
        check_fields(self, "split")
        if self.by == "file" and not self.file:
            raise ValueError("split.file: required with split.by: file")


@dataclass
class ModelConfig:
    method: str = "avgpool_hidden"
    """A name of ``emollm fusion list``."""
    modalities: list[str] | None = None
    """Which of data.features to use, in order (default: all; unimodal: exactly one)."""
    hidden: int = field(default=64, metadata=bounds(ge=1))
    """Width of the fusion layers."""
    dropout: float = field(default=0.2, metadata=bounds(ge=0, lt=1))
    modality_dropout: float = field(default=0.0, metadata=bounds(ge=0, lt=1))
    """Training-time probability of hiding each modality of a clip (robustness to missing modalities)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Method options (pool, head_hidden, heads, layers)."""

    def __post_init__(self) -> None:
        from emollm.fusion.registry import FUSION_METHODS

        check_fields(self, "model")
        if self.method not in FUSION_METHODS:
            raise ValueError(f"model.method: unknown method {self.method!r}; known: {', '.join(FUSION_METHODS)}")


@dataclass
class TrainConfig:
    epochs: int = field(default=50, metadata=bounds(ge=1))
    batch_size: int = field(default=32, metadata=bounds(ge=1))
    lr: float = field(default=1e-3, metadata=bounds(gt=0))
    weight_decay: float = field(default=1e-4, metadata=bounds(ge=0))
    patience: int = field(default=10, metadata=bounds(ge=0))
    """Stop after this many epochs without a better validation score (0: never stop early)."""
    select: Literal["uar", "accuracy", "weighted_f1", "loss"] = "uar"
    """Validation metric that picks the best epoch (never the test split)."""
    seed: int = 0
    threads: int = field(default=1, metadata=bounds(ge=1))

    def __post_init__(self) -> None:
        check_fields(self, "train")


@dataclass
class FusionConfig:
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = "runs/fusion"
    """Output folder: weights, checkpoint, log.jsonl, reports, predictions."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> str:
        """sha256 of everything that changes what a run computes (``train.epochs``/``patience``/``threads`` and
        ``out`` excluded, so a stopped run may be continued for longer)."""
        d = self.to_dict()
        for k in ("epochs", "patience", "threads"):
            d["train"].pop(k)
        d.pop("out")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def load_config(path: str | Path, overrides: list[str] | None = None) -> FusionConfig:
    """Read, override and check a fusion config.

    Raises:
        FusionConfigError: Naming the key and the bad value.
    """
    raw = load_yaml_mapping(path, error=FusionConfigError, expected=" with data/model/split/train/out")
    raw = apply_overrides(raw, overrides or [], error=FusionConfigError, example="model.method=transformer")
    if "data" not in raw:
        raise FusionConfigError(f"{path}: missing the data section (labels or corpus, and features)")
    return convert(FusionConfig, raw, error=FusionConfigError)
