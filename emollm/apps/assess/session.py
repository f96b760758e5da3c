"""One assessment session: questions, spoken questions, the person's answers analysed, a checked conclusion, and the
report (``report.md``) with its data (``assessment.json``), both written atomically.

The answers are analysed by :func:`emollm.apps.analyze.load_analyzer`: the zero-shot clue mode by default (face
expression, action units, voice, Whisper transcript, transcript emotion), or a trained checkpoint. In clue mode the
analyzer's own per-answer rationale is the template one (``reasoning="template"``): the report's observations come
from the evidence, and the one interpretive text, the conclusion, is written (and checked) once per session.

Example:
    >>> from emollm.apps.assess import run_assessment                                       # doctest: +SKIP
    >>> a = run_assessment("anxiety screen", 3, answers="answers/", out_dir="out/")  # doctest: +SKIP
    >>> a.questions.source, [x.emotion for x in a.answers], a.conclusion.source       # doctest: +SKIP
    ('template', ['happy', 'sad', None], 'llm')
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from emollm.apps.assess.answers import AnswerResult, answer_from_analysis, match_answers
from emollm.apps.assess.conclusion import Conclusion, write_conclusion
from emollm.apps.assess.questions import QuestionSet, generate_questions
from emollm.apps.reasoning import ReasoningClient
from emollm.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["MAX_TOPIC_CHARS", "Assessment", "check_out_dir", "run_assessment", "speak_questions", "write_assessment"]


DISCLAIMER_SHORT = "Assistive tool, not a diagnosis."
DISCLAIMER = (
    f"{DISCLAIMER_SHORT} This report organises a person's answers and automatic emotion estimates for a clinician "
    "to review. The estimates come from small models and can be wrong; nothing here is a clinical assessment, and "
    "no decision should rest on it without the clinician's own judgement."
)
"""Stated at the top and bottom of every report, in ``assessment.json`` and in the command's output."""


