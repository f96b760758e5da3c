"""llama.cpp on the embedded SmolLM2 GGUF, in process and as llama-cpp-python's OpenAI-compatible server started and
stopped here on a loopback port, against emollm's in-process transformers path on the same prompts.

Needs ``make install-engines`` (llama-cpp-python builds from source, ~8 minutes on one core): marked ``engines``,
deselected by default, run with ``make test-engines``.
"""

from __future__ import annotations

import socket

import pytest

pytestmark = pytest.mark.engines
pytest.importorskip("llama_cpp")

from emollm.backbones import get_backbone, get_chat_format  # noqa: E402
from emollm.backbones.loading import embedded_gguf  # noqa: E402
from emollm.engines import EndpointEngine, build_engine  # noqa: E402
from emollm.engines.llamacpp import LlamaCppEngine, LlamaCppServer, f32_gguf  # noqa: E402
from emollm.engines.local import TransformersEngine  # noqa: E402

N = 40
PROMPTS = [
    [
        {"role": "system", "content": "You are an emotion analysis expert."},
        {"role": "user", "content": "The person smiles and says: I passed the exam! How does the person feel?"},
    ],
    [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "Describe a calm voice."},
    ],
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Name three emotions."},
    ],
]


@pytest.fixture(scope="module")
def transformers_ids():
    """Greedy new token ids of emollm's in-process fp32 path (weights dequantised from the same GGUF)."""
    import torch

    engine = TransformersEngine("smollm2", precision="fp32", max_new_tokens=N)
    model, tokenizer, _, stop = engine._load()
    out = []
    for messages in PROMPTS:
        x = torch.tensor([engine.prompt_ids(messages)])
        with torch.no_grad():
            new = model.generate(
                x, attention_mask=torch.ones_like(x), max_new_tokens=N, do_sample=False, temperature=None,
                top_p=None, top_k=None, eos_token_id=stop, pad_token_id=stop[0],
            )[0, x.shape[1] :].tolist()  # fmt: skip
        out.append([t for t in new if t not in stop])
    return engine, out


def test_tokenisers_agree_on_the_rendered_prompts(transformers_ids):
    """llama.cpp's own tokenizer (what its server uses) gives our ids for these prompts, special tokens included."""
    from llama_cpp import Llama

    engine, _ = transformers_ids
    fmt = get_chat_format("chatml", default_system=get_backbone("smollm2").default_system)
    vocab = Llama(str(embedded_gguf("smollm2")), vocab_only=True, verbose=False)
    for messages in PROMPTS:
        text = fmt.render(messages, add_generation_prompt=True).text
        theirs = vocab.tokenize(text.encode(), add_bos=False, special=True)
        assert theirs == engine.prompt_ids(messages), text


def test_in_process_llamacpp_is_greedy_on_the_same_prompt_ids(transformers_ids):
    """On the same weights (the GGUF dequantised to float32) llama.cpp's greedy tokens are transformers', token for
    token. On the Q4_1 file itself llama.cpp multiplies 4-bit weights with 8-bit-quantised activations, and the greedy
    paths part after a few tokens (measured 11, 4 and 11 of 40 here): a numerics difference, not a protocol one."""
    engine, reference = transformers_ids
    same = LlamaCppEngine("smollm2", max_new_tokens=N, threads=1, gguf=f32_gguf(embedded_gguf("smollm2")))
    assert same.prompt_ids(PROMPTS[0]) == engine.prompt_ids(PROMPTS[0])  # our tokenizer, fed as ids
    assert [list(same.tokens(m)) for m in PROMPTS] == reference
    q4 = LlamaCppEngine("smollm2", max_new_tokens=N, threads=1)
    agree = [_common_prefix(list(q4.tokens(m)), r) for m, r in zip(PROMPTS, reference, strict=True)]
    assert all(n >= 3 for n in agree), agree
    assert q4.complete(PROMPTS[0]).produced_by["engine"] == "llama.cpp"
    assert build_engine("smollm2").kind == "llama.cpp"  # auto on a CPU with llama.cpp installed
    assert build_engine("smollm2", engine="transformers").kind == "transformers"
    from emollm_eval.judge import EngineJudge, make_judge

    judge = make_judge("smollm2", max_new_tokens=8)  # the EMER judge takes the faster engine too
    assert isinstance(judge, EngineJudge) and judge.id.startswith("llama.cpp:smollm2:embedded:greedy:8:")
    assert len(judge.complete_batch(["Rate 1 to 10: 'happy' vs 'glad'.", "Say a number."])) == 2


@pytest.mark.parametrize("weights", ["f32", "q4_1"])
def test_server_started_and_stopped_by_the_test(transformers_ids, weights):
    """The same conversations through llama-cpp-python's server (its own chat template and tokenizer, which agree
    with ours on these prompts) give the same greedy text as in process: on the float32 weights the text of our
    transformers path, on Q4_1 the text of llama.cpp in process. Answers record the model id the server returns."""
    engine, reference = transformers_ids
    gguf = f32_gguf(embedded_gguf("smollm2")) if weights == "f32" else embedded_gguf("smollm2")
    if weights == "f32":
        want = [engine._load()[1].decode(r, skip_special_tokens=True).strip() for r in reference]
    else:
        local = LlamaCppEngine("smollm2", max_new_tokens=N, threads=1)
        want = [local.complete(m).text.strip() for m in PROMPTS]
    with LlamaCppServer(gguf, alias=f"smollm2-{weights}", threads=1) as url:
        server = EndpointEngine(url, f"smollm2-{weights}", max_new_tokens=N, concurrency=2,
                                extra_body={"repeat_penalty": 1.0})  # fmt: skip
        answers = server.complete_many(PROMPTS)
        port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert [a.text.strip() for a in answers] == want
    assert {a.produced_by["model"] for a in answers} == {f"smollm2-{weights}"}
    assert server.produced_by()["served_model"] == f"smollm2-{weights}"
    with socket.socket() as s:  # stopped: the port no longer answers
        assert s.connect_ex(("127.0.0.1", port)) != 0


def _common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
