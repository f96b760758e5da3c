"""Live frame encoders: CLIP / SigLIP vision towers per frame, and VideoMAE over 16-frame clips.

Inputs are frames ``(B, T, H, W, 3)`` (or ``(B, T, 3, H, W)``), uint8 or float in [0, 1], padded along T, with
``lengths`` in frames. Frames arrive already sampled (the media layer does Emotion-LLaMA's 8 segments x 2 frames or
AffectGPT's 8 uniform frames); each tower resizes and normalises them itself, following the folder's
``preprocessor_config.json``.

open_clip checkpoints load too (``open_clip``): a local file plus a built-in model name, or a folder with
``open_clip_config.json`` (open_clip's ``local-dir:`` layout). Only local files are accepted, so nothing downloads.

Shape legend: B batch, T frames, C clips, N valid frames (or clips), P tokens per frame (or clip), D width.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import Tensor, nn

from emollm.encoders._common import (
    HALF,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    POOLINGS,
    ImageTransform,
    LayerSelect,
    ceil_div,
    check_choice,
    check_feature_dim,
    check_model_type,
    encode_valid_frames,
    frames_num_tokens,
    pool_frames,
    require_folder,
    resolve_dtype,
    to_frames,
    valid_mask,
)

__all__ = [
    "CLIPFrameEncoder",
    "OpenCLIPFrameEncoder",
    "VideoMAEEncoder",
    "build_clip_encoder",
    "build_open_clip_encoder",
    "build_videomae_encoder",
]

_CLIP_TYPES = ("clip", "clip_vision_model")
_SIGLIP_TYPES = ("siglip", "siglip_vision_model")


class CLIPFrameEncoder(nn.Module):
    """A CLIP or SigLIP vision tower run on every valid frame.

    Args:
        model: ``CLIPVisionModel``, ``CLIPVisionModelWithProjection`` or ``SiglipVisionModel``.
        transform: Resize/crop/normalise settings.
        feature_dim: Expected output width (checked), or None.
        tokens: ``"pooled"`` (pooler output: CLIP's post-LN CLS, SigLIP's attention-pool head; 1 per frame),
            ``"projected"`` (CLIP only: the image embedding of ``get_image_features``, AffectGPT's 768-d feature for
            ViT-L/14) or ``"patch"`` (P patch tokens per frame, CLS dropped, as LLaVA's ``select_feature="patch"``).
        select_layer: Index into ``hidden_states`` for ``"patch"`` tokens (default -2, LLaVA's
            ``mm_vision_select_layer``; as in LLaVA, -1 is the last block's output before SigLIP's post-LayerNorm).
        pooling: ``"frame"`` or ``"utterance"`` (mean over frames).
        chunk: Frames per forward call.
        resize: ``"processor"`` (the folder's resize + centre crop) or ``"squash"``: resize straight to the
            processor's output size, aspect ratio not kept (AffectGPT: decord's 224 x 224 frames, cv2-resized faces;
            the CLIP processor's resize and crop are then no-ops).

    A 3-D input ``(B, T, D)`` is this encoder's own output cached on disk (``emollm features extract``) and passes
    through, so one checkpoint serves clips and feature folders.
    """

    def __init__(
        self,
        model: nn.Module,
        transform: ImageTransform,
        *,
        feature_dim: int | None = None,
        tokens: str = "pooled",
        select_layer: int | None = None,
        pooling: str = "frame",
        chunk: int = 64,
        resize: str = "processor",
    ):
        super().__init__()
        check_choice("tokens", tokens, ("pooled", "projected", "patch"))
        check_choice("pooling", pooling, POOLINGS)
        check_choice("resize", resize, ("processor", "squash"))
        if resize == "squash":
            size = transform.output_size
            transform = ImageTransform(size, mean=transform.mean, std=transform.std, resample=transform.resample)
        config = model.config
        self.is_siglip = config.model_type in _SIGLIP_TYPES
        if tokens == "projected" and not hasattr(model, "visual_projection"):
            raise ValueError("encoder_options.tokens='projected' needs a CLIP model (CLIPVisionModelWithProjection)")
        if tokens != "patch" and select_layer is not None:
            raise ValueError(f"encoder_options.select_layer applies to tokens='patch' only, not {tokens!r}")
        self.model = model
        self.transform = transform
        self.tokens = tokens
        self.pooling = pooling
        self.chunk = chunk
        self.select = LayerSelect(config.num_hidden_layers, -2 if select_layer is None else select_layer)
        self.output_dim = int(config.projection_dim if tokens == "projected" else config.hidden_size)
        check_feature_dim("clip", feature_dim, self.output_dim)
        self.num_patches = (config.image_size // config.patch_size) ** 2

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None, dtype: Any = None, **options) -> CLIPFrameEncoder:
        """Load a CLIP / SigLIP vision tower from a local folder (a full CLIP/SigLIP model or its vision part)."""
        from transformers import CLIPVisionModel, CLIPVisionModelWithProjection, SiglipVisionModel

        folder = require_folder("clip", path, "clip-vit-large-patch14")
        model_type = check_model_type("clip", folder, _CLIP_TYPES + _SIGLIP_TYPES)
        torch_dtype = resolve_dtype(dtype)
        if model_type in _SIGLIP_TYPES:
            model = SiglipVisionModel.from_pretrained(folder, dtype=torch_dtype)
            mean, std, resample = HALF, HALF, "bicubic"
        else:
            extra = {}
            if options.get("tokens") == "projected":
                model_cls = CLIPVisionModelWithProjection
                if model_type == "clip":  # a full CLIP folder keeps projection_dim at the top level
                    extra["projection_dim"] = json.loads((folder / "config.json").read_text())["projection_dim"]
            else:
                model_cls = CLIPVisionModel
            model = model_cls.from_pretrained(folder, dtype=torch_dtype, **extra)
            mean, std, resample = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, "bicubic"
        transform = ImageTransform.from_folder(folder, model.config.image_size, mean, std, resample)
        return cls(model.eval(), transform, **options)

    def num_tokens(self, input_length: int) -> int:
        return frames_num_tokens(input_length, self.num_patches if self.tokens == "patch" else 1, self.pooling)

    def encode_images(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, P, D)."""
        pixels = self.transform(images).to(next(self.model.parameters()).dtype)  # (N, 3, h, w)
        if self.tokens == "patch":
            out = self.model(pixel_values=pixels, output_hidden_states=True)
            hidden = self.select(out.hidden_states)  # (N, [1+]P, D)
            return hidden if self.is_siglip else hidden[:, 1:]  # CLIP: drop CLS
        out = self.model(pixel_values=pixels)
        if self.tokens == "projected":
            return out.image_embeds[:, None]  # (N, 1, D_proj)
        if out.pooler_output is None:
            raise ValueError("this SigLIP vision model has no pooling head (vision_use_head=False); use tokens='patch'")
        return out.pooler_output[:, None]  # (N, 1, D)

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, H, W, 3) frames, (B,) frame counts -> (B, T*P or P, D), (B,); cached (B, T, D) passes through."""
        if inputs.dim() == 3:
            if inputs.shape[-1] != self.output_dim:
                raise ValueError(
                    f"clip: cached features must be (B, T, {self.output_dim}) outputs of this encoder, got "
                    f"{tuple(inputs.shape)}"
                )
            return inputs.masked_fill(~valid_mask(lengths.to(inputs.device), inputs.shape[1])[..., None], 0.0), lengths
        frames = to_frames(inputs)
        feats = encode_valid_frames(frames, lengths, self.encode_images, self.chunk)  # (B, T, P, D)
        return pool_frames(feats, lengths, self.pooling)


def build_clip_encoder(feature_dim: int | None = None, path: str | os.PathLike | None = None, **options):
    """Registry builder for ``clip`` (CLIP or SigLIP vision tower from a local folder)."""
    return CLIPFrameEncoder.from_pretrained(path, feature_dim=feature_dim, **options)


class OpenCLIPFrameEncoder(nn.Module):
    """The image tower of an open_clip model, per frame: one projected image embedding per frame.

    Args:
        visual: ``model.visual`` of an open_clip model (its ``preprocess_cfg`` sets resize/crop/normalisation).
        feature_dim: Expected output width (checked), or None.
        pooling: ``"frame"`` or ``"utterance"`` (mean over frames).
        chunk: Frames per forward call.
    """

    def __init__(self, visual: nn.Module, *, feature_dim: int | None = None, pooling: str = "frame", chunk: int = 64):
        super().__init__()
        check_choice("pooling", pooling, POOLINGS)
        cfg = dict(getattr(visual, "preprocess_cfg", {}) or {})
        size = cfg.get("size", 224)
        size = size if isinstance(size, int) else int(size[0]) if size[0] == size[1] else tuple(size)
        mode = cfg.get("resize_mode", "shortest")
        kwargs = {"mean": cfg.get("mean", OPENAI_CLIP_MEAN), "std": cfg.get("std", OPENAI_CLIP_STD)}
        kwargs["resample"] = cfg.get("interpolation", "bicubic")
        if mode == "shortest" and isinstance(size, int):
            self.transform = ImageTransform(shortest_edge=size, crop=(size, size), **kwargs)
        elif mode == "squash" or not isinstance(size, int):
            self.transform = ImageTransform((size, size) if isinstance(size, int) else size, **kwargs)
        else:
            raise ValueError(f"open_clip resize_mode {mode!r} is not supported (use 'shortest' or 'squash')")
        self.visual = visual
        self.pooling = pooling
        self.chunk = chunk
        dim = getattr(visual, "output_dim", None)
        if dim is None:
            with torch.no_grad():
                h, w = self.transform.output_size
                dim = visual(torch.zeros(1, 3, h, w, device=next(visual.parameters()).device)).shape[-1]
        self.output_dim = int(dim)
        check_feature_dim("open_clip", feature_dim, self.output_dim)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike | None, model_name: str | None = None, dtype: Any = None, **options
    ) -> OpenCLIPFrameEncoder:
        """Load from a local checkpoint file + ``model_name`` (e.g. ``"ViT-L-14"``) or an open_clip folder."""
        from pathlib import Path

        if path is None:
            raise FileNotFoundError(
                "encoder 'open_clip' needs local weights: pass encoder_path=/path/to/open_clip_pytorch_model.bin with "
                "encoder_options.model_name (e.g. 'ViT-L-14'), or a folder with open_clip_config.json; emollm never "
                "downloads"
            )
        import open_clip

        path = Path(path).expanduser()
        common = {"pretrained_image": False, "pretrained_text": False, "require_pretrained": True}
        if path.is_dir():
            if not (path / "open_clip_config.json").is_file():
                raise FileNotFoundError(f"encoder 'open_clip': {path} has no open_clip_config.json")
            model = open_clip.create_model(f"local-dir:{path}", **common)
        elif path.is_file():
            if not model_name:
                raise ValueError("encoder 'open_clip' with a checkpoint file needs encoder_options.model_name")
            model = open_clip.create_model(model_name, pretrained=str(path), **common)
        else:
            raise FileNotFoundError(f"encoder 'open_clip': {path} does not exist")
        visual = model.visual.to(resolve_dtype(dtype)).eval()
        return cls(visual, **options)

    def num_tokens(self, input_length: int) -> int:
        return frames_num_tokens(input_length, 1, self.pooling)

    def encode_images(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 1, D)."""
        pixels = self.transform(images).to(next(self.visual.parameters()).dtype)
        return self.visual(pixels)[:, None]

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, H, W, 3) frames, (B,) frame counts -> (B, T or 1, D), (B,)."""
        feats = encode_valid_frames(to_frames(inputs), lengths, self.encode_images, self.chunk)  # (B, T, 1, D)
        return pool_frames(feats, lengths, self.pooling)


def build_open_clip_encoder(feature_dim: int | None = None, path: str | os.PathLike | None = None, **options):
    """Registry builder for ``open_clip`` (local checkpoint file + ``model_name``, or an open_clip folder)."""
    return OpenCLIPFrameEncoder.from_pretrained(path, feature_dim=feature_dim, **options)


class VideoMAEEncoder(nn.Module):
    """VideoMAE over consecutive clips of ``config.num_frames`` frames (16 for the released models).

    A row of T valid frames makes ``ceil(T / num_frames)`` clips; a short last clip repeats its last frame. Each clip
    gives one token (``tokens="mean"``: mean of all its tokens, VideoMAE's mean-pooling readout; Emotion-LLaMA's
    maeV feature is one such vector for 16 frames) or all its tube tokens (``tokens="patch"``,
    ``num_frames / tubelet_size * (image_size / patch_size) ** 2`` per clip).

    Args:
        model: ``VideoMAEModel``.
        transform: Resize/crop/normalise settings.
        feature_dim: Expected output width (checked), or None.
        tokens: ``"mean"`` or ``"patch"``.
        layer / layers_mean: Hidden state(s) to read.
        pooling: ``"clip"`` (tokens of every clip) or ``"utterance"`` (mean over clips).
        chunk: Clips per forward call.
    """

    def __init__(
        self,
        model: nn.Module,
        transform: ImageTransform,
        *,
        feature_dim: int | None = None,
        tokens: str = "mean",
        layer: int = -1,
        layers_mean: int = 1,
        pooling: str = "clip",
        chunk: int = 8,
    ):
        super().__init__()
        check_choice("tokens", tokens, ("mean", "patch"))
        check_choice("pooling", pooling, ("clip", "utterance"))
        config = model.config
        self.model = model
        self.transform = transform
        self.tokens = tokens
        self.pooling = pooling
        self.chunk = chunk
        self.clip_frames = int(config.num_frames)
        self.select = LayerSelect(config.num_hidden_layers, layer, layers_mean)
        self.output_dim = int(config.hidden_size)
        check_feature_dim("videomae", feature_dim, self.output_dim)
        grid = config.image_size // config.patch_size
        self.patches_per_clip = (config.num_frames // config.tubelet_size) * grid * grid

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None, dtype: Any = None, **options) -> VideoMAEEncoder:
        from transformers import VideoMAEModel

        folder = require_folder("videomae", path, "videomae-large")
        check_model_type("videomae", folder, ("videomae",))
        model = VideoMAEModel.from_pretrained(folder, dtype=resolve_dtype(dtype))
        transform = ImageTransform.from_folder(folder, model.config.image_size, IMAGENET_MEAN, IMAGENET_STD, "bilinear")
        return cls(model.eval(), transform, **options)

    def num_clips(self, input_length: int) -> int:
        if input_length < 1:
            raise ValueError(f"a video input needs at least one frame, got {input_length}")
        return ceil_div(input_length, self.clip_frames)

    def num_tokens(self, input_length: int) -> int:
        per_clip = self.patches_per_clip if self.tokens == "patch" else 1
        return per_clip if self.pooling == "utterance" else self.num_clips(input_length) * per_clip

    def _encode_clips(self, clips: Tensor) -> Tensor:
        """(N, F, 3, H, W) in [0, 1] -> (N, P, D)."""
        n, f = clips.shape[:2]
        pixels = self.transform(clips.flatten(0, 1)).unflatten(0, (n, f))  # (N, F, 3, h, w)
        pixels = pixels.to(next(self.model.parameters()).dtype)
        out = self.model(pixel_values=pixels, output_hidden_states=not self.select.is_last)
        hidden = out.last_hidden_state if self.select.is_last else self.select(out.hidden_states)  # (N, P, D)
        return hidden.mean(dim=1, keepdim=True) if self.tokens == "mean" else hidden

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, H, W, 3) frames, (B,) frame counts -> (B, C*P or P, D), (B,)."""
        frames = to_frames(inputs)  # (B, T, 3, H, W)
        B, T = frames.shape[:2]
        lengths = lengths.to(frames.device)
        clips_per_row = torch.tensor([self.num_clips(int(n)) for n in lengths.tolist()], device=frames.device)
        C = int(clips_per_row.max())
        # frame index of every clip slot: repeat the last valid frame to fill a short clip
        idx = torch.arange(C * self.clip_frames, device=frames.device)[None, :]  # (1, C*F)
        idx = torch.minimum(idx, (lengths - 1)[:, None])  # (B, C*F)
        gathered = frames[torch.arange(B, device=frames.device)[:, None], idx]  # (B, C*F, 3, H, W)
        clips = gathered.unflatten(1, (C, self.clip_frames))  # (B, C, F, 3, H, W)
        clip_mask = valid_mask(clips_per_row, C)  # (B, C)
        flat = clips[clip_mask]  # (N, F, 3, H, W)
        feats = torch.cat([self._encode_clips(flat[i : i + self.chunk]) for i in range(0, flat.shape[0], self.chunk)])
        full = feats.new_zeros(B, C, *feats.shape[1:])  # (B, C, P, D)
        full = full.masked_scatter(clip_mask[:, :, None, None], feats)
        return pool_frames(full, clips_per_row, "utterance" if self.pooling == "utterance" else "frame")


def build_videomae_encoder(feature_dim: int | None = None, path: str | os.PathLike | None = None, **options):
    """Registry builder for ``videomae`` (needs a local VideoMAE folder)."""
    return VideoMAEEncoder.from_pretrained(path, feature_dim=feature_dim, **options)