@dataclass
class Assessment:
    """The outcome of one session.

    Attributes:
        topic: What the session was about.
        date: When it ran (ISO 8601, local time with offset).
        questions: The questions and who wrote them.
        answers: One :class:`~emollm.apps.assess.answers.AnswerResult` per question, in order.
        conclusion: The conclusion and who wrote it.
        produced_by: The writing LLM, the answer analyzer's models, the speech synthesiser, the emollm version.
        speech_files: ``question_<i>.wav`` files (``speak=True``), in question order.
        ignored: Entries of the answers folder that were not used (and why).
        timings: Stage -> seconds.
        files: ``report`` / ``json`` -> the written paths (when an output folder was given).
        disclaimer: :data:`DISCLAIMER`.
    """

    topic: str
    date: str
    questions: QuestionSet
    answers: list[AnswerResult]
    conclusion: Conclusion
    produced_by: dict[str, Any] = field(default_factory=dict)
    speech_files: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    disclaimer: str = DISCLAIMER

    @property
    def missing(self) -> list[int]:
        """Numbers of the questions without an answer file."""
        return [a.index for a in self.answers if a.status == "missing"]

    @property
    def failed(self) -> list[int]:
        """Numbers of the questions whose answer file could not be analysed."""
        return [a.index for a in self.answers if a.status == "failed"]

    @property
    def exit_status(self) -> int:
        """0 when every answer file given was analysed (or none was given), 1 when some failed, 2 when all did (the
        batch commands' convention)."""
        failed = self.failed
        if not failed:
            return 0
        return 2 if not any(a.status == "analysed" for a in self.answers) else 1

    @property
    def written_by(self) -> dict[str, str]:
        """Part of the report -> ``llm`` or ``template``/``evidence``."""
        return {
            "questions": self.questions.source,
            "conclusion": self.conclusion.source,
            "transcripts": "evidence (speech recognition)",
            "emotions": "evidence (answer analysis)",
            "observations": "template (from the evidence)",
        }

    def report(self) -> str:
        """The markdown report."""
        return render_report(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``assessment.json``)."""
        return {
            "disclaimer": self.disclaimer,
            "topic": self.topic,
            "date": self.date,
            "questions": self.questions.to_dict(),
            "answers": [a.to_dict() for a in self.answers],
            "missing": self.missing,
            "failed": self.failed,
            "conclusion": self.conclusion.to_dict(),
            "written_by": self.written_by,
            "produced_by": self.produced_by,
            "speech_files": self.speech_files,
            "ignored": self.ignored,
            "timings": self.timings,
        }


def _espeak() -> str:
    exe = shutil.which("espeak-ng") or shutil.which("espeak")
    if exe is None:
        raise RuntimeError("--speak needs espeak-ng, which is not installed: apt-get install espeak-ng")
    return exe


def _espeak_version(exe: str) -> str:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return Path(exe).name
    return " ".join(out.split()[:4]) or Path(exe).name


def speak_questions(
    questions: Sequence[str], out_dir: str | Path, *, voice: str = "en-us", speed: int = 150
) -> list[Path]:
    """Write each question as speech to ``out_dir/question_<i>.wav`` (1-based) with espeak-ng; nothing is played.

    Raises:
        RuntimeError: espeak-ng is not installed, or it failed on a question.
    """
    exe = _espeak()
    out = Path(out_dir)
    paths = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, q in enumerate(questions, start=1):
            wav = Path(tmp) / f"q{i}.wav"
            try:
                subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", str(wav), q], check=True,
                               capture_output=True, timeout=60)  # fmt: skip
            except (OSError, subprocess.SubprocessError) as e:
                raise RuntimeError(f"espeak-ng could not speak question {i}: {e}") from None
            paths.append(atomic_write_bytes(out / f"question_{i}.wav", wav.read_bytes()))
    return paths


MAX_TOPIC_CHARS = 200
"""A longer topic is a paragraph, not a topic (it goes into every prompt of the session)."""


def check_out_dir(
    out_dir: str | Path, *, overwrite: bool = False, speak: int = 0, inputs: Sequence[str | Path | None] = ()
) -> None:
    """Refuse an output folder whose ``report.md``, ``assessment.json`` (or, with ``speak`` questions,
    ``question_<i>.wav``) would be overwritten, unless ``overwrite``; never overwrite an input (like ``score`` and
    ``export``).

    Raises:
        ValueError: ``out_dir`` is a file, or holds one of those files; the message names it and the fix.
    """
    from emollm.utils.io import check_output_file

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder (it receives report.md and assessment.json)")
    names = ["report.md", "assessment.json", *(f"question_{i}.wav" for i in range(1, speak + 1))]
    for name in names:
        check_output_file(out / name, flag="--out", inputs=inputs, overwrite=overwrite)


def write_assessment(assessment: Assessment, out_dir: str | Path) -> dict[str, str]:
    """Write ``report.md`` and ``assessment.json`` into ``out_dir`` atomically; returns their paths."""
    out = Path(out_dir)
    files = {"report": str(out / "report.md"), "json": str(out / "assessment.json")}
    assessment.files = files
    atomic_write_text(files["report"], assessment.report())
    atomic_write_json(files["json"], assessment.to_dict())
    return files


def run_assessment(
    topic: str,
    n_questions: int = 5,
    answers: Sequence[str | Path] | str | Path | None = None,
    *,
    out_dir: str | Path | None = None,
    speak: bool = False,
    use_llm: bool = True,
    backbone: str = "smollm2",
    llm_path: str | None = None,
    max_new_tokens: int = 160,
    precision: str = "auto",
    checkpoint: str | Path | None = None,
    labels: Sequence[str] | None = None,
    analyzer_options: dict[str, Any] | None = None,
    llm: ReasoningClient | None = None,
    analyzer: Callable[..., Any] | None = None,
    date: str | None = None,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> Assessment:
    """Run one assessment session (see the module docstring).

    Args:
        topic: What the session is about (e.g. ``"anxiety screen"``).
        n_questions: How many questions to ask (1..10).
        answers: None, a folder of answer files (sorted by name, matched to the questions in order), or answer
            paths in question order (``-``: no answer to that question). Missing answers are reported.
        out_dir: Folder for ``report.md``, ``assessment.json`` and ``question_<i>.wav``; None writes nothing.
        speak: Write each question as speech (espeak-ng) into ``out_dir``.
        use_llm: False: template questions and template conclusion (no LLM is loaded).
        backbone: Registry backbone of the writing LLM (``smollm2`` is embedded).
        llm_path: Local weights of the writing LLM; with ``checkpoint`` also its base LLM (as in ``emollm analyze``).
        max_new_tokens: Generation budget of the writing LLM.
        precision: ``auto``, ``fp32`` or ``bf16``.
        checkpoint: A trained emollm checkpoint for the answer analysis; None: zero-shot clue mode.
        labels: Emotion label set (default: MER2023's six).
        analyzer_options: Extra :func:`~emollm.apps.analyze.load_analyzer` options (clue mode: ``ClueSettings``
            fields such as ``frames``).
        llm: A ready writer (any ``ReasoningClient``) instead of building one.
        analyzer: A ready ``analyzer(path, subtitle=None) -> Analysis`` instead of building one.
        date: The report date (default: now).
        log: Receives progress lines (questions as they are chosen, each answer as it is analysed).
        overwrite: Replace an earlier session's ``report.md`` / ``assessment.json`` in ``out_dir``.

    Raises:
        ValueError: A bad number of questions, an empty or overlong topic, answers that do not fit the questions,
            or an output folder that already holds a report (without ``overwrite``).
        FileNotFoundError: An explicit answer file does not exist or is not a readable file (the reason is named).
        RuntimeError: ``speak`` without espeak-ng.
    """
    from emollm.apps.assess.questions import check_question_count

    say = log or (lambda _msg: None)
    timings: dict[str, float] = {}
    check_question_count(n_questions)  # first: every later message counts questions
    if not topic.strip():
        raise ValueError("topic: must not be empty")
    if len(topic) > MAX_TOPIC_CHARS:
        raise ValueError(
            f"topic: {len(topic)} characters, longer than {MAX_TOPIC_CHARS}: give a few words (it goes into every "
            "prompt of the session)"
        )
    if speak and out_dir is None:
        raise ValueError("--speak writes question_<i>.wav files: give an output folder (--out DIR)")
    if speak:
        _espeak()
    matched = match_answers(answers, n_questions)  # before any model loads: bad paths fail fast
    if out_dir is not None:  # before any work: an earlier report is not replaced without a word
        check_out_dir(out_dir, overwrite=overwrite, speak=n_questions if speak else 0, inputs=matched.files)
    date = date or datetime.now().astimezone().isoformat(timespec="seconds")
    from emollm import __version__

    produced_by: dict[str, Any] = {"emollm": __version__, "writer": None, "analyzer": None}
    if use_llm and llm is None:
        from emollm.apps.reasoning import LLMReasoner

        llm = LLMReasoner(backbone, llm_path, max_new_tokens=max_new_tokens, precision=precision)
    writer = llm if use_llm else None
    produced_by["writer"] = getattr(writer, "id", None)

    t = time.perf_counter()
    questions = generate_questions(topic, n_questions, writer)
    timings["questions"] = round(time.perf_counter() - t, 3)
    say(f"{len(questions.questions)} questions, written by: {questions.describe}")

    speech: list[str] = []
    if speak:
        assert out_dir is not None
        speech = [str(p) for p in speak_questions(questions.questions, out_dir)]
        produced_by["speech"] = f"espeak-ng ({_espeak_version(_espeak())}), voice en-us"

    results: list[AnswerResult] = []
    built = None
    t = time.perf_counter()
    try:
        for i, (q, path, why) in enumerate(zip(questions.questions, matched.files, matched.reasons, strict=True), 1):
            if path is None:
                results.append(AnswerResult(i, q, status="missing", reason=why))
                say(f"answer {i}: missing ({why})")
                continue
            if analyzer is None:
                built = analyzer = _build_analyzer(checkpoint, labels, llm_path, precision, analyzer_options)
            say(f"answer {i}: analysing {path}")
            results.append(_analyse(analyzer, i, q, path))
        if analyzer is not None and hasattr(analyzer, "produced_by"):
            produced_by["analyzer"] = analyzer.produced_by()
    finally:
        if built is not None:
            built.close()
    timings["answers"] = round(time.perf_counter() - t, 3)

    t = time.perf_counter()
    conclusion = write_conclusion(topic, results, writer, with_emotion=True)
    timings["conclusion"] = round(time.perf_counter() - t, 3)
    produced_by["writer_engine"] = writer.produced_by() if callable(getattr(writer, "produced_by", None)) else None
    assessment = Assessment(
        topic=topic, date=date, questions=questions, answers=results, conclusion=conclusion,
        produced_by=produced_by, speech_files=speech, ignored=matched.ignored, timings=timings,
    )  # fmt: skip
    if out_dir is not None:
        write_assessment(assessment, out_dir)
    return assessment


def _build_analyzer(
    checkpoint: str | Path | None,
    labels: Sequence[str] | None,
    llm_path: str | None,
    precision: str,
    options: dict[str, Any] | None,
) -> Any:
    from emollm.apps.analyze import load_analyzer

    if checkpoint is None:
        opts: dict[str, Any] = {"reasoning": "template", "precision": precision, "asr": True}
    else:
        opts = {"llm_path": llm_path, "precision": precision, "asr": True}
    opts.update(options or {})
    return load_analyzer(checkpoint, labels, **opts)


def _analyse(analyzer: Callable[..., Any], index: int, question: str, path: Path) -> AnswerResult:
    from emollm.media import MediaError
    from emollm.media.video import check_file

    try:
        check_file(path)  # a symlink loop, a FIFO, an empty file: the real reason, whatever the analyzer says
        analysis = analyzer(path)
    except (MediaError, OSError, ValueError) as e:  # one bad recording does not end the session
        return AnswerResult(index, question, file=str(path), status="failed", reason=str(e))
    return answer_from_analysis(index, question, path, analysis)


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
    if a.conclusion.notes:
        lines += ["*Shortened to keep the LLM's prompt bounded:* " + "; ".join(a.conclusion.notes), ""]
    lines += ["---", "", f"*{DISCLAIMER}*", ""]
    return "\n".join(lines)
