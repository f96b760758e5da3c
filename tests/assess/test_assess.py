"""The assessment assistant: question validation and fallback, answer matching, missing answers, the checked
conclusion, spoken questions, the CLI's one-line errors, and a session end to end on the embedded models."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from emollm.apps.analysis import Analysis
from emollm.apps.assess import (
    DISCLAIMER,
    AnswerResult,
    check_conclusion,
    generate_questions,
    match_answers,
    run_assessment,
    validate_questions,
    write_conclusion,
)
from emollm.apps.assess.cli import main
from emollm.apps.assess.questions import QUESTION_BANK, template_questions

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


class FakeLLM:
    """A ReasoningClient that answers from a list (the last answer repeats) and records its prompts."""

    id = "llm:fake"

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.prompts: list[tuple[str, str]] = []

    def generate(self, system: str, user: str, *, seed: int) -> str:
        self.prompts.append((system, user))
        return self.answers[min(len(self.prompts), len(self.answers)) - 1]


class FakeAnalyzer:
    """Every file is a sad voice answer."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, path, subtitle=None) -> Analysis:
        self.calls.append(str(path))
        return Analysis(
            file=str(path), label="sad", probabilities={"sad": 0.7, "happy": 0.3}, reasoning="", modalities=["audio"],
            missing={"face": "no video stream"}, subtitle=subtitle or "I have been feeling low.", mode="clues",
            evidence={"audio": {"tone": "low pitch; slow"}, "fusion": {"weights": {"text": 1.0}}},
        )  # fmt: skip

    def produced_by(self) -> dict:
        return {"mode": "clues", "models": {"asr": "fake"}}


GOOD = "The person described feeling low and sad over recent weeks; both are worth exploring in conversation."


# ------------------------------------------------------------------------------------------------- questions
@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('["How are you?", "What helps you?"]', None),
        ('Here you go:\n```json\n["How are you?", "What helps you?"]\n```', None),  # wrapped: the list is read
        ('{"questions": ["How are you?", "What helps you?"]}', "not a JSON list"),
        ("1. How are you? 2. What helps you?", "not a JSON list"),
        ('["How are you?"]', "1 items, expected 2"),
        ('["How are you?", "Tell me about it."]', "question 2 does not end with '?'"),
        ('["How are you?", "  "]', "question 2 is not a non-empty string"),
        ('["How are you?", 3]', "question 2 is not a non-empty string"),
        ('["How are you?", "how  are you?"]', "question 2 repeats question 1"),
    ],
)
def test_question_json_is_validated(text, problem):
    questions, got = validate_questions(text, 2)
    assert got == problem
    assert (questions is None) == (problem is not None)


def test_invalid_llm_json_falls_back_to_the_template_bank():
    llm = FakeLLM("Sure! Here are questions: **1. How do you sleep?** 2. What worries you?")
    qs = generate_questions("anxiety screen", 3, llm)
    assert qs.source == "template" and qs.reason == "the LLM's JSON was rejected: not a JSON list"
    assert qs.questions == list(QUESTION_BANK["anxiety"][:3])
    assert qs.writer == "llm:fake" and qs.raw.startswith("Sure!")  # kept for audit
    assert "JSON list of 3 strings" in llm.prompts[0][1] and "anxiety screen" in llm.prompts[0][1]


def test_valid_llm_json_is_used():
    llm = FakeLLM('["What worries you most these days?", "How do you cope when you feel tense?"]')
    qs = generate_questions("anxiety screen", 2, llm)
    assert qs.source == "llm" and qs.reason is None
    assert qs.questions == ["What worries you most these days?", "How do you cope when you feel tense?"]
    assert qs.describe == "LLM (llm:fake)"


def test_template_bank_follows_the_topic_and_fills_up_with_general_questions():
    assert template_questions("Sleep problems", 2) == list(QUESTION_BANK["sleep"][:2])
    ten = template_questions("anxiety screen", 10)
    assert ten[:5] == list(QUESTION_BANK["anxiety"]) and ten[5] == QUESTION_BANK["general"][0]
    assert len(set(ten)) == 10 and all(q.endswith("?") for q in ten)
    assert template_questions("follow-up visit", 3) == list(QUESTION_BANK["general"][:3])
    with pytest.raises(ValueError, match="questions: must be between 1 and 10, got 11"):
        template_questions("x", 11)


# --------------------------------------------------------------------------------------------------- answers
def test_answers_folder_is_sorted_by_name_with_numbers_compared_as_numbers(tmp_path):
    for name in ("answer_10.wav", "answer_2.mp4", "answer_1.wav", "notes.pdf", ".hidden.wav"):
        (tmp_path / name).write_bytes(b"x")
    got = match_answers(tmp_path, 4)
    assert [p.name if p else None for p in got.files] == ["answer_1.wav", "answer_2.mp4", "answer_10.wav", None]
    assert got.reasons[3] == f"no answer file for this question (the folder {tmp_path} has 3 answer file(s))"
    assert got.ignored == ["notes.pdf: not an answer file type"]
    with pytest.raises(ValueError, match="3 answer file.* for 2 question"):
        match_answers(tmp_path, 2)


