"""The backbone registry and local-only weight resolution."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from emollm.backbones import BackboneSpec, get_backbone, list_backbones, list_chat_formats
from emollm.backbones.loading import check_family, resolve_llm_path
from emollm.model.configuration import MODALITIES

REQUIRED = {"llama2", "mistral", "llama3", "qwen2", "smollm2"}
CURRENT = {"qwen3", "qwen3_5", "llama3_1", "llama3_2", "gemma3", "gemma3_270m", "gemma4", "phi4_mini", "smollm3"}


def test_registry_has_the_required_backbones():
    assert REQUIRED | CURRENT <= set(list_backbones())


@pytest.mark.parametrize("name", list_backbones())
def test_entry_is_complete(name):
    spec = get_backbone(name)
    assert spec.chat_format in list_chat_formats()
    assert spec.lora_targets and spec.config_url.startswith("https://")
    assert set(MODALITIES) <= set(spec.placeholder_tokens())  # a placeholder for every modality
    real = spec.text_config()
    assert real.model_type == spec.family and real.hidden_size == spec.reference_config["hidden_size"]
    tiny = spec.text_config(n_layers=2, hidden=32, vocab_size=500)
    assert (tiny.num_hidden_layers, tiny.hidden_size, tiny.vocab_size) == (2, 32, 500)
    assert tiny.hidden_size % tiny.num_attention_heads == 0


def test_from_name_overrides_and_unknown_names():
    spec = BackboneSpec.from_name("llama2", lora_targets=("q_proj", "v_proj"))
    assert spec.lora_targets == ("q_proj", "v_proj") and get_backbone("llama2").lora_targets != spec.lora_targets
    with pytest.raises(ValueError, match="unknown backbone 'llama4'; registered backbones: llama2"):
        get_backbone("llama4")


def test_cli_json_lists_every_backbone():
    out = subprocess.run(
        [sys.executable, "-m", "emollm.cli", "backbones", "--json"], capture_output=True, text=True, check=True
    )
    rows = json.loads(out.stdout)
    assert {r["name"] for r in rows} == set(list_backbones())
    for row in rows:
        assert {"name", "family", "chat_format", "lora_targets"} <= set(row)
        assert isinstance(row["lora_targets"], list) and row["lora_targets"]
    table = subprocess.run(
        [sys.executable, "-m", "emollm.cli", "backbones"], capture_output=True, text=True, check=True
    ).stdout
    assert all(name in table for name in REQUIRED)


def test_weights_are_local_only(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"needs local weights: pass --llm-path"):
        resolve_llm_path(get_backbone("llama2"), None)
    with pytest.raises(FileNotFoundError, match="expected a model folder with config.json"):
        resolve_llm_path(get_backbone("mistral"), tmp_path)
    with pytest.raises(FileNotFoundError, match="no such GGUF file"):
        resolve_llm_path(get_backbone("mistral"), tmp_path / "x.gguf")
    with pytest.raises(ValueError, match="use --backbone mistral"):
        check_family(get_backbone("llama2"), "mistral", "the checkpoint at X")


def test_unknown_cli_command_exits_2():
    out = subprocess.run([sys.executable, "-m", "emollm.cli", "frobnicate"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown command 'frobnicate'" in out.stderr
