"""Meta's LLaMA-2 chat, LLaMA-3 and LLaMA-3.1 / 3.2 instruct: registry entries and chat formats.

LLaMA-2 adds ``<|emo_*|>`` placeholder tokens (one resize); LLaMA-3, 3.1 and 3.2 reuse
``<|reserved_special_token_100..104|>``, which all three vocabularies have (3.1 renamed some low reserved slots, e.g.
``<|finetune_right_pad_id|>`` and ``<|eom_id|>``, and renumbered the rest, so the ids may differ; the strings do not).
"""

from __future__ import annotations

from emollm.backbones.chat import InstFormat, TurnFormat

LLAMA2_CHAT = InstFormat(
    name="llama2",
    stop_strings=("</s>",),
    special_tokens=("<s>", "</s>"),
    bos_token="<s>",
    eos_token="</s>",
    system_template="<<SYS>>\n{system}\n<</SYS>>\n\n{user}",
    user_turn="{bos}[INST] {user} [/INST]",
    answer_turn=" {answer} {eos}",
    bos_once=False,
    strip=True,
)

LLAMA3_CHAT = TurnFormat(
    name="llama3",
    stop_strings=("<|eot_id|>", "<|end_of_text|>"),
    special_tokens=("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    bos_token="<|begin_of_text|>",
    eos_token="<|eot_id|>",
    header="<|start_header_id|>{role}<|end_header_id|>\n\n",
    strip=True,
)

#: LLaMA-3.1 / 3.2 Instruct (one template text for 3.1-8B/70B and 3.3-70B; 3.2-1B/3B differ only in tool calls and in
#: the date default, see ``date_string``): always a system turn with the "Cutting Knowledge Date / Today Date" header,
#: the system message (trimmed) after it.
LLAMA3_1_CHAT = TurnFormat(
    name="llama3_1",
    stop_strings=("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"),
    special_tokens=("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    bos_token="<|begin_of_text|>",
    eos_token="<|eot_id|>",
    header="<|start_header_id|>{role}<|end_header_id|>\n\n",
    strip=True,
    system_template="Cutting Knowledge Date: December 2023\nToday Date: {date_string}\n\n{system}",
    always_system=True,
    # The 3.1 template's default. The 3.2 template writes today's date (strftime_now("%d %b %Y")) when date_string is
    # not given; a fixed date keeps prompts, caches and resumed runs identical from one day to the next.
    date_string="26 Jul 2024",
)

#: LLaMA-3's reserved tokens that carry the modality placeholders (no embedding resize).
LLAMA3_RESERVED = {
    "audio": "<|reserved_special_token_100|>",
    "face": "<|reserved_special_token_101|>",
    "video": "<|reserved_special_token_102|>",
    "frame": "<|reserved_special_token_103|>",
    "multi": "<|reserved_special_token_104|>",
}


#: LLaMA-3.1's RoPE scaling (``rope_type: llama3``); 3.1 uses factor 8, 3.2 factor 32.
LLAMA3_1_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}

CHAT_FORMATS = (LLAMA2_CHAT, LLAMA3_CHAT, LLAMA3_1_CHAT)

#: What LLaMA-3.1 and 3.2 Instruct share (entry fields, and config values of the published config.json files).
_LLAMA31 = dict(
    family="llama",
    chat_format="llama3_1",
    placeholder_token_policy="reserved",
    reserved_placeholders=LLAMA3_RESERVED,
    placeholder_note="reuses <|reserved_special_token_100..104|> (3.1 renumbered the low reserved slots, not these)",
    pad_candidates=("<|finetune_right_pad_id|>", "<|reserved_special_token_247|>"),
)
_LLAMA31_CONFIG = {
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
}

#: ``BackboneSpec`` fields of each entry (the registry builds the specs).
BACKBONES = (
    dict(
        name="llama2",
        family="llama",
        hf_id="meta-llama/Llama-2-7b-chat-hf",
        config_url="https://huggingface.co/meta-llama/Llama-2-7b-chat-hf/blob/main/config.json",
        chat_format="llama2",
        pad_candidates=("<unk>",),
        default_dtype="float16",  # Emotion-LLaMA's dtype; bfloat16 works too
        reference_config={
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "vocab_size": 32000,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "tie_word_embeddings": False,
        },
    ),
    dict(
        name="llama3",
        family="llama",
        hf_id="meta-llama/Meta-Llama-3-8B-Instruct",
        config_url="https://huggingface.co/meta-llama/Meta-Llama-3-8B-Instruct/blob/main/config.json",
        chat_format="llama3",
        placeholder_token_policy="reserved",
        reserved_placeholders=LLAMA3_RESERVED,
        pad_candidates=("<|finetune_right_pad_id|>", "<|reserved_special_token_250|>"),
        reference_config={
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "vocab_size": 128256,
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0,
            "bos_token_id": 128000,
            "eos_token_id": 128009,
            "tie_word_embeddings": False,
        },
    ),
    dict(
        name="llama3_1",
        hf_id="meta-llama/Llama-3.1-8B-Instruct",
        config_url="https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct/blob/main/config.json",
        **_LLAMA31,
        reference_config=_LLAMA31_CONFIG
        | {
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "head_dim": 128,
            "rope_parameters": LLAMA3_1_ROPE | {"factor": 8.0},
            "tie_word_embeddings": False,
        },
    ),
    dict(
        name="llama3_2",
        hf_id="meta-llama/Llama-3.2-1B-Instruct",
        config_url="https://huggingface.co/meta-llama/Llama-3.2-1B-Instruct/blob/main/config.json",
        **_LLAMA31,
        reference_config=_LLAMA31_CONFIG
        | {
            "hidden_size": 2048,
            "intermediate_size": 8192,
            "num_hidden_layers": 16,
            "num_attention_heads": 32,
            "head_dim": 64,
            "rope_parameters": LLAMA3_1_ROPE | {"factor": 32.0},
            "tie_word_embeddings": True,
        },
    ),
)