def test_explicit_answers_skip_with_a_dash_and_missing_files_fail_fast(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"x")
    got = match_answers([tmp_path / "a.wav", "-"], 3)
    assert got.files[1:] == [None, None]
    assert got.reasons[1] == "skipped ('-' in the answer list)" and got.reasons[2].startswith("no answer file")
    with pytest.raises(FileNotFoundError, match="nope.mp4: no such file"):
        match_answers([tmp_path / "nope.mp4"], 2)
    (tmp_path / "b.pdf").write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported answer type .pdf"):
        match_answers([tmp_path / "b.pdf"], 2)


def test_missing_answers_are_reported_not_invented(tmp_path):
    (tmp_path / "a1.wav").write_bytes(b"x")
    analyzer, llm = FakeAnalyzer(), FakeLLM("not json", GOOD)
    a = run_assessment(
        "low mood", 3, [tmp_path / "a1.wav", "-"], out_dir=tmp_path / "out", llm=llm, analyzer=analyzer,
        date="2026-11-30T10:00:00+00:00",
    )  # fmt: skip
    assert analyzer.calls == [str(tmp_path / "a1.wav")]  # nothing analysed for the missing ones
    assert [x.status for x in a.answers] == ["analysed", "missing", "missing"] and a.missing == [2, 3]
    assert a.answers[0].emotion == "sad" and a.answers[0].confidence == 0.7
    assert "Voice: low pitch; slow" in a.answers[0].observations
    assert "Not available: face (no video stream)" in a.answers[0].observations
    assert a.conclusion.source == "llm" and a.conclusion.text == GOOD
    prompt = llm.prompts[1][1]
    assert "Question 2: " in prompt and "No answer was recorded." in prompt and "Estimated emotion: sad" in prompt
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.count("Assistive tool, not a diagnosis.") == 2
    assert "- Date: 2026-11-30T10:00:00+00:00" in report and "answered: 1, missing: 2, 3" in report
    assert "- **No answer.** skipped ('-' in the answer list)" in report
    assert "Questions written by: template bank (the LLM's JSON was rejected: not a JSON list)" in report
    assert "Conclusion written by: LLM (llm:fake)" in report
    data = json.loads((tmp_path / "out" / "assessment.json").read_text())
    assert data["disclaimer"] == DISCLAIMER and data["missing"] == [2, 3]
    assert data["answers"][1]["transcript"] is None and data["answers"][1]["emotion"] is None
    assert data["written_by"]["questions"] == "template" and data["written_by"]["conclusion"] == "llm"
    assert data["produced_by"]["writer"] == "llm:fake" and data["produced_by"]["analyzer"]["mode"] == "clues"


def test_unreadable_answer_is_reported_and_the_session_goes_on(tmp_path):
    from emollm.media.fixtures import make_corrupt_file

    bad = make_corrupt_file(tmp_path / "bad.mp4", "garbage")
    (tmp_path / "b.txt").write_text("Work has been stressful but I am coping.\n")

    class Picky(FakeAnalyzer):
        def __call__(self, path, subtitle=None):
            from emollm.media import CorruptMedia

            if str(path).endswith(".mp4"):
                raise CorruptMedia(path, "cannot decode")
            return super().__call__(path, subtitle)

    a = run_assessment("stress", 2, [bad, tmp_path / "b.txt"], use_llm=False, analyzer=Picky())
    assert [x.status for x in a.answers] == ["failed", "analysed"] and "cannot decode" in a.answers[0].reason
    assert "could not be analysed:** " in a.report()
    assert a.conclusion.source == "template" and "1 of 2 questions were answered" in a.conclusion.text


# ------------------------------------------------------------------------------------------------ conclusion
@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (GOOD, None),
        ("", "empty"),
        ("The person is fine.", "too short"),
        ("the person said that they feel sad and alone. " * 4, "repetitive"),
        ("The person talked about sleep and work and the main theme of the answers was", "truncated"),
        ("The answers show the person suffers from generalised anxiety and needs treatment.", "states a diagnosis"),
    ],
)
def test_conclusion_is_checked(text, problem):
    assert check_conclusion(text) == problem


