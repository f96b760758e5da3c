"""THE fusion-method registry: name -> builder, defaults and a description (data first, like ``backbones.py``).

Adding a method is one :class:`FusionMethod` entry (the tests parametrize over :func:`list_methods`).

==================  ==========================================================================================
name                method
==================  ==========================================================================================
``unimodal``        one modality (audio, face or text): frame MLP -> mean -> linear
``late``            1: late fusion, the unimodal classifiers' log-probabilities averaged over present modalities
``intermediate``    2: intermediate fusion, penultimate features concatenated per time step, linear head
``avgpool``         3: temporal average pooling of the penultimate features before fusion, linear head
``avgpool_hidden``  4: 3 + a hidden layer with dropout and ELU in the fusion head
``maxpool_hidden``  5: 4 with temporal max pooling
``transformer``     6: cross-modal attention over time-aligned sequences + joint self-attention, modality dropout
``attention``       7: MERBench's attention fusion (audio, face and, where given, text)
==================  ==========================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from emollm.fusion.models import (
    AttentionFusion,
    FusionModel,
    LateFusion,
    PenultimateFusion,
    TransformerFusion,
    UnimodalClassifier,
)

__all__ = ["FUSION_METHODS", "FusionMethod", "build_fusion_model", "get_method", "list_methods"]


@dataclass(frozen=True)
class FusionMethod:
    """One registered method.

    Attributes:
        build: ``build(dims, n_classes, hidden=, dropout=, modality_dropout=, **options) -> FusionModel``.
        description: One line for ``emollm fusion list``.
        defaults: Method options (overridable with ``model.options``).
        number: The method's number in issue 14's list (0: the unimodal baseline).
        min_modalities / max_modalities: How many modalities it takes.
        sequence: Whether it uses the time axis beyond pooling (needs ``steps``).
    """

    build: Callable[..., FusionModel]
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)
    number: int = 0
    min_modalities: int = 2
    max_modalities: int = 8
    sequence: bool = False


FUSION_METHODS: dict[str, FusionMethod] = {
    "unimodal": FusionMethod(UnimodalClassifier, "one modality: frame MLP, temporal mean, linear", {}, 0, 1, 1),
    "late": FusionMethod(LateFusion, "late fusion: unimodal log-probabilities averaged", {}, 1, 2),
    "intermediate": FusionMethod(
        PenultimateFusion, "penultimate features concatenated per step, linear", {"pool": "none"}, 2
    ),
    "avgpool": FusionMethod(PenultimateFusion, "temporal average pooling before fusion, linear", {"pool": "mean"}, 3),
    "avgpool_hidden": FusionMethod(
        PenultimateFusion, "avg pooling + hidden layer (ELU, dropout)", {"pool": "mean", "head_hidden": 64}, 4
    ),
    "maxpool_hidden": FusionMethod(
        PenultimateFusion, "max pooling + hidden layer (ELU, dropout)", {"pool": "max", "head_hidden": 64}, 5
    ),
    "transformer": FusionMethod(
        TransformerFusion,
        "cross-modal attention over aligned sequences, modality dropout",
        {"heads": 4, "layers": 1},
        6,
        sequence=True,
    ),
    "attention": FusionMethod(AttentionFusion, "MERBench attention fusion (audio, face, text)", {}, 7),
}
"""Every fusion method, by name."""


def list_methods() -> list[str]:
    return list(FUSION_METHODS)


def get_method(name: str) -> FusionMethod:
    try:
        return FUSION_METHODS[name]
    except KeyError:
        raise ValueError(f"model.method: unknown fusion method {name!r}; known: {', '.join(FUSION_METHODS)}") from None


def build_fusion_model(
    method: str,
    dims: dict[str, int],
    n_classes: int,
    *,
    hidden: int = 64,
    dropout: float = 0.2,
    modality_dropout: float = 0.0,
    steps: int = 16,
    **options: Any,
) -> FusionModel:
    """Build method ``method`` for modalities ``dims`` (name -> width, in order) and ``n_classes`` classes.

    Raises:
        ValueError: Unknown method, a modality count the method does not take, or an unknown option.
    """
    spec = get_method(method)
    if not spec.min_modalities <= len(dims) <= spec.max_modalities:
        want = str(spec.min_modalities) if spec.min_modalities == spec.max_modalities else f">= {spec.min_modalities}"
        raise ValueError(f"model.modalities: {method} takes {want} modalities, got {list(dims)}")
    kwargs = {**spec.defaults, **options}
    if spec.sequence:
        kwargs["steps"] = steps
    try:
        return spec.build(dims, n_classes, hidden=hidden, dropout=dropout, modality_dropout=modality_dropout, **kwargs)
    except TypeError as e:
        raise ValueError(f"model.options: {method} does not take {sorted(options)} ({e})") from None
