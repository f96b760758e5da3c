"""Copy a checkpoint, optionally with LoRA folded into the base (``export_merged``, ``emollm export``), or export it
for vLLM's prompt embeddings (``export_spliced``, ``emollm export --vllm``), refusing targets whose replacement would
destroy data."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from emollm.checkpoints.format import CheckpointInfo, _read_json, read_checkpoint, read_checkpoint_meta
from emollm.checkpoints.load import load_model
from emollm.checkpoints.save import save_checkpoint
from emollm.model.lora import is_peft, merge_lora


def _overlap(out: Path, src: Path) -> str | None:
    """How ``out`` overlaps ``src`` (both resolved): ``is``, ``contains``, ``is inside``, or None."""
    if out == src:
        return "is"
    if out in src.parents:
        return "contains"
    if src in out.parents:
        return "is inside"
    return None


def check_export_target(
    out_dir: str | os.PathLike, inputs: Iterable[str | os.PathLike], *, overwrite: bool = False
) -> Path:
    """Refuse an export target whose replacement would destroy data; return it.

    Allowed: a new path, an empty folder, or (with ``overwrite``) an existing emollm checkpoint folder. Always
    refused: a regular file (or a link to one), and a folder that is, contains or is inside one of ``inputs`` (the
    checkpoint being exported, its base LLM), whatever ``overwrite`` says.

    Args:
        out_dir: The folder the export would create or replace.
        inputs: Paths the export reads.
        overwrite: Allow replacing an existing, non-empty checkpoint folder.

    Raises:
        FileExistsError: The target may not be written; the message names it and the fix.
    """
    out = Path(out_dir)
    if (out.exists() or out.is_symlink()) and not out.is_dir():
        raise FileExistsError(
            f"{out} is a file, not a folder; it was left untouched: choose a new folder for the export"
        )
    resolved = out.resolve()
    for src in inputs:
        how = _overlap(resolved, Path(src).resolve())
        if how is not None:
            raise FileExistsError(
                f"{out} {how} the input {src}; exporting there would destroy it (even with --overwrite): "
                "choose a folder outside the input"
            )
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out} already exists and is not empty; pass --overwrite to replace it, or choose a new folder"
            )
        if not (out / "checkpoint.json").is_file():
            raise FileExistsError(
                f"{out} is not an emollm checkpoint, so --overwrite will not replace it; choose a new folder "
                "(or remove it yourself)"
            )
    return out


def _export_inputs(path: str | os.PathLike, llm_path: str | os.PathLike | None) -> list[str | os.PathLike]:
    """What an export of ``path`` reads: the checkpoint, ``llm_path``, and a recorded local base LLM."""
    inputs: list[str | os.PathLike] = [path]
    if llm_path is not None:
        inputs.append(llm_path)
    source = read_checkpoint_meta(path).get("llm_source")
    if isinstance(source, str) and Path(source).is_absolute():
        inputs.append(source)
    return inputs


def export_merged(
    path: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False, **load_kwargs: Any
) -> Path:
    """Load a LoRA checkpoint, fold the adapter into the base weights and save a standalone checkpoint.

    Args:
        path: The LoRA checkpoint.
        out_dir: Where to write the merged checkpoint: a new path or an empty folder (see
            :func:`check_export_target`).
        overwrite: Replace an existing checkpoint folder at ``out_dir``.
        **load_kwargs: Passed to :func:`load_model`.

    Returns:
        The merged checkpoint folder.
    """
    check_export_target(out_dir, _export_inputs(path, load_kwargs.get("llm_path")), overwrite=overwrite)
    info = read_checkpoint(path)
    model, processor = load_model(path, **load_kwargs)
    merge_lora(model)
    return save_checkpoint(
        model, processor, out_dir, trainable=info.trainable, save_base=True, run_config=_run_config(info)
    )


SPLICED_FORMAT = "emollm-spliced"
SPLICED_VERSION = 1


def needs_token_ids(text_config: Any) -> str | None:
    """Why a language model cannot be driven by prompt embeddings alone (None when it can): Gemma-4's layers also
    read per-layer embeddings of the token *ids*, which an embeddings-only prompt does not carry."""
    if getattr(text_config, "hidden_size_per_layer_input", None):
        return f"{text_config.model_type}'s layers also read per-layer embeddings of the token ids"
    return None


def embedding_facts(lm: Any) -> tuple[str, float]:
    """``(state-dict key of the input embedding table, the scale its module multiplies rows by)``.

    Gemma's embedding module multiplies rows by ``sqrt(hidden)`` (``embed_scale``); the exported front applies the
    same scale, and this checks that a plain lookup times that scale is what the module computes.

    Raises:
        ValueError: the embedding module computes something else (the front could not reproduce it).
    """
    import torch

    module = lm.get_input_embeddings()
    key = next((n for n, p in lm.named_parameters(remove_duplicate=False) if p is module.weight), None)
    if key is None:
        raise ValueError(f"cannot find the input embedding table of {type(lm).__name__} among its parameters")
    raw = getattr(module, "embed_scale", 1.0)
    scale = float(raw.item() if isinstance(raw, torch.Tensor) else raw)
    ids = torch.arange(min(module.weight.shape[0], 64))
    with torch.no_grad():
        want = module(ids)
        got = module.weight[ids] * torch.tensor(scale).to(module.weight.dtype)
    if not torch.equal(want, got):
        raise ValueError(
            f"{type(module).__name__} is not a table lookup times a constant; the spliced front cannot reproduce it"
        )
    return key, scale


def export_spliced(
    path: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False, **load_kwargs: Any
) -> Path:
    """Export a checkpoint for vLLM's prompt embeddings: ``OUT/llm`` (the LLM with LoRA merged, an HF folder vLLM
    loads: ``vllm serve OUT/llm --enable-prompt-embeds``), ``OUT/front`` (a small emollm checkpoint: processor,
    encoders, projectors; its base LLM is ``OUT/llm``) and ``OUT/spliced.json`` (what the client reads: where the
    embedding table is in ``OUT/llm``, its scale, the placeholder and stop token ids).

    :class:`emollm.engines.spliced.SplicedFront` loads the front with the embedding table alone and builds the
    input embeddings of a sample exactly as ``EmoLLMForCausalLM.embed`` does.

    Args:
        path: The checkpoint (LoRA or merged).
        out_dir: A new path or an empty folder; ``overwrite`` replaces an earlier spliced export.
        overwrite: Replace an existing spliced export at ``out_dir``.
        **load_kwargs: Passed to :func:`load_model` (``llm_path``, ``dtype``: e.g. ``torch.bfloat16`` for a GPU).

    Returns:
        The export folder.

    Raises:
        ValueError: The LLM needs more than input embeddings (Gemma-4), or the checkpoint cannot be read.
    """
    import dataclasses
    import json
    import shutil
    import tempfile

    from emollm.checkpoints.format import _DIR_MODE
    from emollm.settings import TrainableSpec
    from emollm.utils.io import atomic_write_text

    out = Path(out_dir)
    inputs = _export_inputs(path, load_kwargs.get("llm_path"))
    if (out / "spliced.json").is_file() and not out.is_symlink():  # an earlier spliced export
        if not overwrite:
            raise FileExistsError(f"{out} already holds a spliced export; pass --overwrite to replace it")
        for src in inputs:
            how = _overlap(out.resolve(), Path(src).resolve())
            if how is not None:
                raise FileExistsError(f"{out} {how} the input {src}; choose a folder outside the input")
    else:
        check_export_target(out, inputs, overwrite=False)
    info = read_checkpoint(path)
    why = needs_token_ids(info.config.hf_text_config())
    if why:
        raise ValueError(f"backbone {info.config.backbone!r} cannot be served from prompt embeddings: {why}")
    model, processor = load_model(path, **load_kwargs)
    if is_peft(model.language_model):
        merge_lora(model)
    lm = model.language_model
    key, scale = embedding_facts(lm)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp.chmod(_DIR_MODE)
        lm.save_pretrained(tmp / "llm", safe_serialization=True)
        processor.tokenizer.save_pretrained(tmp / "llm")  # with the placeholder tokens, so ids decode the same
        from safetensors import safe_open

        stored = set()
        for f in (tmp / "llm").glob("*.safetensors"):
            with safe_open(str(f), "pt") as st:
                stored |= {k for k in st.keys()}  # noqa: SIM118 - safe_open has keys(), not iteration
        if key not in stored:
            raise ValueError(f"the saved LLM has no tensor {key!r} (found {sorted(stored)[:5]}...)")
        model.config.llm_source = str((out / "llm").resolve())  # the front's base LLM: the merged one beside it
        trainable = dataclasses.replace(info.trainable or TrainableSpec(), encoders=True, llm="frozen")
        save_checkpoint(model, processor, tmp / "front", trainable=trainable, save_base=False)
        meta = {
            "format": SPLICED_FORMAT,
            "version": SPLICED_VERSION,
            "source": str(Path(path).resolve()),
            "backbone": info.config.backbone,
            "chat_format": info.config.chat_format,
            "llm": "llm",
            "front": "front",
            "embedding": {"key": key, "scale": scale, "shape": list(lm.get_input_embeddings().weight.shape)},
            "dtype": str(lm.get_input_embeddings().weight.dtype).removeprefix("torch."),
            "placeholder_token_ids": processor.placeholder_ids,
            "stop_token_ids": processor.stop_token_ids(),
            "serve": "vllm serve llm --enable-prompt-embeds (or vllm.LLM(model=llm, enable_prompt_embeds=True))",
        }
        atomic_write_text(tmp / "spliced.json", json.dumps(meta, indent=2) + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _run_config(info: CheckpointInfo) -> dict[str, Any] | None:
    """The checkpoint's ``run_config.json``, carried into its export (None when it has none)."""
    file = info.path / "run_config.json"
    return _read_json(file) if file.is_file() else None


