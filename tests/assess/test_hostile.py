"""``emollm assess`` under hostile input, each case a test: answers that all fail (non-zero exit), symlink loops,
broken links, FIFOs, empty and non-UTF-8 answers (the real reason, never "file not found"; a broken entry keeps its
place so later answers keep their questions), question counts out of range, an earlier report in ``--out``, ``--out``
naming a file, ``--json`` purity, empty and overlong topics, and transcripts that would overflow the conclusion's
prompt. The other half of the battery is in ``test_assess.py`` (invalid LLM JSON, missing and unreadable answers,
rejected conclusions, unsupported types, too many answers, a missing file)."""

from __future__ import annotations

import json
import os

import pytest

from emollm.apps.analysis import Analysis
from emollm.apps.assess import run_assessment
from emollm.apps.assess.cli import main
from emollm.apps.assess.conclusion import MAX_TRANSCRIPT_CHARS, conclusion_prompt, write_conclusion

from .test_assess import GOOD, FakeAnalyzer, FakeLLM


@pytest.fixture
def fake_analyzer(monkeypatch):
    """The CLI's answer analyzer replaced by :class:`FakeAnalyzer` (these tests are about files, flags and exits;
    the real reasons for unusable files come from the media layer's check, which runs before any analyzer)."""
    made: list[FakeAnalyzer] = []

    def build(*args, **kwargs):
        made.append(FakeAnalyzer())
        made[-1].close = lambda: None
        return made[-1]

    monkeypatch.setattr("emollm.apps.assess.session._build_analyzer", build)
    return made


def _answers(folder, **files: bytes):
    folder.mkdir(exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def _one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("answer ")]
    errors = [line for line in err if "Assistive tool" not in line and "questions, written by" not in line]
    assert len(errors) == 1, err
    return errors[0]


# ------------------------------------------------------------------------------------------------ exit status
def test_every_answer_failing_is_exit_2_with_the_report_still_written(tmp_path, capsys, fake_analyzer):
    answers = _answers(tmp_path / "a", **{"1.wav": b""})
    os.symlink("2.mp4", answers / "2.mp4")  # a symlink loop
    out = tmp_path / "out"
    assert main(["--topic", "sleep", "--questions", "2", "--no-llm", "--answers", str(answers), "--out", str(out)]) == 2
    line = _one_line(capsys)
    assert line.startswith("emollm assess: none of the 2 answer files could be analysed (question 1: ")
    assert "the file is empty" in line
    data = json.loads((out / "assessment.json").read_text())
    assert data["failed"] == [1, 2] and "symlink loop" in data["answers"][1]["reason"]
    assert fake_analyzer == [] or fake_analyzer[0].calls == []  # nothing reached the analyzer


def test_some_answers_failing_is_exit_1(tmp_path, capsys, fake_analyzer):
    answers = _answers(tmp_path / "a", **{"1.wav": b"RIFF....", "2.wav": b""})
    assert main(["--topic", "sleep", "--questions", "2", "--no-llm", "--answers", str(answers)]) == 1
    assert "1 of 2 answer files could not be analysed (question 2: " in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ answer files
def test_a_symlink_loop_broken_link_or_fifo_is_named_for_what_it_is(tmp_path, capsys):
    os.symlink("loop.mp4", tmp_path / "loop.mp4")
    os.symlink(tmp_path / "gone.mp4", tmp_path / "broken.mp4")
    os.mkfifo(tmp_path / "pipe.wav")
    for name, what in (("loop.mp4", "symlink loop"), ("broken.mp4", "broken symlink"), ("pipe.wav", "is a FIFO")):
        assert main(["--topic", "x", "--no-llm", "--answers", str(tmp_path / name)]) == 2
        line = _one_line(capsys)
        assert what in line and "file not found" not in line, line
    assert main(["--topic", "x", "--no-llm", "--answers", str(tmp_path / "nope.mp4")]) == 2
    assert "no such file (use '-' for a question left unanswered)" in _one_line(capsys)


def test_a_broken_entry_in_a_folder_keeps_its_place(tmp_path):
    answers = _answers(tmp_path / "a", **{"1.wav": b"RIFF", "3.wav": b"RIFF"})
    os.symlink("2.mp4", answers / "2.mp4")  # question 2's answer is a symlink loop
    os.mkfifo(answers / "4.wav")  # and question 4's a FIFO (never opened: it would block)
    a = run_assessment("sleep", 4, answers, use_llm=False, analyzer=FakeAnalyzer())
    assert [x.status for x in a.answers] == ["analysed", "failed", "analysed", "failed"]
    assert a.answers[2].file.endswith("3.wav")  # not shifted into question 2
    assert "symlink loop" in a.answers[1].reason and "is a FIFO" in a.answers[3].reason
    assert a.exit_status == 1 and a.failed == [2, 4]


