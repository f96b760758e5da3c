"""Features for the fusion baselines: cached ``<name>.npy`` per modality, time-aligned, in memory.

Every clip's features of every modality are resampled to the same ``steps`` time steps (bin averages; an
utterance-level ``(D,)`` file is repeated), so a batch is plain ``(B, steps, D_m)`` tensors and audio and visual
sequences are aligned step by step (what the transformer fusion's cross-modal attention needs). A modality a clip
lacks (the cache's ``_missing/<name>.json``, or no file with ``missing="zero"``) is zeros with ``present`` False.

:func:`synthetic_task` makes data where the label is recoverable only from audio, only from the face, only from
both together (``both``: label = (code_audio + code_face) mod K, an XOR for K = 2), or from either (``either``: both
carry it), for tests and the benchmark.

Shape legend: N clips, T time steps (``steps``), D feature width of a modality.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = [
    "SYNTH_MANIFEST",
    "FeatureSet",
    "align_steps",
    "build_feature_set",
    "load_feature_set",
    "read_labels_csv",
    "synthetic_task",
    "write_synthetic",
]

Task = Literal["audio", "face", "both", "either"]


def align_steps(x: np.ndarray, steps: int) -> np.ndarray:
    """(T, D) -> (steps, D): the mean of each of ``steps`` equal time bins (bins shorter than a frame take the
    frame they fall in, so T < steps repeats frames). (D,) counts as (1, D)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    t = x.shape[0]
    if t == steps:
        return x
    edges = np.linspace(0.0, t, steps + 1)
    lo = np.minimum(np.floor(edges[:-1]).astype(np.int64), t - 1)
    hi = np.maximum(np.ceil(edges[1:]).astype(np.int64), lo + 1)
    cs = np.concatenate([np.zeros((1, x.shape[1]), np.float64), np.cumsum(x, axis=0, dtype=np.float64)])
    return ((cs[hi] - cs[lo]) / (hi - lo)[:, None]).astype(np.float32)  # (steps, D)


@dataclass
class FeatureSet:
    """Aligned features of N clips.

    Attributes:
        names: Clip names (N).
        labels: Class index per clip (N,), int64.
        classes: Class names; ``labels`` index them.
        features: Modality -> (N, T, D) float32 (zeros where absent).
        present: Modality -> (N,) bool.
        speakers: Speaker per clip (N), or None.
    """

    names: list[str]
    labels: np.ndarray
    classes: list[str]
    features: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    speakers: list[str] | None = None
    extra: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def modalities(self) -> list[str]:
        return list(self.features)

    @property
    def dims(self) -> dict[str, int]:
        return {m: int(a.shape[-1]) for m, a in self.features.items()}

    @property
    def steps(self) -> int:
        return int(next(iter(self.features.values())).shape[1])

    def take(self, index: Sequence[int] | np.ndarray) -> FeatureSet:
        idx = np.asarray(index, dtype=np.int64)
        return FeatureSet(
            [self.names[i] for i in idx],
            self.labels[idx],
            self.classes,
            {m: a[idx] for m, a in self.features.items()},
            {m: p[idx] for m, p in self.present.items()},
            [self.speakers[i] for i in idx] if self.speakers is not None else None,
        )

    def subset(self, names: Iterable[str]) -> FeatureSet:
        """The clips called ``names`` (in that order); a name not in the set raises, naming it."""
        pos = {n: i for i, n in enumerate(self.names)}
        names = list(names)
        missing = [n for n in names if n not in pos]
        if missing:
            raise KeyError(f"{len(missing)} clips of the split have no features/label, e.g. {missing[0]!r}")
        return self.take([pos[n] for n in names])

    def without(self, modality: str) -> FeatureSet:
        """A copy in which ``modality`` is absent for every clip (missing-modality evaluation)."""
        if modality not in self.features:
            raise ValueError(f"modality {modality!r} is not in this set ({', '.join(self.features)})")
        feats = dict(self.features)
        feats[modality] = np.zeros_like(feats[modality])
        present = dict(self.present)
        present[modality] = np.zeros_like(present[modality])
        return FeatureSet(self.names, self.labels, self.classes, feats, present, self.speakers)


