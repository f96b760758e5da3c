"""Copy a checkpoint, optionally with LoRA folded into the base (``export_merged``, ``emollm export``), refusing
targets whose replacement would destroy data."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from emollm.checkpoints.format import CheckpointInfo, _read_json, read_checkpoint, read_checkpoint_meta
from emollm.checkpoints.load import load_model
from emollm.checkpoints.save import save_checkpoint
from emollm.model.lora import merge_lora


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
    parser.add_argument("--llm-path", help="base LLM folder/GGUF if the checkpoint cannot find it")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT when it is an existing checkpoint")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
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
