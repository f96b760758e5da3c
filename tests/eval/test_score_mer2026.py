"""``emollm score ov --protocol mer2026-track2|mer-unibench-hit`` and ``emollm score prefer`` from files, with the
hand-made wheel folder of tests/emollm/test_mer2026.py; the label extraction through a seeded local judge."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
import torch

from emollm.scoring.mer2026 import EXTRACTION_PROMPT
from emollm_eval.mer2026 import SampledJudge
from emollm_eval.score import main
from tests.emollm.test_mer2026 import GOLD, PRED, write_wheels


def _csv(path, column, rows):
    import csv

    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", column])
        w.writerows(rows.items())
    return path


def test_ew_protocol_from_files(tmp_path, capsys):
    wheels = write_wheels(tmp_path / "wheel")
    gold = _csv(tmp_path / "gold.csv", "openset", GOLD)
    pred = _csv(tmp_path / "pred.csv", "openset", PRED)
    args = ["ov", "--protocol", "mer2026-track2", "--wheels", str(wheels), "--pred", str(pred), "--gold", str(gold)]
    assert main([*args, "--json", "--per-sample", str(tmp_path / "per.csv")]) == 0
    report = json.loads(capsys.readouterr().out)
    expected_f = float((4 * Fraction(2, 5) + Fraction(4, 7)) / 5)  # worked out in tests/emollm/test_mer2026.py
    assert report["f1"] == pytest.approx(expected_f) and report["protocol"] == "mer2026-track2"
    assert report["extraction"].startswith("none") and report["wheel_source"]["folder"] == str(wheels.resolve())
    assert "happy|sad / angry|happy" in (tmp_path / "per.csv").read_text()  # s1 on wheel1: gold / pred clusters
    assert main(args) == 0
    assert "EW level1: F1" in capsys.readouterr().out
    # errors: no --wheels, wheel flags on the default protocol
    assert main(["ov", "--protocol", "mer2026-track2", "--pred", str(pred), "--gold", str(gold)]) == 2
    assert "needs --wheels DIR" in capsys.readouterr().err
    assert main(["ov", "--wheels", str(wheels), "--pred", str(pred), "--gold", str(gold)]) == 2
    hit = _csv(tmp_path / "hit.csv", "openset", {"x1": "happy", "x3": "grief"})
    hp = _csv(tmp_path / "hp.csv", "openset", {"x1": "[glad, sad]", "x3": "[calm]"})
    assert main(["ov", "--protocol", "mer-unibench-hit", "--wheels", str(wheels), "--pred", str(hp), "--gold",
                 str(hit), "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out.split("\n", 0)[0])["hit_rate"] == pytest.approx(0.5)


def test_prefer_command(tmp_path, capsys):
    gold = _csv(tmp_path / "g.csv", "preference", {"a": "a1", "b": "a2", "c": "same", "d": "a2"})
    pred = _csv(tmp_path / "p.csv", "response", {"a": "a1", "b": "a1 is worse, a2", "c": "a1", "d": "same"})
    assert main(["prefer", "--pred", str(pred), "--gold", str(gold), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    # kept a, b, d: true [a1, a2, a2], predicted [a1, a1, a1] -> a1: F1 2/4 (support 1), a2: 0 (support 2)
    assert r["weighted_f1"] == pytest.approx(0.5 / 3) and r["accuracy"] == pytest.approx(1 / 3)
    tie = _csv(tmp_path / "t.csv", "preference", {"a": "tie", "b": "a1", "c": "a1", "d": "a2"})
    assert main(["prefer", "--pred", str(pred), "--gold", str(tie)]) == 2
    assert "hide labels" in capsys.readouterr().err


def test_extraction_with_a_seeded_local_judge(tmp_path, capsys):
    """Free-text answers -> labels through a tiny local LLM (sampled as released, seeded): the same seed gives the
    same extraction, and the settings are stored with the score and in --extracted."""
    from emollm_eval import mer2026
    from tests.emollm.conftest import make_tiny

    torch.manual_seed(0)
    model, processor = make_tiny("qwen2", {})
    judge = SampledJudge("tiny-qwen2", model=model, processor=processor, seed=3, max_new_tokens=6)
    reasons = {f"n{i}": f"The person smiles and laughs {i}." for i in range(5)}
    first = [judge([EXTRACTION_PROMPT.format(reason=r)])[0] for r in reasons.values()]
    judge.offset = 0
    again = [judge([EXTRACTION_PROMPT.format(reason=r)])[0] for r in reasons.values()]
    assert first == again
    settings = judge.settings()
    assert settings["temperature"] == 0.7 and settings["top_p"] == 0.8 and settings["repetition_penalty"] == 1.05
    assert settings["seed"] == 3 and settings["judge"] == "tiny-qwen2"

    import argparse

    wheels = write_wheels(tmp_path / "wheel")
    gold = _csv(tmp_path / "gold.csv", "openset", {n: "[happy]" for n in reasons})
    pred = _csv(tmp_path / "desc.csv", "reason", reasons)
    args = argparse.Namespace(
        protocol="mer2026-track2", wheels=wheels, gold=gold, pred=pred, gold_column="openset", pred_column="reason",
        judge=None, level="level1", extracted=tmp_path / "extracted.csv",
    )  # fmt: skip
    judge.offset = 0
    report, rows = mer2026.score_ov_protocol(args, judge=judge)
    assert report["extraction"]["seed"] == 3 and report["n_gold"] == 5
    text = (tmp_path / "extracted.csv").read_text()
    assert text.startswith("# extracted by {") and '"seed": 3' in text
    # the extracted file scores on its own like any label-list file (its provenance line is skipped)
    extracted = str(tmp_path / "extracted.csv")
    args = ["ov", "--protocol", "mer2026-track2", "--wheels", str(wheels), "--pred", extracted, "--gold", str(gold)]
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["f1"] == pytest.approx(report["f1"])


def _ov_args(wheels, pred, gold, *extra):
    return ["ov", "--protocol", "mer2026-track2", "--wheels", str(wheels), "--pred", str(pred), "--pred-column",
            "reason", "--gold", str(gold), *extra]  # fmt: skip


def test_extraction_through_an_openai_compatible_server_resumes_after_it_dies(tmp_path, capsys):
    """The release extracts on vLLM: `--judge http://.../v1` sends the released sampling (temperature 0.7, top-p 0.8,
    repetition_penalty 1.05, 512 tokens, a seed per prompt); `--extracted` is rewritten after each batch, so a server
    that answers garbage mid-job stops the run with the first batch kept, and the same command against a working
    server asks only for the rest and ends with the labels of an uninterrupted run."""
    from tests.engines.fake_openai import FakeOpenAI

    wheels = write_wheels(tmp_path / "wheel")
    reasons = {f"n{i:02d}": f"The person smiles and laughs {i}." for i in range(12)}
    gold = _csv(tmp_path / "gold.csv", "openset", {n: "[happy]" for n in reasons})
    pred = _csv(tmp_path / "desc.csv", "reason", reasons)
    # an uninterrupted run: the reference
    with FakeOpenAI() as server:
        ref = tmp_path / "ref.csv"
        args = _ov_args(wheels, pred, gold, "--judge", server.url, "--judge-model", "qwen", "--extracted", str(ref))
        assert main([*args, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        body, url = server.requests[0]["body"], server.url
    assert len(server.requests) == 12
    assert body["temperature"] == 0.7 and body["top_p"] == 0.8 and body["max_tokens"] == 512
    assert body["repetition_penalty"] == 1.05 and isinstance(body["seed"], int) and body["model"] == "qwen"
    assert report["extraction"]["judge"] == "openai-compatible:qwen" and report["extraction"]["endpoint"] == url
    assert report["extraction"]["served"]["served_model"] == "fake-served-model"
    assert report["extraction"]["resumed"] == 0 and report["n_gold"] == 12
    # the server answers garbage after the first batch of 8
    out = tmp_path / "extracted.csv"
    args = _ov_args(wheels, pred, gold, "--judge", "URL", "--judge-model", "qwen", "--extracted", str(out))
    with FakeOpenAI(script=["ok"] * 8, default="garbage") as server:
        args[args.index("URL")] = server.url
        assert main(args) == 2
    err = capsys.readouterr().err
    assert "not JSON" in err and f"kept in {out}" in err
    assert sorted(json.loads(out.read_text().split("\n", 1)[0].removeprefix("# extracted by "))) == sorted(
        json.loads(ref.read_text().split("\n", 1)[0].removeprefix("# extracted by "))
    )
    assert len(out.read_text().splitlines()) == 2 + 8  # provenance, header, the first batch
    with FakeOpenAI() as server:
        args[args.index(next(a for a in args if a.startswith("http")))] = server.url
        assert main([*args, "--json"]) == 0
        assert len(server.requests) == 4  # only the names the file did not hold
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["extraction"]["resumed"] == 8 and resumed["f1"] == pytest.approx(report["f1"])
    assert out.read_text().split("\n", 1)[1] == ref.read_text().split("\n", 1)[1]  # the same labels, same order


def test_server_judge_refusals(tmp_path, capsys):
    from tests.engines.fake_openai import FakeOpenAI

    wheels = write_wheels(tmp_path / "wheel")
    gold = _csv(tmp_path / "gold.csv", "openset", {"a": "[happy]"})
    pred = _csv(tmp_path / "desc.csv", "reason", {"a": "She smiles."})
    with FakeOpenAI() as server:
        assert main(_ov_args(wheels, pred, gold, "--judge", server.url)) == 2  # no model name
        assert "--judge-model NAME" in capsys.readouterr().err
        bad = _ov_args(wheels, pred, gold, "--judge", server.url, "--judge-model", "m", "--judge-extra", "[1]")
        assert main(bad) == 2
        assert "--judge-extra: a JSON object is needed" in capsys.readouterr().err
        # an --extracted file of another judge is refused, not mixed into this one
        other = tmp_path / "other.csv"
        other.write_text('# extracted by {"judge": "someone else"}\nname,openset\na,"[""sad""]"\n')
        args = _ov_args(wheels, pred, gold, "--judge", server.url, "--judge-model", "m", "--extracted", str(other))
        assert main(args) == 2
        assert "made by another judge or settings" in capsys.readouterr().err
        precious = tmp_path / "precious.csv"
        precious.write_text("name,openset\na,[x]\n")
        args[-1] = str(precious)
        assert main(args) == 2 and precious.read_text() == "name,openset\na,[x]\n"
        assert "not a judge-output file" in capsys.readouterr().err
        assert server.requests == []
    assert main(_ov_args(wheels, pred, gold, "--judge", "smollm2", "--judge-model", "m")) == 2
    assert "for a server judge" in capsys.readouterr().err


def test_a_resumed_local_extraction_samples_as_an_uninterrupted_one(tmp_path):
    """The local judge seeds each batch by the index of its first prompt: a run stopped after its first batch and
    resumed from --extracted gives the labels of a run that was never stopped."""
    import argparse

    from emollm_eval import mer2026
    from tests.emollm.conftest import make_tiny

    torch.manual_seed(0)
    model, processor = make_tiny("qwen2", {})
    wheels = write_wheels(tmp_path / "wheel")
    reasons = {f"n{i}": f"The person smiles and laughs {i}." for i in range(5)}
    gold = _csv(tmp_path / "gold.csv", "openset", {n: "[happy]" for n in reasons})
    pred = _csv(tmp_path / "desc.csv", "reason", reasons)

    def run(extracted, judge):
        args = argparse.Namespace(
            protocol="mer2026-track2", wheels=wheels, gold=gold, pred=pred, gold_column="openset",
            pred_column="reason", judge=None, level="level1", extracted=extracted,
        )  # fmt: skip
        return mer2026.score_ov_protocol(args, judge=judge)[0]

    def judge():
        return SampledJudge("tiny-qwen2", model=model, processor=processor, seed=3, max_new_tokens=6, batch_size=2)

    run(tmp_path / "whole.csv", judge())

    class Stops(SampledJudge):
        def __call__(self, prompts):
            if self.offset >= 2:
                raise OSError("killed")
            return super().__call__(prompts)

    stopped = Stops("tiny-qwen2", model=model, processor=processor, seed=3, max_new_tokens=6, batch_size=2)
    with pytest.raises(OSError):
        run(tmp_path / "part.csv", stopped)
    assert len((tmp_path / "part.csv").read_text().splitlines()) == 2 + 2
    assert run(tmp_path / "part.csv", judge())["extraction"]["resumed"] == 2
    assert (tmp_path / "part.csv").read_text() == (tmp_path / "whole.csv").read_text()


class ScriptedJudge:
    """A judge whose answers are a function of the prompt (the protocol under test is ours, not a model's): label
    lists for the extraction prompt, and for the sentiment prompt positive / negative / something invalid."""

    batch_size = 2

    def __init__(self, stop_after: int | None = None):
        self.prompts: list[str] = []
        self.stop_after = stop_after

    def settings(self):
        return {"judge": "scripted", "seed": 0}

    def __call__(self, prompts):
        if self.stop_after is not None and len(self.prompts) >= self.stop_after:
            raise OSError("the judge went away")
        self.prompts += prompts
        out = []
        for p in prompts:
            tail = p.rsplit("Input: ", 1)[1]
            if "Please act as an expert" in p:  # the sentiment prompt; its input is the extracted list
                out.append("positive" if "happy" in tail else "negative" if "sad" in tail else "I cannot tell")
            else:
                out.append("[happy]" if "smile" in tail else "[sad]" if "cries" in tail else "[]")
        return out


def test_sentiment_command_from_descriptions_resumes_and_scores(tmp_path, capsys):
    """Descriptions -> labels -> sentiment -> the 2-class score; the judge's answers are checkpointed and a run
    stopped mid-way resumes with only the missing prompts; a gold column that is not a number is named."""
    import argparse

    from emollm_eval import mer2026

    reasons = {"a": "She smiles.", "b": "He cries.", "c": "Nothing to see.", "d": "She smiles again.", "z": "x"}
    gold = _csv(tmp_path / "gold.csv", "sentiment", {"a": "1.5", "b": "-2", "c": "0.8", "d": "0", "z": "-0.2"})
    pred = _csv(tmp_path / "desc.csv", "reason", reasons)

    def args(**kw):
        base = dict(gold=gold, pred=pred, gold_column="sentiment", pred_column="reason", descriptions=True,
                    judge=None, extracted=tmp_path / "labels.csv", answers=tmp_path / "answers.csv")  # fmt: skip
        return argparse.Namespace(**{**base, **kw})

    with pytest.raises(OSError):  # extraction done (3 batches of 2), the sentiment judge stops after its first batch
        mer2026.score_sentiment(args(), judge=ScriptedJudge(stop_after=6))
    assert len((tmp_path / "answers.csv").read_text().splitlines()) == 2 + 2
    judge = ScriptedJudge()
    report, rows = mer2026.score_sentiment(args(), judge=judge)
    assert len(judge.prompts) == 3 and all("Please act as an expert" in p for p in judge.prompts)
    assert report["judge"]["resumed"] == 2 and report["extraction"]["resumed"] == 5
    # kept: a (+, positive), b (-, negative), c (+, invalid: "[]" -> "I cannot tell"), z (-, "[]" -> invalid)
    assert (report["n"], report["dropped_zero"], report["invalid"]) == (4, 1, 2)
    assert report["accuracy"] == 0.5 and report["as_released"]["accuracy"] == 0.75
    assert rows[2] == ["c", "0.8", "[]", "I cannot tell", "invalid"]
    bad = _csv(tmp_path / "bad.csv", "sentiment", {"a": "positive"})
    with pytest.raises(ValueError, match=r"bad.csv: the sentiment of 'a' is 'positive', not a number"):
        mer2026.score_sentiment(args(gold=bad, extracted=None, answers=None), judge=ScriptedJudge())


def test_sentiment_command_line_through_a_server(tmp_path, capsys):
    """`emollm score sentiment` with a server judge: every answer of the fake server is unparseable, so every sample
    is invalid (wrong in our score) and the release's mapping is reported beside it; no judge is an error."""
    from tests.engines.fake_openai import FakeOpenAI

    gold = _csv(tmp_path / "gold.csv", "sentiment", {"a": "1.5", "b": "-2"})
    pred = _csv(tmp_path / "pred.csv", "openset", {"a": "[happy]", "b": "[sad]"})
    with FakeOpenAI() as server:
        argv = ["sentiment", "--pred", str(pred), "--gold", str(gold), "--judge", server.url, "--judge-model", "q"]
        assert main([*argv, "--json"]) == 0
        assert len(server.requests) == 2
        sent = sorted(r["body"]["messages"][0]["content"].rsplit("Input: ", 1)[1] for r in server.requests)
        assert sent == ["[happy]; Output: ", "[sad]; Output: "]
    r = json.loads(capsys.readouterr().out)
    assert r["invalid"] == 2 and r["accuracy"] == 0 and r["as_released"]["accuracy"] == 0.5
    assert r["judge"]["served"]["served_model"] == "fake-served-model"
    assert main(["sentiment", "--pred", str(pred), "--gold", str(gold)]) == 2
    assert "needs --judge" in capsys.readouterr().err