def build_feature_set(
    arrays: Mapping[str, Mapping[str, np.ndarray | None]],
    labels: Mapping[str, str],
    *,
    classes: Sequence[str] | None = None,
    steps: int = 16,
    speakers: Mapping[str, str] | None = None,
) -> FeatureSet:
    """A :class:`FeatureSet` from ``arrays[modality][name]`` ((T, D) or (D,), or None when absent).

    Raises:
        ValueError: A label not in ``classes``, a modality with no clip present, or widths differing in a modality.
    """
    names = sorted(labels)
    classes = list(classes) if classes is not None else sorted(set(labels.values()))
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({labels[n] for n in names} - set(index))
    if unknown:
        raise ValueError(f"labels {unknown} are not in classes {classes}")
    features, present = {}, {}
    for modality, per_name in arrays.items():
        dims = {np.asarray(a).shape[-1] for a in per_name.values() if a is not None}
        if not dims:
            raise ValueError(f"modality {modality!r}: no clip has features")
        if len(dims) > 1:
            raise ValueError(f"modality {modality!r}: feature widths differ between clips: {sorted(dims)}")
        (d,) = dims
        out = np.zeros((len(names), steps, d), dtype=np.float32)
        mask = np.zeros(len(names), dtype=bool)
        for i, n in enumerate(names):
            a = per_name.get(n)
            if a is not None:
                out[i] = align_steps(a, steps)
                mask[i] = True
        features[modality], present[modality] = out, mask
    y = np.array([index[labels[n]] for n in names], dtype=np.int64)
    spk = [speakers[n] for n in names] if speakers is not None else None
    return FeatureSet(names, y, classes, features, present, spk)


