"""Qwen2 / Qwen2.5 instruct: registry entry (ChatML with Qwen2.5's default system message)."""

from __future__ import annotations

CHAT_FORMATS = ()  # ChatML, shared: emollm.backbones.chat.CHATML

#: ``BackboneSpec`` fields of each entry (the registry builds the specs).
BACKBONES = (
    dict(
        name="qwen2",
        family="qwen2",
        hf_id="Qwen/Qwen2.5-7B-Instruct",
        config_url="https://huggingface.co/Qwen/Qwen2.5-7B-Instruct/blob/main/config.json",
        chat_format="chatml",
        default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        pad_candidates=("<|endoftext|>",),
        reference_config={
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "vocab_size": 152064,
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
            "tie_word_embeddings": False,
        },
    ),
)
