"""The with/without-emotion comparison harness on two tiny cases, with a fake deterministic judge."""

from __future__ import annotations

import json
import re

import pytest

from emollm.apps.analysis import Analysis
from emollm_eval import assess_compare
from emollm_eval.assess_compare import compare_cases, read_cases, write_compare_outputs
from emollm_eval.judge import JudgeCache


class OverlapJudge:
    """Scores the word overlap (Jaccard) of the ground truth and the prediction in an EMER clue-overlap prompt."""

    id = "fake:jaccard"

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, prompt: str) -> str:
        self.calls += 1
        gt, pred = re.search(r"Ground truth:\n(.*)\n\nPrediction:\n(.*)\n\nStep 1", prompt, re.S).groups()
        a, b = (set(re.findall(r"[a-z]+", t.lower())) for t in (gt, pred))
        return f"{round(1 + 9 * len(a & b) / len(a | b))}; word overlap"


class EmotionAwareLLM:
    """Mentions the estimated emotions only when the prompt has them."""

    id = "llm:fake"

    def generate(self, system: str, user: str, *, seed: int) -> str:
        said = " and ".join(re.findall(r'Answer \(transcript\): "(.*)"', user))
        found = re.findall(r"Estimated emotion: (\w+)", user)
        seemed = f" and seemed {' and '.join(found)}" if found else ""
        return f"The person spoke about their week, saying: {said}{seemed}; this is worth exploring further."


class TextAnalyzer:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path, subtitle=None) -> Analysis:
        self.calls += 1
        text = open(path).read()  # noqa: PTH123
        return Analysis(str(path), "sad", {"sad": 0.6, "happy": 0.4}, "", ["text"], subtitle=text, mode="clues")


@pytest.fixture
def cases(tmp_path):
    root = tmp_path / "cases"
    (root / "b_folder").mkdir(parents=True)
    (root / "a_file.json").write_text(json.dumps({
        "topic": "low mood",
        "answers": [{"question": "How have you been?", "transcript": "Not great, I stay in bed.",
                     "emotion": {"label": "sad", "confidence": 0.8, "observations": ["Voice: low pitch; slow"]}}],
        "reference": "The person spoke about their week and seemed sad and withdrawn; explore low mood.",
    }))  # fmt: skip
    (root / "b_folder" / "case.json").write_text(json.dumps({
        "answers": [{"question": "How is work?", "transcript": "Busy, but I manage."},
                    {"question": "How do you sleep?"}],
        "reference": "The person spoke about their job; work is busy but manageable.",
    }))  # fmt: skip
    (root / "README.txt").write_text("not a case")
    return root


def test_both_variants_are_scored_and_tabled(cases, tmp_path):
    read = read_cases(cases)
    assert [c.name for c in read] == ["a_file", "b_folder"] and read[0].topic == "low mood"
    judge, analyzer = OverlapJudge(), TextAnalyzer()
    result = compare_cases(
        read, llm=EmotionAwareLLM(), judge=judge, analyzer=lambda: analyzer, cache=JudgeCache(tmp_path / "c.jsonl")
    )
    assert analyzer.calls == 1  # b's transcript-only answer; a's emotion is given; b's second answer is missing
    a, b = result.rows
    assert a["emotion_sources"] == ["case file"] and b["emotion_sources"] == ["transcript", "none"]
    for row in (a, b):
        cell = row["clue_overlap"]
        assert cell["with"] is not None and cell["without"] is not None
        assert cell["delta"] == cell["with"] - cell["without"]
        assert row["with_source"] == row["without_source"] == "llm" and not row["same_prompt"]
    assert a["clue_overlap"]["delta"] > 0  # "seemed sad" matches the reference
    s = result.summary
    assert s["judge_id"] == "fake:jaccard" and s["prompt_version"] and s["writer"] == "llm:fake"
    assert s["clue_overlap"]["n_pairs"] == 2 and judge.calls == 4
    assert s["clue_overlap"]["mean_delta"] == pytest.approx(
        (a["clue_overlap"]["delta"] + b["clue_overlap"]["delta"]) / 2
    )
    with_prompt = next(r for r in result.conclusions if r["case"] == "a_file" and r["variant"] == "with")["prompt"]
    without_prompt = next(r for r in result.conclusions if r["case"] == "a_file" and r["variant"] == "without")[
        "prompt"
    ]
    assert "Estimated emotion: sad (confidence 0.80)" in with_prompt and "Estimated emotion" not in without_prompt
    assert with_prompt.split("\n")[-1] == without_prompt.split("\n")[-1]  # the same instruction

    paths = write_compare_outputs(result, tmp_path / "out", cases_dir=str(cases))
    table = paths["table"].read_text()
    assert "judge: `fake:jaccard`" in table and "| case | clue overlap with | clue overlap without | Δ |" in table
    assert "| a_file | " in table and "| b_folder | " in table and "| **mean** | " in table and "(2 pairs)" in table
    assert json.loads(paths["json"].read_text())["summary"]["clue_overlap"]["n_pairs"] == 2
    assert len(paths["conclusions"].read_text().splitlines()) == 4

    again = OverlapJudge()  # a rerun pays only for new prompts
    compare_cases(read, llm=EmotionAwareLLM(), judge=again, analyzer=lambda: analyzer,
                  cache=JudgeCache(tmp_path / "c.jsonl"))  # fmt: skip
    assert again.calls == 0


def test_cli_runs_with_a_plugged_judge_and_reports_bad_cases(cases, tmp_path, monkeypatch, capsys):
    import emollm_eval.judge

    monkeypatch.setattr(emollm_eval.judge, "make_judge", lambda spec, **kw: OverlapJudge())
    out = tmp_path / "out"
    args = [str(cases), "--judge", "fake", "--out", str(out), "--no-llm", "--no-text-analysis"]
    assert assess_compare.main(args) == 0
    table = (out / "compare.md").read_text()
    assert "conclusion writer: `template`" in table and "template (asked)" in table
    assert "b_folder (same prompt)" in table  # no emotion for b without text analysis: identical prompts
    assert (out / "judge_cache.jsonl").is_file()
    capsys.readouterr()

    (cases / "c.json").write_text(json.dumps({"answers": [{"question": "Q?"}], "reference": ""}))
    assert assess_compare.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"emollm assess compare: {cases / 'c.json'}: reference: must be the clinician's conclusion (a non-empty string)"
    ]


def test_the_session_cli_dispatches_compare(cases, tmp_path, monkeypatch):
    import emollm_eval.judge
    from emollm.apps.assess.cli import main

    monkeypatch.setattr(emollm_eval.judge, "make_judge", lambda spec, **kw: OverlapJudge())
    assert main(["compare", str(cases), "--judge", "fake", "--out", str(tmp_path / "o"), "--no-llm"]) == 0
    rows = json.loads((tmp_path / "o" / "compare.json").read_text())["rows"]
    assert rows[1]["emotion_sources"] == ["transcript", "none"]  # the real clue analyzer read b's transcript as text
