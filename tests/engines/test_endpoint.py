"""The OpenAI-compatible endpoint client against a fake server on loopback (real HTTP): request shape, provenance,
retries with backoff, garbage answers, a server that disappears mid-job (MERR and the EMER judge stop, keep what they
cached and resume), time limits, and the concurrency bound. The fake is a protocol double, not a generator."""

from __future__ import annotations

import threading
import time

import pytest

from emollm.engines import (
    BadResponse,
    EndpointEngine,
    EngineUnavailable,
    RequestRejected,
    build_engine,
    choose_local_engine,
)
from emollm.engines.base import Completion, postprocess
from emollm.utils.stage_cache import StageStats

from .fake_openai import FakeOpenAI

USER = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How does she feel?"}]


def engine(url: str, **kw) -> EndpointEngine:
    kw = {"retries": 0, "timeout": 5, "backoff": 0.01, **kw}
    return EndpointEngine(url, "served-name", **kw)


def test_request_answer_and_provenance(monkeypatch):
    monkeypatch.setenv("EMOLLM_LLM_API_KEY", "sk-local")
    with FakeOpenAI() as server:
        e = engine(server.url, max_new_tokens=32)
        done = e.complete(USER)
        assert done.text == "answer: How does she feel?" and done.finish_reason == "stop"
        req = server.requests[-1]
        assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-local"
        assert req["body"] == {
            "model": "served-name", "messages": USER, "max_tokens": 32, "stream": False, "temperature": 0,
        }  # fmt: skip
        # provenance of the answer and of the engine: the model as the server names it, never the key
        meta = done.produced_by
        assert meta["model"] == "fake-served-model" and meta["system_fingerprint"] == "fp-fake-1"
        assert done.produced_by["sampling"] == {"do_sample": False, "temperature": 0, "max_new_tokens": 32}
        assert done.produced_by["usage"]["completion_tokens"] == 3
        info = e.produced_by()
        assert info["engine"] == "openai-compatible" and info["served_model"] == "fake-served-model"
        assert "sk-local" not in repr(info) and "sk-local" not in e.id
        assert e.id == f"openai-compatible:served-name@{server.url}|temperature=0,max_tokens=32"
        # the reasoning form: one system + user turn, whitespace-normalised
        assert e.generate("Be brief.", "How  does\nshe feel?", seed=0) == "answer: How does she feel?"

        monkeypatch.delenv("EMOLLM_LLM_API_KEY")
        sampled = engine(server.url, do_sample=True, temperature=0.5, top_p=0.8, extra_body={"repeat_penalty": 1.0})
        sampled.complete(USER, seed=3)
        body = server.requests[-1]["body"]
        assert server.requests[-1]["auth"] is None  # no key set: no header
        assert body["temperature"] == 0.5 and body["top_p"] == 0.8 and body["repeat_penalty"] == 1.0
        sampled.complete(USER, seed=3)
        assert server.requests[-1]["body"]["seed"] == body["seed"]  # per-prompt seed: the same prompt, the same seed
        assert "repeat_penalty" in sampled.id and sampled.id != e.id


def test_length_cut_is_trimmed_to_a_sentence():
    done = Completion("She smiles. She is happy and the", "length")
    assert postprocess(done) == "She smiles."
    with FakeOpenAI(script=["length"]) as server:
        assert engine(server.url).complete(USER).finish_reason == "length"


def test_transient_failures_are_retried_with_backoff():
    with FakeOpenAI(script=["status:503", "drop", "status:429"]) as server:
        e = engine(server.url, retries=3)
        t = time.perf_counter()
        assert e.complete(USER).text.startswith("answer:")
        assert len(server.requests) == 4  # 503, dropped connection, 429, then the answer
        assert time.perf_counter() - t >= 0.01 * (1 + 2 + 4) * 0.5  # waited between attempts (jittered backoff)
    with FakeOpenAI(default="status:502") as server:
        with pytest.raises(EngineUnavailable, match=r"HTTP 502.*after 3 attempts"):
            engine(server.url, retries=2).complete(USER)
        assert len(server.requests) == 3


