"""Generate OpenFace-2-format ``FeatureExtraction`` CSVs with planted AU combinations (test helper).

The layout is OpenFace 2's ``-aus`` output: ``frame, face_id, timestamp, confidence, success, AU01_r ... AU45_r,
AU01_c ... AU45_c`` with ``", "`` separators (so every name after the first has a leading space), ``_r`` for 17 AUs
and ``_c`` for those plus AU28.

A :class:`Plant` puts a triangular intensity bump of height ``amp`` on some AUs, centred on a row; background
intensities are uniform noise below ``noise`` (< 0.8, so never "active"). Presence ``_c`` is 1 where the
intensity is >= 1.0, which is how the planted AUs at their peak become present.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

R_AUS = (
    "AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12",
    "AU14", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU45",
)  # fmt: skip
C_AUS = R_AUS[:-1] + ("AU28", "AU45")
META = ("frame", "face_id", "timestamp", "confidence", "success")
HEADER = (*META, *(f"{a}_r" for a in R_AUS), *(f"{a}_c" for a in C_AUS))


@dataclass(frozen=True)
class Plant:
    """A planted expression: ``aus`` (AU -> peak intensity) peaking at row ``peak``."""

    aus: dict[str, float]
    peak: int
    width: int = 5
    """Half-width: the bump is ``amp * (1 - |t - peak| / (width + 1))``, clipped at 0."""


def make_columns(
    n_frames: int = 60,
    plants: Iterable[Plant] = (),
    *,
    noise: float = 0.3,
    seed: int = 0,
    fps: float = 25.0,
) -> dict[str, np.ndarray]:
    """Column name (no leading space) -> values, in OpenFace header order."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames)
    cols: dict[str, np.ndarray] = {
        "frame": t + 1,
        "face_id": np.zeros(n_frames, dtype=int),
        "timestamp": t / fps,
        "confidence": np.full(n_frames, 0.98),
        "success": np.ones(n_frames, dtype=int),
    }
    # Round like the CSV (2 decimals) so in-memory values equal what the reader sees.
    level = {a: np.round(rng.uniform(0.0, noise, n_frames), 2) for a in (*R_AUS, "AU28")}
    for p in plants:
        for au, amp in p.aus.items():
            bump = amp * np.clip(1.0 - np.abs(t - p.peak) / (p.width + 1), 0.0, None)
            level[au] = np.maximum(level[au], np.round(bump, 2))
    for a in R_AUS:
        cols[f"{a}_r"] = level[a]
    for a in C_AUS:
        cols[f"{a}_c"] = (level[a] >= 1.0).astype(float)
    return cols


def _fmt(name: str, v: float) -> str:
    if name in ("frame", "face_id", "success"):
        return str(int(v))
    if name == "timestamp":
        return f"{v:.3f}"
    return f"{v:.2f}"


def write_columns(path: Path, cols: dict[str, np.ndarray], drop: Sequence[str] = ()) -> Path:
    """Write columns in OpenFace's text format (``", "`` separators), leaving out ``drop``."""
    names = [n for n in cols if n not in set(drop)]
    n = len(next(iter(cols.values())))
    lines = [", ".join(names)]
    for i in range(n):
        lines.append(", ".join(_fmt(c, cols[c][i]) for c in names))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_openface_csv(
    path: Path,
    n_frames: int = 60,
    plants: Iterable[Plant] = (),
    *,
    drop: Sequence[str] = (),
    success: dict[int, int] | None = None,
    confidence: dict[int, float] | None = None,
    noise: float = 0.3,
    seed: int = 0,
) -> Path:
    """Make and write a CSV; ``success`` / ``confidence`` override those columns at given rows."""
    cols = make_columns(n_frames, plants, noise=noise, seed=seed)
    for row, v in (success or {}).items():
        cols["success"][row] = v
    for row, v in (confidence or {}).items():
        cols["confidence"][row] = v
    return write_columns(path, cols, drop)