def read_labels_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Rows of a labels CSV with columns ``name,label`` and optional ``speaker``, ``split`` (train/val/test).

    Raises:
        ValueError: Missing columns, an empty name or label, or a duplicate name (naming ``file:line``).
    """
    from emollm.utils.io import read_user_text

    path = Path(path)
    reader = csv.DictReader(io.StringIO(read_user_text(path, "labels CSV"), newline=""))
    rows, seen = [], set()
    try:
        cols = reader.fieldnames or []
        if "name" not in cols or "label" not in cols:
            raise ValueError(f"{path}:1: header {cols} lacks name,label (optional: speaker, split)")
        for row in reader:
            lineno = reader.line_num
            name, label = (row.get("name") or "").strip(), (row.get("label") or "").strip()
            if not name or not label:
                raise ValueError(f"{path}:{lineno}: empty name or label")
            if name in seen:
                raise ValueError(f"{path}:{lineno}: duplicate name {name!r}")
            seen.add(name)
            rows.append({k: (v or "").strip() if isinstance(v, str) else "" for k, v in row.items() if k})
    except csv.Error as e:
        raise ValueError(f"{path}:{reader.line_num}: not valid CSV ({e}); check the quoting") from None
    return rows


def load_feature_set(
    labels: Mapping[str, str],
    folders: Mapping[str, str | os.PathLike[str]],
    *,
    classes: Sequence[str] | None = None,
    steps: int = 16,
    speakers: Mapping[str, str] | None = None,
    missing: Literal["error", "zero"] = "error",
) -> FeatureSet:
    """Read cached features (``folders[modality]/<name>.npy`` or ``.safetensors``) of the labelled clips.

    A clip the cache marked as lacking the modality (``_missing/<name>.json``) is absent; a clip with no file and
    no marker is an error (``missing="error"``, naming how many and an example) or absent (``"zero"``).
    """
    from emollm.encoders.precomputed import load_feature_file

    arrays: dict[str, dict[str, np.ndarray | None]] = {}
    for modality, folder in folders.items():
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"features of {modality}: folder {folder} does not exist")
        per: dict[str, np.ndarray | None] = {}
        unexplained = []
        for name in labels:
            path = next(
                (folder / f"{name}{ext}" for ext in (".npy", ".safetensors") if (folder / f"{name}{ext}").is_file()),
                None,
            )
            if path is not None:
                per[name] = load_feature_file(path).numpy()
            else:
                per[name] = None
                if not (folder / "_missing" / f"{name}.json").is_file():
                    unexplained.append(name)
        if unexplained and missing == "error":
            raise FileNotFoundError(
                f"{len(unexplained)} of {len(labels)} clips have no {modality} features in {folder}, e.g. "
                f"{unexplained[0]!r}; run `emollm features extract` on them, or set data.missing: zero"
            )
        arrays[modality] = per
    return build_feature_set(arrays, labels, classes=classes, steps=steps, speakers=speakers)


def synthetic_task(
    task: Task,
    *,
    n: int = 360,
    n_classes: int = 3,
    dims: Mapping[str, int] | None = None,
    steps: int = 8,
    n_speakers: int = 12,
    noise: float | Mapping[str, float] = 1.0,
    seed: int = 0,
    raw: bool = False,
) -> FeatureSet | tuple[dict[str, dict[str, np.ndarray]], dict[str, str], dict[str, str]]:
    """Features where the label lives in audio only, face only, both together, or either.

    Each clip has a code per modality; a modality's frames are its code's prototype times a random positive
    envelope plus Gaussian noise and a per-speaker offset. Sequences have random lengths (audio 2-4x ``steps``
    frames, face 1-2x), so loading aligns them. Modalities other than audio/face in ``dims`` (``text``) carry the
    label's code with twice the noise. ``noise`` may be a mapping modality -> noise level.

    Args:
        raw: Return ``(arrays, labels, speakers)`` (unaligned, as :func:`write_synthetic` saves them) instead.
    """
    rng = np.random.default_rng(seed)
    dims = dict(dims or {"audio": 24, "face": 16})
    protos = {m: rng.normal(0.0, 1.0, (n_classes, d)).astype(np.float32) * 1.2 for m, d in dims.items()}
    speaker_off = {m: rng.normal(0.0, 0.3, (n_speakers, d)).astype(np.float32) for m, d in dims.items()}
    y = rng.integers(0, n_classes, n)
    other = rng.integers(0, n_classes, n)
    if task == "audio":
        codes = {"audio": y, "face": other}
    elif task == "face":
        codes = {"audio": other, "face": y}
    elif task == "both":
        codes = {"audio": other, "face": (y - other) % n_classes}  # label = (audio + face) mod K
    elif task == "either":
        codes = {"audio": y, "face": y}
    else:
        raise ValueError(f"task must be audio, face, both or either, got {task!r}")
    arrays: dict[str, dict[str, np.ndarray]] = {m: {} for m in dims}
    labels, speakers = {}, {}
    width = len(str(n - 1))
    for i in range(n):
        name = f"clip{i:0{width}d}"
        spk = int(rng.integers(0, n_speakers))
        labels[name], speakers[name] = f"class{int(y[i])}", f"spk{spk:02d}"
        for m, d in dims.items():
            lo, hi = (2 * steps, 4 * steps) if m == "audio" else (steps, 2 * steps)
            t = int(rng.integers(lo, hi + 1))
            code = codes.get(m, y)[i]
            scale = (
                noise.get(m, 1.0) if isinstance(noise, Mapping) else noise * (1.0 if m in ("audio", "face") else 2.0)
            )
            env = rng.uniform(0.5, 1.5, (t, 1)).astype(np.float32)
            x = env * protos[m][code] + speaker_off[m][spk] + rng.normal(0.0, scale, (t, d)).astype(np.float32)
            arrays[m][name] = x.astype(np.float32)
    if raw:
        return arrays, labels, speakers
    classes = [f"class{k}" for k in range(n_classes)]
    return build_feature_set(arrays, labels, classes=classes, steps=steps, speakers=speakers)


SYNTH_MANIFEST = "synth.json"
"""What :func:`write_synthetic` writes beside ``labels.csv``: who wrote the folder and with which settings."""


def write_synthetic(out: str | os.PathLike[str], task: Task, **kwargs) -> Path:
    """Write a synthetic task as a feature cache: ``out/<modality>/<name>.npy``, ``out/labels.csv``
    (``name,label,speaker``) and ``out/synth.json`` (the settings). Returns ``out``."""
    from emollm.utils.io import atomic_write, atomic_write_json, atomic_write_text

    out = Path(out)
    arrays, labels, speakers = synthetic_task(task, raw=True, **kwargs)
    for m, per in arrays.items():
        for name, x in per.items():  # the cache's format: (T, D) float32 .npy, no pickles
            atomic_write(out / m / f"{name}.npy", lambda f, x=x: np.save(f, x, allow_pickle=False), fsync=False)
    lines = ["name,label,speaker"] + [f"{n},{labels[n]},{speakers[n]}" for n in sorted(labels)]
    atomic_write_text(out / "labels.csv", "\n".join(lines) + "\n")
    settings = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in kwargs.items()}
    atomic_write_json(out / SYNTH_MANIFEST, {"written_by": "emollm fusion synth", "task": task, **settings})
    return out
