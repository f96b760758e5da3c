"""Facial action units from OpenFace 2: read ``FeatureExtraction`` CSVs and run the binary.

OpenFace 2 writes one row per frame. With ``-aus`` the header is::

    frame, face_id, timestamp, confidence, success, AU01_r, ..., AU45_r, AU01_c, ..., AU45_c

Every name after the first carries a leading space (the writer joins with ``", "``). Intensities ``AUxx_r`` (0-5)
exist for AU01 02 04 05 06 07 09 10 12 14 15 17 20 23 25 26 45; presences ``AUxx_c`` (0/1) for the same AUs plus
AU28, which has no intensity column.

Frames where the tracker failed (``success == 0``) or is unsure (``confidence < min_confidence``) stay in the
sequence, so row positions keep matching the CSV and the video, but they are marked invalid and never chosen as a
peak.

Non-finite values: OpenFace writes finite numbers only (a failed frame gets zeros and ``success == 0``). A NaN AU
value, confidence or success (written by other AU tools for a frame they could not measure) marks that frame
invalid, and a NaN timestamp reads as unknown. An infinite value anywhere, and a frame number that is not a whole
number >= 0 (NaN included), cannot come from a tracker: the file is damaged, and reading it raises ``ValueError``
naming ``file:line`` and the column.
"""

from __future__ import annotations

import csv
import math
import numbers
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "OPENFACE_C_AUS",
    "OPENFACE_R_AUS",
    "AUSequence",
    "NoFaceError",
    "OpenFaceRunner",
    "au_code",
    "check_min_confidence",
    "read_openface_csv",
]

#: AUs with an intensity column (``AUxx_r``) in OpenFace 2, in its column order.
OPENFACE_R_AUS: tuple[str, ...] = (
    "AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12",
    "AU14", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU45",
)  # fmt: skip
#: AUs with a presence column (``AUxx_c``) in OpenFace 2, in its column order (adds AU28, lip suck).
OPENFACE_C_AUS: tuple[str, ...] = OPENFACE_R_AUS[:-1] + ("AU28", "AU45")

_AU_COL = re.compile(r"^AU(\d{1,2})_([rc])$")
_AU_CODE = re.compile(r"^AU(\d{1,2})(?:_[rc])?$", re.IGNORECASE)


class NoFaceError(ValueError):
    """Every frame of an OpenFace CSV failed (``success == 0`` or low confidence): the clip has no usable face."""


def au_code(name: str) -> str:
    """Normalise an AU name to ``AUxx``: ``"AU1"``, ``"au01"``, ``"AU01_r"`` and ``" AU01_c"`` all give ``"AU01"``.

    Raises:
        ValueError: ``name`` is not an AU name.
    """
    m = _AU_CODE.match(name.strip())
    if not m:
        raise ValueError(f"not an action unit name: {name!r} (expected e.g. 'AU06', 'AU06_r' or 'AU06_c')")
    return f"AU{int(m.group(1)):02d}"


def _au_sort_key(code: str) -> int:
    return int(code[2:])


