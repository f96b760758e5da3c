"""Helpers shared by the live encoders: argument checks, layer selection, pooling, frame batching, image transforms.

Shape legend:
    B  batch size          T  frames (or samples) per row, padded       N  valid frames in the batch
    P  tokens per frame    D  encoder width
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from emollm.utils.tensors import valid_mask

Pooling = Literal["frame", "utterance"]
POOLINGS: tuple[str, ...] = ("frame", "utterance")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)
_PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``"float32"`` / ``"bfloat16"`` / ``"float16"`` (or a torch dtype) -> torch dtype; None means float32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"encoder_options.dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def check_feature_dim(encoder: str, feature_dim: int | None, actual: int) -> None:
    """Raise when the configured ``feature_dim`` differs from the encoder's real output width."""
    if feature_dim is not None and int(feature_dim) != int(actual):
        raise ValueError(
            f"encoder {encoder!r} outputs {actual}-d features, but feature_dim={feature_dim} was configured; "
            f"set the modality's feature_dim to {actual}"
        )


def check_choice(option: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ValueError(f"encoder_options.{option} must be one of {list(allowed)}, got {value!r}")


def require_folder(encoder: str, path: str | os.PathLike | None, example: str) -> Path:
    """The local transformers folder of a weight-backed encoder; a clear error when it is missing."""
    if path is None:
        raise FileNotFoundError(
            f"encoder {encoder!r} needs local weights: pass encoder_path=/path/to/{example} (a transformers folder "
            "with config.json and the weights); emollm never downloads"
        )
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"encoder {encoder!r}: encoder_path={str(path)!r} is not a transformers model folder (no config.json)"
        )
    return folder


def read_model_type(folder: Path) -> str:
    return str(json.loads((folder / "config.json").read_text()).get("model_type", ""))


def check_model_type(encoder: str, folder: Path, allowed: Sequence[str]) -> str:
    """The folder's ``model_type``; raises when it is not one ``encoder`` can load."""
    model_type = read_model_type(folder)
    if model_type not in allowed:
        raise ValueError(
            f"encoder {encoder!r}: {folder} holds a {model_type!r} model; this encoder loads {', '.join(allowed)}"
        )
    return model_type


class LayerSelect:
    """Which hidden state(s) to return: ``layer`` (-1 = last) and the mean of ``layers_mean`` layers ending there.

    ``hidden_states`` follows transformers: index 0 is the embedding output, index i the output of block i.
    """

    def __init__(self, num_layers: int, layer: int = -1, layers_mean: int = 1):
        n = num_layers + 1
        if not -n <= layer < n:
            raise ValueError(
                f"encoder_options.layer={layer} is out of range for {num_layers} layers (use -{n}..{n - 1})"
            )
        end = layer % n
        if not 1 <= layers_mean <= end + 1:
            raise ValueError(
                f"encoder_options.layers_mean={layers_mean} must be between 1 and {end + 1} for layer={layer}"
            )
        self.indices = list(range(end - layers_mean + 1, end + 1))
        self.is_last = self.indices == [n - 1]

    def __call__(self, hidden_states: Sequence[Tensor]) -> Tensor:
        if len(self.indices) == 1:
            return hidden_states[self.indices[0]]
        return torch.stack([hidden_states[i] for i in self.indices]).mean(dim=0)  # k x (B, T, D) -> (B, T, D)


def pool_time(features: Tensor, lengths: Tensor, pooling: str) -> tuple[Tensor, Tensor]:
    """``frame``: zero the padding; ``utterance``: mean over valid time steps -> one token per row."""
    mask = valid_mask(lengths, features.shape[1]).unsqueeze(-1).to(features.dtype)  # (B, T, 1)
    if pooling == "frame":
        return features * mask, lengths
    pooled = (features * mask).sum(dim=1, keepdim=True) / lengths.clamp(min=1)[:, None, None].to(features.dtype)
    return pooled, torch.ones_like(lengths)  # (B, T, D) -> (B, 1, D)


def to_frames(inputs: Tensor) -> Tensor:
    """Frames (B, T, H, W, 3) or (B, T, 3, H, W), uint8 or float in [0, 1] -> float (B, T, 3, H, W) in [0, 1]."""
    if inputs.dim() != 5:
        raise ValueError(f"expected frames shaped (B, T, H, W, 3) or (B, T, 3, H, W), got {tuple(inputs.shape)}")
    if inputs.shape[-1] == 3:
        inputs = inputs.permute(0, 1, 4, 2, 3)  # (B, T, H, W, 3) -> (B, T, 3, H, W)
    elif inputs.shape[2] != 3:
        raise ValueError(f"frames need 3 colour channels first or last, got {tuple(inputs.shape)}")
    if inputs.dtype == torch.uint8:
        return inputs.float() / 255.0
    return inputs.float()


