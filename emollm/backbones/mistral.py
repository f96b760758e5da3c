"""Mistral-7B-Instruct v0.1: registry entry and chat format (tokenizer v1; ``<|emo_*|>`` placeholders added)."""

from __future__ import annotations

from emollm.backbones.chat import InstFormat

#: The system message joins the first user message with a blank line, as the current published template and
#: ``mistral-common`` do for v1 models (see ``tests/assets/chat_templates/SOURCES.md``).
MISTRAL_CHAT = InstFormat(
    name="mistral",
    stop_strings=("</s>",),
    special_tokens=("<s>", "</s>"),
    bos_token="<s>",
    eos_token="</s>",
)

CHAT_FORMATS = (MISTRAL_CHAT,)

#: ``BackboneSpec`` fields of each entry (the registry builds the specs).
BACKBONES = (
    dict(
        name="mistral",
        family="mistral",
        hf_id="mistralai/Mistral-7B-Instruct-v0.1",
        config_url="https://huggingface.co/mistralai/Mistral-7B-Instruct-v0.1/blob/main/config.json",
        chat_format="mistral",
        pad_candidates=("<unk>",),
        reference_config={
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "vocab_size": 32000,
            "max_position_embeddings": 32768,
            "sliding_window": 4096,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "tie_word_embeddings": False,
        },
    ),
)