def test_non_utf8_text_answer_fails_with_the_reason(tmp_path):
    from emollm.apps.analyze import load_analyzer  # noqa: F401 - the real text path reads the file

    bad = tmp_path / "a.txt"
    bad.write_bytes(b"caf\xe9 au lait\n")

    class ReadsText(FakeAnalyzer):
        def __call__(self, path, subtitle=None):
            from emollm.media import load_sample

            load_sample(path, modalities=["text"])
            return super().__call__(path, subtitle)

    a = run_assessment("x", 1, [bad], use_llm=False, analyzer=ReadsText())
    assert a.answers[0].status == "failed" and "not UTF-8" in a.answers[0].reason and a.exit_status == 2


# ------------------------------------------------------------------------------------------------ flags
@pytest.mark.parametrize("n", ["-1", "0", "11", "100000"])
def test_question_counts_out_of_range_are_a_range_error(n, capsys):
    assert main(["--topic", "x", "--no-llm", "--questions", n]) == 2
    assert _one_line(capsys) == f"emollm assess: --questions must be between 1 and 10, got {n}"


@pytest.mark.parametrize(
    ("topic", "fragment"), [("", "topic: must not be empty"), ("   ", "topic: must not be empty"),
                            ("anxiety " * 100, "topic: 800 characters, longer than 200")],
)  # fmt: skip
def test_empty_and_overlong_topics(topic, fragment, capsys):
    assert main(["--topic", topic, "--no-llm", "--questions", "2"]) == 2
    assert fragment in _one_line(capsys)


def test_an_earlier_report_is_not_overwritten_without_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("the clinician's notes\n")
    assert main(["--topic", "sleep", "--questions", "2", "--no-llm", "--out", str(out)]) == 2
    line = _one_line(capsys)
    assert f"--out {out / 'report.md'} already exists; pass --overwrite to replace it" in line
    assert (out / "report.md").read_text() == "the clinician's notes\n" and not (out / "assessment.json").exists()
    assert main(["--topic", "sleep", "--questions", "2", "--no-llm", "--out", str(out), "--overwrite"]) == 0
    assert (out / "report.md").read_text().startswith("# Assessment: sleep")
    (tmp_path / "file").write_text("x")
    assert main(["--topic", "sleep", "--no-llm", "--out", str(tmp_path / "file")]) == 2
    assert "is a file; give a folder" in _one_line(capsys)


def test_json_stdout_is_exactly_one_document(tmp_path, capsys):
    assert main(["--topic", "sleep", "--questions", "2", "--no-llm", "--json", "--out", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)  # the whole of stdout parses: nothing before or after the document
    assert data["disclaimer"].startswith("Assistive tool, not a diagnosis.")
    assert captured.err.count("Assistive tool, not a diagnosis.") == 2  # before and after, on stderr
    assert main(["--topic", "sleep", "--questions", "2", "--no-llm", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["questions"]["source"] == "template"


# ------------------------------------------------------------------------------------------------ bounded prompt
def test_long_transcripts_are_cut_to_share_the_conclusion_prompt(tmp_path):
    """Ten answers of 2000 characters each (the analyzer's own bound) would make a 20,000-character prompt; they
    share MAX_TRANSCRIPT_CHARS instead, and the conclusion records what was cut."""
    long = "I have not slept well for weeks and I worry about work every single night. " * 27  # 2025 chars

    class Talkative(FakeAnalyzer):
        def __call__(self, path, subtitle=None) -> Analysis:
            return super().__call__(path, subtitle=long)

    answers = _answers(tmp_path / "a", **{f"{i}.wav": b"RIFF" for i in range(1, 11)})
    llm = FakeLLM('["x?"]', GOOD)
    a = run_assessment("sleep", 10, answers, llm=llm, analyzer=Talkative())
    prompt = llm.prompts[-1][1]
    transcripts = sum(len(line) for line in prompt.splitlines() if line.startswith("Answer (transcript)"))
    assert transcripts <= MAX_TRANSCRIPT_CHARS + 10 * 30 and len(prompt) < 12_000
    assert len(a.conclusion.notes) == 10 and a.conclusion.notes[0].startswith(
        "question 1's transcript in the conclusion's prompt: 2,0"
    )
    assert "Shortened to keep the LLM's prompt bounded" in a.report()
    assert conclusion_prompt("sleep", a.answers)[1] == prompt  # the comparison harness sees the same bound
    short = write_conclusion("sleep", a.answers[:1], FakeLLM(GOOD))
    assert short.notes == []  # one answer fits whole
