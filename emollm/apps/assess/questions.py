"""The questions of an assessment: written by the LLM as JSON and validated, else taken from the template bank.

A small LLM (the embedded SmolLM2-135M) rarely writes valid JSON, so every LLM answer is checked by
:func:`validate_questions` (a JSON list of exactly N distinct, non-empty strings, each ending with ``?``) and
replaced by :func:`template_questions` when it fails; :class:`QuestionSet` records which source was used and why.

The template bank (:data:`QUESTION_BANK`) holds generic open questions, not a validated instrument: a topic's keywords
(:data:`TOPIC_KEYWORDS`) pick the matching banks first, then the general bank fills up to N.

Example:
    >>> template_questions("anxiety screen", 2)
    ['What situations make you feel worried or on edge?', 'How do you notice worry in your body?']
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from emollm.apps.reasoning import ReasoningClient

__all__ = [
    "MAX_QUESTIONS",
    "QUESTION_BANK",
    "TOPIC_KEYWORDS",
    "QuestionSet",
    "check_question_count",
    "generate_questions",
    "question_prompt",
    "template_questions",
    "validate_questions",
]

MAX_QUESTIONS = 10
"""Most questions one session asks (the general bank alone fills this many)."""
MAX_QUESTION_CHARS = 300
"""A longer "question" is a paragraph, not a question."""

QUESTION_BANK: dict[str, tuple[str, ...]] = {
    "general": (
        "How have you been feeling over the past two weeks?",
        "How have you been sleeping lately?",
        "What has been on your mind most this week?",
        "How are things going at work, at school or at home?",
        "What do you usually do when something is bothering you?",
        "Who do you turn to when things get difficult?",
        "What have you enjoyed doing recently?",
        "How would you describe your energy during the day?",
        "What would you most like to change in your daily life?",
        "What else would you like me to know about how you are doing?",
    ),
    "anxiety": (
        "What situations make you feel worried or on edge?",
        "How do you notice worry in your body?",
        "What goes through your mind when you start to feel anxious?",
        "How do your worries affect your sleep or your concentration?",
        "What helps you feel calmer when you are worried?",
    ),
    "mood": (
        "How would you describe your mood most days?",
        "What things do you still look forward to?",
        "How has your interest in your usual activities changed?",
        "How do you see the weeks ahead of you?",
        "When did you last feel really good, and what was happening then?",
    ),
    "stress": (
        "What has been the most stressful part of your week?",
        "How do you know when stress is building up for you?",
        "How much time do you get to rest and recover?",
        "What demands on you feel hardest to manage right now?",
        "What usually helps you unwind?",
    ),
    "sleep": (
        "How have you been sleeping lately?",
        "What happens when you go to bed and try to fall asleep?",
        "How rested do you feel when you wake up?",
        "What do you do in the hour before you go to sleep?",
        "How does tiredness affect your day?",
    ),
}
"""Topic bank -> generic open questions (not a validated screening instrument). ``general`` fills up every topic."""

TOPIC_KEYWORDS: dict[str, tuple[str, ...]] = {
    "anxiety": ("anxi", "worry", "worri", "panic", "nervous", "fear", "gad"),
    "mood": ("depress", "mood", "sad", "low", "phq", "grief"),
    "stress": ("stress", "burnout", "burn-out", "pressure", "overwhelm"),
    "sleep": ("sleep", "insomnia", "tired", "fatigue"),
}
"""Topic bank -> word stems that select it (matched at the start of a word of the topic, case-insensitive)."""

_SYSTEM = (
    "You help a clinician prepare a conversation with a patient. You write short open questions in plain, kind "
    "language (never yes/no questions) and never suggest a diagnosis. Answer with JSON only."
)
_USER = (
    "Topic of the conversation: {topic}.\n"
    "Write exactly {n} different open questions the clinician can ask about this topic. "
    'Answer with a JSON list of {n} strings and nothing else; each string is one question ending with "?".'
)


class Authored:
    """Who wrote a piece of an assessment (the LLM or a template): shared by questions and conclusions.

    Subclasses are dataclasses with ``source`` (``"llm"``/``"template"``), ``reason``, ``writer`` and ``raw``.
    """

    template_name = "template"

    @property
    def describe(self) -> str:
        """Who wrote it, in words (for a report header)."""
        if self.source == "llm":  # type: ignore[attr-defined]
            return f"LLM ({self.writer})"  # type: ignore[attr-defined]
        reason = self.reason  # type: ignore[attr-defined]
        return f"{self.template_name} ({reason})" if reason else self.template_name

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)  # type: ignore[call-overload]


@dataclass
class QuestionSet(Authored):
    """The questions of a session and where they came from.

    Attributes:
        questions: The questions, in the order they are asked.
        source: ``llm`` (the LLM's JSON passed :func:`validate_questions`) or ``template`` (:data:`QUESTION_BANK`).
        reason: Why the template bank was used (``asked``, or ``the LLM's JSON was rejected: ...``); None for ``llm``.
        writer: The LLM's id (``ReasoningClient.id``) when one was asked, else None.
        raw: The LLM's answer as it came (kept for audit), or None.
    """

    questions: list[str]
    source: Literal["llm", "template"]
    reason: str | None = None
    writer: str | None = None
    raw: str | None = None

    template_name = "template bank"


def _topic_banks(topic: str) -> list[str]:
    words = re.findall(r"[a-z][a-z-]*", topic.lower())
    return [bank for bank, stems in TOPIC_KEYWORDS.items() if any(w.startswith(stems) for w in words)]


def template_questions(topic: str, n: int) -> list[str]:
    """``n`` questions from the template bank: the banks matching ``topic`` first, then the general one.

    Raises:
        ValueError: ``n`` is outside ``1..MAX_QUESTIONS``.
    """
    check_question_count(n)
    pool: list[str] = []
    for bank in [*_topic_banks(topic), "general"]:
        pool += [q for q in QUESTION_BANK[bank] if q not in pool]
    return pool[:n]


def check_question_count(n: int) -> None:
    """Raise ``ValueError`` (naming the range) unless ``n`` is a whole number in ``1..MAX_QUESTIONS``."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_QUESTIONS:
        raise ValueError(f"questions: must be between 1 and {MAX_QUESTIONS}, got {n}")


def question_prompt(topic: str, n: int) -> tuple[str, str]:
    """The ``(system, user)`` prompt asking the LLM for ``n`` questions as a JSON list."""
    return _SYSTEM, _USER.format(topic=topic, n=n)


def _json_list(text: str) -> Any:
    """The JSON value in ``text``: the whole text, or the span from its first ``[`` to its last ``]`` (small LLMs
    wrap the list in a sentence or a code fence)."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end <= start:
        return None
    try:
        return json.loads(text[start : end + 1])
    except ValueError:
        return None


def validate_questions(text: str | None, n: int) -> tuple[list[str] | None, str | None]:
    """Check an LLM's answer: a JSON list of ``n`` distinct, non-empty strings that each end with ``?``.

    Returns:
        ``(questions, None)`` when valid (whitespace normalised), else ``(None, problem)``.

    Examples:
        >>> validate_questions('["How are you?", "What helps you?"]', 2)
        (['How are you?', 'What helps you?'], None)
        >>> validate_questions('["How are you?", "How are you?"]', 2)
        (None, 'question 2 repeats question 1')
        >>> validate_questions('Sure! Here are the questions: 1. How are you?', 1)
        (None, 'not a JSON list')
    """
    value = _json_list(text or "")
    if not isinstance(value, list):
        return None, "not a JSON list"
    if len(value) != n:
        return None, f"{len(value)} items, expected {n}"
    out: list[str] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(value, start=1):
        if not isinstance(item, str) or not item.strip():
            return None, f"question {i} is not a non-empty string"
        q = " ".join(item.split())
        if not q.endswith("?"):
            return None, f"question {i} does not end with '?'"
        if len(q) > MAX_QUESTION_CHARS:
            return None, f"question {i} is longer than {MAX_QUESTION_CHARS} characters"
        key = q.lower()
        if key in seen:
            return None, f"question {i} repeats question {seen[key]}"
        seen[key] = i
        out.append(q)
    return out, None


def generate_questions(topic: str, n: int, llm: ReasoningClient | None = None) -> QuestionSet:
    """``n`` questions about ``topic``: the LLM's when its JSON is valid, else the template bank's.

    Args:
        topic: What the session is about (e.g. ``"anxiety screen"``).
        n: Number of questions (``1..MAX_QUESTIONS``).
        llm: The writer (greedy, seed 0); None takes the template bank directly.

    Raises:
        ValueError: ``n`` out of range or an empty topic.
    """
    check_question_count(n)
    if not topic.strip():
        raise ValueError("topic: must not be empty")
    if llm is None:
        return QuestionSet(template_questions(topic, n), "template", "asked")
    system, user = question_prompt(topic, n)
    raw = llm.generate(system, user, seed=0)
    questions, problem = validate_questions(raw, n)
    if questions is None:
        reason = f"the LLM's JSON was rejected: {problem}"
        return QuestionSet(template_questions(topic, n), "template", reason, writer=llm.id, raw=raw)
    return QuestionSet(questions, "llm", writer=llm.id, raw=raw)
