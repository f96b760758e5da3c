"""Reasoning text from a local LLM, and the checks that keep a rationale honest.

- :class:`ReasoningClient`: what MERR construction, the clue mode's rationale and ``assess`` need from an LLM. Every
  engine of :mod:`emollm.engines` is one (in-process transformers or llama.cpp, an OpenAI-compatible server; build
  one with :func:`emollm.engines.build_engine`); :class:`LLMReasoner` is the in-process transformers engine under
  its earlier name.
- :func:`check_reasoning`: whether a rationale supports its label, with :class:`emollm.labels.LabelParser` over the
  label vocabulary (whole words, synonyms):

  * ``empty``: no text;
  * ``missing_label``: the label (or a synonym) is never named;
  * ``contradiction``: the *concluding* sentence (the last sentence naming any label) names other labels but not
    this one;
  * ``mixed``: the concluding sentence names this label and others (``"not angry but happy"``);
  * ``consistent``: otherwise.
- :func:`check_quality`: degenerate text (small LLMs loop or stop mid-sentence): ``repetitive`` when some run of 8
  words occurs 3 or more times, ``truncated`` when the text does not end a sentence.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from emollm.engines.base import prompt_seed, trim_to_sentence
from emollm.engines.local import TransformersEngine

__all__ = [
    "Consistency",
    "LLMReasoner",
    "ReasoningClient",
    "check_quality",
    "check_reasoning",
    "prompt_seed",
    "trim_to_sentence",
]

_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")


@runtime_checkable
class ReasoningClient(Protocol):
    """Anything that turns a prompt into a reasoning.

    Attributes:
        id: Stable identity of the model and its generation settings (part of the cache key).
    """

    id: str

    def generate(self, system: str, user: str, *, seed: int) -> str:
        """The answer to one prompt; deterministic for the same arguments."""
        ...


LLMReasoner = TransformersEngine
"""The in-process transformers engine under its earlier name (same arguments, same ``id``)."""


@dataclass(frozen=True)
class Consistency:
    """Outcome of :func:`check_reasoning`."""

    status: str
    """``consistent``, ``mixed``, ``missing_label``, ``contradiction`` or ``empty``."""
    mentioned: tuple[str, ...]
    """Labels named anywhere, in order of first mention."""
    concluded: tuple[str, ...]
    """Labels named in the concluding sentence."""

    @property
    def ok(self) -> bool:
        """Kept by the contradiction filter."""
        return self.status in ("consistent", "mixed")

    @property
    def issue(self) -> str:
        """Short text for the review file ("" when consistent)."""
        if self.status == "consistent":
            return ""
        if self.status == "contradiction":
            return f"contradiction: concludes {', '.join(self.concluded)}"
        if self.status == "mixed":
            return f"mixed: concludes {', '.join(self.concluded)}"
        return self.status


def _parser(labels: Sequence[str]):
    from emollm.labels import LabelParser

    return LabelParser(list(labels))


def check_reasoning(text: str | None, label: str, labels: Sequence[str], parser: Any = None) -> Consistency:
    """Whether a reasoning supports ``label`` (see the module docstring).

    Args:
        text: The reasoning.
        label: The label it must explain.
        labels: The vocabulary (other labels count as contradictions).
        parser: A prebuilt ``LabelParser(labels)`` (optional, for speed).
    """
    parser = parser or _parser(labels)
    text = (text or "").strip()
    if not text:
        return Consistency("empty", (), ())
    mentioned = parser.parse(text).candidates
    concluded: tuple[str, ...] = ()
    for sentence in reversed([s for s in _SENTENCES.split(text) if s.strip()]):
        found = parser.parse(sentence).candidates
        if found:
            concluded = found
            break
    if label not in mentioned:
        return Consistency("missing_label", mentioned, concluded)
    if label not in concluded:
        return Consistency("contradiction", mentioned, concluded)
    if len(concluded) > 1:
        return Consistency("mixed", mentioned, concluded)
    return Consistency("consistent", mentioned, concluded)


_WORDS = re.compile(r"[^\W_]+")


def check_quality(text: str | None, ngram: int = 8, max_repeats: int = 2) -> str | None:
    """``"repetitive"``, ``"truncated"`` or None for a usable text (see the module docstring)."""
    text = (text or "").strip()
    words = [w.lower() for w in _WORDS.findall(text)]
    grams = [tuple(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]
    if grams and max(Counter(grams).values()) > max_repeats:
        return "repetitive"
    if text and not re.search(r"[.!?][\"'”’)\]]*$", text):
        return "truncated"
    return None
