"""Self-describing checkpoint folders: ``save_checkpoint(model, processor, dir)`` and ``load_model(dir)``.

A checkpoint folder holds everything ``load_model`` needs besides the base LLM weights it was trained on:

    checkpoint.json           format, version, backbone, chat format, encoders, where the base LLM came from, LoRA
    emollm_config.json        the resolved ``EmoLLMConfig`` (text config, modality branches, token ids)
    run_config.json           the run's own settings, when a recipe passes them
    tokenizer files + processor_config.json
    projectors.safetensors    projectors, modality-type embeddings, fusion block (and trained encoders)
    adapter_model.safetensors + adapter_config.json   LoRA (peft format), when the LLM has adapters
    llm/                      full LLM weights, only when they cannot be found elsewhere (random-init base, full
                              fine-tune, merged export)

Folders are written to a temporary sibling and renamed into place, so a kill never leaves a half-written
checkpoint under the final name. Everything is safetensors or JSON: loading never unpickles.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from emollm.backbones import get_backbone
from emollm.configuration import EmoLLMConfig
from emollm.llm import Quantization, fit_embeddings, load_language_model, resolve_llm_path
from emollm.lora import LoraSettings, TrainableSpec, is_peft, merge_lora
from emollm.modeling import EmoLLMForCausalLM
from emollm.processing import EmoProcessor

FORMAT = "emollm-checkpoint"
VERSION = 1
_ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def _connector_state(model: EmoLLMForCausalLM, with_encoders: bool) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    parts = dict(model.connector_modules())
    if with_encoders:
        parts["towers"] = model.towers
    for prefix, module in parts.items():
        for key, value in module.state_dict().items():
            state[f"{prefix}.{key}"] = value.detach().to("cpu").contiguous().clone()
    return state


def _base_llm_state(lm) -> dict[str, torch.Tensor]:
    """Base weights of a (possibly peft-wrapped) LLM, with peft's wrapper names removed and LoRA left out."""
    if not is_peft(lm):
        return {k: v.detach().cpu().contiguous().clone() for k, v in lm.state_dict().items()}
    out = {}
    for key, value in lm.state_dict().items():
        if "lora_" in key:
            continue
        key = key.removeprefix("base_model.model.").replace(".base_layer.", ".")
        out[key] = value.detach().cpu().contiguous().clone()
    return out


def save_checkpoint(
    model: EmoLLMForCausalLM,
    processor: EmoProcessor,
    out_dir: str | os.PathLike,
    *,
    lora: LoraSettings | None = None,
    trainable: TrainableSpec | None = None,
    run_config: dict[str, Any] | None = None,
    save_base: bool | None = None,
) -> Path:
    """Write a self-describing checkpoint folder atomically; returns its path.

    ``save_base`` defaults to True when the base weights exist nowhere else (random-init model) or were trained in
    full; otherwise the folder records ``llm_source`` and stays small.
    """
    out_dir = Path(out_dir)
    config = model.config
    lm = model.language_model
    quantized = getattr(lm, "is_loaded_in_4bit", False) or getattr(lm, "is_loaded_in_8bit", False)
    if save_base is None:
        save_base = config.llm_source is None or (trainable is not None and trainable.llm == "full")
    if save_base and quantized:
        raise ValueError("cannot save quantized base weights; the base is re-loaded from its llm_source instead")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        config.save(tmp / "emollm_config.json")
        processor.save_pretrained(tmp)
        save_file(
            _connector_state(model, trainable is not None and trainable.encoders), str(tmp / "projectors.safetensors")
        )
        has_adapter = is_peft(lm)
        if has_adapter:
            # adapter_model.safetensors + adapter_config.json. Not the resized embedding matrix: its new rows are
            # placeholder rows, re-created deterministically at load time and always overwritten by features.
            lm.save_pretrained(tmp, save_embedding_layers=False)
            (tmp / "README.md").unlink(missing_ok=True)  # peft's model-card stub; checkpoint.json describes the folder
        if save_base:
            (tmp / "llm").mkdir()
            base_config = config.hf_text_config()
            base_config.save_pretrained(tmp / "llm")
            state = _base_llm_state(lm)
            if getattr(base_config, "tie_word_embeddings", False):
                state.pop("lm_head.weight", None)
            save_file(state, str(tmp / "llm" / "model.safetensors"), metadata={"format": "pt"})
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "backbone": config.backbone,
            "chat_format": config.chat_format,
            "encoders": {m: c.encoder for m, c in config.modalities.items()},
            "llm_source": "llm/" if save_base else config.llm_source,
            "lora": None if lora is None or not has_adapter else vars(lora),
            "trainable": None if trainable is None else vars(trainable),
        }
        (tmp / "checkpoint.json").write_text(json.dumps(meta, indent=2) + "\n")
        if run_config is not None:
            (tmp / "run_config.json").write_text(json.dumps(run_config, indent=2, default=str) + "\n")
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """``checkpoint.json`` of a folder, with a clear error when it is not an emollm checkpoint."""
    path = Path(path)
    meta_file = path / "checkpoint.json"
    if not meta_file.is_file():
        raise FileNotFoundError(
            f"{path} is not an emollm checkpoint (no checkpoint.json); pass a folder saved by emollm"
        )
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_file}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("version", 0) > VERSION:
        raise ValueError(f"{meta_file}: checkpoint version {meta['version']} is newer than this emollm ({VERSION})")
    return meta


