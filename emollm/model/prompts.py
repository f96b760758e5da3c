"""Emotion-LLaMA's prompts in our marker syntax, in one place (REFERENCE.md §1.4 and §1.5).

Training (:data:`TASKS`, :data:`DEFAULT_INSTRUCTIONS`, :data:`DEFAULT_ANSWERS`), evaluation
(:data:`EVAL_PROMPTS`), ``analyze`` (:data:`EMOTION_INSTRUCTION`, :data:`REASON_INSTRUCTION`) and MERR construction
(:data:`REASONING_PROMPTS`, :func:`build_reasoning_prompt`, :func:`coarse_caption`) all read their wording from
here, so a change of wording is one edit and shows up in every command at once.

Example:
    >>> EVAL_PROMPTS["emotion"].format(subtitle="I passed", labels="happy, sad")
    '<video><face><audio> The person in video says: I passed. Please determine which emotion label in the video represents: happy, sad.'
"""  # noqa: E501

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from emollm.model.configuration import MARKER_RE

__all__ = [
    "DEFAULT_ANSWERS",
    "DEFAULT_INSTRUCTIONS",
    "EMOTION_INSTRUCTION",
    "EVAL_PROMPTS",
    "REASONING_PROMPTS",
    "REASON_INSTRUCTION",
    "SUBTITLE_SENTENCE",
    "TASKS",
    "ReasoningPrompt",
    "build_reasoning_prompt",
    "clean_subtitle",
    "coarse_caption",
    "fill_prompt",
]

TASKS: tuple[str, ...] = ("emotion", "reason", "caption")
"""The task pool of Emotion-LLaMA / MiniGPT-v2: label classification, reasoning, caption."""

EMOTION_INSTRUCTION = "Please determine which emotion label in the video represents: {labels}."
"""The ``emotion`` task instruction; ``{labels}`` is the label order joined with ``", "``."""
REASON_INSTRUCTION = (
    "Please analyze all the clues in the video and reason out the emotional label of the person in the video."
)
"""The first ``reason`` task instruction."""
SUBTITLE_SENTENCE = "The person in video says: {subtitle}."
"""How a transcript enters a prompt (left out for a sample without one)."""

DEFAULT_INSTRUCTIONS: dict[str, list[str]] = {
    "emotion": [EMOTION_INSTRUCTION],
    "reason": [
        REASON_INSTRUCTION,
        "What is the emotional state of the person in the video? Please tell me the reason.",
        "What are the facial expressions and vocal tone used in the video? What is the intended meaning behind his "
        "words? Which emotion does this reflect?",
        "Please integrate information from various modalities to infer the emotional category of the person in the "
        "video.",
        "Could you describe the emotion-related features of the individual in the video? What emotional category do "
        "they fall into?",
    ],
    "caption": [
        "Please describe the details of the expression and tone the video.",
        "Describe the facial expression, the tone of voice and the words of the person in the video.",
    ],
}
"""Emotion-LLaMA's instruction pools (``first_face.py``; REFERENCE.md §1.4)."""

DEFAULT_ANSWERS: dict[str, str] = {"emotion": "{label}", "reason": "{target}", "caption": "{target}"}
"""Answer templates per task: ``{label}`` is the class, ``{target}`` the reasoning or caption text."""

EVAL_PROMPTS: dict[str, str] = {
    "emotion": f"<video><face><audio> {SUBTITLE_SENTENCE} {EMOTION_INSTRUCTION}",
    "reason": f"<video><face><audio> {SUBTITLE_SENTENCE} {REASON_INSTRUCTION}",
}
"""Emotion-LLaMA's ``emotion`` and first ``reason`` prompts in our marker syntax. ``{labels}`` is the label order
joined with ``", "``; the sentence holding ``{subtitle}`` is dropped for a sample without a transcript."""

_SUBTITLE_SENTENCE = re.compile(r"(?:[^.!?>\n\s][^.!?>\n]*)?\{subtitle\}[^.!?\n]*[.!?]?\s*")


def clean_subtitle(text: str | None) -> str | None:
    """A transcript ready for a prompt: whitespace collapsed, modality markers removed (a transcript must not
    smuggle markers in), ``None`` when nothing is left."""
    if text is None:
        return None
    text = " ".join(MARKER_RE.sub(" ", text).split())
    return text or None


