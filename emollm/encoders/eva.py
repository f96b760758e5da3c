"""EVA ViT-g/14 on one frame: the global visual encoder of MiniGPT-v2 and Emotion-LLaMA (REFERENCE.md §1.1).

What the released code does (MiniGPT-v2 ``eva_vit.py`` from LAVIS, ``init_vision_encoder``, ``encode_img``), and
what this encoder reproduces:

1. The **first frame** of the clip (Emotion-LLaMA reads it with OpenCV), as a PIL image, ``Resize((448, 448),
   BICUBIC)``, ``ToTensor``, ``Normalize`` with the CLIP mean/std (``blip2_image_eval``). Done here with PIL too, so
   the pixels are those of the released pipeline.
2. EVA-CLIP ViT-g/14 (embed 1408, 16 heads, MLP 6144, patch 14) trained at 224 px. At 448 px the 16 x 16 grid of
   position embeddings is resized to 32 x 32 bicubically (``F.interpolate(..., mode="bicubic",
   align_corners=False)``, no antialiasing; the CLS position is kept): LAVIS's ``interpolate_pos_embed``, done here
   with timm's ``resample_abs_pos_embed(..., antialias=False)``, which computes the same thing.
3. Only the first 39 of the 40 blocks run (LAVIS builds ``depth=39`` and loads the 40-block weights non-strictly), and
   there is no final norm. ``num_blocks`` (default: all but the last) keeps that choice explicit.
4. ``ln_vision``: a LayerNorm(1408) (eps 1e-5) that is frozen at its initial weight 1, bias 0, i.e. non-affine.

Output: (B, 1 + (448 / 14)^2, 1408) = (B, 1025, 1408) tokens, CLS first, then the 32 x 32 patches row-major. The
``emotion_llama_frame`` projector turns them into 256 merged patch tokens + 1 CLS token.

Weights are read from a **local** path only (never downloaded), into timm's ``Eva`` class:

- a timm folder: ``config.json`` (``architecture`` ``eva_giant_patch14_clip_224``, optional ``model_args``) and
  ``model.safetensors`` (or ``pytorch_model.bin``), e.g. ``timm/eva_giant_patch14_clip_224.laion400m``, which is the
  EVA01-CLIP-g/14 (LAION-400M) that LAVIS's ``eva_vit_g.pth`` holds;
- a weights file (``.safetensors``, ``.pth``, ``.bin``) in timm's layout, LAVIS's ``eva_vit_g.pth`` layout (the same
  key names) or open_clip's ``EVA01-g-14`` layout (``visual.trunk.*``), built as ``eva_giant_patch14_clip_224``
  (``model_args`` overrides its dimensions); an open_clip folder (``open_clip_config.json``) resolves to its file.

Keys are normalised by timm's own ``checkpoint_filter_fn``; the blocks past ``num_blocks``, the final norm and the
CLIP head are dropped, and everything the kept encoder needs must be present (an error names the missing keys).
``.pth``/``.bin`` files are read with ``torch.load(weights_only=True)``.

Differences from the released code: the ViT runs in the dtype asked for (float32 by default; the release casts it to
fp16), and the frames come from emollm's decoder (decord / PyAV), not OpenCV, whose RGB conversion may differ by a
level here and there. Extract features with ``--frame-policy first`` so that the first frame is the clip's.

Shape legend: B batch, T frames (only the first is used), S image side, P patches, W width.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emollm.encoders._common import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, check_feature_dim, resolve_dtype

__all__ = ["EVA_ARCH", "EVA_IMAGE_SIZE", "EVAFrameEncoder", "build_eva_encoder", "load_eva", "preprocess_frames"]

EVA_ARCH = "eva_giant_patch14_clip_224"
"""timm architecture of EVA01-CLIP-g/14 (embed 1408, depth 40, 16 heads, patch 14, 224 px)."""
EVA_IMAGE_SIZE = 448
"""MiniGPT-v2 / Emotion-LLaMA input side."""
LN_EPS = 1e-5
"""``ln_vision`` is ``nn.LayerNorm(1408)``: torch's default eps."""
_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_DROPPED = re.compile(r"^(norm|fc_norm|head|attn_pool)\.")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_NO_PATH = (
    "encoder 'eva_vitg' needs local EVA ViT-g weights: pass encoder_path= (emollm import: --eva-path) a timm folder "
    "(config.json + model.safetensors of eva_giant_patch14_clip_224.laion400m) or a weights file (timm, LAVIS "
    "eva_vit_g.pth or open_clip EVA01-g-14); emollm never downloads weights"
)


