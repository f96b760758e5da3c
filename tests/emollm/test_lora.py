"""LoRA / QLoRA glue and the declarative trainable spec."""

from __future__ import annotations

import pytest
import torch

from emollm.backbones import get_backbone
from emollm.model.factory import build_model
from emollm.model.lora import LoraSettings, TrainableSpec, apply_lora, count_trainable, set_trainable

from .conftest import make_tiny, tiny_modalities, tiny_tokenizer
from .test_modeling import sample


def _train_step(model, proc, lr=1e-2):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr)
    loss = model(**proc([sample(), sample(face=False)]).model_inputs()).loss
    loss.backward()
    opt.step()
    opt.zero_grad()


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_lora_step_changes_only_trainable_parameters():
    model, proc = make_tiny("llama2")
    apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0), get_backbone("llama2").lora_targets)
    counts = set_trainable(model, TrainableSpec(projectors=True, llm="lora"))
    assert counts["llm"] > 0 and counts["projectors"] > 0 and counts["encoders"] == 0
    before = _snapshot(model)
    for _ in range(2):  # LoRA B starts at zero: the second step moves A too
        _train_step(model, proc)
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    assert any("lora_" in n for n in changed) and any(n.startswith("projectors.") for n in changed)
    assert all("lora_" in n or not n.startswith("language_model.") for n in changed)


def test_stage_specs_are_data():
    model, _ = make_tiny("qwen2")
    counts = set_trainable(model, TrainableSpec(projectors=True, llm="frozen"))
    assert counts["llm"] == 0 and counts["total"] == counts["projectors"] + counts["modality_embedding"]
    counts = set_trainable(model, TrainableSpec(projectors=False, llm="full"))
    assert counts["projectors"] == 0 and counts["llm"] == sum(p.numel() for p in model.language_model.parameters())
    with pytest.raises(ValueError, match="no LoRA adapters"):
        set_trainable(model, TrainableSpec(llm="lora"))
    with pytest.raises(ValueError, match="trainable.llm must be"):
        TrainableSpec(llm="lorra")


def test_unknown_lora_target_is_an_error():
    model, _ = make_tiny("mistral")
    with pytest.raises(ValueError, match=r"LoRA targets \['query_key_value'\] match no module"):
        apply_lora(model, LoraSettings(targets=["q_proj", "query_key_value"]), ())


def test_qlora_4bit_train_step(tmp_path):
    spec = get_backbone("llama2")
    tok = tiny_tokenizer("llama2")
    # A tiny "pretrained" base on disk, then the real loading path with BitsAndBytesConfig (works on CPU).
    from transformers import AutoModelForCausalLM

    cfg = spec.text_config(n_layers=2, hidden=64, vocab_size=len(tok))
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    model, proc = build_model(
        "llama2", tiny_modalities(), llm_path=tmp_path / "base", quantization="4bit", dtype=torch.float32
    )
    assert model.language_model.is_loaded_in_4bit
    apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0), spec.lora_targets)
    set_trainable(model, TrainableSpec(llm="lora"))
    before = _snapshot(model)
    quant_before = {n: b.detach().clone() for n, b in model.language_model.named_parameters() if b.dtype == torch.uint8}
    assert quant_before, "expected packed 4-bit weights"
    for _ in range(2):
        _train_step(model, proc)
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert any("lora_" in n for n in changed)
    for n, b in model.language_model.named_parameters():
        if n in quant_before:
            assert torch.equal(quant_before[n], b), n
    assert count_trainable(model)["llm"] > 0
