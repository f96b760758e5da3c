"""The one restore API: ``read_checkpoint`` + ``restore_into`` (strict / lenient connectors, adapter, base)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from emollm.backbones import get_backbone
from emollm.checkpoints import read_checkpoint, save_checkpoint
from emollm.checkpoints.restore import restore_into
from emollm.model.lora import LoraSettings, apply_lora

from .conftest import make_tiny, tiny_modalities
from .test_checkpoint import _logits, _trained_tiny


def _fresh(backbone="llama2", **kwargs):
    torch.manual_seed(99)  # other weights than the saved model's
    return make_tiny(backbone, **kwargs)


def test_read_checkpoint_describes_the_folder(tmp_path):
    model, proc, lora, spec = _trained_tiny("llama2")
    info = read_checkpoint(save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec))
    assert info.backbone == "llama2" and info.has_adapter and info.has_base
    assert info.lora == lora and info.trainable == spec
    assert info.config.token_ids() == model.config.token_ids()


def test_restore_into_a_fresh_lora_model_reproduces_the_saved_one(tmp_path):
    model, proc, lora, spec = _trained_tiny("llama2")
    ref = _logits(model, proc)
    out = save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec)
    fresh, fproc = _fresh()
    report = restore_into(fresh, out, parts=("base",))
    assert report.base and not report.adapter
    apply_lora(fresh, lora, get_backbone("llama2").lora_targets)
    report = restore_into(fresh, out, parts=("adapter", "connectors"))
    assert report.adapter and report.loaded and not report.missing and not report.unexpected
    fresh.eval()
    assert torch.equal(_logits(fresh, fproc), ref)


def test_adapter_of_other_settings_is_refused(tmp_path):
    model, proc, lora, spec = _trained_tiny("llama2")
    out = save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec)
    fresh, _ = _fresh()
    apply_lora(fresh, LoraSettings(r=8, alpha=16, dropout=0.0), get_backbone("llama2").lora_targets)
    with pytest.raises(ValueError, match=r"\(r=4, .*does not match this run's LoRA \(r=8"):
        restore_into(fresh, out, parts=("adapter",))
    with pytest.raises(ValueError, match="restore the base LLM weights before LoRA"):
        restore_into(fresh, out, parts=("base",))


def test_missing_adapter_file_fails_without_unpickling(tmp_path):
    model, proc, lora, spec = _trained_tiny("llama2")
    out = save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec)
    (out / "adapter_model.safetensors").unlink()
    (out / "adapter_model.bin").write_bytes(b"not a pickle to be loaded")
    fresh, _ = _fresh()
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors is missing but checkpoint.json lists LoRA"):
        restore_into(fresh, out, parts=("adapter",))
    no_lora = save_checkpoint(*make_tiny("llama2"), tmp_path / "plain")
    with pytest.raises(ValueError, match="has no LoRA adapter"):
        restore_into(fresh, no_lora, parts=("adapter",))
    with pytest.raises(ValueError, match=r"unknown parts \['optimizer'\]"):
        restore_into(fresh, no_lora, parts=("optimizer",))


def test_connectors_strict_and_lenient(tmp_path):
    """A later stage may add a modality: lenient loads what fits and reports the rest; strict refuses."""
    mods = tiny_modalities()
    two = {m: mods[m] for m in ("audio", "face")}
    model, proc = make_tiny("llama3", modalities=two, modality_type_embeddings=False)
    out = save_checkpoint(model, proc, tmp_path / "ckpt")
    bigger, _ = _fresh("llama3", modality_type_embeddings=False)
    with pytest.raises(ValueError, match=r"projectors.safetensors does not fit this model: missing \['projectors.vid"):
        restore_into(bigger, out, parts=("connectors",))
    report = restore_into(bigger, out, parts=("connectors",), strict=False)
    assert report.missing and all(k.startswith("projectors.video.") for k in report.missing)
    saved = load_file(str(out / "projectors.safetensors"))
    assert sorted(report.loaded) == sorted(saved) and not report.unexpected
    for key, value in bigger.projectors["audio"].state_dict().items():
        assert torch.equal(value, saved[f"projectors.audio.{key}"])


def test_connector_shape_mismatch_names_the_file(tmp_path):
    model, proc = make_tiny("llama2")
    out = save_checkpoint(model, proc, tmp_path / "ckpt")
    state = load_file(str(out / "projectors.safetensors"))
    key = next(k for k in state if k.startswith("projectors.audio.") and k.endswith("weight"))
    state[key] = torch.zeros(3, 3)
    save_file(state, str(out / "projectors.safetensors"))
    fresh, _ = _fresh()
    for strict in (True, False):
        with pytest.raises(ValueError, match=rf"projectors.safetensors has tensors of the wrong shape: \['{key}"):
            restore_into(fresh, out, parts=("connectors",), strict=strict)


def test_checks_name_backbone_llm_shape_and_token_ids(tmp_path):
    model, proc = make_tiny("llama2")
    out = save_checkpoint(model, proc, tmp_path / "ckpt")
    other, _ = make_tiny("mistral")
    with pytest.raises(ValueError, match="init_from .* trained for backbone 'llama2', not 'mistral'.* Do this"):
        restore_into(other, out, what="init_from", hint="Do this")
    config = json.loads((out / "emollm_config.json").read_text())
    config["modalities"]["face"]["token_id"] += 1
    (out / "emollm_config.json").write_text(json.dumps(config))
    fresh, _ = _fresh()
    with pytest.raises(ValueError, match="the face placeholder token id differs"):
        restore_into(fresh, out)
    config["text_config"]["num_hidden_layers"] = 3
    (out / "emollm_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="trained on a different LLM \\(num_hidden_layers: checkpoint 3 vs model 2\\)"):
        restore_into(fresh, out)


@pytest.mark.parametrize("file", ["adapter_model.safetensors", "projectors.safetensors", "llm/model.safetensors"])
def test_file_damaged_after_reading_is_named(tmp_path, file):
    """A file truncated between read_checkpoint (which checks every header) and the restore is still named."""
    model, proc, lora, spec = _trained_tiny("llama2")
    info = read_checkpoint(save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec))
    target = info.path / file
    target.write_bytes(target.read_bytes()[:100])
    fresh, _ = _fresh()
    if file == "adapter_model.safetensors":
        apply_lora(fresh, lora, get_backbone("llama2").lora_targets)
    part = {"adapter_model.safetensors": "adapter", "projectors.safetensors": "connectors"}.get(file, "base")
    with pytest.raises(ValueError, match=f"{target} is truncated or damaged .*re-save the checkpoint"):
        restore_into(fresh, info, parts=(part,))
    with pytest.raises(ValueError, match=f"{target} is truncated or damaged"):
        read_checkpoint(info.path)


def test_damaged_adapter_config_is_named(tmp_path):
    model, proc, lora, spec = _trained_tiny("llama2")
    info = read_checkpoint(save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec))
    (info.path / "adapter_config.json").write_text("{")
    fresh, _ = _fresh()
    apply_lora(fresh, lora, get_backbone("llama2").lora_targets)
    with pytest.raises(ValueError, match="adapter_config.json cannot be read .*re-save the checkpoint"):
        restore_into(fresh, info, parts=("adapter",))
