"""Small tensor helpers shared by the model, the projectors and the encoders."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["valid_mask"]


def valid_mask(lengths: Tensor, width: int) -> Tensor:
    """(B,) lengths -> (B, width) bool mask, True on valid positions.

    Example:
        >>> valid_mask(torch.tensor([1, 3]), 3).tolist()
        [[True, False, False], [True, True, True]]
    """
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]
