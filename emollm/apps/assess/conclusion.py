"""The conclusion of an assessment: written by the LLM from the answers, checked, else a plain template.

:func:`conclusion_prompt` builds the prompt **with** the emotion estimates and their evidence (what a session uses)
or **without** them (transcripts only): the two differ only in those lines, so the comparison harness
(``emollm assess compare``) measures what the emotion evidence adds. A small LLM's text is checked by
:func:`check_conclusion` (empty, looping or cut off: :func:`emollm.apps.reasoning.check_quality`; stating a diagnosis;
mentioning nothing the person said nor any estimated emotion) and replaced by :func:`template_conclusion` when it
fails; :class:`Conclusion` records which one you got and why.
A session without a single analysed answer gets the template without asking the LLM: there is nothing to summarise.
The prompt is bounded: the transcripts share :data:`MAX_TRANSCRIPT_CHARS` (each cut to its share, with a note in
:attr:`Conclusion.notes`), so ten long answers cannot make a prompt the LLM needs minutes to read.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from emollm.apps.analysis import bound_text
from emollm.apps.assess.answers import AnswerResult
from emollm.apps.assess.questions import Authored
from emollm.apps.reasoning import ReasoningClient, check_quality

__all__ = [
    "MAX_TRANSCRIPT_CHARS",
    "Conclusion",
    "check_conclusion",
    "conclusion_prompt",
    "prompt_notes",
    "template_conclusion",
    "write_conclusion",
]

MAX_TRANSCRIPT_CHARS = 4000
"""Characters of transcript the conclusion's prompt holds in all (about 1000 tokens), shared by the answers."""
_MIN_SHARE = 300

_SYSTEM = (
    "You assist a clinician. You read the notes of a short interview and write a brief conclusion for the clinician. "
    "Use only what is in the notes, do not invent anything, and never give or suggest a diagnosis."
)
_INSTRUCTION = (
    "Write the conclusion in 3 to 5 sentences of plain prose: the main themes of the answers, how the person came "
    "across, and what may be worth exploring further in conversation."
)
_DIAGNOSIS = re.compile(
    r"\b(diagnosed with|diagnosis of|suffers? from|meets? (the )?(criteria|threshold)|has (an? )?\w+ disorder)\b",
    re.IGNORECASE,
)
_MIN_WORDS = 8
_WORD = re.compile(r"[a-z]+")
_STOP = frozenset(
    "about also been because being could does doing even feel feeling feels from have just know like make more much "
    "really said some than that them then there they thing things think this very want well were what when where "
    "which will with would your yours person people".split()
)


def _stems(text: str, min_len: int = 4) -> set[str]:
    """Content words of ``text``, cut to 5 letters (a crude stem: lonely/loneliness, worry/worried... match)."""
    return {w[:5] for w in _WORD.findall(text.lower()) if len(w) >= min_len and w not in _STOP}


def _grounding(answers: Sequence[AnswerResult], with_emotion: bool) -> set[str]:
    """What a conclusion may mention to show it read the answers: the transcripts' words and (``with_emotion``)
    the estimated emotions."""
    stems: set[str] = set()
    for a in answers:
        if a.status == "analysed":
            stems |= _stems(a.transcript or "")
            if with_emotion and a.emotion:
                stems |= _stems(a.emotion, min_len=1)
    return stems


@dataclass
class Conclusion(Authored):
    """The conclusion of a session and who wrote it.

    Attributes:
        text: The conclusion.
        source: ``llm`` or ``template``.
        reason: Why the template was used (``asked``, ``no analysed answers``, ``the LLM's text was rejected:
            ...``); None for ``llm``.
        with_emotion: Whether the emotion estimates and evidence were in the prompt.
        writer: The LLM's id when one was asked, else None.
        raw: The LLM's text as it came (kept for audit when rejected), or None.
        notes: What was cut to keep the prompt bounded (one line per transcript), empty when nothing was.
    """

    text: str
    source: Literal["llm", "template"]
    reason: str | None = None
    with_emotion: bool = True
    writer: str | None = None
    raw: str | None = None
    notes: list[str] = field(default_factory=list)


