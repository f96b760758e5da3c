"""The result of analysing one clip, shared by clue mode, checkpoint mode, the batch runner and the service.

Its JSON form (:meth:`Analysis.to_dict`) is what ``emollm analyze --json`` prints and ``POST /v1/analyze`` answers.
Every result says how it was produced (``mode``, ``produced_by``: models, precision) and what it could not use
(``missing``: modality -> reason), and what it shortened (``notes``: an input cut to the prompt's bound by
:func:`bound_text`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["MAX_TEXT_CHARS", "Analysis", "bound_text"]

MAX_TEXT_CHARS = 2000
"""Default bound on a transcript, subtitle or text file before it reaches a model's prompt: about 500 tokens, or two
and a half minutes of speech (the service's clips last at most two). The text models read at most 256 tokens of it;
the rationale's LLM reads it all, and its prefill grows with it (SmolLM2-135M, one thread: 0.6 s at 67 tokens,
2.3 s at 300, 10 s at 1000 on a loaded 2-core machine)."""


def bound_text(text: str | None, limit: int, what: str) -> tuple[str | None, str | None]:
    """``text`` cut to at most ``limit`` characters (at a word boundary when one is near), and a note when cut.

    Example:
        >>> bound_text("alpha beta gamma delta", 12, "subtitle")
        ('alpha beta', 'subtitle: 22 characters, cut to the first 10 (limit 12 characters, max_text_chars)')
    """
    if text is None or len(text) <= limit:
        return text, None
    cut = text[:limit]
    space = cut.rfind(" ")
    if space >= limit * 0.8:
        cut = cut[:space]
    cut = cut.rstrip()
    return (
        cut,
        f"{what}: {len(text):,} characters, cut to the first {len(cut):,} (limit {limit:,} characters, max_text_chars)",
    )


@dataclass
class Analysis:
    """What ``analyze`` found for one file.

    Attributes:
        file: The input path.
        label: The most probable label, or None when no modality gave evidence.
        probabilities: Label -> probability over the requested labels (empty without a label).
        reasoning: A written rationale.
        modalities: Modalities that contributed.
        missing: Modality (or stage) -> why it is absent.
        subtitle: The transcript used (given, recognised, or the text file), if any.
        mode: ``clues`` (zero-shot from real clue models) or ``checkpoint`` (a trained model).
        reasoning_source: Who wrote ``reasoning`` (``llm:<backbone>``, ``checkpoint``, or ``template (...)`` with
            the reason the LLM's text was not used).
        evidence: Per-modality evidence (face: expression scores, AUs, peak frame, face box; audio: prosody,
            transcript; text: distribution; fusion: weights and votes).
        timings: Stage -> seconds.
        produced_by: Mode, models, precision and settings behind the result.
        notes: What was shortened to keep the work bounded (an input cut to ``max_text_chars``), one line each.
        timeline: One entry per window when asked (:mod:`emollm.apps.timeline`); left out of :meth:`to_dict` when
            None.
    """

    file: str
    label: str | None
    probabilities: dict[str, float]
    reasoning: str
    modalities: list[str]
    missing: dict[str, str] = field(default_factory=dict)
    subtitle: str | None = None
    mode: Literal["clues", "checkpoint"] = "checkpoint"
    reasoning_source: str = "checkpoint"
    evidence: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    produced_by: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    timeline: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (field order as above)."""
        out = asdict(self)
        if out["timeline"] is None:
            del out["timeline"]
        return out

    def clue_description(self) -> str:
        """The evidence as plain lines, for an LLM's context (``emollm chat --media``) or a report."""
        lines = []
        face = self.evidence.get("face") or {}
        if face.get("expression_scores"):
            top = sorted(face["expression_scores"].items(), key=lambda kv: -kv[1])[:3]
            lines.append(
                "Facial expression (FER2013 CNN, mean over frames): " + ", ".join(f"{k} {v:.2f}" for k, v in top)
            )
        if face.get("aus"):
            aus = ", ".join(f"{v['name']} ({a}, {v['intensity']:.1f}/5)" for a, v in face["aus"].items())
            lines.append(f"Facial action units at the peak frame {face.get('peak_frame')}: {aus}")
        audio = self.evidence.get("audio") or {}
        if audio.get("tone"):
            lines.append(f"Voice: {audio['tone']}")
        if self.subtitle:
            lines.append(f'Transcript: "{self.subtitle}"')
        for m, reason in self.missing.items():
            lines.append(f"Not available: {m} ({reason})")
        if self.label is not None:
            dist = ", ".join(f"{k} {v:.2f}" for k, v in sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:3])
            lines.append(f"Estimated emotion ({self.mode} mode): {self.label} ({dist})")
        return "\n".join(lines)

    def report(self) -> str:
        """A short human-readable report."""
        lines = [f"{self.file}: {self.label or 'no label'}   ({self.mode} mode)"]
        for label, p in sorted(self.probabilities.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {label:<10} {p:.3f}  {'#' * round(p * 30)}")
        lines.append(f"modalities used: {', '.join(self.modalities) or 'none'}")
        for m, reason in self.missing.items():
            lines.append(f"  missing {m}: {reason}")
        face = self.evidence.get("face") or {}
        if face.get("aus"):
            aus = ", ".join(f"{a} {v['name']} {v['intensity']:.1f}" for a, v in face["aus"].items())
            lines.append(f"face: peak frame {face.get('peak_frame')}, active AUs: {aus}")
        if face.get("expression_scores"):
            top = sorted(face["expression_scores"].items(), key=lambda kv: -kv[1])[:3]
            lines.append("face expression: " + ", ".join(f"{k} {v:.2f}" for k, v in top))
        audio = self.evidence.get("audio") or {}
        if audio.get("tone"):
            lines.append(f"voice: {audio['tone']}")
        if self.subtitle:
            lines.append(f'transcript: "{self.subtitle}"')
        lines.append(f"reasoning ({self.reasoning_source}): {self.reasoning}")
        lines += [f"note: {n}" for n in self.notes]
        if self.timeline is not None:
            from emollm.apps.timeline import format_timeline

            lines.append(format_timeline(self.timeline))
        if self.timings:
            lines.append(f"time: {self.timings.get('total', sum(self.timings.values())):.2f} s")
        return "\n".join(lines)