def test_a_refused_request_is_not_retried():
    with FakeOpenAI(script=["status:400"]) as server:
        e = engine(server.url, retries=3)
        with pytest.raises(RequestRejected, match="HTTP 400"):
            e.complete(USER)
        assert len(server.requests) == 1 and not RequestRejected.fatal
        # in a batch the refused item is reported and the others go on
        server.script.extend(["ok", "status:413", "ok"])
        got = dict(e.imap([USER, USER, USER]))
        assert sum(isinstance(v, RequestRejected) for v in got.values()) == 1 and len(got) == 3


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("garbage", "not JSON"),
        ("no_choices", "expected choices"),
        ("null_content", "not text"),
    ],
)
def test_garbage_answers_are_errors_not_text(action, message):
    with FakeOpenAI(script=[action]) as server:
        e = engine(server.url, retries=3)
        with pytest.raises(BadResponse, match=message):
            e.complete(USER)
        assert len(server.requests) == 1  # garbage is not retried: it would come back the same
        assert BadResponse.fatal


def test_a_server_that_changes_its_model_mid_job_is_an_error():
    with FakeOpenAI(script=["ok", "model:another-model"]) as server:
        e = engine(server.url)
        e.complete(USER)
        with pytest.raises(BadResponse, match="now answers as model 'another-model'"):
            e.complete(USER)


def test_timeouts_are_wall_clock_and_retried():
    with FakeOpenAI(default="sleep:6") as server:  # two attempts would take 12 s without the limit
        t = time.perf_counter()
        with pytest.raises(EngineUnavailable, match="timed out after 0.4 s"):
            engine(server.url, timeout=0.4, retries=1).complete(USER)
        assert time.perf_counter() - t < 5
    with FakeOpenAI(default="trickle:6") as server:  # bytes keep coming for 6 s, the answer never does
        t = time.perf_counter()
        with pytest.raises(EngineUnavailable, match="timed out"):
            engine(server.url, timeout=0.5).complete(USER)
        assert time.perf_counter() - t < 5


def test_an_unreachable_server_is_unavailable():
    with FakeOpenAI() as server:
        url = server.url
    with pytest.raises(EngineUnavailable, match="cannot connect"):
        engine(url, retries=1).complete(USER)


def test_concurrency_is_bounded():
    convs = [[{"role": "user", "content": f"q{i}"}] for i in range(9)]
    with FakeOpenAI(delay=0.3) as server:
        e = engine(server.url, concurrency=3)
        got = dict(e.imap(convs))
        assert {i: c.text for i, c in got.items()} == {i: f"answer: q{i}" for i in range(9)}
        assert server.max_in_flight == 3 == e.max_in_flight  # concurrent, and never more than the bound
        # the bound holds across threads that share one engine
        server.max_in_flight = 0
        two = engine(server.url, concurrency=2)
        threads = [threading.Thread(target=two.complete, args=(USER,)) for _ in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=10)
        assert server.max_in_flight == 2
        assert [c.text for c in e.complete_many(convs[:4])] == [f"answer: q{i}" for i in range(4)]  # order kept


