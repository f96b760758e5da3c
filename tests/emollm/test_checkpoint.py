"""Self-describing checkpoints: round trip, wrong backbone, damaged folders, merged export."""

from __future__ import annotations

import json

import pytest
import torch

from emollm.backbones import get_backbone
from emollm.checkpoint import export_merged, load_model, save_checkpoint
from emollm.generation import chat
from emollm.lora import LoraSettings, TrainableSpec, apply_lora, set_trainable

from .conftest import make_tiny, tiny_tokenizer
from .test_modeling import sample


def _trained_tiny(backbone="llama2"):
    model, proc = make_tiny(backbone)
    lora = LoraSettings(r=4, alpha=8, dropout=0.0)
    apply_lora(model, lora, get_backbone(backbone).lora_targets)
    spec = TrainableSpec(llm="lora")
    set_trainable(model, spec)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        model(**proc([sample()]).model_inputs()).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return model, proc, lora, spec


PROBE = None


def _logits(model, proc):
    """Logits on one fixed probe sample (same features every call)."""
    global PROBE
    if PROBE is None:
        g = torch.Generator().manual_seed(123)
        PROBE = sample(name="probe")
        PROBE.features = {k: torch.randn(v.shape, generator=g) for k, v in PROBE.features.items()}
    with torch.no_grad():
        return model(**proc([PROBE]).model_inputs()).logits


@pytest.mark.parametrize("backbone", ["llama2", "llama3"])
def test_round_trip_identical_outputs(tmp_path, backbone):
    torch.manual_seed(1)
    model, proc, lora, spec = _trained_tiny(backbone)
    ref_logits = _logits(model, proc)
    question = [sample(name="q"), sample(face=False, name="q2")]
    ref_answers = chat(model, proc, question, max_new_tokens=5)
    out = save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec, run_config={"lr": 1e-2})
    files = {p.name for p in out.iterdir()}
    assert {
        "checkpoint.json",
        "emollm_config.json",
        "projectors.safetensors",
        "adapter_model.safetensors",
        "adapter_config.json",
        "processor_config.json",
        "tokenizer.json",
        "run_config.json",
        "llm",
    } <= files
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["backbone"] == backbone and meta["lora"]["r"] == 4
    loaded, lproc = load_model(out)
    assert torch.equal(_logits(loaded, lproc), ref_logits)
    assert chat(loaded, lproc, question, max_new_tokens=5) == ref_answers


def test_wrong_backbone_is_refused(tmp_path):
    model, proc, lora, spec = _trained_tiny("llama2")
    out = save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec)
    with pytest.raises(ValueError, match="trained for backbone 'llama2', not 'mistral'"):
        load_model(out, backbone="mistral")


def test_base_from_another_family_is_refused(tmp_path):
    from transformers import AutoModelForCausalLM

    model, proc, lora, spec = _trained_tiny("llama2")
    out = save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec, save_base=False)
    assert not (out / "llm").exists()
    with pytest.raises(FileNotFoundError, match="pass llm_path"):
        load_model(out)
    mistral = get_backbone("mistral").text_config(n_layers=2, hidden=64, vocab_size=1100)
    AutoModelForCausalLM.from_config(mistral).save_pretrained(tmp_path / "mistral")
    with pytest.raises(ValueError, match="is a 'mistral' model, but backbone 'llama2' expects 'llama'"):
        load_model(out, llm_path=tmp_path / "mistral")
    wider = get_backbone("llama2").text_config(n_layers=2, hidden=128, vocab_size=1100)
    AutoModelForCausalLM.from_config(wider).save_pretrained(tmp_path / "wider")
    with pytest.raises(ValueError, match="hidden_size: checkpoint 64 vs base 128"):
        load_model(out, llm_path=tmp_path / "wider")


def test_damaged_checkpoints_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an emollm checkpoint"):
        load_model(tmp_path)
    model, proc, lora, spec = _trained_tiny("llama2")
    out = save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec)
    from safetensors.torch import load_file, save_file

    state = load_file(str(out / "projectors.safetensors"))
    state.pop(next(iter(state)))
    save_file(state, str(out / "projectors.safetensors"))
    with pytest.raises(ValueError, match="does not fit this model: missing"):
        load_model(out)
    (out / "emollm_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(out)


def test_round_trip_with_unsorted_modalities_and_trained_type_embeddings(tmp_path):
    from .conftest import tiny_modalities

    mods = tiny_modalities()
    model, proc = make_tiny("smollm2", modalities={m: mods[m] for m in ("video", "face", "audio")})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # every parameter, type embeddings included, is now "trained"
    model.eval()
    ref = _logits(model, proc)
    loaded, lproc = load_model(save_checkpoint(model, proc, tmp_path / "ckpt"))
    assert torch.equal(_logits(loaded, lproc), ref)


def test_overwrite_is_atomic_and_leaves_no_temp(tmp_path):
    model, proc, lora, spec = _trained_tiny("llama2")
    save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec)
    save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_merged_export_matches_adapter_model(tmp_path):
    model, proc, lora, spec = _trained_tiny("qwen2")
    ref = _logits(model, proc)
    ckpt = save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec)
    merged = export_merged(ckpt, tmp_path / "merged")
    assert not (merged / "adapter_model.safetensors").exists()
    loaded, lproc = load_model(merged)
    torch.testing.assert_close(_logits(loaded, lproc), ref, rtol=1e-4, atol=1e-4)


def test_checkpoint_from_tokenizer_roundtrip_keeps_placeholders(tmp_path):
    model, proc = make_tiny("smollm2")
    out = save_checkpoint(model, proc, tmp_path / "ckpt")
    _, lproc = load_model(out)
    assert lproc.placeholder_ids == proc.placeholder_ids
    assert len(lproc.tokenizer) == len(proc.tokenizer) > len(tiny_tokenizer("smollm2"))


def test_export_cli_merges(tmp_path):
    from emollm.checkpoint import cli_main

    model, proc, lora, spec = _trained_tiny("llama2")
    ref = _logits(model, proc)
    ckpt = save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec)
    assert cli_main([str(ckpt), str(tmp_path / "merged"), "--merge"]) == 0
    loaded, lproc = load_model(tmp_path / "merged")
    torch.testing.assert_close(_logits(loaded, lproc), ref, rtol=1e-4, atol=1e-4)
    assert cli_main([str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2
