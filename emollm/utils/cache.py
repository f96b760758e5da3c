"""Where emollm keeps what it converts or downloads from a user's own paths (``EMOLLM_CACHE``)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """Root of emollm's on-disk cache (converted weights)."""
    return Path(os.environ.get("EMOLLM_CACHE", Path.home() / ".cache" / "emollm"))