def test_flags_and_choice(monkeypatch):
    with pytest.raises(ValueError, match="needs the served model's name"):
        build_engine(endpoint="http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="give its server with --llm-endpoint"):
        build_engine(model="x")
    with pytest.raises(ValueError, match="must start with http"):
        build_engine(endpoint="127.0.0.1:8000", model="m")
    assert isinstance(build_engine(endpoint="http://127.0.0.1:1/v1", model="m"), EndpointEngine)
    assert choose_local_engine("transformers", "smollm2", None) == ("transformers", "asked")
    assert choose_local_engine("auto", "smollm2", None, "cuda")[0] == "transformers"
    assert choose_local_engine("auto", "smollm2", "/models/llama3-folder")[0] in ("transformers",)
    import emollm.engines.llamacpp as llamacpp

    monkeypatch.setattr(llamacpp, "llama_cpp_version", lambda: None)
    kind, why = choose_local_engine("auto", "smollm2", None)
    assert kind == "transformers" and "not installed" in why
    monkeypatch.setattr(llamacpp, "llama_cpp_version", lambda: "0.3.36")
    assert choose_local_engine("auto", "smollm2", None)[0] == "llama.cpp"


# ------------------------------------------------------------------------------------------------ jobs resume
def _reason_inputs(n: int):
    names = [f"clip_{i:02d}" for i in range(n)]
    texts = {x: {"visual_expression": f"smile {i}", "subtitle": f"I passed exam {i}"} for i, x in enumerate(names)}
    return names, texts, {x: "happy" for x in names}


def test_merr_reasoning_stops_on_a_dead_server_and_resumes(tmp_path):
    from emollm_merr.stages import run_reasoning

    names, texts, labels = _reason_inputs(8)
    errors: list = []
    kw = dict(cache_dir=tmp_path / "reason", prompt_version="v1", seed=0, on_error=lambda n, e: errors.append(n))
    with FakeOpenAI(die_after=3) as server:
        url = server.url
        e = engine(url, concurrency=1, retries=1)
        with pytest.raises(EngineUnavailable, match=r"3 of 8 new reasonings were received and cached.*rerun"):
            run_reasoning(names, texts, labels, client=e, stats=StageStats(), **kw)
    assert errors == []  # a dead server is not eight failed clips: the job stops
    cached = list((tmp_path / "reason").glob("*/*.json"))
    assert len(cached) == 3
    # the server is back (another port, the same model): only the five missing prompts are asked
    with FakeOpenAI() as server:
        e2 = EndpointEngine(server.url, "served-name", retries=0, timeout=5, concurrency=4)
        e2.id = e.id  # same server, restarted at its old address in real life
        stats = StageStats()
        produced: dict = {}
        out = run_reasoning(names, texts, labels, client=e2, stats=stats, produced=produced, **kw)
        assert (stats.cached, stats.computed, stats.errors) == (3, 5, 0) and len(server.requests) == 5
        assert set(out) == set(names) and all(v.startswith("answer: ") for v in out.values())
        assert {p["model"] for p in produced.values()} == {"fake-served-model"}
        assert all("usage" not in p for p in produced.values())  # per-answer counts stay in the answer, not here


def test_merr_garbage_answer_stops_the_job(tmp_path):
    from emollm_merr.stages import run_reasoning

    names, texts, labels = _reason_inputs(4)
    with FakeOpenAI(script=["ok", "garbage"]) as server:
        e = engine(server.url, concurrency=1)
        with pytest.raises(BadResponse, match="not JSON"):
            run_reasoning(
                names, texts, labels, client=e, cache_dir=tmp_path / "c", prompt_version="v1", seed=0,
                stats=StageStats(), on_error=lambda n, err: None,
            )  # fmt: skip
    assert len(list((tmp_path / "c").glob("*/*.json"))) == 1


def test_merr_config_builds_the_endpoint_engine():
    from emollm_merr.config import ReasonConfig
    from emollm_merr.reason import build_reasoning_client

    cfg = ReasonConfig(endpoint="http://127.0.0.1:8000/v1", model="qwen2.5-7b", concurrency=8, max_new_tokens=64)
    client = build_reasoning_client(cfg)
    assert isinstance(client, EndpointEngine) and client.concurrency == 8
    assert client.id == "openai-compatible:qwen2.5-7b@http://127.0.0.1:8000/v1|temperature=0,max_tokens=64"


def test_emer_judge_over_the_server_is_concurrent_and_stops_on_failure(tmp_path):
    from emollm_eval.judge import CachedJudge, JudgeCache, JudgeError, OpenAICompatibleJudge

    prompts = [f"Rate pair {i} from 1 to 10." for i in range(6)]
    with FakeOpenAI(delay=0.1) as server:
        judge = OpenAICompatibleJudge(server.url, "judge-7b", timeout=5, retries=0, concurrency=3)
        cache = JudgeCache(tmp_path / "judge.jsonl")
        answers, hits = CachedJudge(judge, cache, "v1").complete_many(prompts[:3])
        assert answers == [f"answer: {p}" for p in prompts[:3]] and hits == [False] * 3
        assert server.max_in_flight == 3 and judge.produced_by()["served_model"] == "fake-served-model"
        server.stop()
        with pytest.raises(JudgeError, match="cannot connect.*rerun the same command to resume"):
            CachedJudge(judge, cache, "v1").complete_many(prompts)
    assert len(JudgeCache(tmp_path / "judge.jsonl")) == 3  # what was answered before stays


def test_the_callers_deadline_bounds_every_request():
    from emollm.utils.deadline import DeadlineExceeded, deadline

    with FakeOpenAI(default="sleep:8") as server:
        e = engine(server.url, timeout=30, retries=3)
        t = time.perf_counter()
        with deadline(0.4), pytest.raises(DeadlineExceeded):
            e.complete(USER)
        with deadline(0.4), pytest.raises(DeadlineExceeded):  # the pool's threads see the caller's deadline
            list(e.imap([USER, USER]))
        assert time.perf_counter() - t < 6
