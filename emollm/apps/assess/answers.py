"""A person's answers: which file answers which question, and what the analysis of each file says.

Answers are given as one folder (its answer files sorted by name, numbers compared as numbers, matched to the
questions in order) or as explicit paths in question order, where ``-`` marks a question left unanswered. A question
without a file is reported as missing; nothing is ever filled in for it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from emollm.apps.analysis import Analysis

__all__ = [
    "ANSWER_SUFFIXES",
    "SKIP",
    "AnswerFiles",
    "AnswerResult",
    "answer_from_analysis",
    "match_answers",
    "observations",
]

SKIP = "-"
"""In an explicit answer list: no answer to this question."""


def _answer_suffixes() -> frozenset[str]:
    from emollm.media.video import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS

    return frozenset(VIDEO_EXTENSIONS | AUDIO_EXTENSIONS | {".txt"})


ANSWER_SUFFIXES = _answer_suffixes()
"""Answer files: video or voice recordings (and ``.txt`` for a typed answer)."""


@dataclass
class AnswerResult:
    """One question and what its answer gave.

    Attributes:
        index: Question number (1-based).
        question: The question.
        file: The answer file, or None when there is none.
        status: ``analysed``, ``missing`` (no file) or ``failed`` (the file could not be analysed).
        reason: Why the answer is missing or failed.
        transcript: What the person said (recognised speech, or the text of a ``.txt`` answer).
        emotion: The most probable emotion label, or None.
        confidence: The top probability (of ``emotion``), or None.
        probabilities: Label -> probability.
        observations: The evidence in plain lines (face, AUs, voice, what was not available).
        analysis: The full :class:`~emollm.apps.analysis.Analysis` as a dict, or None.
    """

    index: int
    question: str
    file: str | None = None
    status: Literal["analysed", "missing", "failed"] = "missing"
    reason: str | None = None
    transcript: str | None = None
    emotion: str | None = None
    confidence: float | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    observations: list[str] = field(default_factory=list)
    analysis: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass
class AnswerFiles:
    """The answer file of each question (None: no answer) and the folder entries that were not used."""

    files: list[Path | None]
    reasons: list[str | None]
    ignored: list[str] = field(default_factory=list)


def _unusable(path: Path) -> str | None:
    """Why ``path`` cannot be read as an answer file (a symlink loop, a broken link, a FIFO, no such file, no
    permission), in the media layer's words; None for a readable file."""
    from emollm.media import MediaError
    from emollm.media.video import check_file

    try:
        check_file(path)
    except MediaError as e:
        return str(e)
    return None


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def match_answers(answers: Sequence[str | Path] | str | Path | None, n_questions: int) -> AnswerFiles:
    """Match answer files to ``n_questions`` questions in order.

    Args:
        answers: None (no answers), one folder, or paths in question order (``-`` skips a question).
        n_questions: How many questions were asked.

    Raises:
        ValueError: More answers than questions, a folder mixed with files, an unsupported file type.
        FileNotFoundError: An explicit answer path does not exist.
    """
    if answers is None:
        items: list[str | Path] = []
    elif isinstance(answers, (str, Path)):
        items = [answers]
    else:
        items = list(answers)
    ignored: list[str] = []
    if len(items) == 1 and str(items[0]) != SKIP and Path(items[0]).is_dir():
        folder = Path(items[0])
        paths: list[Path | None] = []
        for entry in sorted(folder.iterdir(), key=_natural_key):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                ignored.append(f"{entry.name}: a folder")
            elif entry.suffix.lower() not in ANSWER_SUFFIXES:
                ignored.append(f"{entry.name}: not an answer file type")
            else:  # kept in its place even when unreadable (a symlink loop...): its analysis fails with the reason
                paths.append(entry)
        where = f"the folder {folder} has {len(paths)} answer file(s)"
    else:
        paths = []
        for item in items:
            if str(item) == SKIP:
                paths.append(None)
                continue
            p = Path(item)
            if p.is_dir():
                raise ValueError(f"--answers: {p} is a folder; give one folder alone, or files in question order")
            if not p.is_file():  # the real reason: a symlink loop or a FIFO is not "file not found"
                why = _unusable(p) or f"{p}: not a regular file"
                if not p.exists() and not p.is_symlink():
                    why = f"{p}: no such file (use '-' for a question left unanswered)"
                raise FileNotFoundError(f"--answers: {why}")
            if p.suffix.lower() not in ANSWER_SUFFIXES:
                raise ValueError(
                    f"--answers: {p}: unsupported answer type {p.suffix or '(none)'}; give a video or voice "
                    "recording (or a .txt file)"
                )
            paths.append(p)
        where = f"{len(paths)} answer(s) were given" if paths else "no answers were given"
    if len(paths) > n_questions:
        raise ValueError(f"--answers: {where} for {n_questions} question(s); give at most one answer per question")
    reasons: list[str | None] = []
    for i in range(n_questions):
        if i >= len(paths):
            reasons.append(f"no answer file for this question ({where})")
        elif paths[i] is None:
            reasons.append("skipped ('-' in the answer list)")
        else:
            reasons.append(None)
    files = [paths[i] if i < len(paths) else None for i in range(n_questions)]
    return AnswerFiles(files, reasons, ignored)


def observations(analysis: Analysis) -> list[str]:
    """The evidence of one analysis as plain lines: facial expression, action units, voice, what was missing."""
    lines = []
    face = analysis.evidence.get("face") or {}
    if face.get("expression_scores"):
        top = sorted(face["expression_scores"].items(), key=lambda kv: -kv[1])[:3]
        lines.append("Facial expression (FER2013 CNN, mean over frames): " + ", ".join(f"{k} {v:.2f}" for k, v in top))
    if face.get("aus"):
        aus = ", ".join(f"{v['name']} ({a}, {v['intensity']:.1f}/5)" for a, v in face["aus"].items())
        lines.append(f"Facial action units at the peak frame {face.get('peak_frame')}: {aus}")
    audio = analysis.evidence.get("audio") or {}
    if audio.get("tone"):
        lines.append(f"Voice: {audio['tone']}")
    weights = (analysis.evidence.get("fusion") or {}).get("weights") or {}
    if weights:
        used = ", ".join(f"{k.replace('_', ' ')} ({w:.2f})" for k, w in weights.items())
        lines.append(f"Emotion estimate from (fusion weights): {used}")
    elif analysis.modalities:
        lines.append(f"Modalities used: {', '.join(analysis.modalities)}")
    for what, reason in analysis.missing.items():
        lines.append(f"Not available: {what} ({reason})")
    return lines


def answer_from_analysis(index: int, question: str, path: str | Path, analysis: Analysis) -> AnswerResult:
    """An :class:`AnswerResult` from the analysis of the answer file."""
    confidence = analysis.probabilities.get(analysis.label) if analysis.label is not None else None
    return AnswerResult(
        index=index,
        question=question,
        file=str(path),
        status="analysed",
        transcript=analysis.subtitle,
        emotion=analysis.label,
        confidence=None if confidence is None else round(float(confidence), 4),
        probabilities=dict(analysis.probabilities),
        observations=observations(analysis),
        analysis=analysis.to_dict(),
    )