@dataclass(frozen=True, eq=False)
class AUSequence:
    """Per-frame action units of one clip (one face), in CSV row order.

    Arrays are indexed by row position ``0..n_frames-1``; ``frames`` holds OpenFace's own frame numbers (1-based).
    """

    frames: np.ndarray
    """(T,) int: OpenFace ``frame`` column (1-based); ``1..T`` when the column is missing."""
    timestamps: np.ndarray
    """(T,) float seconds; NaN when the CSV has no ``timestamp`` column."""
    confidence: np.ndarray
    """(T,) float tracker confidence; 1.0 when the column is missing."""
    success: np.ndarray
    """(T,) bool tracker success; True when the column is missing."""
    intensity: dict[str, np.ndarray]
    """``"AU01" -> (T,) float`` from the ``AU01_r`` columns, in AU order."""
    presence: dict[str, np.ndarray]
    """``"AU28" -> (T,) float`` (0/1) from the ``AU28_c`` columns, in AU order."""
    valid: np.ndarray
    """(T,) bool: usable frame (success, confidence >= min_confidence, no NaN AU values)."""
    source: Path | None = None
    """CSV the sequence was read from (None when built in memory)."""
    min_confidence: float = 0.8
    """Confidence threshold that produced ``valid``."""
    face_id: int | None = field(default=None)
    """OpenFace ``face_id`` of the rows (None when the column is missing)."""

    def __post_init__(self) -> None:
        n = len(self.frames)
        arrays = {"timestamps": self.timestamps, "confidence": self.confidence, "success": self.success}
        arrays["valid"] = self.valid
        arrays |= {f"intensity[{k}]": v for k, v in self.intensity.items()}
        arrays |= {f"presence[{k}]": v for k, v in self.presence.items()}
        for name, arr in arrays.items():
            if arr.shape != (n,):
                raise ValueError(f"AUSequence.{name} has shape {arr.shape}, expected ({n},) like frames")

    @property
    def n_frames(self) -> int:
        """Number of rows (valid or not)."""
        return len(self.frames)

    @property
    def n_valid(self) -> int:
        """Number of usable rows."""
        return int(self.valid.sum())

    @property
    def name(self) -> str:
        """Clip name: the CSV stem (OpenFace names the CSV after the video), or ``""``."""
        return self.source.stem if self.source is not None else ""

    @property
    def aus(self) -> list[str]:
        """Every AU with an intensity or a presence column, in AU order."""
        return sorted(set(self.intensity) | set(self.presence), key=_au_sort_key)

    def describe_source(self) -> str:
        """The file name for messages (``"<memory>"`` when not read from a file)."""
        return str(self.source) if self.source is not None else "<memory>"

    def active_aus(self, index: int, threshold: float = 0.8) -> list[str]:
        """AUs active at row ``index``, in AU order.

        Active means ``AUxx_r > threshold``. AUs with a presence column but no intensity column (AU28 in
        OpenFace 2) count as active when ``AUxx_c == 1``.
        """
        out = [au for au, r in self.intensity.items() if r[index] > threshold]
        out += [au for au, c in self.presence.items() if au not in self.intensity and c[index] >= 0.5]
        return sorted(out, key=_au_sort_key)