def fill_prompt(template: str, label_order: Sequence[str], subtitle: str | None) -> str:
    """Fill a prompt template: ``{labels}`` -> the labels joined with ``", "``; ``{subtitle}`` -> the transcript, or
    the whole sentence holding it removed when there is none.

    Example:
        >>> fill_prompt(EVAL_PROMPTS["emotion"], ["happy", "sad"], None)
        '<video><face><audio> Please determine which emotion label in the video represents: happy, sad.'
    """
    text = template
    subtitle = clean_subtitle(subtitle)
    if "{subtitle}" in text:
        text = text.replace("{subtitle}", subtitle) if subtitle else _SUBTITLE_SENTENCE.sub("", text)
    return text.replace("{labels}", ", ".join(label_order)).strip()


@dataclass(frozen=True)
class ReasoningPrompt:
    """One versioned MERR reasoning prompt (clues + pseudo-label -> an LLM's explanation)."""

    version: str
    system: str
    question: str
    """Appended after the clue lines; ``{label}`` is the pseudo-label."""
    clue_lines: tuple[tuple[str, str], ...]
    """(clue key, line template with ``{text}``) in prompt order."""


REASONING_PROMPTS: dict[str, ReasoningPrompt] = {
    "v1": ReasoningPrompt(
        version="v1",
        system="You are an emotion analysis expert. Please infer emotion label based on the given the emotional "
        "features.",
        question="Please sort out the correct emotional clues and infer why the person in the video feels {label}.",
        clue_lines=(
            ("visual_expression", "Visual expression: {text}."),
            ("visual", "Visual description: {text}"),
            ("audio", "Audio tone: {text}."),
            ("subtitle", 'Subtitle: "{text}"'),
        ),
    )
}
"""MERR step 7's published prompt (REFERENCE.md §1.5), by version; a new wording is a new version so cached
reasonings of the old one are not reused by mistake. The system text's grammar is the original's (sic)."""


def build_reasoning_prompt(clues: Mapping[str, str | None], label: str, version: str = "v1") -> tuple[str, str]:
    """``(system, user)`` for one sample; clues that are None/empty are left out, never filled in.

    Args:
        clues: ``visual_expression``, ``visual``, ``audio``, ``subtitle`` -> text (or None when unavailable).
        label: The label the reasoning must explain.
        version: A key of :data:`REASONING_PROMPTS`.

    Raises:
        ValueError: For an unknown version, naming the known ones.
    """
    if version not in REASONING_PROMPTS:
        raise ValueError(f"unknown prompt version {version!r}; known: {', '.join(REASONING_PROMPTS)}")
    tpl = REASONING_PROMPTS[version]
    lines = []
    for key, line in tpl.clue_lines:
        text = (clues.get(key) or "").strip()
        if text:
            lines.append(line.format(text=text.rstrip(".") if line.endswith(".") else text))
    lines.append(tpl.question.format(label=label))
    return tpl.system, "\n".join(lines)


def coarse_caption(clues: Mapping[str, str | None]) -> str:
    """The coarse-grained caption (REFERENCE.md §1.5 step 6), character for character the published template when
    every clue is available::

        This person in the video is {visual}. The person's expression and actions include {visual_expression},
        and the person's tone is {audio}. Saying: {subtitle}

    A sentence (or clause) whose clue is unavailable is left out rather than filled with made-up text; with no clue
    at all the caption is "".
    """

    def get(key: str) -> str:
        return " ".join((clues.get(key) or "").split()).rstrip(".")

    visual, expression, tone, subtitle = get("visual"), get("visual_expression"), get("audio"), get("subtitle")
    parts = []
    if visual:
        parts.append(f"This person in the video is {visual}.")
    if expression and tone:
        parts.append(f"The person's expression and actions include {expression}, and the person's tone is {tone}.")
    elif expression:
        parts.append(f"The person's expression and actions include {expression}.")
    elif tone:
        parts.append(f"The person's tone is {tone}.")
    if subtitle:
        parts.append(f"Saying: {' '.join((clues.get('subtitle') or '').split())}")
    return " ".join(parts)