def _share(answers: Sequence[AnswerResult]) -> int:
    """Characters of transcript each analysed answer may put in the prompt."""
    n = sum(1 for a in answers if a.status == "analysed" and a.transcript)
    return max(_MIN_SHARE, MAX_TRANSCRIPT_CHARS // max(n, 1))


def prompt_notes(answers: Sequence[AnswerResult]) -> list[str]:
    """One line per transcript the conclusion's prompt holds only in part (see :data:`MAX_TRANSCRIPT_CHARS`)."""
    share, notes = _share(answers), []
    for a in answers:
        if a.status == "analysed" and a.transcript:
            _, note = bound_text(a.transcript, share, f"question {a.index}'s transcript in the conclusion's prompt")
            notes += [note] if note else []
    return notes


def _answer_block(a: AnswerResult, with_emotion: bool, share: int) -> list[str]:
    lines = [f"Question {a.index}: {a.question}"]
    if a.status != "analysed":
        lines.append("No answer was recorded." if a.status == "missing" else "The answer could not be analysed.")
        return lines
    transcript, _ = bound_text(a.transcript, share, "transcript")
    lines.append(f'Answer (transcript): "{transcript}"' if transcript else "Answer: no words were recognised.")
    if with_emotion:
        if a.emotion is not None:
            conf = f" (confidence {a.confidence:.2f})" if a.confidence is not None else ""
            lines.append(f"Estimated emotion: {a.emotion}{conf}")
        lines += [f"Observation: {o}" for o in a.observations]
    return lines


def conclusion_prompt(topic: str, answers: Sequence[AnswerResult], *, with_emotion: bool = True) -> tuple[str, str]:
    """The ``(system, user)`` prompt for the conclusion, with or without the emotion estimates and evidence; the
    transcripts are cut to their share of :data:`MAX_TRANSCRIPT_CHARS` (:func:`prompt_notes` says which)."""
    share = _share(answers)
    blocks = ["\n".join(_answer_block(a, with_emotion, share)) for a in answers]
    user = f"Interview topic: {topic}\n\n" + "\n\n".join(blocks) + f"\n\n{_INSTRUCTION}"
    return _SYSTEM, user


def check_conclusion(text: str | None, grounding: set[str] | None = None) -> str | None:
    """Why an LLM's conclusion cannot be used (``empty``, ``too short``, ``repetitive``, ``truncated``, ``states a
    diagnosis``, ``mentions nothing from the answers``), or None when it can.

    Args:
        text: The LLM's conclusion.
        grounding: Word stems from the answers (transcripts, estimated emotions); when given and non-empty, the
            conclusion must contain one of them (a small LLM otherwise writes a generic story about someone else).

    Examples:
        >>> check_conclusion("The person spoke about poor sleep and worries at work; both are worth exploring.")
        >>> check_conclusion("The person is diagnosed with generalised anxiety disorder after this interview.")
        'states a diagnosis'
    """
    text = (text or "").strip()
    if not text:
        return "empty"
    if len(text.split()) < _MIN_WORDS:
        return "too short"
    problem = check_quality(text)
    if problem is not None:
        return problem
    if _DIAGNOSIS.search(text):
        return "states a diagnosis"
    if grounding and not _stems(text, min_len=1) & grounding:
        return "mentions nothing from the answers"
    return None


def _numbers(items: Sequence[int]) -> str:
    return ", ".join(str(i) for i in items)


def template_conclusion(answers: Sequence[AnswerResult], *, with_emotion: bool = True) -> str:
    """A plain conclusion that restates counts and (``with_emotion``) the estimates, without interpretation.

    Example:
        >>> a = [AnswerResult(1, "How are you?", status="analysed", emotion="sad", confidence=0.5),
        ...      AnswerResult(2, "What helps?")]
        >>> template_conclusion(a)  # doctest: +NORMALIZE_WHITESPACE
        '1 of 2 questions were answered; no usable answer for question(s) 2. Estimated emotion per answer: question 1
        sad (0.50). These are automatic estimates from the face, the voice and the words: signals to explore with the
        person, not findings.'
    """
    done = [a for a in answers if a.status == "analysed"]
    if not done:
        return f"None of the {len(answers)} questions has a usable answer, so there is nothing to summarise."
    parts = [f"{len(done)} of {len(answers)} questions were answered"]
    not_done = [a.index for a in answers if a.status != "analysed"]
    parts[0] += f"; no usable answer for question(s) {_numbers(not_done)}." if not_done else "."
    if with_emotion:
        labelled = [a for a in done if a.emotion is not None]
        if labelled:
            per = ", ".join(
                f"question {a.index} {a.emotion}" + (f" ({a.confidence:.2f})" if a.confidence is not None else "")
                for a in labelled
            )
            parts.append(f"Estimated emotion per answer: {per}.")
            counts = Counter(a.emotion for a in labelled).most_common()
            if len(labelled) > 1 and (len(counts) == 1 or counts[0][1] > counts[1][1]):
                parts.append(f"The most frequent estimate is {counts[0][0]} ({counts[0][1]} of {len(labelled)}).")
        else:
            parts.append("No answer gave enough evidence for an emotion estimate.")
        parts.append(
            "These are automatic estimates from the face, the voice and the words: signals to explore with the "
            "person, not findings."
        )
    else:
        parts.append("The answers are given above in the person's own words.")
    return " ".join(parts)


def write_conclusion(
    topic: str,
    answers: Sequence[AnswerResult],
    llm: ReasoningClient | None = None,
    *,
    with_emotion: bool = True,
) -> Conclusion:
    """The conclusion of a session: the LLM's when it passes :func:`check_conclusion`, else the template.

    Args:
        topic: The session's topic.
        answers: Every question's :class:`AnswerResult` (missing ones included: the prompt says so).
        llm: The writer (greedy, seed 0); None takes the template directly.
        with_emotion: Put the emotion estimates and their evidence in the prompt (and the template).
    """
    if not any(a.status == "analysed" for a in answers):
        text = template_conclusion(answers, with_emotion=with_emotion)
        return Conclusion(text, "template", "no analysed answers", with_emotion, writer=None)
    if llm is None:
        return Conclusion(template_conclusion(answers, with_emotion=with_emotion), "template", "asked", with_emotion)
    system, user = conclusion_prompt(topic, answers, with_emotion=with_emotion)
    notes = prompt_notes(answers)
    raw = llm.generate(system, user, seed=0).strip()
    problem = check_conclusion(raw, _grounding(answers, with_emotion))
    if problem is not None:
        text = template_conclusion(answers, with_emotion=with_emotion)
        reason = f"the LLM's text was rejected: {problem}"
        return Conclusion(text, "template", reason, with_emotion, llm.id, raw, notes)
    return Conclusion(raw, "llm", None, with_emotion, llm.id, notes=notes)
