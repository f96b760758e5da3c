"""The backbone registry and local-only weight resolution."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from emollm.backbones import BackboneSpec, get_backbone, get_chat_format, list_backbones, list_chat_formats
from emollm.backbones.loading import check_family, resolve_llm_path
from emollm.backbones.registry import text_dims
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
    dims = text_dims(real)  # the sizes memory planning reads (Gemma-4 refuses real.head_dim)
    ref = spec.reference_config
    assert dims["hidden"] == ref["hidden_size"] and dims["n_layers"] == ref["num_hidden_layers"]
    assert dims["head_dim"] == ref.get("head_dim", ref["hidden_size"] // ref["num_attention_heads"])
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


# ------------------------------------------------------------------------------------------------------------------
# emollm backbones show


def _chat_file(tmp_path, messages):
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(messages))
    return path


SHOW_CHAT = [
    {"role": "system", "content": "You read faces and voices."},
    {
        "role": "user",
        "content": [
            {"type": "video"},
            {"type": "text", "text": " "},
            {"type": "audio"},
            {"type": "text", "text": " Why?"},
        ],
    },
    {"role": "assistant", "content": "Happiness."},
    {"role": "user", "content": "And the face? <face>"},
]


@pytest.mark.parametrize("name", ["llama3_1", "qwen3", "gemma3", "gemma4", "phi4_mini", "smollm3"])
def test_show_prints_the_rendered_prompt_with_placeholders(name, tmp_path, capsys):
    from emollm.backbones.cli import cli_main

    spec = get_backbone(name)
    ph = spec.placeholder_tokens()
    chat = _chat_file(tmp_path, SHOW_CHAT)
    assert cli_main(["show", name, "--chat", str(chat), "--generation-prompt", "--modality-tokens", "audio=3"]) == 0
    out = capsys.readouterr().out
    expected = [
        SHOW_CHAT[0],
        {"role": "user", "content": f"{ph['video']} {ph['audio'] * 3} Why?"},
        SHOW_CHAT[2],
        {"role": "user", "content": f"And the face? {ph['face']}"},
    ]
    fmt = get_chat_format(spec.chat_format, default_system=spec.default_system)
    text = fmt.render(expected, add_generation_prompt=True).text
    assert out == text + ("" if text.endswith("\n") else "\n")
    assert cli_main(["show", name, "--chat", str(chat), "--json", "--modality-tokens", "audio=3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["text"] == fmt.render(expected).text and doc["chat_format"] == spec.chat_format
    assert [doc["text"][s:e] for s, e in doc["loss_spans"]][0].startswith("Happiness.")


def test_show_tokens_mark_placeholders_and_loss(tmp_path, capsys):
    """--tokens with --llm-path: the ids tokenize_chat feeds the model, placeholders and loss tokens marked."""
    from emollm.backbones.chat import tokenize_chat
    from emollm.backbones.cli import cli_main
    from emollm.backbones.loading import prepare_tokenizer
    from emollm.testing import build_tiny_tokenizer

    spec = get_backbone("llama3_1")
    tok = build_tiny_tokenizer(spec.chat_format, extra_special_tokens=list(spec.placeholder_tokens().values()))
    spec.text_config(n_layers=2, hidden=32, vocab_size=len(tok)).save_pretrained(tmp_path / "llm")
    tok.save_pretrained(tmp_path / "llm")
    chat = _chat_file(tmp_path, SHOW_CHAT)
    argv = ["show", "llama3_1", "--chat", str(chat), "--tokens", "--llm-path", str(tmp_path / "llm"), "--json"]
    assert cli_main([*argv, "--modality-tokens", "video=2"]) == 0
    rows = json.loads(capsys.readouterr().out)["tokens"]
    prepare_tokenizer(spec, tok, list(spec.placeholder_tokens()))
    ph = spec.placeholder_tokens()
    messages = [
        SHOW_CHAT[0],
        {"role": "user", "content": f"{ph['video'] * 2} {ph['audio']} Why?"},
        SHOW_CHAT[2],
        {"role": "user", "content": f"And the face? {ph['face']}"},
    ]
    ids, loss = tokenize_chat(tok, get_chat_format("llama3_1"), messages)
    assert [r["id"] for r in rows] == ids and [r["loss"] for r in rows] == loss
    assert [r["placeholder"] for r in rows if r["placeholder"]] == ["video", "video", "audio", "face"]
    assert tok.decode([r["id"] for r in rows if r["loss"]]) == "Happiness.<|eot_id|>"
    assert cli_main([*argv[:-1], "--modality-tokens", "video=2"]) == 0
    table = capsys.readouterr().out
    assert "<- video placeholder" in table and "loss" in table and f"{len(ids)} tokens" in table


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "llama4", "--chat", "{chat}"], "unknown backbone 'llama4'"),
        (["show", "qwen3", "--chat", "{missing}"], "no such file"),
        (["show", "qwen3", "--chat", "{bad}"], "not valid JSON"),
        (["show", "qwen3", "--chat", "{chat}", "--tokens"], "has no embedded weights, so pass --llm-path"),
        (["show", "gemma3", "--chat", "{chat}", "--thinking", "on"], "has no thinking switch"),
        (["show", "gemma3", "--chat", "{chat}", "--date", "1 Jan 2025"], "writes no date"),
        (["show", "qwen3", "--chat", "{chat}", "--modality-tokens", "smell=2"], "is not MODALITY=N"),
        (["show", "qwen3", "--chat", "{parts}"], "has type 'image'"),
    ],
)
def test_show_errors_are_one_line(argv, message, tmp_path, capsys):
    from emollm.backbones.cli import cli_main

    files = {
        "chat": _chat_file(tmp_path, SHOW_CHAT),
        "missing": tmp_path / "nope.json",
        "bad": tmp_path / "bad.json",
        "parts": tmp_path / "parts.json",
    }
    files["bad"].write_text("[{")
    files["parts"].write_text(json.dumps([{"role": "user", "content": [{"type": "image"}]}]))
    assert cli_main([a.format(**{k: str(v) for k, v in files.items()}) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------------------------------------------------------
# Multimodal checkpoints holding a registry entry's text model

_VLM_PARTS = {
    "qwen3_5": {"vision_config": dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64)},
    "gemma4": {
        "vision_config": dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2
        ),
        "audio_config": None,
    },
    "gemma3": {
        "vision_config": dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        ),
        "mm_tokens_per_image": 4,
    },
}


def _save_vlm(name: str, vlm_type: str, folder):
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    text = get_backbone(name).text_config(n_layers=2, hidden=64, vocab_size=300)
    torch.manual_seed(0)
    vlm = AutoModelForImageTextToText.from_config(
        AutoConfig.for_model(vlm_type, text_config=text.to_dict(), **_VLM_PARTS[name])
    )
    vlm.save_pretrained(folder)
    return vlm


@pytest.mark.parametrize(("name", "vlm_type"), [("qwen3_5", "qwen3_5"), ("gemma4", "gemma4")])
def test_published_multimodal_checkpoint_loads_as_the_text_model(name, vlm_type, tmp_path):
    """Qwen3.5 and Gemma-4 are published as *ForConditionalGeneration: --llm-path takes them, the text model alone."""
    import torch

    from emollm.backbones.loading import load_language_model

    vlm = _save_vlm(name, vlm_type, tmp_path)
    lm = load_language_model(get_backbone(name), tmp_path, dtype=torch.float32)
    assert lm.config.model_type == get_backbone(name).family
    ids = torch.randint(3, 300, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(lm(input_ids=ids).logits, vlm(input_ids=ids).logits)


def test_multimodal_checkpoint_whose_text_weights_cannot_be_read_is_refused(tmp_path):
    """A Gemma-3 VLM (4B and up) stores its text weights in a layout Gemma3ForCausalLM does not map: an error, not
    a randomly initialised model."""
    import torch

    from emollm.backbones.loading import load_language_model

    _save_vlm("gemma3", "gemma3", tmp_path)
    with pytest.raises(ValueError, match=r"'gemma3' model whose 'gemma3_text' text model could not be read"):
        load_language_model(get_backbone("gemma3"), tmp_path, dtype=torch.float32)