def check_min_confidence(value: float, name: str = "min_confidence") -> float:
    """Return ``value`` when it is a usable confidence threshold (a finite number in [0, 1], OpenFace's confidence
    range); else raise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:  # NaN fails
        raise ValueError(
            f"{name} must be a number between 0 and 1 (OpenFace's tracker confidence), got {value!r}; e.g. 0.8"
        )
    return float(value)


def _fmt_loc(path: Path, line: int | None = None) -> str:
    return f"{path}:{line}" if line is not None else str(path)


def read_openface_csv(
    path: str | os.PathLike[str], min_confidence: float = 0.8, *, face_id: int | None = None
) -> AUSequence:
    """Read an OpenFace 2 ``FeatureExtraction`` CSV.

    Header names are stripped (OpenFace writes ``" AU01_r"``). Missing ``success``/``confidence`` columns count as
    success/1.0, so CSVs from other AU tools in the same column naming also load. A row is valid when
    ``success == 1``, ``confidence >= min_confidence`` and none of its AU values is NaN.

    Args:
        path: the CSV file.
        min_confidence: rows below this tracker confidence are marked invalid.
        face_id: keep only rows of this ``face_id`` (needed for multi-face CSVs, e.g. from
            ``FaceLandmarkVidMulti``); None accepts a CSV with a single face id.

    Returns:
        The sequence, including invalid rows.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: empty file, no frames, no ``AUxx_r``/``AUxx_c`` columns, a short row, a non-numeric or
            infinite value, a frame number that is not a whole number >= 0 (message names ``file:line`` and the
            column), several faces without ``face_id``, or ``min_confidence`` outside [0, 1].
        NoFaceError: (a ``ValueError``) every frame failed or is below ``min_confidence``.
    """
    path = Path(path)
    check_min_confidence(min_confidence)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such OpenFace CSV (run OpenFace FeatureExtraction -aus on the video first)"
        )
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as e:
        msg = f"{path}: not a UTF-8 text CSV ({e.reason} at byte {e.start}); is this an OpenFace CSV?"
        raise ValueError(msg) from None
    except csv.Error as e:
        raise ValueError(f"{path}: unreadable CSV ({e}); regenerate it with OpenFace") from None
    # Drop fully blank lines but remember their 1-based line numbers for messages.
    numbered = [(i + 1, r) for i, r in enumerate(rows) if any(c.strip() for c in r)]
    if not numbered:
        raise ValueError(f"{path}: empty file; expected an OpenFace FeatureExtraction CSV (re-run OpenFace with -aus)")
    header_line, header = numbered[0]
    names = [h.strip() for h in header]
    body = numbered[1:]
    col = {n: i for i, n in enumerate(names)}
    r_cols = {au_code(n): col[n] for n in names if (m := _AU_COL.match(n)) and m.group(2) == "r"}
    c_cols = {au_code(n): col[n] for n in names if (m := _AU_COL.match(n)) and m.group(2) == "c"}
    if not r_cols and not c_cols:
        raise ValueError(
            f"{_fmt_loc(path, header_line)}: no action-unit columns (AUxx_r / AUxx_c) in header {names[:8]}...; "
            "run OpenFace FeatureExtraction with -aus"
        )
    if not body:
        raise ValueError(f"{path}: header but no frames; OpenFace found no frames in the video (check the video)")

    wanted = ["frame", "face_id", "timestamp", "confidence", "success"]
    numeric_cols = [(n, col[n]) for n in wanted if n in col]
    numeric_cols += [(f"{au}_r", i) for au, i in r_cols.items()] + [(f"{au}_c", i) for au, i in c_cols.items()]
    values = np.empty((len(body), len(numeric_cols)), dtype=np.float64)
    for r, (line, row) in enumerate(body):
        if len(row) < len(names):
            raise ValueError(
                f"{_fmt_loc(path, line)}: row has {len(row)} fields, header has {len(names)}; "
                "the file is truncated or not an OpenFace CSV (re-run OpenFace)"
            )
        for c, (name, i) in enumerate(numeric_cols):
            cell = row[i].strip()
            try:
                value = float(cell)
            except ValueError:
                raise ValueError(
                    f"{_fmt_loc(path, line)}: column {name!r} has non-numeric value {cell!r}; "
                    "OpenFace writes numbers only (fix or regenerate the CSV)"
                ) from None
            if math.isinf(value):
                raise ValueError(
                    f"{_fmt_loc(path, line)}: column {name!r} has infinite value {cell!r}; "
                    "OpenFace writes finite numbers only (fix or regenerate the CSV)"
                )
            if name == "frame" and not (value >= 0 and value == int(value)):  # NaN fails both
                raise ValueError(
                    f"{_fmt_loc(path, line)}: column 'frame' has {cell!r}, not a frame number (a whole number "
                    ">= 0); the file is damaged (fix or regenerate the CSV)"
                )
            values[r, c] = value
    data = {name: values[:, c] for c, (name, _) in enumerate(numeric_cols)}

    # Face selection.
    face: int | None = None
    keep = np.ones(len(body), dtype=bool)
    if "face_id" in data:
        ids = sorted({int(x) for x in data["face_id"] if not math.isnan(x)})
        if face_id is not None:
            if face_id not in ids:
                raise ValueError(f"{path}: no rows with face_id {face_id} (face ids in file: {ids})")
            keep = data["face_id"] == face_id
            face = face_id
        elif len(ids) > 1:
            raise ValueError(
                f"{path}: {len(ids)} faces (face_id {ids}); pass face_id=... to choose one "
                "(or run the single-face FeatureExtraction binary)"
            )
        elif ids:
            face = ids[0]
    elif face_id is not None:
        raise ValueError(f"{path}: no face_id column, cannot select face_id {face_id}")
    data = {k: v[keep] for k, v in data.items()}
    n = int(keep.sum())

    frames = data["frame"].astype(np.int64) if "frame" in data else np.arange(1, n + 1, dtype=np.int64)
    timestamps = data.get("timestamp", np.full(n, np.nan))
    confidence = data.get("confidence", np.ones(n))
    success = data["success"] >= 0.5 if "success" in data else np.ones(n, dtype=bool)
    intensity = {au: data[f"{au}_r"] for au in sorted(r_cols, key=_au_sort_key)}
    presence = {au: data[f"{au}_c"] for au in sorted(c_cols, key=_au_sort_key)}
    au_nan = np.zeros(n, dtype=bool)
    for arr in (*intensity.values(), *presence.values()):
        au_nan |= np.isnan(arr)
    valid = success & (np.nan_to_num(confidence, nan=0.0) >= min_confidence) & ~au_nan
    if not valid.any():
        raise NoFaceError(
            f"{path}: no face detected: all {n} frames failed (success == 0 or confidence < {min_confidence}); "
            "treat the clip as 'no face' (or lower min_confidence if the frames are only low-confidence)"
        )
    return AUSequence(
        frames=frames,
        timestamps=timestamps,
        confidence=confidence,
        success=success,
        intensity=intensity,
        presence=presence,
        valid=valid,
        source=path,
        min_confidence=min_confidence,
        face_id=face,
    )


_INSTALL_HINT = (
    "install OpenFace 2 (https://github.com/TadasBaltrusaitis/OpenFace/wiki#installation) and put its build/bin "
    "directory on PATH, or pass the binary explicitly (OpenFaceRunner(binary=...)) or set OPENFACE_BIN"
)


@dataclass
class OpenFaceRunner:
    """Runs OpenFace 2's ``FeatureExtraction -f VIDEO -out_dir DIR -aus`` and returns the CSV it writes.

    The binary is, in order: ``binary`` if given, ``$OPENFACE_BIN``, then ``FeatureExtraction`` on ``PATH``.
    """

    binary: str | os.PathLike[str] | None = None
    """Explicit path (or name on PATH) of the FeatureExtraction binary."""
    extra_args: Sequence[str] = ()
    """Extra FeatureExtraction flags appended to the command (e.g. ``("-au_static",)``)."""
    timeout: float | None = None
    """Seconds before the run is killed (None: no limit)."""

    DEFAULT_NAME = "FeatureExtraction"

    def _candidate(self) -> str:
        if self.binary is not None:
            return os.fspath(self.binary)
        return os.environ.get("OPENFACE_BIN") or self.DEFAULT_NAME

    def find_binary(self) -> Path:
        """The resolved binary.

        Raises:
            FileNotFoundError: not found / not executable, with an install hint.
        """
        cand = self._candidate()
        found = shutil.which(cand)
        if found is None:
            where = "at that path" if os.sep in cand or (os.altsep and os.altsep in cand) else "on PATH"
            raise FileNotFoundError(f"OpenFace binary {cand!r} not found {where} (or not executable); {_INSTALL_HINT}")
        return Path(found)

    def command(self, video: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[str]:
        """The argv that extracts AUs of ``video`` into ``out_dir`` (the binary need not exist yet)."""
        try:
            exe = str(self.find_binary())
        except FileNotFoundError:
            exe = self._candidate()
        return [exe, "-f", os.fspath(video), "-out_dir", os.fspath(out_dir), "-aus", *self.extra_args]

    @staticmethod
    def output_csv(video: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
        """Where FeatureExtraction writes the CSV: ``out_dir/<video stem>.csv``."""
        return Path(out_dir) / f"{Path(video).stem}.csv"

    def run(self, video: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Extract AUs from ``video``; returns the CSV path (reused as is when it exists and not ``overwrite``).

        Raises:
            FileNotFoundError: the binary or the video is missing.
            RuntimeError: OpenFace exited non-zero, timed out, or wrote no CSV (message has its stderr tail).
        """
        video, out_dir = Path(video), Path(out_dir)
        csv_path = self.output_csv(video, out_dir)
        if csv_path.exists() and not overwrite:
            return csv_path
        exe = self.find_binary()
        if not video.is_file():
            raise FileNotFoundError(f"{video}: no such video")
        out_dir.mkdir(parents=True, exist_ok=True)
        cmd = [str(exe), *self.command(video, out_dir)[1:]]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"OpenFace timed out after {self.timeout}s on {video}: {' '.join(cmd)}") from e
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout or "").strip()[-2000:]
            raise RuntimeError(f"OpenFace failed (exit {proc.returncode}) on {video}: {' '.join(cmd)}\n{tail}")
        if not csv_path.is_file():
            tail = (proc.stderr or proc.stdout or "").strip()[-2000:]
            msg = f"OpenFace ran on {video} but wrote no {csv_path} (no face or unreadable video?)"
            raise RuntimeError(f"{msg}\n{tail}")
        return csv_path
