"""EMER scoring: score parsing, prediction files, a deterministic fake judge, the on-disk cache, a tiny local judge,
the OpenAI-compatible judge against a stub server on 127.0.0.1, the EMER eval run, and (slow) the real SmolLM2."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from emollm_eval.cli import main
from emollm_eval.datasets import read_emer
from emollm_eval.emer import (
    CLUE_OVERLAP_PROMPT,
    EMER_PROMPTS_VERSION,
    LABEL_EXTRACT_PROMPT,
    parse_score,
    read_emer_predictions,
    run_emer,
    score_emer,
)
from emollm_eval.judge import Judge, JudgeCache, JudgeError, LocalJudge, OpenAICompatibleJudge, make_judge

GT = (
    "names,emotions,subtitles,reasons\n"
    'sample_00000001,angry,"You lied to me!","The man frowns, raises his voice and points at the other person; '
    'together with the accusation in his words, he is angry."\n'
    'sample_00000002,sad,"I miss her.","Her eyes are red, her voice trembles and she looks down; she is sad about '
    'the loss."\n'
    'sample_00000003,happy,"We won!","She smiles widely and laughs; the words celebrate a victory, so she is '
    'happy."\n'
)
PRED = (
    "names,chi_reasons\n"
    'sample_00000001,"The person speaks loudly with furrowed brows, which suggests anger."\n'
    'sample_00000002,"Her voice is shaky and she avoids eye contact; she seems sad."\n'
)


class FakeJudge:
    """Answers every prompt with the same text and counts calls."""

    def __init__(self, answer: str = "7; similar clues", judge_id: str = "fake-judge-v0"):
        self.id = judge_id
        self.answer = answer
        self.prompts: list[str] = []

    def complete(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.answer


@pytest.fixture
def emer_files(tmp_path) -> tuple[Path, Path]:
    gt, pred = tmp_path / "gt-eng.csv", tmp_path / "pred.csv"
    gt.write_text(GT)
    pred.write_text(PRED)
    return gt, pred


@pytest.mark.parametrize(
    "text, expected",
    [
        ("7; both mention the frown", (7.0, "ok")),
        ("Score: 8/10. The clues overlap.", (8.0, "ok")),
        ("6.5; partial", (6.5, "ok")),
        ("0; nothing in common", (0.0, "ok")),
        ("AU12 is shared; 9", (9.0, "ok")),  # digits inside a word are not a number
        ("The score (an integer from 1 to 10) is 10.", (10.0, "ok")),  # SmolLM2 echoes the prompt
        ("On a scale of 1-10, I would say 4", (4.0, "ok")),
        ("Rated 0 to 10: nothing", (None, "no number")),
        ("They overlap a lot.", (None, "no number")),
        ("", (None, "empty answer")),
        ("15; very similar", (None, "out of range: 15")),
    ],
)
def test_parse_score(text, expected):
    assert parse_score(text) == expected


def test_read_predictions_formats(tmp_path, emer_files):
    _, pred = emer_files
    preds = read_emer_predictions(pred)
    assert list(preds) == ["sample_00000001", "sample_00000002"] and "anger" in preds["sample_00000001"]
    jsonl = tmp_path / "predictions.jsonl"
    jsonl.write_text('{"name": "a", "answer": "x"}\n{"name": "b", "answer": null}\n')
    assert read_emer_predictions(jsonl) == {"a": "x", "b": ""}
    bad = tmp_path / "bad.csv"
    bad.write_text("name,label\na,happy\n")
    with pytest.raises(ValueError, match="expected 'names,chi_reasons'"):
        read_emer_predictions(bad)
    dup = tmp_path / "dup.csv"
    dup.write_text("names,chi_reasons\na,x\na,y\n")
    with pytest.raises(ValueError, match=r"dup.csv:3: duplicate name 'a'"):
        read_emer_predictions(dup)


def test_fake_judge_scores_and_cache(tmp_path, emer_files):
    gt, pred = emer_files
    judge = FakeJudge()
    assert isinstance(judge, Judge)
    out = tmp_path / "out"
    result = run_emer(gt, pred, judge, out, progress=False)
    s = result.summary
    for metric in ("clue_overlap", "label_overlap"):
        assert s[metric]["mean"] == 7.0 and s[metric]["n_valid"] == 2 and s[metric]["n_invalid"] == 0
        assert s[metric]["n_missing_prediction"] == 1 and s[metric]["format_ok"] == 2
    assert s["judge_id"] == "fake-judge-v0" and s["prompt_version"] == EMER_PROMPTS_VERSION == "1"
    # 2 clue prompts + 4 emotion-word prompts + 2 label-score prompts (the latter are identical: asked once)
    assert len(judge.prompts) == 7 and s["cache_hits"] == 0
    assert CLUE_OVERLAP_PROMPT.split("\n")[0] in judge.prompts[0] and "furrowed brows" in judge.prompts[0]
    assert sum(LABEL_EXTRACT_PROMPT.split("\n")[0] in p for p in judge.prompts) == 4
    rows = [json.loads(x) for x in (out / "emer_scores.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["judge_id"] == "fake-judge-v0" and r["prompt_version"] == "1" for r in rows)
    missing = [r for r in rows if r["name"] == "sample_00000003"]
    assert [r["status"] for r in missing] == ["missing prediction"] * 2 and all(r["score"] is None for r in missing)
    label_row = next(r for r in rows if r["metric"] == "label_overlap" and r["score"] is not None)
    assert label_row["gt_emotions"] == label_row["pred_emotions"] == "7; similar clues"
    metrics = json.loads((out / "emer_metrics.json").read_text())
    assert metrics["clue_overlap"]["mean"] == 7.0 and metrics["judge_id"] == "fake-judge-v0"
    assert "fake-judge-v0" in (out / "emer_report.md").read_text()

    # second run: every call comes from the on-disk cache
    again = FakeJudge()
    result2 = run_emer(gt, pred, again, out, progress=False)
    assert again.prompts == [] and result2.summary["cache_hits"] == 7
    assert result2.summary["clue_overlap"] == s["clue_overlap"]
    assert all(r.cached for r in result2.rows if r.status != "missing prediction")
    # another judge id or prompt version never reuses those answers
    other = FakeJudge(judge_id="another-judge")
    run_emer(gt, pred, other, out, progress=False)
    assert len(other.prompts) == 7
    cache = JudgeCache(out / "judge_cache.jsonl")
    assert len(cache) == 14 and cache.get("fake-judge-v0", "2", judge.prompts[0]) is None


def test_unparseable_answers_are_invalid_not_scored(emer_files):
    gt, pred = emer_files
    result = score_emer(read_emer(gt), read_emer_predictions(pred), FakeJudge("They are quite similar."))
    for metric in ("clue_overlap", "label_overlap"):
        m = result.summary[metric]
        assert m["mean"] is None and m["n_valid"] == 0 and m["n_invalid"] == 2
        assert m["invalid_reasons"] == {"no number": 2}
    with pytest.raises(ValueError, match="not in the ground truth"):
        score_emer(read_emer(gt), {"sample_99": "x"}, FakeJudge())
    with pytest.raises(ValueError, match="unknown EMER metric"):
        score_emer(read_emer(gt), {}, FakeJudge(), metrics=["clues"])


def test_tiny_local_judge_is_counted(emer_files, tmp_path):
    import torch

    from tests.emollm.conftest import make_tiny

    torch.manual_seed(0)
    model, processor = make_tiny("llama2")
    judge = LocalJudge.from_model(model, processor, "tiny-random-llama2", max_new_tokens=6)
    assert judge.id == "tiny-random-llama2|greedy,max_new_tokens=6"
    gt, pred = emer_files
    result = run_emer(gt, pred, judge, tmp_path / "o", progress=False)
    for metric in ("clue_overlap", "label_overlap"):
        m = result.summary[metric]
        assert m["n_valid"] + m["n_invalid"] == 2 and m["n_missing_prediction"] == 1
        assert sum(m["invalid_reasons"].values()) == m["n_invalid"]
        if m["n_valid"] == 0:
            assert m["mean"] is None
    assert judge.calls == 8  # 2 clue + 4 emotion words + 2 label scores (random answers differ)
    assert all(r.judge_id == judge.id for r in result.rows)
    # random weights rarely produce a number in 0..10 first: the expected outcome is mostly invalid
    assert sum(result.summary[m]["n_invalid"] for m in ("clue_overlap", "label_overlap")) >= 2


class _Stub(BaseHTTPRequestHandler):
    requests: list[dict] = []
    status = 200

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        payload = {"choices": [{"message": {"role": "assistant", "content": "8; the same clues"}}]}
        data = json.dumps(payload if self.status == 200 else {"error": "bad model"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def stub_server():
    _Stub.requests, _Stub.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_openai_compatible_judge_against_a_local_stub(stub_server, emer_files, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EMOLLM_TEST_KEY", "sk-test")
    judge = OpenAICompatibleJudge(stub_server, "judge-7b", api_key_env="EMOLLM_TEST_KEY", timeout=5, retries=0)
    assert judge.complete("Rate 1 to 10.") == "8; the same clues"
    req = _Stub.requests[-1]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    assert req["body"]["temperature"] == 0 and req["body"]["model"] == "judge-7b"
    assert req["body"]["messages"] == [{"role": "user", "content": "Rate 1 to 10."}]
    assert judge.id.startswith("openai-compatible:judge-7b@http://127.0.0.1:") and "sk-test" not in judge.id

    # the CLI end to end with the URL as judge
    gt, pred = emer_files
    out = tmp_path / "out"
    argv = ["emer", "--gold", str(gt), "--pred", str(pred), "--judge", stub_server, "--judge-model", "judge-7b"]
    assert main([*argv, "--out", str(out), "--api-key-env", "NO_SUCH_VAR", "--json", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["clue_overlap"]["mean"] == 8.0 and summary["label_overlap"]["mean"] == 8.0
    assert _Stub.requests[-1]["auth"] is None  # no key configured: no header
    assert main([*argv[:-2], "--out", str(tmp_path / "x")]) == 2  # a URL judge needs --judge-model
    assert "needs a model name" in capsys.readouterr().err

    _Stub.status = 400
    with pytest.raises(JudgeError, match="HTTP 400"):
        OpenAICompatibleJudge(stub_server, "m", retries=0, timeout=5).complete("x")
    with pytest.raises(ValueError, match="needs a model name"):
        make_judge(stub_server)


def test_unreachable_server_is_a_judge_error():
    judge = OpenAICompatibleJudge("http://127.0.0.1:9/v1", "m", retries=0, timeout=2)
    with pytest.raises(JudgeError, match="cannot connect"):
        judge.complete("x")


def test_make_judge_rejects_unknown_specs(tmp_path):
    with pytest.raises(ValueError, match="not a registry backbone"):
        make_judge("gpt-3.5-turbo-16k-0613")
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    from emollm.backbones.registry import backbones_of_family

    fits = ", ".join(backbones_of_family("llama"))  # every registry entry of that model type is offered
    assert fits.startswith("llama2, llama3") and "smollm2" in fits
    with pytest.raises(ValueError, match=f"cannot tell the chat format.*{fits}"):
        make_judge(str(tmp_path))


def test_emer_eval_run_with_judge(tmp_path, emer_files):
    """dataset: emer generates reasoning with the checkpoint, then scores it (here with the fake judge)."""
    import torch

    from emollm.checkpoints import save_checkpoint
    from emollm_eval.runner import load_config, run_eval
    from tests.emollm.conftest import make_tiny

    from .test_runner import write_features

    torch.manual_seed(0)
    model, processor = make_tiny("llama2")
    ckpt = save_checkpoint(model, processor, tmp_path / "ckpt")
    gt, _ = emer_files
    names = [g.name for g in read_emer(gt)]
    feats = write_features(tmp_path / "feats", names, missing={"face": {names[1]}})
    overrides = [f"checkpoint={ckpt}", "dataset=emer", f"gold={gt}", f"feature_root={feats}", "subtitles=gold"]
    cfg = load_config(None, [*overrides, f"output_dir={tmp_path / 'out'}", "max_new_tokens=5"])
    judge = FakeJudge("6; partly")
    result = run_eval(cfg, judge=judge, progress=False)
    m = result.metrics
    assert m["emer"]["clue_overlap"]["mean"] == 6.0 and m["emer"]["clue_overlap"]["n_valid"] == 3
    assert m["emer"]["judge_id"] == "fake-judge-v0" and m["missing_features"]["face"] == 1
    assert m["samples_with_subtitle"] == 3 and m["subtitles"].startswith("gold")
    assert m["prompt"].endswith("reason out the emotional label of the person in the video.")
    csv_text = (tmp_path / "out" / "predictions.csv").read_text()
    assert csv_text.startswith("names,chi_reasons\n") and names[2] in csv_text
    assert set(read_emer_predictions(tmp_path / "out" / "predictions.csv")) == set(names)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## EMER scores" in report and "fake-judge-v0" in report
    # without a judge: predictions only, and the command to score them
    no_judge = run_eval(load_config(None, [*overrides, f"output_dir={tmp_path / 'o2'}", "max_new_tokens=5"]))
    assert "emollm eval emer" in no_judge.metrics["score_with"]


@pytest.mark.slow
def test_smollm2_judges_two_pairs(emer_files, tmp_path):
    """The real embedded SmolLM2-135M as a local judge: every answer is a parsed score or counted invalid."""
    judge = make_judge("smollm2", max_new_tokens=24, engine="transformers")  # llama.cpp's judge: tests/engines
    assert judge.id.startswith("local:smollm2:HuggingFaceTB/SmolLM2-135M-Instruct@embedded:smollm2#")
    gt, pred = emer_files
    result = run_emer(gt, pred, judge, tmp_path / "o", limit=2, progress=False)
    for metric in ("clue_overlap", "label_overlap"):
        m = result.summary[metric]
        assert m["n"] == 2 and m["n_valid"] + m["n_invalid"] == 2
        assert m["mean"] is None or 0 <= m["mean"] <= 10
    for row in result.rows:
        assert row.judge_id == judge.id and row.prompt_version == "1"
        assert (row.score is None) == (row.status == "invalid")
        if row.score is not None:
            assert parse_score(row.response)[0] == row.score