def preprocess_frames(frames: Tensor, image_size: int = EVA_IMAGE_SIZE) -> Tensor:
    """MiniGPT-v2's ``blip2_image_eval`` on a batch of images: PIL bicubic resize to ``image_size`` squared,
    ``ToTensor``, CLIP mean/std.

    Args:
        frames: (N, H, W, 3) or (N, 3, H, W) RGB, uint8 or float in [0, 1] (rounded to uint8 first, as the
            released code sees 8-bit frames).

    Returns:
        (N, 3, image_size, image_size) float32.
    """
    from PIL import Image

    if frames.dim() != 4 or 3 not in (frames.shape[1], frames.shape[-1]):
        raise ValueError(f"expected images shaped (N, H, W, 3) or (N, 3, H, W), got {tuple(frames.shape)}")
    if frames.shape[-1] != 3:
        frames = frames.permute(0, 2, 3, 1)  # (N, 3, H, W) -> (N, H, W, 3)
    if frames.dtype != torch.uint8:
        frames = (frames.float().clamp(0, 1) * 255).round().to(torch.uint8)
    out = []
    for frame in frames.detach().cpu().numpy():
        image = Image.fromarray(np.ascontiguousarray(frame))  # (H, W, 3) uint8 -> RGB
        image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)  # torchvision Resize((S, S)), PIL
        out.append(torch.from_numpy(np.array(image)))
    x = torch.stack(out).permute(0, 3, 1, 2).contiguous().float().div(255)  # ToTensor: (N, S, S, 3) -> (N, 3, S, S)
    mean = torch.tensor(OPENAI_CLIP_MEAN)[:, None, None]
    std = torch.tensor(OPENAI_CLIP_STD)[:, None, None]
    return (x - mean) / std  # Normalize


