"""The released EVA ViT-g frame path, written out from the published code (LAVIS ``eva_vit.py`` as MiniGPT-v2 /
Emotion-LLaMA use it) with plain torch ops on a state dict: the independent reference the ``eva_vitg`` encoder and the
imported Emotion-LLaMA model are compared with. Nothing here calls timm or emollm."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def released_pixels(frame: np.ndarray, image_size: int = 448) -> torch.Tensor:
    """``Blip2ImageEvalProcessor``: PIL image -> Resize((S, S), BICUBIC) -> ToTensor -> Normalize; (1, 3, S, S)."""
    transform = transforms.Compose(
        [
            transforms.Resize((image_size, image_size), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )
    return transform(Image.fromarray(frame))[None]


def lavis_pos_embed(pos: torch.Tensor, new_grid: int) -> torch.Tensor:
    """LAVIS ``interpolate_pos_embed``: CLS position kept, the square grid resized bicubically (align_corners=False)."""
    extra, grid = pos[:, :1], pos[:, 1:]
    old = int(math.sqrt(grid.shape[1]))
    if old == new_grid:
        return pos
    grid = grid.reshape(-1, old, old, pos.shape[-1]).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    return torch.cat([extra, grid.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)


def lavis_block(x: torch.Tensor, sd: dict[str, torch.Tensor], i: int, heads: int) -> torch.Tensor:
    """One EVA block: pre-LN attention with q/v biases (k bias 0), pre-LN GELU MLP, no layer scale."""
    p = f"blocks.{i}."
    B, N, W = x.shape
    h = F.layer_norm(x, (W,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
    bias = torch.cat([sd[p + "attn.q_bias"], torch.zeros_like(sd[p + "attn.v_bias"]), sd[p + "attn.v_bias"]])
    q, k, v = F.linear(h, sd[p + "attn.qkv.weight"], bias).reshape(B, N, 3, heads, -1).permute(2, 0, 3, 1, 4)
    attn = ((q * (W // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(B, N, W)
    x = x + F.linear(out, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
    h = F.layer_norm(x, (W,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
    h = F.linear(F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])), sd[p + "mlp.fc2.weight"])
    return x + h + sd[p + "mlp.fc2.bias"]


def released_eva_tokens(
    sd: dict[str, torch.Tensor], frame: np.ndarray, *, heads: int, image_size: int = 448, num_blocks: int | None = None
) -> torch.Tensor:
    """First frame -> pixels -> patch embedding + CLS + resized positions -> blocks[:num_blocks] (default all but the
    last) -> ``ln_vision`` (LayerNorm weight 1, bias 0, eps 1e-5). Returns (1, 1 + P, W)."""
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    num_blocks = depth - 1 if num_blocks is None else num_blocks
    patch_w = sd["patch_embed.proj.weight"]
    pixels = released_pixels(frame, image_size)
    x = F.conv2d(pixels, patch_w, sd["patch_embed.proj.bias"], stride=patch_w.shape[-1])  # (1, W, g, g)
    x = x.flatten(2).transpose(1, 2)  # (1, P, W)
    x = torch.cat([sd["cls_token"].expand(1, -1, -1), x], dim=1)
    x = x + lavis_pos_embed(sd["pos_embed"], image_size // patch_w.shape[-1])
    for i in range(num_blocks):
        x = lavis_block(x, sd, i, heads)
    return F.layer_norm(x, (x.shape[-1],), eps=1e-5)