def load_model(
    path: str | os.PathLike,
    *,
    llm_path: str | os.PathLike | None = None,
    backbone: str | None = None,
    dtype: torch.dtype | None = None,
    quantization: Quantization = None,
    device: str | torch.device | None = None,
) -> tuple[EmoLLMForCausalLM, EmoProcessor]:
    """Load ``(model, processor)`` from a checkpoint folder; needs nothing else but its base LLM.

    Args:
        path: Checkpoint folder.
        llm_path: Base LLM weights (folder or GGUF) when they are not in the checkpoint and not at the recorded
            ``llm_source`` (e.g. on another machine).
        backbone: Expected backbone; a checkpoint of another backbone raises instead of loading garbage.
        dtype: LLM dtype (default: the backbone's; float32 for weights stored in the checkpoint).
        quantization: Load the base in 4/8 bit.
        device: Where to put the model.
    """
    path = Path(path)
    meta = read_checkpoint_meta(path)
    config = EmoLLMConfig.load(path / "emollm_config.json")
    if backbone is not None and backbone != config.backbone:
        raise ValueError(
            f"checkpoint {path} was trained for backbone {config.backbone!r}, not {backbone!r}: its projectors and "
            f"adapter only fit that LLM. Load it with backbone={config.backbone!r}, or train one for {backbone!r}"
        )
    spec = get_backbone(config.backbone)
    if (path / "llm").is_dir():
        base_path = path / "llm"
        dtype = dtype or torch.float32
    elif llm_path is not None:
        base_path = resolve_llm_path(spec, llm_path)
    elif config.llm_source and config.llm_source.startswith("embedded:"):
        base_path = resolve_llm_path(spec, None)
    elif config.llm_source and Path(config.llm_source).exists():
        base_path = resolve_llm_path(spec, config.llm_source)
    else:
        raise FileNotFoundError(
            f"checkpoint {path} needs its base LLM ({spec.hf_id}), last seen at {config.llm_source!r}; "
            "pass llm_path= / --llm-path with the local folder or GGUF"
        )
    lm = load_language_model(spec, base_path, dtype=dtype, quantization=quantization)
    saved = config.text_config
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r} vs base {getattr(lm.config, k, None)!r}"
        for k in _ARCH_KEYS
        if saved.get(k) != getattr(lm.config, k, None)
    ]
    if diffs:
        raise ValueError(
            f"the base LLM at {base_path} is not the one checkpoint {path} was trained on: " + "; ".join(diffs)
        )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    fit_embeddings(lm, tokenizer)
    model = EmoLLMForCausalLM(config, lm)
    if meta.get("lora"):
        from peft import PeftModel

        if not (path / "adapter_model.safetensors").is_file():
            raise FileNotFoundError(f"{path}/adapter_model.safetensors is missing but checkpoint.json lists LoRA")
        model.language_model = PeftModel.from_pretrained(lm, str(path), is_trainable=False)
    _load_connector(
        model, path / "projectors.safetensors", with_encoders=bool((meta.get("trainable") or {}).get("encoders"))
    )
    if device is not None:
        model.to(device)
    else:
        lm_device = next(lm.parameters()).device
        for part in [model.towers, *model.connector_modules().values()]:
            part.to(lm_device)
    model.eval()
    processor = EmoProcessor.from_config(config, tokenizer, model.num_tokens)
    return model, processor


def _load_connector(model: EmoLLMForCausalLM, file: Path, *, with_encoders: bool) -> None:
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing; the checkpoint is incomplete")
    state = load_file(str(file))
    expected = _connector_state(model, with_encoders)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{file} does not fit this model: missing {missing[:8]}, unexpected {unexpected[:8]}")
    bad = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if bad:
        raise ValueError(f"{file} has tensors of the wrong shape: {bad[:8]}")
    parts = dict(model.connector_modules())
    if with_encoders:
        parts["towers"] = model.towers
    for prefix, module in parts.items():
        sub = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
        module.load_state_dict(sub, strict=True)


def export_merged(path: str | os.PathLike, out_dir: str | os.PathLike, **load_kwargs) -> Path:
    """Load a LoRA checkpoint, fold the adapter into the base weights and save a standalone checkpoint."""
    model, processor = load_model(path, **load_kwargs)
    meta = read_checkpoint_meta(path)
    merge_lora(model)
    trainable = TrainableSpec(**meta["trainable"]) if meta.get("trainable") else None
    return save_checkpoint(model, processor, out_dir, trainable=trainable, save_base=True)


def cli_main(argv: list[str]) -> int:
    """``emollm export CHECKPOINT OUT [--merge]``: copy a checkpoint, optionally folding LoRA into the base."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="emollm export", description="Export a checkpoint (LoRA merged on request).")
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--merge", action="store_true", help="fold the LoRA adapter into the base weights")
    parser.add_argument("--llm-path", help="base LLM folder/GGUF if the checkpoint cannot find it")
    args = parser.parse_args(argv)
    try:
        if args.merge:
            out = export_merged(args.checkpoint, args.out, llm_path=args.llm_path)
        else:
            model, processor = load_model(args.checkpoint, llm_path=args.llm_path)
            meta = read_checkpoint_meta(args.checkpoint)
            lora = LoraSettings(**meta["lora"]) if meta.get("lora") else None
            trainable = TrainableSpec(**meta["trainable"]) if meta.get("trainable") else None
            out = save_checkpoint(model, processor, args.out, lora=lora, trainable=trainable)
    except (OSError, ValueError) as e:
        print(f"emollm export: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0
