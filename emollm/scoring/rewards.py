"""Reward functions for GRPO (``train.stage: grpo``): a registry of small functions ``fn(completion, sample) -> float``.

Each function scores one sampled completion against what is known of its sample (:class:`RewardSample`); a run
combines them with the weights of ``train.grpo.rewards`` (:func:`combine`), and ``train_log.jsonl`` records the
weighted total as ``reward`` and each function's mean under its own name.

======== ============================================================================================ ==========
name     what it scores                                                                               range
======== ============================================================================================ ==========
accuracy the answer (inside ``<answer>...</answer>`` when present) parses, through                   {0, 1}
         :class:`emollm.labels.LabelParser`, to the gold label; invalid (no or several labels) = 0
format   ``<think>...</think><answer>...</answer>``, nothing else, both non-empty (R1 / R1-Omni)      {0, 1}
length   penalty for words beyond ``sample.length_budget``: 0 up to the budget, -1 at twice it        [-1, 0]
ov_f1    F-score of the answer's open-vocabulary emotion set (:mod:`emollm.scoring.openvocab`) against the   [0, 1]
         sample's reference set (its ``openset``, else ``{label}``)
======== ============================================================================================ ==========

Reward hacking: listing every label is invalid for ``accuracy`` (0) and has precision ``1/len(labels)`` for
``ov_f1``; negated mentions (``"not sad"``) do not count for ``ov_f1``.

Add a reward with ``@register("name")``; no torch here, so ``emollm validate`` checks reward names without it.

Example:
    >>> s = RewardSample(label="happy", labels=("happy", "sad", "neutral"))
    >>> REWARDS["accuracy"]("<think>smiling</think><answer>joyful</answer>", s)
    1.0
    >>> combine("happy sad neutral", s, {"accuracy": 1.0, "ov_f1": 1.0})[0]
    0.5
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from emollm.labels import LabelParser
from emollm.scoring.openvocab import normalize_set, parse_emotions, set_scores

__all__ = ["REWARDS", "RewardFn", "RewardSample", "combine", "extract_answer", "list_rewards", "register"]


@dataclass(frozen=True)
class RewardSample:
    """What a reward may know about a sample.

    Attributes:
        label: The gold label (None when unknown: label rewards give 0).
        labels: The closed label set of the prompt (``data.labels``).
        openset: The reference open-vocabulary emotion words; empty -> ``{label}``.
        length_budget: Words a completion may use before ``length`` penalises it.
    """

    label: str | None
    labels: tuple[str, ...]
    openset: tuple[str, ...] = ()
    length_budget: int = 48


RewardFn = Callable[[str, RewardSample], float]
REWARDS: dict[str, RewardFn] = {}
"""Reward name -> function; ``train.grpo.rewards`` keys must be names here."""


def register(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator adding a reward function to :data:`REWARDS` under ``name`` (names are unique)."""

    def add(fn: RewardFn) -> RewardFn:
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is already registered")
        REWARDS[name] = fn
        return fn

    return add


def list_rewards() -> list[str]:
    """Registered reward names."""
    return sorted(REWARDS)


_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_FORMAT = re.compile(r"\s*<think>(?P<think>.+?)</think>\s*<answer>(?P<answer>.+?)</answer>\s*", re.DOTALL)


def extract_answer(completion: str) -> str:
    """The text inside the last ``<answer>...</answer>``, or the whole completion when there is none."""
    found = _ANSWER.findall(completion or "")
    return found[-1] if found else (completion or "")


@lru_cache(maxsize=16)
def _parser(labels: tuple[str, ...]) -> LabelParser:
    return LabelParser(labels)


@register("accuracy")
def accuracy_reward(completion: str, sample: RewardSample) -> float:
    """1 when the answer names exactly the gold label (synonyms count), else 0 (wrong, none, or several)."""
    if sample.label is None:
        return 0.0
    return float(_parser(sample.labels).parse(extract_answer(completion)).label == sample.label)


@register("format")
def format_reward(completion: str, sample: RewardSample) -> float:
    """1 for ``<think>reasoning</think><answer>answer</answer>`` with both parts non-blank and nothing around."""
    m = _FORMAT.fullmatch(completion or "")
    return float(bool(m and m["think"].strip() and m["answer"].strip()))


@register("length")
def length_reward(completion: str, sample: RewardSample) -> float:
    """0 up to ``length_budget`` words, then linearly down to -1 at twice the budget (DAPO's soft overlong
    penalty, in words)."""
    budget = max(1, sample.length_budget)
    words = len((completion or "").split())
    return 0.0 - min(1.0, max(0, words - budget) / budget)


@register("ov_f1")
def ov_f1_reward(completion: str, sample: RewardSample) -> float:
    """Set F-score of the answer's emotion words against the reference set (negations and synonyms handled)."""
    gold = normalize_set(sample.openset) if sample.openset else normalize_set([sample.label] if sample.label else [])
    if not gold:
        return 0.0
    return set_scores(parse_emotions(extract_answer(completion)), gold)[2]


def combine(completion: str, sample: RewardSample, weights: Mapping[str, float]) -> tuple[float, dict[str, float]]:
    """Weighted sum of the named rewards.

    Args:
        completion: The sampled text.
        sample: What is known of its sample.
        weights: Reward name -> weight (``train.grpo.rewards``).

    Returns:
        ``(total, {name: unweighted value})``.

    Raises:
        KeyError: An unknown reward name, naming the registered ones.
    """
    parts: dict[str, float] = {}
    for name in weights:
        fn = REWARDS.get(name)
        if fn is None:
            raise KeyError(f"unknown reward {name!r}; registered: {', '.join(list_rewards())}")
        parts[name] = float(fn(completion, sample))
    return sum(weights[n] * v for n, v in parts.items()), parts