class EVAFrameEncoder(nn.Module):
    """EVA ViT-g on the first frame of each row, then the non-affine ``ln_vision``.

    Args:
        model: A timm ``Eva`` already cut to the blocks to run, with no final norm or head, at ``image_size``.
        image_size: Input side (448).
        feature_dim: Expected output width (checked), or None.
    """

    def __init__(self, model: nn.Module, *, image_size: int = EVA_IMAGE_SIZE, feature_dim: int | None = None):
        super().__init__()
        self.model = model
        self.image_size = int(image_size)
        self.output_dim = int(model.embed_dim)
        check_feature_dim("eva_vitg", feature_dim, self.output_dim)
        self.num_patches = int(model.patch_embed.num_patches)

    def num_tokens(self, input_length: int) -> int:
        """1 CLS + all patches, whatever the number of frames (only the first is encoded)."""
        if input_length < 1:
            raise ValueError(f"a frame input needs at least one frame, got {input_length}")
        return 1 + self.num_patches

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, H, W, 3) or (B, T, 3, H, W) frames, (B,) frame counts -> (B, 1 + P, W), (B,).

        Also takes this encoder's own output cached on disk (``emollm features extract --encoders eva_vitg``, what
        ``emollm eval`` reads): (B, 1 + P, W) tokens pass through unchanged, so one checkpoint serves clips and
        feature folders.
        """
        if inputs.dim() == 3:
            if tuple(inputs.shape[1:]) != (1 + self.num_patches, self.output_dim):
                raise ValueError(
                    f"eva_vitg: cached features must be (B, {1 + self.num_patches}, {self.output_dim}) tokens of this "
                    f"encoder (emollm features extract --encoders eva_vitg), got {tuple(inputs.shape)}"
                )
            if not bool((lengths == inputs.shape[1]).all()):
                raise ValueError(f"eva_vitg: cached features are {inputs.shape[1]} tokens per row, lengths {lengths}")
            return inputs, lengths
        if inputs.dim() != 5:
            raise ValueError(
                f"expected frames shaped (B, T, H, W, 3) or (B, T, 3, H, W), or cached (B, 1 + P, W) tokens, got "
                f"{tuple(inputs.shape)}"
            )
        if lengths.shape != inputs.shape[:1] or bool((lengths < 1).any()):
            raise ValueError(f"lengths must give >= 1 frame for each of the {inputs.shape[0]} rows, got {lengths}")
        param = next(self.model.parameters())
        pixels = preprocess_frames(inputs[:, 0], self.image_size)  # first frame: (B, 3, S, S)
        x = self.model.forward_features(pixels.to(param.device, param.dtype))  # (B, 1 + P, W), CLS first
        x = F.layer_norm(x.float(), (self.output_dim,), eps=LN_EPS).to(x.dtype)  # ln_vision (weight 1, bias 0)
        return x, torch.full_like(lengths, x.shape[1])


def _read_weights(file: Path) -> dict[str, Tensor]:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:  # needs code to unpickle, or damaged
        raise ValueError(
            f"encoder 'eva_vitg': {file} cannot be read with torch.load(weights_only=True) ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); save its state dict as .safetensors"
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"encoder 'eva_vitg': {file} holds a {type(obj).__name__}, not a state dict")
    return obj


def _locate(path: str | os.PathLike | None) -> tuple[Path | None, Path]:
    """(timm folder or None, weights file)."""
    if path is None:
        raise FileNotFoundError(_NO_PATH)
    path = Path(path).expanduser()
    if path.is_file():
        return None, path
    if not path.is_dir():
        raise FileNotFoundError(f"encoder 'eva_vitg': encoder_path (--eva-path) {path} does not exist. {_NO_PATH}")
    weights = [path / n for n in _WEIGHT_NAMES if (path / n).is_file()]
    if not weights:
        raise FileNotFoundError(
            f"encoder 'eva_vitg': {path} holds none of {', '.join(_WEIGHT_NAMES)}; pass a timm EVA folder or the "
            "weights file itself"
        )
    return (path if (path / "config.json").is_file() else None), weights[0]


def load_eva(
    path: str | os.PathLike | None,
    *,
    num_blocks: int | None = None,
    image_size: int = EVA_IMAGE_SIZE,
    dtype: Any = None,
    model_args: dict[str, Any] | None = None,
) -> nn.Module:
    """A timm ``Eva`` from local weights, cut to ``num_blocks`` blocks without final norm or head, with its position
    embeddings resized for ``image_size``, frozen and in eval mode.

    Args:
        path: timm folder or weights file (see the module docstring).
        num_blocks: Blocks to keep (default: all but the last, 39 of EVA-g's 40).
        image_size: Input side; the position grid is resampled from the checkpoint's.
        dtype: ``float32`` (default), ``float16`` or ``bfloat16``.
        model_args: Overrides of the architecture's arguments when ``path`` is a bare weights file.

    Raises:
        FileNotFoundError: No weights at ``path``.
        ValueError: Not an EVA, bad options, or weights that lack or add keys (the message names them).
    """
    import timm
    from timm.layers import resample_abs_pos_embed
    from timm.models.eva import Eva, checkpoint_filter_fn

    folder, file = _locate(path)
    if folder is not None:
        if model_args:
            raise ValueError(f"encoder_options.model_args applies to a bare weights file; {folder} has config.json")
        try:
            model = timm.create_model(f"local-dir:{folder}", pretrained=False)
        except (RuntimeError, KeyError, TypeError) as e:
            raise ValueError(f"encoder 'eva_vitg': {folder}/config.json does not describe a timm model ({e})") from None
    else:
        model = timm.create_model(EVA_ARCH, pretrained=False, **(model_args or {}))
    if not isinstance(model, Eva) or model.cls_token is None or model.pos_embed is None or model.rope is not None:
        arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
        raise ValueError(
            f"encoder 'eva_vitg': {folder or file} describes a {type(model).__name__} ({arch}), not an EVA01 ViT "
            f"with a CLS token and absolute position embeddings such as {EVA_ARCH}"
        )
    depth = len(model.blocks)
    num_blocks = depth - 1 if num_blocks is None else num_blocks
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or not 1 <= num_blocks <= depth:
        raise ValueError(f"encoder_options.num_blocks must be an int in [1, {depth}], got {num_blocks!r}")
    patch = model.patch_embed.patch_size[0]
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < patch or image_size % patch:
        raise ValueError(f"encoder_options.image_size must be a positive multiple of the patch size {patch}")

    state = checkpoint_filter_fn(_read_weights(file), model)  # timm's key normalisation (prefixes, renames)
    model.prune_intermediate_layers([num_blocks - 1], prune_norm=True, prune_head=True)
    kept = {}
    for key, value in state.items():
        block = _BLOCK.match(key)
        if _DROPPED.match(key) or (block and int(block.group(1)) >= num_blocks):
            continue  # the blocks past num_blocks, the final norm and the CLIP head are not used
        kept[key] = value
    want = model.state_dict()
    missing = sorted(set(want) - set(kept))
    unexpected = sorted(set(kept) - set(want))
    if missing or unexpected:
        raise ValueError(
            f"encoder 'eva_vitg': {file} does not fit a {num_blocks}-block {type(model).__name__} "
            f"(width {model.embed_dim}): missing {missing[:6]}{' ...' if len(missing) > 6 else ''}, unexpected "
            f"{unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}; is it an EVA01-CLIP-g/14 checkpoint?"
        )
    bad = [f"{k} {tuple(kept[k].shape)} vs {tuple(v.shape)}" for k, v in want.items() if kept[k].shape != v.shape]
    if bad:
        raise ValueError(f"encoder 'eva_vitg': {file} has tensors of other shapes than the model: {bad[:4]}")
    model.load_state_dict(kept, strict=True)

    old_grid = tuple(model.patch_embed.grid_size)
    model.patch_embed.set_input_size(img_size=(image_size, image_size))
    new_grid = tuple(model.patch_embed.grid_size)
    if new_grid != old_grid:  # LAVIS interpolate_pos_embed: bicubic, align_corners=False, no antialias; CLS kept
        pos = resample_abs_pos_embed(
            model.pos_embed.detach().float(),
            new_size=list(new_grid),
            old_size=list(old_grid),
            num_prefix_tokens=0 if model.no_embed_class else model.num_prefix_tokens,
            interpolation="bicubic",
            antialias=False,
            align_corners=False,
        )
        model.pos_embed = nn.Parameter(pos)
    model = model.to(resolve_dtype(dtype)).eval()
    model.requires_grad_(False)  # frozen, as Emotion-LLaMA's freeze_vit; a trainable spec may unfreeze it
    return model


def build_eva_encoder(
    feature_dim: int | None = None,
    path: str | os.PathLike | None = None,
    *,
    num_blocks: int | None = None,
    image_size: int = EVA_IMAGE_SIZE,
    dtype: Any = None,
    model_args: dict[str, Any] | None = None,
    **unknown: Any,
) -> EVAFrameEncoder:
    """Registry builder for ``eva_vitg`` (options: ``num_blocks``, ``image_size``, ``dtype``, ``model_args``)."""
    if unknown:
        raise ValueError(
            f"encoder 'eva_vitg': unknown encoder_options {sorted(unknown)}; allowed: num_blocks, image_size, dtype, "
            "model_args"
        )
    model = load_eva(path, num_blocks=num_blocks, image_size=image_size, dtype=dtype, model_args=model_args)
    return EVAFrameEncoder(model, image_size=image_size, feature_dim=feature_dim)
