"""The markdown report of an assessment session (``report.md``).

Layout: the disclaimer, a header (topic, date, models, which parts the LLM wrote and which come from templates),
one section per question (question, answer file, transcript, emotion with its confidence, observations, or why the
answer is missing), the conclusion, and the disclaimer again at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emollm.assess.session import Assessment

__all__ = ["DISCLAIMER", "DISCLAIMER_SHORT", "render_report"]

DISCLAIMER_SHORT = "Assistive tool, not a diagnosis."
DISCLAIMER = (
    f"{DISCLAIMER_SHORT} This report organises a person's answers and automatic emotion estimates for a clinician "
    "to review. The estimates come from small models and can be wrong; nothing here is a clinical assessment, and "
    "no decision should rest on it without the clinician's own judgement."
)
"""Stated at the top and bottom of every report, in ``assessment.json`` and in the command's output."""


def _models_line(produced_by: dict[str, Any]) -> list[str]:
    lines = []
    if produced_by.get("writer"):
        lines.append(f"- Writing LLM: `{produced_by['writer']}`")
    analyzer = produced_by.get("analyzer")
    if analyzer:
        mode = analyzer.get("mode")
        where = f" `{analyzer['checkpoint']}`" if analyzer.get("checkpoint") else ""
        models = {k: v for k, v in (analyzer.get("models") or {}).items() if v}
        lines.append(f"- Answer analysis: {mode} mode{where}")
        lines += [f"  - {k.replace('_', ' ')}: {v}" for k, v in models.items()]
    if produced_by.get("speech"):
        lines.append(f"- Spoken questions: {produced_by['speech']}")
    lines.append(f"- emollm {produced_by.get('emollm', '')}".rstrip())
    return lines


def render_report(a: Assessment) -> str:
    """The markdown report of a session."""
    answered = [x for x in a.answers if x.status == "analysed"]
    missing = [x.index for x in a.answers if x.status == "missing"]
    failed = [x.index for x in a.answers if x.status == "failed"]
    lines = [
        f"# Assessment: {a.topic}",
        "",
        f"> **{DISCLAIMER_SHORT}** {DISCLAIMER[len(DISCLAIMER_SHORT) + 1 :]}",
        "",
        f"- Date: {a.date}",
        f"- Questions: {len(a.answers)}, answered: {len(answered)}"
        + (f", missing: {', '.join(map(str, missing))}" if missing else "")
        + (f", could not be analysed: {', '.join(map(str, failed))}" if failed else ""),
        f"- Questions written by: {a.questions.describe}",
        f"- Conclusion written by: {a.conclusion.describe}",
        "- From templates and the evidence (never LLM-written): transcripts, emotion estimates, observations",
        *_models_line(a.produced_by),
        "",
    ]
    for x in a.answers:
        lines += [f"## Question {x.index}: {x.question}", ""]
        if a.speech_files and x.index <= len(a.speech_files):
            lines.append(f"- Spoken question: `{Path(a.speech_files[x.index - 1]).name}`")
        if x.status == "missing":
            lines += [f"- **No answer.** {x.reason}", ""]
            continue
        lines.append(f"- Answer file: `{x.file}`")
        if x.status == "failed":
            lines += [f"- **The answer could not be analysed:** {x.reason}", ""]
            continue
        lines.append(f'- Transcript: "{x.transcript}"' if x.transcript else "- Transcript: (no words recognised)")
        if x.emotion is not None:
            conf = f", confidence {x.confidence:.2f} (top probability)" if x.confidence is not None else ""
            lines.append(f"- Emotion: **{x.emotion}**{conf}")
        else:
            lines.append("- Emotion: no estimate (not enough evidence)")
        if x.observations:
            lines.append("- Observations:")
            lines += [f"  - {o}" for o in x.observations]
        lines.append("")
    lines += ["## Conclusion", "", f"*Written by: {a.conclusion.describe}*", "", a.conclusion.text, ""]
    lines += ["---", "", f"*{DISCLAIMER}*", ""]
    return "\n".join(lines)
