"""Training data: MERR / NCEV / JSONL / synthetic records -> task-pool conversations (``Sample``) with features.

Records are read through Hugging Face ``datasets`` (map-style, or streamed for large pseudo-label pools) and
normalised to the columns ``name, label, text, reason, caption`` (any may be None but ``name``):

============  =======================================================================================================
format        source
============  =======================================================================================================
merr_json     ``MERR_{coarse,fine}_grained.json`` (``emollm.data.merr_files.read_merr_json``): label = ``pseu_emotion``,
              text = ``text``, reason = ``smp_reason_caption`` or else ``caption``, caption = ``caption``
ncev          whitespace ``N [C] E [V]`` lists (``emollm.data.merr_files.read_label_txt``): name + label only
jsonl         ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet`` with ``name`` and any of ``label`` (alias
              ``emotion``, ``pseu_emotion``), ``text`` (``subtitle``, ``sentence``), ``reason``
              (``smp_reason_caption``), ``caption``
synthetic     ``emollm.data.synthetic.SyntheticEmotionData`` (features in memory)
============  =======================================================================================================

Features are joined by sample name from ``<feature_root>/<feature_dir>/<name>.npy`` (``FeatureFiles``). Every random
choice made for a sample (task, instruction, label order, modality dropout) comes from an RNG seeded by
``(seed, epoch, index)``, so a sample is a pure function of its key: data order and content survive a resume and
do not depend on worker processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from emollm.data.config import DataConfig
from emollm.model.configuration import MARKERS

if TYPE_CHECKING:  # torch only where a sample is built: the data checks of `emollm validate` stay torch-free
    from torch import Tensor

    from emollm.model.processing import Sample

__all__ = [
    "RECORD_COLUMNS",
    "DataError",
    "FeatureFiles",
    "FeatureSource",
    "InMemoryFeatures",
    "InstructionDataset",
    "PromptBuilder",
    "StreamingInstructions",
    "TrainItem",
    "check_data",
    "feature_problem",
    "load_aux_records",
    "load_records",
    "read_rows",
    "sample_rng",
    "unknown_labels_hint",
    "split_by_name",
    "synthetic_records",
]

log = logging.getLogger(__name__)

RECORD_COLUMNS: tuple[str, ...] = ("name", "label", "text", "reason", "caption")
_ALIASES: dict[str, tuple[str, ...]] = {
    "name": ("name", "video", "video_name", "id"),
    "label": ("label", "emotion", "pseu_emotion"),
    "text": ("text", "subtitle", "sentence", "transcript"),
    "reason": ("reason", "smp_reason_caption"),
    "caption": ("caption",),
}


def sample_rng(seed: int, epoch: int, index: int) -> random.Random:
    """The RNG of one sample in one epoch (string seeds are hashed with SHA-512: stable across runs)."""
    return random.Random(f"{seed}:{epoch}:{index}")


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from CSV/parquet
        return None
    text = str(value)
    return text if text.strip() else None


def _normalise(row: dict[str, Any], where: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for col, names in _ALIASES.items():
        out[col] = next((_str_or_none(row[n]) for n in names if n in row and row[n] is not None), None)
    if out["name"] is None:
        raise ValueError(f"{where}: a record has no 'name' (the sample id that joins features); got keys {sorted(row)}")
    return out


def _read_transcripts(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    from emollm.data.merr_files import read_transcriptions_csv

    return _read_or_explain(read_transcriptions_csv, path)


def _hf_builder(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "json"
    if suffix in (".csv", ".parquet"):
        return suffix[1:]
    raise ValueError(f"{path}: unsupported extension {suffix!r}; use .jsonl, .json, .csv or .parquet")


# ===================================================================================== reading and checking files


class DataError(ValueError):
    """A data file that cannot be trained on; the message names the file (and line or row) and the fix."""


_UTF8_FIX = "save it as UTF-8 (e.g. iconv -f latin1 -t utf-8 OLD > NEW)"
_FEATURE_FIX = "re-extract it, or delete it to train without it (data.missing_features: drop_modality)"


def _no_records(path: str | Path) -> DataError:
    return DataError(f"{path}: the file has no records; point the config at the exported data or re-export it")


def unknown_labels_hint(examples: str) -> str:
    """``"; labels not in data.labels: 'joy' x3 (add them ...)"`` for an error message ("" without examples)."""
    return f"; labels not in data.labels: {examples} (add them to data.labels or fix the file)" if examples else ""


def _text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a UTF-8 file (a BOM is dropped); a byte that is not UTF-8 raises ``DataError``."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}:{lineno}: byte 0x{raw[e.start]:02x} at column {e.start + 1} is not UTF-8; the file must "
                    f"be UTF-8 text: {_UTF8_FIX}"
                ) from None


def _check_utf8(path: str | Path) -> None:
    for _ in _text_lines(path):
        pass


def _require_content(path: str | Path) -> None:
    """``DataError`` for an empty file (or one of blanks only): nothing to train on is never what was meant."""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            if chunk.strip(b" \t\r\n\xef\xbb\xbf"):
                return
    raise DataError(f"{path}: the file is empty (no records); point the config at the exported data or re-export it")


def _json_rows(path: Path, limit: int | None) -> Iterator[tuple[str, Any]]:
    lines = _text_lines(path)
    for lineno, text in lines:
        if not text.strip():
            continue
        if text.lstrip().startswith("[") and path.suffix.lower() == ".json":  # one JSON array of records
            whole = text + "".join(t for _, t in lines)
            try:
                data = json.loads(whole)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}:{lineno + e.lineno - 1}: invalid JSON ({e.msg}, column {e.colno}); fix the file or "
                    "export it as JSON lines (.jsonl)"
                ) from None
            for i, row in enumerate(data[:limit] if limit is not None else data):
                yield f"{path} record {i}", row
            return
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}:{lineno}: invalid JSON ({e.msg}, column {e.colno}); fix or remove the line (one JSON object "
                "per line)"
            ) from None
        yield f"{path}:{lineno}", row
        limit = None if limit is None else limit - 1
        if limit == 0:
            return


def _csv_rows(path: Path, limit: int | None) -> Iterator[tuple[str, Any]]:
    import csv

    _check_utf8(path)
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        for i, row in enumerate(reader):
            if limit is not None and i >= limit:
                return
            yield f"{path}:{reader.line_num}", row


def _parquet_rows(path: Path, limit: int | None) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        i = 0
        for batch in table.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                if limit is not None and i >= limit:
                    return
                yield f"{path} row {i}", row
                i += 1
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path}: cannot read the parquet file ({e}); re-export it") from None


def read_rows(path: str | Path, limit: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The raw rows of a ``jsonl``-format file (``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet``) without Hugging
    Face ``datasets``, each with its location (``file:line``), for checks and error messages.

    Args:
        path: The file.
        limit: Read at most this many rows.

    Raises:
        FileNotFoundError: no such file.
        DataError: an empty file, a byte that is not UTF-8, a line that is not JSON or not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    _hf_builder(str(path))  # the extension
    _require_content(path)
    suffix = path.suffix.lower()
    reader = _csv_rows if suffix == ".csv" else _parquet_rows if suffix == ".parquet" else _json_rows
    rows = []
    for loc, row in reader(path, limit):
        if not isinstance(row, dict):
            raise DataError(
                f"{loc}: expected a JSON object (a record with 'name', 'label', ...), got {type(row).__name__}; fix "
                "the line"
            )
        rows.append((loc, row))
    if not rows:
        raise _no_records(path)
    return rows


def _explain_failure(path: str | Path) -> None:
    """After ``datasets`` failed on a ``jsonl``-format file: raise a ``DataError`` naming the bad line if there is one
    (returns when the rows look fine, so that the caller re-raises the original error)."""
    for loc, row in read_rows(path):
        _normalise(row, loc)


def _read_or_explain(read: Any, path: str | Path) -> Any:
    """``read(path)`` of a MERR JSON / NCEV list / transcript CSV with its ``ValueError`` as a ``DataError`` and a
    non-UTF-8 byte located by line."""
    _require_content(path)
    try:
        return read(path)
    except UnicodeDecodeError:
        _check_utf8(path)
        raise
    except ValueError as e:
        raise DataError(str(e)) from None


def feature_problem(path: str | Path, dim: int, modality: str) -> str | None:
    """Why a feature file cannot be trained on (one line: the file, what is wrong, the fix), or None when it can.

    Mirrors ``emollm.encoders.precomputed.load_feature_file`` with numpy only (no torch)."""
    import numpy as np

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return f"{path}: the {modality} feature file is empty (0 bytes); {_FEATURE_FIX}"
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            from safetensors.numpy import load_file

            tensors = load_file(str(path))
            if "features" not in tensors:
                return f"{path}: no tensor named 'features' (found {sorted(tensors)}); {_FEATURE_FIX}"
            array = tensors["features"]
    except (OSError, ValueError, EOFError) as e:
        return f"{path}: cannot read the {modality} features ({e}); the file is damaged or truncated: {_FEATURE_FIX}"
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        return f"{path}: holds {array.dtype} values, not numbers; {_FEATURE_FIX}"
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] == 0:
        return f"{path}: {modality} features of shape {array.shape}; expected (D,) or (T, D), T >= 1: {_FEATURE_FIX}"
    if array.shape[1] != dim:
        return (
            f"{path}: {modality} features of width {array.shape[1]}, but the model expects {dim} "
            f"(model.modalities.{modality}.feature_dim); set feature_dim to {array.shape[1]} if every file has it, or "
            "re-extract with the configured encoder"
        )
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        return f"{path}: NaN or infinite {modality} features (frame {int(np.argmin(finite))}); {_FEATURE_FIX}"
    return None


def _feature_path(folder: Path, name: str) -> Path | None:
    for ext in (".npy", ".safetensors"):  # emollm.encoders.FeatureStore's order
        p = folder / f"{name}{ext}"
        if p.exists():
            return p
    return None


def _check_records(fmt: str, path: str, limit: int | None) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
    """Normalised records of a data file with their locations, and whether the whole file was read."""
    if fmt == "merr_json":
        from emollm.data.merr_files import read_merr_json

        recs = _read_or_explain(lambda p: read_merr_json(p, "auto"), path)
        return [(f"{path} record {r.name!r}", {"name": r.name, "label": r.pseu_emotion}) for r in recs], True
    if fmt == "ncev":
        from emollm.data.merr_files import read_label_txt

        rows = _read_or_explain(lambda p: read_label_txt(p, "auto"), path)
        if not rows:
            raise _no_records(path)
        return [(f"{path} record {r.name!r}", {"name": r.name, "label": r.label}) for r in rows], True
    rows = read_rows(path, limit)
    return [(loc, _normalise(row, loc)) for loc, row in rows], limit is None or len(rows) < limit


def _label_report(records: list[dict[str, Any]], labels: Sequence[str]) -> tuple[int, str]:
    """``(count, "'joy' x3, 'anger' x1")`` of records whose label is not in ``labels``."""
    known = set(labels)
    unknown = Counter(r["label"] for r in records if r.get("label") is not None and r["label"] not in known)
    examples = ", ".join(f"{lab!r} x{n}" for lab, n in unknown.most_common(5))
    return sum(unknown.values()), examples + (", ..." if len(unknown) > 5 else "")


def check_data(
    data: DataConfig,
    modalities: Mapping[str, Any],
    errors: list[str],
    warnings: list[str],
    *,
    feature_rows: int = 64,
    stream_rows: int = 100_000,
) -> None:
    """Open the data a run config names and report what training would refuse (``emollm validate --check-paths``).

    Reads every record of the training and validation files (at most ``stream_rows`` of a streamed file): UTF-8,
    JSON, a name per record, the label set against ``data.labels``; the transcripts; the auxiliary files' columns;
    and the feature files of the first ``feature_rows`` records of each split (shape, width, dtype, NaN).

    Args:
        data: The run config's ``data`` section (a non-synthetic ``format``).
        modalities: The run config's ``model.modalities`` (name -> settings with ``feature_dir``).
        errors: Problems that stop a run are appended here (one line each, naming the file and the fix).
        warnings: Problems a run survives.
    """
    d, mods = data, modalities
    builder = PromptBuilder(d, [])
    try:
        if d.transcripts:
            _read_transcripts(d.transcripts)
    except DataError as e:
        errors.append(f"data.transcripts: {e}")
    for key, path in (("data.train", d.train), ("data.val", d.val)):
        if not path:
            continue
        limit = stream_rows if d.streaming and key == "data.train" else None
        try:
            located, complete = _check_records(d.format, path, limit)
        except (DataError, FileNotFoundError) as e:
            errors.append(f"{key}: {e}")
            continue
        records = [r for _, r in located]
        usable = sum(bool(builder.eligible(r, d.tasks)) for r in records)
        n_unknown, examples = _label_report(records, d.labels)
        scope = "" if complete else f" (the first {len(records)})"
        if usable == 0 and key == "data.train" and complete:
            errors.append(
                f"{key}: no usable sample in {path}: none of its {len(records)} records has a target for the task "
                f"pool {sorted(d.tasks)}" + unknown_labels_hint(examples)
            )
        elif usable == 0:
            warnings.append(f"{key}: no usable sample in {path} for the tasks {sorted(d.tasks)}{scope}")
        elif n_unknown:
            warnings.append(
                f"{key}: {n_unknown} of the{scope} {len(records)} records of {path} have labels not in data.labels "
                f"({examples}); they get no emotion target ({len(records) - usable} skipped): add the labels to "
                "data.labels or fix the file"
            )
        if not d.feature_root:
            continue
        for m, mod in mods.items():
            if mod.encoder != "precomputed" or not mod.feature_dir:
                continue
            folder = Path(d.feature_root) / mod.feature_dir
            missing, bad = 0, []
            for loc, rec in located[:feature_rows]:
                name = rec["name"]
                if not name or name in (".", "..") or "/" in name or "\\" in name:
                    errors.append(f"{key}: {loc}: sample name {name!r} is not a plain file stem (no path separators)")
                    break
                fpath = _feature_path(folder, name)
                if fpath is None:
                    missing += 1
                    continue
                problem = feature_problem(fpath, mod.feature_dim, m)
                if problem:
                    bad.append(problem)
            if bad:
                more = f" (and {len(bad) - 1} more of the first {min(feature_rows, len(located))} samples)"
                errors.append(f"model.modalities.{m}: {bad[0]}" + (more if len(bad) > 1 else ""))
            if missing:
                checked = min(feature_rows, len(located))
                msg = f"{missing} of the first {checked} samples of {path} have no {m} feature file in {folder}"
                if d.missing_features == "error":
                    errors.append(
                        f"data.missing_features: {msg}; extract them, or set data.missing_features=drop_modality"
                    )
                else:
                    policy = f"data.missing_features={d.missing_features}"
                    warnings.append(f"model.modalities.{m}.feature_dir: {msg} ({policy})")
    for i, aux in enumerate(d.aux):
        try:
            rows = read_rows(aux.path, 1000)
        except (DataError, FileNotFoundError) as e:
            errors.append(f"data.aux[{i}].path: {e}")
            continue
        for col in (aux.text_field, aux.label_field):
            if all(col not in row for _, row in rows):
                errors.append(
                    f"data.aux[{i}]: {aux.path} has no column {col!r} (columns: {sorted(rows[0][1])}); set "
                    f"data.aux[{i}].text_field / label_field"
                )


def load_records(
    fmt: str, path: str, *, transcripts: str | None = None, streaming: bool = False, cache_dir: str | None = None
):
    """Read a training/validation file as a ``datasets.Dataset`` (``IterableDataset`` when streaming) whose columns
    are ``RECORD_COLUMNS``. Subtitles missing from the file are joined from ``transcripts`` by name.

    Args:
        cache_dir: Where ``datasets`` keeps its Arrow cache of a ``jsonl``-format file (None: its default,
            ``~/.cache/huggingface/datasets``; a training run passes a folder of its own).

    Raises:
        FileNotFoundError: no such file.
        DataError: an empty file, a byte that is not UTF-8, a bad JSON line or MERR record (naming the line).
    """
    import datasets

    subtitles = _read_transcripts(transcripts)
    if not Path(path).is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    _require_content(path)
    if fmt in ("merr_json", "ncev"):
        if streaming:
            raise ValueError(f"{fmt} files are read whole; streaming needs data.format=jsonl")
        rows = []
        if fmt == "merr_json":
            from emollm.data.merr_files import read_merr_json

            for rec in _read_or_explain(lambda p: read_merr_json(p, "auto"), path):
                rows.append(
                    {
                        "name": rec.name,
                        "label": rec.pseu_emotion,
                        "text": _str_or_none(rec.text),
                        "reason": _str_or_none(rec.smp_reason_caption) or _str_or_none(rec.caption),
                        "caption": _str_or_none(rec.caption),
                    }
                )
        else:
            from emollm.data.merr_files import read_label_txt

            rows = [
                {"name": r.name, "label": r.label, "text": None, "reason": None, "caption": None}
                for r in _read_or_explain(lambda p: read_label_txt(p, "auto"), path)
            ]
            if not rows:
                raise _no_records(path)
        for r in rows:
            if r["text"] is None and r["name"] in subtitles:
                r["text"] = _str_or_none(subtitles[r["name"]])
        return datasets.Dataset.from_list(rows, features=_features())
    if fmt != "jsonl":
        raise ValueError(f"unknown data format {fmt!r}")
    builder = _hf_builder(path)

    def norm(row):
        out = _normalise(row, str(path))
        if out["text"] is None and out["name"] in subtitles:
            out["text"] = _str_or_none(subtitles[out["name"]])
        return out

    if streaming:  # read lazily, per example: StreamingInstructions locates a bad line when iterating fails
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", streaming=True, cache_dir=cache_dir)
        return ds.map(norm, remove_columns=ds.column_names)
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache_dir)
        return ds.map(norm, remove_columns=ds.column_names, features=_features(), desc=None)
    except Exception:  # datasets' errors name no line (or none at all: StopIteration on an empty file)
        _explain_failure(path)
        raise


def _features():
    import datasets

    return datasets.Features({c: datasets.Value("string") for c in RECORD_COLUMNS})


def load_aux_records(
    path: str,
    *,
    text_field: str,
    label_field: str,
    label_map: dict[str, str],
    labels: Sequence[str],
    prefix: str,
    cache_dir: str | None = None,
) -> tuple[Any, int]:
    """Text-emotion rows (e.g. GoEmotions, EmpatheticDialogues) -> records with ``text`` and a label of ``labels``.

    Returns ``(dataset, dropped)``: rows whose label maps to none of ``labels`` are dropped and counted.
    ``cache_dir`` is the ``datasets`` cache folder (see ``load_records``)."""
    import datasets

    if not Path(path).is_file():
        raise FileNotFoundError(f"auxiliary data file {path} does not exist")
    _require_content(path)
    try:
        ds = datasets.load_dataset(_hf_builder(path), data_files=str(path), split="train", cache_dir=cache_dir)
    except Exception:
        read_rows(path)  # raises a DataError naming the bad line, if there is one
        raise
    for col in (text_field, label_field):
        if col not in ds.column_names:
            raise ValueError(
                f"{path}: no column {col!r}; columns are {ds.column_names} (set data.aux[i].text_field / label_field)"
            )
    known = set(labels)
    rows = []
    dropped = 0
    try:
        for i, row in enumerate(ds):
            raw = row[label_field]
            raw = raw[0] if isinstance(raw, list) and len(raw) == 1 else raw  # GoEmotions stores a list of ids
            key = str(raw).strip()
            label = label_map.get(key, key if key in known else None)
            text = _str_or_none(row[text_field])
            if label is None or text is None:
                dropped += 1
                continue
            rows.append({"name": f"{prefix}-{i}", "label": label, "text": text, "reason": None, "caption": None})
    except UnicodeDecodeError:
        read_rows(path)  # names the line
        raise
    return datasets.Dataset.from_list(rows, features=_features()), dropped


def split_by_name(records, fraction: float) -> tuple[list[int], list[int]]:
    """Deterministic held-out split: a record goes to validation when the hash of its name falls below ``fraction``
    (independent of file order, so adding samples never moves old ones between splits)."""
    train, val = [], []
    for i, name in enumerate(list(records["name"])):
        h = int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], "big") / 2**32
        (val if h < fraction else train).append(i)
    return train, val


# ============================================================================================== features


class FeatureSource(Protocol):
    """Features of one sample: ``load(name) -> {modality: (T, D) tensor or None}``."""

    def load(self, name: str) -> dict[str, Tensor | None]: ...


class FeatureFiles:
    """``<root>/<subdir>/<name>.npy`` per modality (``emollm.encoders.FeatureStore``), with a missing-file policy.

    Args:
        root: ``data.feature_root``.
        dirs: modality -> sub-folder.
        dims: modality -> feature width (checked on load).
        missing: ``drop_modality`` (the modality is absent for that sample), ``drop_sample`` (the caller filters it
            out with ``has_all``), or ``error``.
    """

    def __init__(self, root: str | Path, dirs: dict[str, str], dims: dict[str, int], missing: str = "drop_modality"):
        from emollm.encoders import FeatureStore

        self.stores = {m: FeatureStore(root, d, dims[m]) for m, d in dirs.items()}
        self.missing = missing

    def has_all(self, name: str) -> bool:
        return all(name in s for s in self.stores.values())

    def missing_counts(self, names: Sequence[str]) -> dict[str, int]:
        return {m: sum(n not in s for n in names) for m, s in self.stores.items()}

    def load(self, name: str) -> dict[str, Tensor | None]:
        out: dict[str, Tensor | None] = {}
        for m, store in self.stores.items():
            if name in store:
                try:
                    out[m] = store.load(name)
                except (ValueError, OSError) as e:
                    path = store.path(name)
                    problem = feature_problem(path, store.feature_dim, m) if path is not None else None
                    raise DataError(problem or f"{e}; {_FEATURE_FIX}") from None
            elif self.missing == "error":
                raise FileNotFoundError(
                    f"no {m} features for sample {name!r} in {store.dir}; set data.missing_features=drop_modality "
                    "to train without them"
                )
            else:
                out[m] = None
        return out


class InMemoryFeatures:
    """Features held in memory (synthetic data), keyed by sample name."""

    def __init__(self, table: dict[str, dict[str, Tensor | None]]):
        self.table = table

    def load(self, name: str) -> dict[str, Tensor | None]:
        return dict(self.table.get(name, {}))


class NoFeatures:
    """Text-only samples (auxiliary text-emotion data)."""

    def load(self, name: str) -> dict[str, Tensor | None]:
        return {}


_FILLER = ("and", "then", "she", "said", "that", "the", "voice", "was", "calm", "while", "he", "looked", "away")


def synthetic_records(cfg: DataConfig, feature_dims: dict[str, int], split: str):
    """A synthetic split (``train`` or ``val``) as ``(records, InMemoryFeatures)``; different splits never share
    samples. Targets: the label (emotion), a templated reason and caption."""
    import datasets

    from emollm.data.synthetic import SUBTITLES, SyntheticEmotionData

    s = cfg.synthetic
    gen = SyntheticEmotionData(feature_dims, labels=cfg.labels, noise=s.noise, seed=s.seed)
    n, split_seed = (s.num_train, 1) if split == "train" else (s.num_val, 2)
    rows, table = [], {}
    for i in range(n):
        sample, label = gen.sample(i, split_seed=split_seed, with_answer=False)
        content = sample.messages[0]["content"]
        text = next((t for t in SUBTITLES if f"says: {t}." in content), SUBTITLES[0])
        if s.subtitle_words:
            rnd = random.Random(f"filler:{split}:{i}")
            text += " " + " ".join(rnd.choice(_FILLER) for _ in range(s.subtitle_words))
        rows.append(
            {
                "name": sample.name,
                "label": label,
                "text": text,
                "reason": f"The face, the voice and the words all point to {label}. The person feels {label}.",
                "caption": f"A person speaks; the expression and the tone of voice look {label}.",
            }
        )
        table[sample.name] = dict(sample.features)
    return datasets.Dataset.from_list(rows, features=_features()), InMemoryFeatures(table)


# ============================================================================================== prompts


@dataclass
class TrainItem:
    """One conversation ready for the collator."""

    sample: Sample
    task: str
    label: str | None
    weight: float = 1.0


class PromptBuilder:
    """Record + features -> ``Sample`` under the config's task pool and templates (Emotion-LLaMA's layout:
    ``<media> The person in video says: {subtitle}. [{task}] {instruction}``)."""

    def __init__(self, cfg: DataConfig, modalities: Sequence[str]):
        self.cfg = cfg
        self.labels = list(cfg.labels)
        self.label_set = set(cfg.labels)
        self.media = "".join(MARKERS[m] for m in modalities)

    def targets(self, record: dict[str, Any]) -> dict[str, str]:
        """Task -> target text available for this record."""
        out = {}
        if record.get("label") in self.label_set:
            out["emotion"] = record["label"]
        if record.get("reason"):
            out["reason"] = record["reason"]
        if record.get("caption"):
            out["caption"] = record["caption"]
        return out

    def eligible(self, record: dict[str, Any], tasks: dict[str, float]) -> list[tuple[str, float]]:
        have = self.targets(record)
        return [(t, w) for t, w in tasks.items() if w > 0 and t in have]

    def label_list(self, rng: random.Random) -> list[str]:
        order = self.cfg.label_order
        if order == "alphabetical":
            return sorted(self.labels)
        if order == "shuffle":
            labels = list(self.labels)
            rng.shuffle(labels)
            return labels
        return list(self.labels)

    def build(
        self,
        record: dict[str, Any],
        features: dict[str, Tensor | None],
        task: str,
        rng: random.Random,
        *,
        with_answer: bool = True,
    ) -> Sample:
        cfg = self.cfg
        instruction = rng.choice(cfg.instructions[task]).format(labels=", ".join(self.label_list(rng)))
        text = (record.get("text") or "").strip().rstrip(".")
        subtitle = cfg.subtitle_template.format(text=text) if text else ""
        media = self.media if any(v is not None for v in features.values()) else ""
        user = cfg.prompt_template.format(media=media, subtitle=subtitle, task=task, instruction=instruction)
        user = re.sub(r"[ \t]{2,}", " ", user).strip()
        messages: list[dict[str, Any]] = []
        if cfg.system_prompt is not None:
            messages.append({"role": "system", "content": cfg.system_prompt})
        messages.append({"role": "user", "content": user})
        if with_answer:
            target = self.targets(record).get(task, "")
            answer = cfg.answers[task].format(label=record.get("label") or "", target=target)
            messages.append({"role": "assistant", "content": answer})
        from emollm.model.processing import Sample

        return Sample(messages=messages, features={k: v for k, v in features.items()}, name=record["name"])


def _drop_modalities(features: dict[str, Tensor | None], p: float, rng: random.Random) -> dict[str, Tensor | None]:
    present = [m for m, v in features.items() if v is not None]
    if p <= 0 or len(present) < 2:
        return features
    keep = [m for m in present if rng.random() >= p]
    if not keep:
        keep = [rng.choice(present)]
    return {m: (v if m in keep else None) for m, v in features.items()}


def _pick_task(options: list[tuple[str, float]], rng: random.Random) -> str:
    total = sum(w for _, w in options)
    x = rng.random() * total
    for task, w in options:
        x -= w
        if x < 0:
            return task
    return options[-1][0]


@dataclass
class _Part:
    records: Any
    features: FeatureSource
    indices: list[int]


class InstructionDataset:
    """Map-style data set over one or more record sources (main data, then auxiliary text data).

    Item keys are ``(index, epoch)`` pairs (a bare ``index`` means epoch 0): the sample is a pure function of the key.
    ``index < len(main)`` addresses the main data; higher indices address the auxiliary pools in order
    (``pools()`` gives their ranges for the sampler).

    Args:
        parts: ``(records, features)`` per source; the first is the main data.
        builder: The prompt builder.
        tasks: Task pool with weights.
        seed: Seed of all per-sample choices.
        train: Training mode (modality dropout on; task drawn from the pool). In eval mode the RNG is the same for
            every epoch and there is no dropout.
        modality_dropout: Per-modality drop probability in training.
        balance_loss: Give each sample the inverse frequency of its label as loss weight.
        indices: Restrict the main data to these record indices (held-out split).
        drop_sample_if: ``name -> bool``: leave this main-data sample out (missing features).
        source: The main data's file, named in errors.

    Attributes:
        skipped: Reason -> number of records left out.
        main_records: Main-data records considered (before skipping).
        unknown_labels: Label -> number of main-data records whose label is not in ``data.labels`` (those without
            another task's target are among the skipped).

    Raises:
        DataError: no usable main-data sample (naming the unknown labels, if that is why).
    """

    def __init__(
        self,
        parts: Sequence[tuple[Any, FeatureSource]],
        builder: PromptBuilder,
        *,
        tasks: dict[str, float],
        seed: int,
        train: bool,
        modality_dropout: float = 0.0,
        balance_loss: bool = False,
        indices: Sequence[int] | None = None,
        drop_sample_if: Any = None,
        source: str | None = None,
    ):
        self.builder = builder
        self.tasks = dict(tasks)
        self.seed = seed
        self.train = train
        self.modality_dropout = modality_dropout
        self.parts: list[_Part] = []
        self.main_records = 0
        self.skipped: dict[str, int] = {}
        self.unknown_labels: Counter[str] = Counter()
        for j, (records, features) in enumerate(parts):
            base = list(range(len(records))) if indices is None or j > 0 else list(indices)
            if j == 0:
                self.main_records = len(base)
            keep = []
            for i in base:
                rec = records[i]
                label = rec.get("label")
                if j == 0 and label is not None and label not in builder.label_set:
                    self.unknown_labels[label] += 1
                if not builder.eligible(rec, self.tasks):
                    unknown = label is not None and label not in builder.label_set
                    why = "label not in data.labels" if unknown else "no target for the task pool"
                    self.skipped[why] = self.skipped.get(why, 0) + 1
                elif drop_sample_if is not None and j == 0 and drop_sample_if(rec["name"]):
                    self.skipped["missing features"] = self.skipped.get("missing features", 0) + 1
                else:
                    keep.append(i)
            self.parts.append(_Part(records, features, keep))
        if not self.parts or not self.parts[0].indices:
            where = f"{source}: " if source else ""
            unknown = self.unknown_labels_text()
            raise DataError(
                f"{where}no usable training samples: every record lacks a target for the task pool "
                f"{sorted(self.tasks)} (labels must be in data.labels; reason/caption tasks need text targets)"
                + unknown_labels_hint(unknown)
                + (f"; skipped: {self.skipped}" if self.skipped else "")
            )
        self.weights = self._label_weights() if balance_loss else None

    def unknown_labels_text(self, n: int = 5) -> str:
        """``"'joy' x3, 'anger' x1"``: the most frequent labels outside ``data.labels`` ("" when none)."""
        text = ", ".join(f"{lab!r} x{c}" for lab, c in self.unknown_labels.most_common(n))
        return text + (", ..." if len(self.unknown_labels) > n else "")

    # ------------------------------------------------------------------ index space
    def __len__(self) -> int:
        return sum(len(p.indices) for p in self.parts)

    @property
    def num_main(self) -> int:
        return len(self.parts[0].indices)

    def pools(self) -> list[tuple[int, int]]:
        """``(offset, size)`` of each auxiliary pool in the index space."""
        out, offset = [], self.num_main
        for p in self.parts[1:]:
            out.append((offset, len(p.indices)))
            offset += len(p.indices)
        return out

    def _locate(self, index: int) -> tuple[_Part, int]:
        if index < 0:
            raise IndexError(index)
        for p in self.parts:
            if index < len(p.indices):
                return p, p.indices[index]
            index -= len(p.indices)
        raise IndexError(f"index out of range for a data set of {len(self)} samples")

    def record(self, index: int) -> dict[str, Any]:
        part, i = self._locate(index)
        return part.records[i]

    def labels(self) -> list[str | None]:
        """Label of every main-data sample, in index order."""
        col = list(self.parts[0].records["label"])
        return [col[i] for i in self.parts[0].indices]

    def lengths(self) -> list[int]:
        """Rough token count of every sample (text characters / 4 + instruction), for length grouping."""
        out = []
        for p in self.parts:
            cols = {c: list(p.records[c]) for c in ("text", "reason", "caption", "label")}
            for i in p.indices:
                target = max(len(cols["reason"][i] or ""), len(cols["caption"][i] or ""), len(cols["label"][i] or ""))
                out.append(32 + (len(cols["text"][i] or "") + target) // 4)
        return out

    def _label_weights(self) -> dict[str, float]:
        counts: dict[str, int] = {}
        for lab in self.labels():
            if lab is not None:
                counts[lab] = counts.get(lab, 0) + 1
        total = sum(counts.values())
        return {lab: total / (len(counts) * c) for lab, c in counts.items()}

    # ------------------------------------------------------------------ items
    def __getitem__(self, key: int | tuple[int, int]) -> TrainItem:
        index, epoch = (key, 0) if isinstance(key, int) else key
        part, i = self._locate(index)
        record = part.records[i]
        rng = sample_rng(self.seed, epoch if self.train else 0, index)
        task = _pick_task(self.builder.eligible(record, self.tasks), rng)
        features = part.features.load(record["name"])
        if self.train:
            features = _drop_modalities(features, self.modality_dropout, rng)
        sample = self.builder.build(record, features, task, rng)
        label = record.get("label")
        weight = self.weights.get(label, 1.0) if self.weights is not None else 1.0
        return TrainItem(sample=sample, task=task, label=label, weight=weight)


@dataclass
class StreamingInstructions:
    """A streamed data set (``datasets.IterableDataset``), sharded over processes, resumable by position.

    Each process reads its shard in a per-epoch shuffled order (``shuffle_buffer``); ``iterate(epoch, skip)``
    yields ``TrainItem`` objects, skipping the first ``skip`` of that epoch (resume).
    """

    records: Any
    features: FeatureSource
    builder: PromptBuilder
    tasks: dict[str, float]
    seed: int
    modality_dropout: float = 0.0
    shuffle_buffer: int = 10000
    rank: int = 0
    world_size: int = 1
    label_weights: dict[str, float] | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    source: str | None = None
    unknown_labels: Counter[str] = field(default_factory=Counter)

    def _records(self, ds: Any) -> Iterator[dict[str, Any]]:
        """Iterate ``ds``; a failure of ``datasets`` (bad JSON, a byte that is not UTF-8) becomes a ``DataError``
        naming the line of ``source``."""
        it = iter(ds)
        while True:
            try:
                record = next(it)
            except StopIteration:
                return
            except Exception:
                if self.source:
                    _explain_failure(self.source)
                raise
            yield record

    def iterate(self, epoch: int, skip: int = 0) -> Iterator[TrainItem]:
        from datasets.distributed import split_dataset_by_node

        ds = self.records.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
        if self.world_size > 1:
            ds = split_dataset_by_node(ds, rank=self.rank, world_size=self.world_size)
        ds.set_epoch(epoch)  # after the split, which starts a fresh copy
        position = -1
        for record in self._records(ds):
            options = self.builder.eligible(record, self.tasks)
            label = record.get("label")
            if label is not None and label not in self.builder.label_set:
                if not self.unknown_labels:
                    log.warning(
                        "%s: a streamed record has the label %r, which is not in data.labels; records with labels "
                        "outside data.labels get no emotion target (counted in the run summary)",
                        self.source or "training data",
                        label,
                    )
                self.unknown_labels[label] += 1
            if not options:
                self.skipped["no target"] = self.skipped.get("no target", 0) + 1
                continue
            position += 1
            if position < skip:
                continue
            rng = sample_rng(self.seed, epoch, position * self.world_size + self.rank)
            task = _pick_task(options, rng)
            features = _drop_modalities(self.features.load(record["name"]), self.modality_dropout, rng)
            sample = self.builder.build(record, features, task, rng)
            label = record.get("label")
            weight = self.label_weights.get(label, 1.0) if self.label_weights else 1.0
            yield TrainItem(sample=sample, task=task, label=label, weight=weight)