class ImageTransform:
    """Resize (+ optional centre crop) and normalise a float image batch, as a transformers image processor does.

    ``size`` is ``(height, width)`` for a direct resize, or ``shortest_edge`` resizes the short side first and then
    ``crop`` cuts the centre. ``resample`` is a torch interpolation mode; bilinear/bicubic use antialiasing (PIL-like).
    """

    def __init__(
        self,
        size: tuple[int, int] | None = None,
        *,
        shortest_edge: int | None = None,
        crop: tuple[int, int] | None = None,
        mean: Sequence[float] = HALF,
        std: Sequence[float] = HALF,
        resample: str = "bicubic",
    ):
        if (size is None) == (shortest_edge is None):
            raise ValueError("give exactly one of size or shortest_edge")
        self.size, self.shortest_edge, self.crop = size, shortest_edge, crop
        self.mean, self.std, self.resample = tuple(mean), tuple(std), resample

    @property
    def output_size(self) -> tuple[int, int]:
        if self.crop is not None:
            return self.crop
        if self.size is not None:
            return self.size
        raise ValueError("shortest_edge without crop gives a size that depends on the input")

    @classmethod
    def from_folder(
        cls,
        folder: Path,
        default_size: int,
        default_mean: Sequence[float],
        default_std: Sequence[float],
        default_resample: str = "bicubic",
    ) -> ImageTransform:
        """From ``preprocessor_config.json`` (or ``video_preprocessor_config.json``) if present, else the defaults."""
        for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
            if (folder / name).is_file():
                cfg = json.loads((folder / name).read_text())
                break
        else:
            return cls((default_size, default_size), mean=default_mean, std=default_std, resample=default_resample)
        resample = _PIL_RESAMPLE.get(cfg.get("resample"), default_resample)
        mean = cfg.get("image_mean", default_mean) if cfg.get("do_normalize", True) else (0.0, 0.0, 0.0)
        std = cfg.get("image_std", default_std) if cfg.get("do_normalize", True) else (1.0, 1.0, 1.0)
        size = cfg.get("size", default_size)
        crop = cfg.get("crop_size") if cfg.get("do_center_crop", False) else None
        crop_hw = None
        if crop is not None:
            crop_hw = (crop, crop) if isinstance(crop, int) else (crop["height"], crop["width"])
        if isinstance(size, dict) and "shortest_edge" in size:
            return cls(
                shortest_edge=size["shortest_edge"],
                crop=crop_hw or (size["shortest_edge"],) * 2,
                mean=mean,
                std=std,
                resample=resample,
            )
        if isinstance(size, int):
            if crop_hw is not None:  # old processors: an int size means the shortest edge
                return cls(shortest_edge=size, crop=crop_hw, mean=mean, std=std, resample=resample)
            size_hw = (size, size)
        else:
            size_hw = (size["height"], size["width"])
        return cls(size_hw, crop=crop_hw, mean=mean, std=std, resample=resample)

    def __call__(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) float in [0, 1] -> (N, 3, h, w) normalised."""
        if self.size is not None:
            target = self.size
        else:
            h, w = images.shape[-2:]
            scale = self.shortest_edge / min(h, w)
            target = (max(1, int(h * scale)), max(1, int(w * scale)))  # truncation, as transformers does
        if tuple(images.shape[-2:]) != tuple(target):
            antialias = self.resample in ("bilinear", "bicubic")
            images = F.interpolate(
                images,
                size=target,
                mode=self.resample,
                antialias=antialias,
                **({} if self.resample == "nearest" else {"align_corners": False}),
            )
        if self.crop is not None and tuple(images.shape[-2:]) != tuple(self.crop):
            h, w = images.shape[-2:]
            ch, cw = self.crop
            top, left = max(0, (h - ch) // 2), max(0, (w - cw) // 2)
            images = images[..., top : top + ch, left : left + cw]
        mean = images.new_tensor(self.mean)[:, None, None]
        std = images.new_tensor(self.std)[:, None, None]
        return (images - mean) / std


def encode_valid_frames(frames: Tensor, lengths: Tensor, fn, chunk: int) -> Tensor:
    """Run ``fn`` ((N, 3, H, W) -> (N, P, D)) on the valid frames only, ``chunk`` at a time; padding gets zeros.

    Returns (B, T, P, D).
    """
    B, T = frames.shape[:2]
    mask = valid_mask(lengths.to(frames.device), T)  # (B, T)
    flat = frames[mask]  # (B, T, 3, H, W) -> (N, 3, H, W)
    outs = [fn(flat[i : i + chunk]) for i in range(0, flat.shape[0], chunk)]
    feats = torch.cat(outs) if outs else None
    if feats is None:
        raise ValueError("no valid frames in the batch (all lengths are 0)")
    full = feats.new_zeros(B, T, *feats.shape[1:])  # (B, T, P, D)
    return full.masked_scatter(mask[:, :, None, None], feats)


def frames_num_tokens(input_length: int, per_frame: int, pooling: str) -> int:
    if input_length < 1:
        raise ValueError(f"an input needs at least one frame, got {input_length}")
    return per_frame if pooling == "utterance" else input_length * per_frame


def pool_frames(feats: Tensor, lengths: Tensor, pooling: str) -> tuple[Tensor, Tensor]:
    """(B, T, P, D) per-frame tokens -> ``frame``: (B, T*P, D); ``utterance``: mean over valid frames (B, P, D)."""
    B, T, P, D = feats.shape
    lengths = lengths.to(feats.device)
    if pooling == "utterance":
        mask = valid_mask(lengths, T)[:, :, None, None].to(feats.dtype)  # (B, T, 1, 1)
        pooled = (feats * mask).sum(dim=1) / lengths.clamp(min=1)[:, None, None].to(feats.dtype)  # (B, P, D)
        return pooled, torch.full_like(lengths, P)
    return feats.reshape(B, T * P, D), lengths * P  # (B, T, P, D) -> (B, T*P, D)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


__all__ = [
    "HALF",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageTransform",
    "LayerSelect",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "POOLINGS",
    "Pooling",
    "ceil_div",
    "check_choice",
    "check_feature_dim",
    "check_model_type",
    "encode_valid_frames",
    "frames_num_tokens",
    "pool_frames",
    "pool_time",
    "read_model_type",
    "require_folder",
    "resolve_dtype",
    "to_frames",
    "valid_mask",
]
