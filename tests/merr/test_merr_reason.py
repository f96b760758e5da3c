"""emollm_merr.reason: the published prompt, the coarse template, the cache, pluggable clients; one slow SmolLM2 run."""

from __future__ import annotations

import json

import pytest

from emollm.apps.reasoning import LLMReasoner, prompt_seed, trim_to_sentence
from emollm.model.prompts import REASONING_PROMPTS as PROMPTS
from emollm.model.prompts import build_reasoning_prompt as build_prompt
from emollm.model.prompts import coarse_caption
from emollm_merr.reason import ReasoningCache, build_reasoning_client

CLUES = {
    "visual_expression": "cheek raiser, lip corner puller (smile)",
    "visual": "sitting at a desk, leaning forward",
    "audio": "high-pitched, loud and fast",
    "subtitle": "I passed the exam!",
}


def test_published_prompt_v1():
    system, user = build_prompt(CLUES, "happy", "v1")
    assert system == (
        "You are an emotion analysis expert. Please infer emotion label based on the given the emotional features."
    )
    assert user.splitlines() == [
        "Visual expression: cheek raiser, lip corner puller (smile).",
        "Visual description: sitting at a desk, leaning forward",
        "Audio tone: high-pitched, loud and fast.",
        'Subtitle: "I passed the exam!"',
        "Please sort out the correct emotional clues and infer why the person in the video feels happy.",
    ]
    _, user = build_prompt({"visual_expression": "jaw drop", "visual": None, "audio": "", "subtitle": None}, "surprise")
    assert user == (
        "Visual expression: jaw drop.\n"
        "Please sort out the correct emotional clues and infer why the person in the video feels surprise."
    )  # unavailable clues are left out, never filled in
    with pytest.raises(ValueError, match="unknown prompt version 'v9'"):
        build_prompt(CLUES, "happy", "v9")
    assert set(PROMPTS) == {"v1"}


def test_coarse_caption_template():
    assert coarse_caption(CLUES) == (
        "This person in the video is sitting at a desk, leaning forward. The person's expression and actions include "
        "cheek raiser, lip corner puller (smile), and the person's tone is high-pitched, loud and fast. "
        "Saying: I passed the exam!"
    )
    assert coarse_caption({"visual_expression": "jaw drop"}) == "The person's expression and actions include jaw drop."
    assert coarse_caption({"audio": "quiet"}) == "The person's tone is quiet."
    assert coarse_caption({}) == ""


def test_trim_and_seed():
    assert trim_to_sentence("He smiles. The tone is bright. Therefore he") == "He smiles. The tone is bright."
    assert trim_to_sentence("No sentence end here") == "No sentence end here"
    assert trim_to_sentence('He says "yes." ') == 'He says "yes."'
    assert prompt_seed(0, "s", "u") == prompt_seed(0, "s", "u") != prompt_seed(1, "s", "u")


def test_cache_round_trip_and_corrupt_entry(tmp_path):
    cache = ReasoningCache(tmp_path)
    key = ReasoningCache.key("llm:x", "v1", "sys", "user")
    assert key != ReasoningCache.key("llm:x", "v1", "sys", "user2") and cache.get(key) is None
    cache.put(key, "Because.", user="user")
    assert cache.get(key) == "Because." and len(cache) == 1
    assert json.loads(cache.path(key).read_text())["user"] == "user"
    cache.path(key).write_text('{"key": "' + key + '", "answ')  # torn by a power cut: a miss, not a crash
    assert cache.get(key) is None


def test_client_factory_and_ids():
    from emollm_merr.config import ReasonConfig

    client = build_reasoning_client(
        ReasonConfig(client="python:tests.merr.fakes:fake_reasoner", client_options={"contradict": {"sad": "angry"}})
    )
    assert client.id == "fake-reasoner:v1"
    assert client.generate("s", "x\nPlease ... feels sad.", seed=0).endswith("feels angry.")
    with pytest.raises(ValueError, match="is not a ReasoningClient"):
        build_reasoning_client(ReasonConfig(client="python:builtins:dict"))
    greedy = LLMReasoner("smollm2", max_new_tokens=32)
    assert greedy.id == "llm:smollm2:embedded:greedy:32"
    assert LLMReasoner("smollm2", do_sample=True).id != greedy.id
    with pytest.raises(ValueError, match="unknown backbone|not registered|known"):
        LLMReasoner("no-such-backbone")


@pytest.mark.slow
def test_smollm2_reasons_two_samples(make_cfg, tmp_path):
    """The real offline default LLM (SmolLM2-135M, embedded weights) through the pipeline, on 2 clips."""
    from emollm_merr.pipeline import MERRBuilder

    cfg = make_cfg(
        tmp_path / "out",
        inputs={"limit": 3},
        filter={"add_neutral": False},
        reason={"client": None, "backbone": "smollm2", "max_new_tokens": 40, "engine": "transformers"},
    )
    builder = MERRBuilder(cfg, progress=False)
    r = builder.run()
    assert (r.stats["reason"].computed, r.stats["reason"].cached) == (2, 0)  # 00 is corrupt; 01, 02 happy
    rows = [json.loads(x) for x in (r.output_dir / "samples.jsonl").read_text().splitlines()]
    texts = {x["name"]: x["reasoning"] for x in rows if x.get("reasoning")}
    assert set(texts) == {"sample_01_happy", "sample_02_happy"} and all(len(t.split()) >= 5 for t in texts.values())
    entry = next(iter((r.output_dir / "cache" / "reason").glob("*/*.json")))
    cached = json.loads(entry.read_text())
    bf16 = cfg.reason.resolved_precision() == "bf16"  # auto: bf16 on a CPU with native bf16 (a separate cache key)
    assert cached["client"] == "llm:smollm2:embedded:greedy:40" + (":bf16" if bf16 else "")
    assert cached["system"] == PROMPTS["v1"].system
    assert r.summary["reasoning_precision"] == ("bf16" if bf16 else "fp32")
    # greedy -> the same prompt gives the same answer again; a rerun reuses the cache
    assert builder.reasoner.generate(cached["system"], cached["user"], seed=0) == cached["answer"]
    again = MERRBuilder(cfg, progress=False).run()
    assert (again.stats["reason"].computed, again.stats["reason"].cached) == (0, 2)
