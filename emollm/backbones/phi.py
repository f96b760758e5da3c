"""Microsoft's Phi-4-mini-instruct (``Phi3ForCausalLM``): registry entry and chat format.

Phi-3's decoder fuses its projections: attention is ``self_attn.qkv_proj`` + ``o_proj`` and the MLP
``mlp.gate_up_proj`` + ``down_proj``, so the LoRA targets are those four names, not LLaMA's seven.

Placeholder tokens: the tokenizer (o200k-based) ends at id 200,028 (``<|tag|>``) while the embedding matrix has
200,064 rows, so the added ``<|emo_*|>`` tokens land in unused padding rows and nothing is resized.
"""

from __future__ import annotations

from emollm.backbones.chat import TurnFormat

#: microsoft/Phi-4-mini-instruct: ``<|role|>content<|end|>`` with no newlines and no trimming; the template appends
#: ``eos_token`` (``<|endoftext|>``) when no generation prompt is asked for.
PHI4_CHAT = TurnFormat(
    name="phi4",
    stop_strings=("<|end|>", "<|endoftext|>"),
    special_tokens=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>"),
    eos_token="<|endoftext|>",
    header="<|{role}|>",
    closing="{eos}",
)

CHAT_FORMATS = (PHI4_CHAT,)

#: ``BackboneSpec`` fields of each entry (the registry builds the specs).
BACKBONES = (
    dict(
        name="phi4_mini",
        family="phi3",
        hf_id="microsoft/Phi-4-mini-instruct",
        config_url="https://huggingface.co/microsoft/Phi-4-mini-instruct/blob/main/config.json",
        chat_format="phi4",
        lora_targets=("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
        placeholder_note="adds <|emo_*|> tokens; they land in the embedding matrix's unused padding rows: no resize",
        # The tokenizer's pad is its eos (<|endoftext|>): emollm adds <|emo_pad|> (a padding row too).
        reference_config={
            "hidden_size": 3072,
            "intermediate_size": 8192,
            "num_hidden_layers": 32,
            "num_attention_heads": 24,
            "num_key_value_heads": 8,
            "vocab_size": 200064,
            "max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096,
            # The published rope_scaling is longrope with 2 x 48 factors; they are not copied here (this config gives
            # shapes and memory; real weights bring their own config.json).
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.75},
            "sliding_window": 262144,
            "rms_norm_eps": 1e-5,
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "bos_token_id": 199999,
            "eos_token_id": 199999,
            "pad_token_id": 199999,
            "tie_word_embeddings": True,
        },
    ),
)