def cli_main(argv: list[str]) -> int:
    """``emollm export CHECKPOINT OUT [--merge] [--overwrite]``: copy a checkpoint, optionally folding LoRA into the
    base.

    OUT must be a new path or an empty folder; ``--overwrite`` replaces an existing checkpoint folder, never a file,
    a folder that is not a checkpoint, or anything that is, contains or is inside CHECKPOINT. Exit codes: 0 done, 2
    refused or failed (one line on stderr naming the file and the fix; ``--debug`` shows the traceback).
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="emollm export", description="Export a checkpoint (LoRA merged on request).")
    parser.add_argument("checkpoint")
    parser.add_argument("out", help="a new folder (or an empty one)")
    parser.add_argument("--merge", action="store_true", help="fold the LoRA adapter into the base weights")
    parser.add_argument(
        "--vllm", action="store_true",
        help="export for vLLM prompt embeddings: OUT/llm (merged LLM), OUT/front (processor, encoders, projectors)",
    )  # fmt: skip
    parser.add_argument("--llm-path", help="base LLM folder/GGUF if the checkpoint cannot find it")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT when it is an existing checkpoint")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        if args.vllm:
            print(export_spliced(args.checkpoint, args.out, llm_path=args.llm_path, overwrite=args.overwrite))
            return 0
        check_export_target(args.out, _export_inputs(args.checkpoint, args.llm_path), overwrite=args.overwrite)
        if args.merge:
            out = export_merged(args.checkpoint, args.out, llm_path=args.llm_path, overwrite=args.overwrite)
        else:
            info = read_checkpoint(args.checkpoint)
            model, processor = load_model(args.checkpoint, llm_path=args.llm_path)
            out = save_checkpoint(
                model, processor, args.out, lora=info.lora, trainable=info.trainable, run_config=_run_config(info)
            )
    except (OSError, ValueError) as e:
        if args.debug:
            raise
        print(f"emollm export: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0
