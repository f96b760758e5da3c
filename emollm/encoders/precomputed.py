"""Cached features behind the encoder interface: the model code does not branch on cache vs live.

Emotion-LLaMA ships per-utterance ``.npy`` files (1024-d, shape ``(1024,)`` or ``(1, 1024)``) in
``mae_340_UTT/``, ``maeV_399_UTT/`` and ``HL-UTT/`` next to its annotation files; ``FeatureStore`` reads that layout
(and frame-level ``(T, D)`` arrays, and ``.safetensors`` files holding one tensor named ``features``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn


class PrecomputedEncoder(nn.Module):
    """Identity encoder over already-extracted features of width ``feature_dim``."""

    def __init__(self, feature_dim: int):
        super().__init__()
        self.output_dim = feature_dim

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if inputs.shape[-1] != self.output_dim:
            raise ValueError(f"precomputed features have width {inputs.shape[-1]}, expected {self.output_dim}")
        return inputs, lengths

    def num_tokens(self, input_length: int) -> int:
        return input_length


class FeatureStore:
    """Reads one modality's per-sample feature files from ``root/subdir/<name>.{npy,safetensors}``."""

    def __init__(self, root: str | Path, subdir: str | None, feature_dim: int):
        self.dir = Path(root) / subdir if subdir else Path(root)
        self.feature_dim = feature_dim
        if not self.dir.is_dir():
            raise FileNotFoundError(f"feature folder {self.dir} does not exist; check the feature root and sub-folder")

    def path(self, name: str) -> Path | None:
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise ValueError(f"sample name {name!r} is not a plain file stem; it must not contain path separators")
        for ext in (".npy", ".safetensors"):
            p = self.dir / f"{name}{ext}"
            if p.exists():
                return p
        return None

    def __contains__(self, name: str) -> bool:
        return self.path(name) is not None

    def load(self, name: str) -> Tensor:
        """Features of sample ``name`` as a float32 tensor (T, D); raises with the file name on any problem."""
        path = self.path(str(name))
        if path is None:
            raise FileNotFoundError(f"no features for sample {name!r} in {self.dir} (looked for .npy and .safetensors)")
        return load_feature_file(path, self.feature_dim)


def load_feature_file(path: str | Path, feature_dim: int | None = None) -> Tensor:
    """Load one feature file (``.npy`` without pickles, or ``.safetensors``) as float32 (T, D)."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            tensors = load_file(str(path))
            if "features" not in tensors:
                raise ValueError(f"expected a tensor named 'features', found {sorted(tensors)}")
            array = tensors["features"]
        else:
            raise ValueError("unsupported extension (use .npy or .safetensors)")
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"cannot read feature file {path}: {e}") from None
    if array.ndim == 1:
        array = array[None, :]  # (D,) -> (1, D): Emotion-LLaMA's utterance-level files
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"feature file {path} has shape {array.shape}; expected (D,) or (T, D) with T >= 1")
    if feature_dim is not None and array.shape[1] != feature_dim:
        raise ValueError(
            f"feature file {path} has width {array.shape[1]}, but the model expects {feature_dim}; "
            "was it extracted with another encoder?"
        )
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"feature file {path} holds {array.dtype}, not numbers")
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if not torch.isfinite(tensor).all():
        raise ValueError(f"feature file {path} contains NaN or infinite values")
    return tensor
