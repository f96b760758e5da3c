"""``emollm import {emotion-llama,minigpt-v2} CKPT.pth --llm-path LLAMA2_CHAT_DIR [--eva-path EVA_VIT_G] --out DIR``
and ``emollm import affectgpt CKPT.pth [CKPT2.pth ...] --llm-path QWEN25_DIR --encoder-path clip=DIR
--encoder-path hubert=DIR --out DIR``.

Reads a released checkpoint without unpickling code, maps its trained tensors onto an emollm model (LoRA -> peft
names, projectors / fusion -> modality branches), saves an emollm checkpoint and prints what was mapped, kept,
skipped and missing. Exit codes: 0 on success, 2 on a usage error or a file that does not fit.
"""

from __future__ import annotations

import argparse
import sys

from emollm.checkpoints.published.emotion_llama import LAYOUTS, SOURCES

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emollm import", description="Import a released checkpoint into emollm.")
    parser.add_argument("source", choices=(*SOURCES, "affectgpt"), help="which released model the file comes from")
    parser.add_argument(
        "ckpt",
        nargs="+",
        help="the released .pth file (torch.save({'model': state_dict, ...})); affectgpt: up to three, applied in "
        "order with later files winning (the release's ckpt, ckpt_2, ckpt_3)",
    )
    parser.add_argument(
        "--llm-path",
        required=True,
        help="local base LLM folder: Llama-2-7b-chat-hf (emotion-llama, minigpt-v2), Qwen2.5-7B-Instruct (affectgpt)",
    )
    parser.add_argument(
        "--encoder-path",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="affectgpt: local encoder folders, clip=CLIP ViT-L/14 (openai/clip-vit-large-patch14) and "
        "hubert=chinese-hubert-large; never downloaded. Without them the branches read cached features",
    )
    parser.add_argument(
        "--variant",
        choices=("face", "frame"),
        help="affectgpt: face crops or raw frames (default: what the file's config records, else face)",
    )
    parser.add_argument(
        "--eva-path",
        help="local EVA ViT-g/14 weights for the frame branch (256 patch tokens + CLS; the published 260-token model): "
        "a timm eva_giant_patch14_clip_224 folder (config.json + model.safetensors) or an EVA01-g-14 weights file "
        "(timm, LAVIS eva_vit_g.pth, open_clip); never downloaded. Without it: the 3 feature tokens only",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="published",
        help="published: all modality tokens at <VideoHere> as the released inference does (default); "
        "trained: feature tokens at <FeatureHere> as training did",
    )
    parser.add_argument("--out", required=True, help="the emollm checkpoint folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing emollm checkpoint at --out")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``emollm import`` with ``argv`` (the arguments after ``import``); return the exit code."""
    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        from emollm.checkpoints import check_export_target

        if args.source == "affectgpt":
            return _affectgpt(args)
        from emollm.checkpoints.published.emotion_llama import import_checkpoint

        if len(args.ckpt) != 1:
            raise ValueError(f"{args.source} takes one checkpoint file, got {len(args.ckpt)}")
        if args.encoder_path or args.variant:
            raise ValueError("--encoder-path and --variant are affectgpt options")
        ckpt = args.ckpt[0]
        check_export_target(
            args.out, [ckpt, args.llm_path, *([args.eva_path] if args.eva_path else [])], overwrite=args.overwrite
        )
        report = import_checkpoint(
            ckpt, args.out, source=args.source, layout=args.layout, llm_path=args.llm_path, eva_path=args.eva_path
        )
    except (ValueError, OSError) as err:
        if args.debug:
            raise
        print(f"emollm import {args.source}: error: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"saved {args.out} (layout {args.layout}; report in {args.out}/published/import_report.json)")
    return 0


def _affectgpt(args: argparse.Namespace) -> int:
    """``emollm import affectgpt``: errors propagate to :func:`main`'s handler."""
    from emollm.checkpoints import check_export_target
    from emollm.checkpoints.published.affectgpt import import_affectgpt

    if args.eva_path:
        raise ValueError("--eva-path is an emotion-llama option; affectgpt takes --encoder-path clip=DIR")
    paths: dict[str, str] = {}
    for item in args.encoder_path:
        name, sep, folder = item.partition("=")
        if not sep or name not in ("clip", "hubert") or not folder:
            raise ValueError(f"--encoder-path {item!r}: expected clip=DIR or hubert=DIR")
        if name in paths:
            raise ValueError(f"--encoder-path {name} is given twice")
        paths[name] = folder
    check_export_target(args.out, [*args.ckpt, args.llm_path, *paths.values()], overwrite=args.overwrite)
    report = import_affectgpt(
        args.ckpt,
        args.out,
        variant=args.variant,
        llm_path=args.llm_path,
        clip_path=paths.get("clip"),
        hubert_path=paths.get("hubert"),
    )
    print(report.summary())
    missing = [n for n in ("clip", "hubert") if n not in paths]
    if missing:
        print(
            f"WARNING: no --encoder-path for {', '.join(missing)}: those branches read cached features "
            "(emollm features extract with the same encoder settings); analyze cannot run them on a raw clip"
        )
    print(f"saved {args.out} (variant {report.settings['variant']}; report in {args.out}/published/import_report.json)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
