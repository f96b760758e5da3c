"""``emollm import {emotion-llama,minigpt-v2} CKPT.pth --llm-path LLAMA2_CHAT_DIR [--eva-path EVA_VIT_G] --out DIR``.

Reads a released MiniGPT-style checkpoint without unpickling code, maps its trained tensors onto an emollm model
(LoRA -> peft names, projectors -> modality branches), saves an emollm checkpoint and prints what was mapped,
kept, skipped and missing. Exit codes: 0 on success, 2 on a usage error or a file that does not fit.
"""

from __future__ import annotations

import argparse
import sys

from emollm.checkpoints.published.emotion_llama import LAYOUTS, SOURCES

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emollm import", description="Import a released checkpoint into emollm.")
    parser.add_argument("source", choices=SOURCES, help="which released model the file comes from")
    parser.add_argument("ckpt", help="the released .pth file (torch.save({'model': state_dict, ...}))")
    parser.add_argument("--llm-path", required=True, help="local Llama-2-7b-chat-hf folder (the base LLM)")
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
        from emollm.checkpoints.published.emotion_llama import import_checkpoint

        check_export_target(
            args.out, [args.ckpt, args.llm_path, *([args.eva_path] if args.eva_path else [])], overwrite=args.overwrite
        )
        report = import_checkpoint(
            args.ckpt, args.out, source=args.source, layout=args.layout, llm_path=args.llm_path, eva_path=args.eva_path
        )
    except (ValueError, OSError) as err:
        if args.debug:
            raise
        print(f"emollm import {args.source}: error: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"saved {args.out} (layout {args.layout}; report in {args.out}/published/import_report.json)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
