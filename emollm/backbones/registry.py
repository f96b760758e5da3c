"""``BackboneSpec``, everything emollm needs to know about one LLM family as data (litgpt's ``Config`` as a frozen
dataclass), and the registry: every family file's entries and chat formats, by name. Adding a family is one new file
in this package (its ``BACKBONES``, ``BackboneSpec`` fields as plain data, and its ``CHAT_FORMATS``) and one line in
``FAMILIES``."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from emollm.backbones import affectgpt, gemma, llama, mistral, phi, qwen, smollm
from emollm.backbones.chat import CHATML, ChatFormat

__all__ = [
    "ADDED_PLACEHOLDERS",
    "FAMILIES",
    "LORA_ALL_LINEAR",
    "BackboneSpec",
    "get_backbone",
    "get_chat_format",
    "list_backbones",
    "list_chat_formats",
]

PlaceholderPolicy = Literal["add_special", "reserved"]
DType = Literal["float32", "bfloat16", "float16"]

#: Modality placeholder strings for backbones that get new special tokens (one embedding row each, always overwritten).
ADDED_PLACEHOLDERS: dict[str, str] = {
    "audio": "<|emo_audio|>",
    "face": "<|emo_face|>",
    "video": "<|emo_video|>",
    "frame": "<|emo_frame|>",
    "multi": "<|emo_multi|>",
}

LORA_ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


#: Config keys that hold one value per decoder layer.
_PER_LAYER_KEYS = ("layer_types", "no_rope_layers")
_TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


def _layer_window(values: Sequence[Any], n: int) -> list[Any]:
    """The last ``n`` consecutive entries of a per-layer list that contain every distinct value (the last ``n`` if
    no window does); cycles the list when it is shorter than ``n``."""
    values = list(values)
    if len(values) < n:
        values = values * (n // len(values) + 1)
    kinds = set(values)
    for start in range(len(values) - n, -1, -1):
        if set(values[start : start + n]) == kinds:
            return values[start : start + n]
    return values[-n:]


def _drop_ids_outside(cfg: dict[str, Any], vocab_size: int) -> None:
    """Removes special token ids that a ``vocab_size``-row embedding cannot hold (a list keeps its valid ids)."""
    for key in _TOKEN_ID_KEYS:
        value = cfg.get(key)
        if isinstance(value, list):
            kept = [v for v in value if v < vocab_size]
            cfg[key] = kept or None
        elif isinstance(value, int) and value >= vocab_size:
            cfg[key] = None


@dataclass(frozen=True)
class BackboneSpec:
    """Everything emollm needs to know about one LLM family.

    Attributes:
        name: Registry key (``--backbone``).
        family: transformers ``model_type`` of the language model emollm builds (``llama``, ``qwen3``,
            ``gemma3_text``, ...); ``AutoModelForCausalLM`` maps it to the class.
        hf_id: The model this entry describes (documentation only: nothing is fetched).
        config_url: The published ``config.json`` the reference dimensions come from.
        chat_format: Name in ``emollm.backbones.chat``.
        default_system: System prompt the official chat template injects when a conversation has none.
        lora_targets: Module-name suffixes that get LoRA adapters.
        placeholder_token_policy: ``add_special`` adds ``<|emo_*|>`` tokens (resizing the embeddings once, new rows
            initialised deterministically to the mean row); ``reserved`` reuses tokens the vocabulary already has
            (LLaMA-3's ``<|reserved_special_token_k|>``), so no resize. Either way the rows are overwritten by
            projected features at every forward pass and are suppressed in generation.
        reserved_placeholders: For ``reserved``: modality -> existing token string.
        placeholder_note: The placeholder choice in words, for ``emollm backbones`` and the README (which tokens,
            whether the embeddings are resized).
        pad_candidates: Tokens to use as pad, in order, when the tokenizer has no pad distinct from its end tokens.
        added_tokens: Tokens added to the tokenizer first, one at a time in this order, so their ids are the ones a
            released model's tokenizer gave them (AffectGPT's five ``<XHere>`` placeholders); with the ``reserved``
            policy the placeholders are then found in the vocabulary.
        bos_token: Set as the tokenizer's bos token (AffectGPT: ``<|im_start|>``); None keeps the tokenizer's.
        pad_token: Use this token as pad even if it is an end token (AffectGPT: the eos, as released); None picks a
            distinct pad through ``pad_candidates``.
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
    lora_targets: tuple[str, ...] = LORA_ALL_LINEAR
    placeholder_token_policy: PlaceholderPolicy = "add_special"
    reserved_placeholders: dict[str, str] = field(default_factory=dict)
    placeholder_note: str = ""
    pad_candidates: tuple[str, ...] = ()
    added_tokens: tuple[str, ...] = ()
    bos_token: str | None = None
    pad_token: str | None = None
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
        overrides it describes the real model (useful to check memory before loading anything). A tiny config stays a
        valid config of the same class: per-layer lists (``layer_types``, ``no_rope_layers``) keep the last window of
        ``n_layers`` layers that holds every layer kind (a 2-layer Qwen3.5 has one linear-attention and one full
        attention layer), token ids outside a smaller vocabulary are dropped, and the family's own fix-up (its
        ``TINY_FIXES``, e.g. Gemma-4's per-layer-input embedding and global head size) scales the rest.
        """
        from transformers import AutoConfig

        cfg = copy.deepcopy(dict(self.reference_config))
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
        if n_layers is not None:
            for key in _PER_LAYER_KEYS:
                if key in cfg:
                    cfg[key] = _layer_window(cfg[key], n_layers)
        if vocab_size is not None:
            _drop_ids_outside(cfg, vocab_size)
        if hidden is not None and self.family in _TINY_FIXES:
            _TINY_FIXES[self.family](cfg)
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
            "placeholder_tokens": self.placeholder_tokens(),
            "placeholder_note": self.placeholder_note,
            "default_dtype": self.default_dtype,
            "weights": f"embedded:{self.embedded}" if self.embedded else "local path (--llm-path)",
        }

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> BackboneSpec:
        """Registry lookup; keyword overrides replace spec fields (e.g. ``lora_targets=("q_proj", "v_proj")``)."""
        spec = get_backbone(name)
        return dataclasses.replace(spec, **overrides) if overrides else spec


#: The family files, in the order ``emollm backbones`` lists them: a new family is one line here.
FAMILIES = (
    llama,
    mistral,
    qwen,
    affectgpt,
    smollm,
    gemma,
    phi,
)

#: model_type -> fix-up of a tiny config dict (in place), from the family files' ``TINY_FIXES``.
_TINY_FIXES: Mapping[str, Callable[[dict[str, Any]], None]] = MappingProxyType(
    {model_type: fix for family in FAMILIES for model_type, fix in getattr(family, "TINY_FIXES", {}).items()}
)

_REGISTRY: Mapping[str, BackboneSpec] = MappingProxyType(
    {entry["name"]: BackboneSpec(**entry) for family in FAMILIES for entry in family.BACKBONES}
)
_FORMATS: Mapping[str, ChatFormat] = MappingProxyType(
    {f.name: f for f in (CHATML, *(fmt for fam in FAMILIES for fmt in fam.CHAT_FORMATS))}
)


def text_dims(config: Any) -> dict[str, int]:
    """A decoder's sizes from its transformers config, for code that needs numbers rather than modules (memory
    planning): ``n_layers``, ``hidden``, ``intermediate``, ``n_heads``, ``n_kv_heads``, ``head_dim``.

    Read from the config's dict, which every family writes with the same keys: Gemma-4's config refuses to read a
    per-layer attribute such as ``head_dim`` globally; its dict holds the value of the sliding-window layers (the full
    attention layers' ``global_head_dim`` is larger).
    """
    data = config.to_dict()
    heads = int(data["num_attention_heads"])
    return {
        "n_layers": int(data["num_hidden_layers"]),
        "hidden": int(data["hidden_size"]),
        "intermediate": int(data["intermediate_size"]),
        "n_heads": heads,
        "n_kv_heads": int(data.get("num_key_value_heads") or heads),
        "head_dim": int(data.get("head_dim") or data["hidden_size"] // heads),
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


def backbones_of_family(model_type: str) -> list[str]:
    """Registry names whose transformers ``model_type`` is ``model_type``."""
    return [n for n, s in _REGISTRY.items() if s.family == model_type]


def list_chat_formats() -> list[str]:
    """Returns the names of the registered chat formats, sorted."""
    return sorted(_FORMATS)


def get_chat_format(name: str, **overrides: Any) -> ChatFormat:
    """Looks up a chat format by name.

    Args:
        name: A name from :func:`list_chat_formats`.
        **overrides: Field values to replace (``dataclasses.replace``), e.g. ``default_system="You are ..."``.

    Returns:
        The (frozen) format.

    Raises:
        ValueError: If ``name`` is not registered; the message lists the known names.
        TypeError: If an override names a field the format does not have.
    """
    try:
        fmt = _FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown chat format {name!r}; known formats: {', '.join(list_chat_formats())}") from None
    return dataclasses.replace(fmt, **overrides) if overrides else fmt
