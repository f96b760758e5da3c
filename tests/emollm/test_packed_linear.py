"""``emollm.model.packed_linear``: packed bf16 linears compute what autocast's linear computes, and stay out of the
way where they do not apply (fp32, no native bf16, training, peft LoRA layers, the opt-out variable)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import emollm.model.packed_linear as packed
from emollm.model.packed_linear import PackedLinear, pack_linears

pytestmark = pytest.mark.skipif(
    packed._packing_available() is not None, reason=f"no oneDNN bf16 packing here: {packed._packing_available()}"
)


def test_packed_linear_equals_autocast_linear():
    torch.manual_seed(0)
    linear = nn.Linear(96, 40)
    x = torch.randn(2, 5, 96)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = linear(x)
        got = PackedLinear(linear)(x)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=0, atol=float(want.abs().max()) * 2**-7)
    with torch.no_grad():  # outside autocast: the input's dtype comes back, bf16-rounded values
        plain = PackedLinear(linear)(x)
    assert plain.dtype == torch.float32
    torch.testing.assert_close(plain, linear(x).detach(), rtol=2e-2, atol=5e-2)


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def test_greedy_decoding_is_unchanged_by_packing():
    model = _tiny_llama()
    ids = torch.randint(3, 97, (1, 12), generator=torch.Generator().manual_seed(1))
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False, pad_token_id=0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want_logits = model(ids).logits.float()
        want = model.generate(ids, **kwargs)
    done = pack_linears(model, "bf16")
    assert done == "oneDNN-packed bf16 (15 layers)"  # 2 x (q, k, v, o, gate, up, down) + the tied lm_head
    assert isinstance(model.lm_head, PackedLinear)
    assert isinstance(model.model.embed_tokens, nn.Embedding)  # the tied embedding keeps its fp32 table
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got_logits = model(ids).logits.float()
        got = model.generate(ids, **kwargs)
    torch.testing.assert_close(got_logits, want_logits, rtol=0, atol=1e-2 * float(want_logits.abs().max()))
    assert torch.equal(got, want)


@pytest.mark.parametrize(
    ("precision", "env", "native", "train", "reason"),
    [
        ("fp32", "1", True, False, "none: only for bf16 on CPU"),
        ("bf16", "0", True, False, "none: EMOLLM_PACK_LINEARS=0"),
        ("bf16", "1", False, False, "none: the CPU has no native bf16 (AVX512-BF16 or AMX)"),
        ("bf16", "1", True, True, "none: the model is in training mode"),
    ],
)
def test_packing_stays_out_where_it_does_not_apply(monkeypatch, precision, env, native, train, reason):
    monkeypatch.setenv("EMOLLM_PACK_LINEARS", env)
    monkeypatch.setattr(packed, "cpu_has_native_bf16", lambda: native)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).train(train)
    assert pack_linears(model, precision) == reason
    assert all(type(m) is not PackedLinear for m in model.modules())


def test_lora_layers_are_left_alone():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])).eval()
    ids = torch.randint(3, 97, (1, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = model(input_ids=ids).logits.float()
    assert pack_linears(model, "bf16") == "oneDNN-packed bf16 (11 layers)"  # k, o, gate, up, down x 2 + lm_head
    layer = model.base_model.model.model.layers[0]
    assert type(layer.self_attn.q_proj.base_layer) is nn.Linear and isinstance(layer.self_attn.k_proj, PackedLinear)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(input_ids=ids).logits.float()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-2 * float(want.abs().max()))


def test_embedded_smollm2_reasoner_answers_the_same_packed(monkeypatch):
    """The real model: the reasoner's greedy rationale is token for token the one autocast gives."""
    from emollm.apps.reasoning import LLMReasoner

    system, user = "You explain emotions briefly.", "A man smiles widely and says he passed his exam. Why is he happy?"
    packed_llm = LLMReasoner(max_new_tokens=24, precision="bf16")
    got = packed_llm.generate(system, user, seed=0)
    assert packed_llm.linear_kernels.startswith("oneDNN-packed bf16 (")
    monkeypatch.setenv("EMOLLM_PACK_LINEARS", "0")
    plain_llm = LLMReasoner(max_new_tokens=24, precision="bf16")
    assert plain_llm.generate(system, user, seed=0) == got
    assert plain_llm.linear_kernels == "none: EMOLLM_PACK_LINEARS=0"
    assert len(got.split()) >= 5
