"""The interface every modality encoder implements, live or precomputed."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class ModalityEncoder(Protocol):
    """Maps a padded batch of one modality's inputs to features.

    ``forward(inputs, lengths) -> (features (B, T', D), lengths' (B,))``; ``num_tokens(input_length)`` gives T' for
    one sample without running it (the processor needs it to expand placeholders); ``output_dim`` is D.
    """

    output_dim: int

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]: ...

    def num_tokens(self, input_length: int) -> int: ...
