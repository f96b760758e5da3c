"""Assessment assistant for clinicians: an **assistive tool, never a diagnosis**.

A session (:func:`run_assessment`, ``emollm assess``) asks N open questions (LLM-written, validated, else a template
bank), can write them as speech, analyses one answer recording per question for transcript, emotion and evidence
(:func:`emollm.apps.analyze.load_analyzer`), and writes a markdown report with a checked conclusion. Every report states
the disclaimer, the date, the models, and which parts an LLM wrote.

Modules: :mod:`.questions` (questions, validation, template bank), :mod:`.answers` (answer files, evidence lines),
:mod:`.conclusion` (prompt with/without emotion, checks, template), :mod:`.session` (the session, its markdown
report and disclaimer), :mod:`.cli` (``emollm assess``). The with/without-emotion study harness is a recipe:
``emollm_eval.assess_compare`` (``emollm assess compare``).

Imports: ``apps.analyze``, ``apps.reasoning``, ``media``; nothing imports it but the CLI and the eval recipe.
"""

from emollm.apps.assess.answers import AnswerResult, match_answers, observations
from emollm.apps.assess.conclusion import Conclusion, check_conclusion, conclusion_prompt, write_conclusion
from emollm.apps.assess.questions import QUESTION_BANK, QuestionSet, generate_questions, validate_questions
from emollm.apps.assess.session import (
    DISCLAIMER,
    Assessment,
    render_report,
    run_assessment,
    speak_questions,
    write_assessment,
)

__all__ = [
    "DISCLAIMER",
    "QUESTION_BANK",
    "AnswerResult",
    "Assessment",
    "Conclusion",
    "QuestionSet",
    "check_conclusion",
    "conclusion_prompt",
    "generate_questions",
    "match_answers",
    "observations",
    "render_report",
    "run_assessment",
    "speak_questions",
    "validate_questions",
    "write_assessment",
    "write_conclusion",
]