def test_rejected_or_pointless_conclusions_use_the_template():
    answered = [AnswerResult(1, "How are you?", status="analysed", transcript="Fine.", emotion="happy", confidence=0.8)]
    looping = FakeLLM("I feel that the person feels that the person feels. " * 5)
    c = write_conclusion("general", answered, looping)
    assert c.source == "template" and c.reason == "the LLM's text was rejected: repetitive" and c.raw
    assert "question 1 happy (0.80)" in c.text
    silent = FakeLLM(GOOD)
    c = write_conclusion("general", [AnswerResult(1, "How are you?")], silent)
    assert c.source == "template" and c.reason == "no analysed answers" and silent.prompts == []
    generic = FakeLLM("The interview ended with a message of hope and resilience, and the role of family and friends.")
    c = write_conclusion("general", answered, generic)  # a story about someone else: nothing from the answers
    assert c.source == "template" and c.reason == "the LLM's text was rejected: mentions nothing from the answers"
    grounded = FakeLLM("The person answered briefly that things are fine and seemed happy; worth a gentle follow-up.")
    assert write_conclusion("general", answered, grounded).source == "llm"
    c = write_conclusion("general", answered, None, with_emotion=False)
    assert "happy" not in c.text and c.with_emotion is False


# ------------------------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--topic", "x", "--questions", "0", "--no-llm"], "--questions must be between 1 and 10, got 0"),
        (["--topic", "x", "--no-llm", "--answers", "/nope/a.mp4"], "/nope/a.mp4: no such file (use '-' for"),
        (["--topic", "x", "--no-llm", "--speak"], "--speak writes question_<i>.wav files: give an output folder"),
    ],
)
def test_cli_errors_are_one_line_with_exit_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("emollm assess: ") and message in err[0]


@needs_espeak
def test_speak_writes_one_wav_per_question(tmp_path, capsys):
    import soundfile as sf

    assert main(["--topic", "sleep", "--questions", "2", "--no-llm", "--speak", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (
        out.startswith("emollm assess: Assistive tool, not a diagnosis.") and "missing answers: question(s) 1, 2" in out
    )
    for i in (1, 2):
        data, sr = sf.read(tmp_path / f"question_{i}.wav")
        assert len(data) / sr > 0.8
    report = (tmp_path / "report.md").read_text()
    assert "- Spoken question: `question_2.wav`" in report and "- Spoken questions: espeak-ng (" in report


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def answer_clips(tmp_path_factory):
    from emollm.media.fixtures import make_face_clip

    root = tmp_path_factory.mktemp("assess-answers")
    make_face_clip(
        root / "1_happy.mp4", "astronaut", seconds=2.5, text="I am so happy, this is wonderful news!",
        voice={"pitch": 70, "speed": 170, "amplitude": 120, "speaker": "en-us"},
    )  # fmt: skip
    make_face_clip(
        root / "2_sad.mp4", "grace_hopper", seconds=3.0, text="I feel sad and lonely.",
        voice={"pitch": 25, "speed": 110, "amplitude": 70, "speaker": "en-us"},
    )  # fmt: skip
    return root


@pytest.mark.slow
@needs_espeak
def test_assessment_end_to_end_on_the_embedded_models(answer_clips, tmp_path, capsys):
    start = time.perf_counter()
    args = ["--topic", "anxiety screen", "--questions", "2", "--answers", str(answer_clips), "--out", str(tmp_path)]
    assert main([*args, "--frames", "6", "--max-new-tokens", "96"]) == 0
    elapsed = time.perf_counter() - start
    out = capsys.readouterr().out
    assert "Assistive tool, not a diagnosis." in out and f"report: {tmp_path / 'report.md'}" in out
    data = json.loads((tmp_path / "assessment.json").read_text())
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# Assessment: anxiety screen") and "Assistive tool, not a diagnosis." in report
    engine, backbone, weights = data["produced_by"]["writer"].split(":")[:3]  # the engine auto picks (llm, llama.cpp)
    assert engine in ("llm", "llama.cpp") and (backbone, weights) == ("smollm2", "embedded")
    assert data["questions"]["source"] in ("llm", "template") and len(data["questions"]["questions"]) == 2
    for i, q in enumerate(data["questions"]["questions"], start=1):
        assert f"## Question {i}: {q}" in report
    happy, sad = data["answers"]
    assert "happy" in happy["transcript"].lower() and "sad" in sad["transcript"].lower()
    for a in (happy, sad):
        assert a["status"] == "analysed" and a["emotion"] and 0 < a["confidence"] <= 1
        assert f'- Transcript: "{a["transcript"]}"' in report
        assert f"- Emotion: **{a['emotion']}**, confidence {a['confidence']:.2f}" in report
    assert happy["emotion"] == "happy" and any("AU12" in o for o in happy["observations"])
    conclusion = report.split("## Conclusion", 1)[1]
    assert data["conclusion"]["text"] and data["conclusion"]["text"] in conclusion
    print(f"assess e2e: {elapsed:.1f} s, timings {data['timings']}")
