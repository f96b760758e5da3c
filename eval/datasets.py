"""Loaders for the label and prediction files of the evaluation datasets, in their released formats.

Every loader returns a list of small immutable records (``NamedTuple``: typed fields, and unpackable, e.g.
``for name, label in read_dfew_split(path)``) and checks its input: a malformed file raises ``ValueError`` whose
message starts with ``path:line:`` and ends with the fix; a missing file raises ``FileNotFoundError``. Sample names
are always strings, kept as written (DFEW's ``"00025"`` stays ``"00025"``). Files are read as UTF-8 with or without
a byte-order mark, with Unix or Windows line endings; blank lines are skipped; column names are matched ignoring
case and surrounding spaces, and extra columns (e.g. a pandas index) are ignored.

Formats (see REFERENCE.md §1.6, §7):

- DFEW ``EmoLabel_DataSplit/{train,test}(single-labeled)/set_{1..5}.csv``: ``video_name,label``, label 1-indexed.
- MER2023 ``name,discrete,valence`` (train/test label CSVs and submissions).
- EMER v1 ``names,emotions,subtitles,reasons`` and v2 ``name,chinese,english``.
- MER2024 MER-OV ``name,openset`` with ``openset`` a Python list literal.
- MERR / Emotion-LLaMA lists: whitespace-separated ``N C E V``, ``N C E`` or ``N E``.
- Predictions: ``name,prediction`` or ``name,discrete[,valence]``.
"""

from __future__ import annotations

import ast
import csv
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, NamedTuple, NoReturn

from emollm.labels import DFEW_LABELS, MER2023_LABELS

__all__ = [
    "DFEW_FOLDS",
    "MER2023_PROTOCOLS",
    "MER2023_VALENCE_PLACEHOLDER",
    "DFEWSample",
    "EMERSample",
    "MER2023Protocol",
    "MER2023Sample",
    "NCEVSample",
    "NcevFormat",
    "OVSample",
    "Prediction",
    "dfew_split_path",
    "read_dfew_split",
    "read_emer",
    "read_mer2023_labels",
    "read_ncev",
    "read_ov_labels",
    "read_predictions",
]

DFEW_FOLDS: tuple[int, ...] = (1, 2, 3, 4, 5)
MER2023_VALENCE_PLACEHOLDER = -10.0
"""Valence written for unlabelled MER2023 samples (e.g. the V column of ``relative_test3_NCEV.txt``)."""
NcevFormat = Literal["auto", "ne", "nce", "ncev"]
Mer2023Split = Literal["test1", "test2", "test3"]
Mer2023Metric = Literal["weighted_f1", "accuracy", "valence_mse", "combined"]


class MER2023Protocol(NamedTuple):
    """How one MER2023 test split is scored.

    Attributes:
        split: ``test1``, ``test2`` or ``test3``.
        subset: The challenge track name (MER-MULTI, MER-NOISE, MER-SEMI).
        metrics: The metrics reported for the split; the first is the ranking metric.
        uses_valence: Whether valence predictions are scored.
        extra_names: Whether a submission may hold names that are not in the gold file. MER-SEMI (test3) is scored on
            the labelled subset of a test set whose other clips are unlabelled, and its official scorer takes a
            submission that predicts every test3 clip, scoring only the labelled ones; MER-MULTI and MER-NOISE
            (test1/test2) are fully labelled, so a name outside the gold file is an error there.
    """

    split: Mer2023Split
    subset: str
    metrics: tuple[Mer2023Metric, ...]
    uses_valence: bool
    extra_names: bool = False


MER2023_PROTOCOLS: dict[str, MER2023Protocol] = {
    "test1": MER2023Protocol("test1", "MER-MULTI", ("combined", "weighted_f1", "valence_mse"), True),
    "test2": MER2023Protocol("test2", "MER-NOISE", ("combined", "weighted_f1", "valence_mse"), True),
    "test3": MER2023Protocol("test3", "MER-SEMI", ("weighted_f1",), False, extra_names=True),
}
"""test1/test2 rank by ``combined = weighted F1 - 0.25 * valence MSE``; test3 (Emotion-LLaMA's table) by weighted F1.
test3 alone accepts (and counts) predictions for clips outside the labelled gold file."""


class DFEWSample(NamedTuple):
    """One row of a DFEW split CSV."""

    name: str
    label: str


class MER2023Sample(NamedTuple):
    """One row of a MER2023 label CSV; ``valence`` is ``None`` when the file has no valence column."""

    name: str
    discrete: str
    valence: float | None


class EMERSample(NamedTuple):
    """One EMER ground-truth row.

    Attributes:
        name: Sample name.
        reason: The reasoning text (v1 ``reasons``; v2 ``english``).
        version: ``"v1"`` or ``"v2"``, from the header.
        emotions: v1 ``emotions`` column (empty for v2).
        subtitle: v1 ``subtitles`` column (empty for v2).
        chinese: v2 ``chinese`` column (empty for v1).
    """

    name: str
    reason: str
    version: Literal["v1", "v2"]
    emotions: str = ""
    subtitle: str = ""
    chinese: str = ""


class OVSample(NamedTuple):
    """One MER-OV row: a sample and its open-vocabulary emotion words."""

    name: str
    openset: list[str]


class NCEVSample(NamedTuple):
    """One row of a MERR / Emotion-LLaMA list; ``frames`` and ``valence`` are ``None`` when the format lacks them."""

    name: str
    label: str
    frames: int | None = None
    valence: float | None = None


class Prediction(NamedTuple):
    """One row of a prediction CSV: the raw answer (free text or a label) and an optional valence."""

    name: str
    prediction: str
    valence: float | None = None


# --------------------------------------------------------------------------------------------------------------------
# File reading helpers

_Fail = Callable[[int, str, str], NoReturn]
"""Raises the ValueError for (line, problem, fix)."""


def _read_text(path: Path, expected: str) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found; check the path") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory; pass the file inside it") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (bad byte at offset {err.start}); re-save it as UTF-8") from None
    if not text.strip():
        raise ValueError(f"{path}:1: the file is empty; expected {expected}")
    return text


class _Csv:
    """A parsed CSV: its header (lower-cased, stripped) and its non-blank rows with line numbers."""

    def __init__(self, path: str | Path, expected_header: str) -> None:
        self.path = Path(path)
        self.expected = expected_header
        text = _read_text(self.path, f"a CSV with the header '{expected_header}'")
        # strict: an unterminated quote is an error instead of silently swallowing the rest of the file
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        rows: list[tuple[int, list[str]]] = []
        start = 1
        try:
            for cells in reader:
                if cells and any(c.strip() for c in cells):
                    rows.append((start, [c.strip() for c in cells]))
                start = reader.line_num + 1
        except csv.Error as err:
            if "unexpected end of data" in str(err):
                self.fail(start, "a quoted field opened here is never closed (it runs to the end of the file)",
                          "close the quote or remove the stray '\"'")  # fmt: skip
            self.fail(start, f"not valid CSV ({err})", "check the quoting on that line")
        if not rows:
            self.fail(1, "no header", f"the first line must be '{expected_header}'")
        self.header_line, raw_header = rows[0]
        self.header = [c.lower() for c in raw_header]
        self.rows = rows[1:]
        for line, cells in self.rows:
            if len(cells) != len(self.header):
                self.fail(
                    line,
                    f"{len(cells)} fields but the header has {len(self.header)}",
                    "quote fields that contain commas, or fix the row",
                )

    def fail(self, line: int, problem: str, fix: str) -> NoReturn:
        """Raise the ``ValueError`` for ``problem`` on ``line``."""
        raise ValueError(f"{self.path}:{line}: {problem}; {fix}")

    def has(self, *names: str) -> bool:
        return all(n in self.header for n in names)

    def require(self, *names: str) -> list[int]:
        """Return the indices of the columns ``names``, raising if any is missing or the file has no rows."""
        missing = [n for n in names if n not in self.header]
        if missing:
            hint = ""
            if len(self.header) == 1:
                for sep, what in ((";", "semicolon"), ("\t", "tab")):
                    if sep in self.header[0]:
                        hint = f" (the file looks {what}-separated; save it comma-separated)"
            if any(_is_number(c) for c in self.header):
                hint = " (the first line looks like data: the header line seems to be missing)"
            self.fail(
                self.header_line,
                f"missing column(s) {', '.join(missing)} (header is {','.join(self.header)!r}){hint}",
                f"the header must be '{self.expected}'",
            )
        for n in names:
            if self.header.count(n) > 1:
                self.fail(self.header_line, f"duplicate column {n!r} in the header", "keep one column of each name")
        if not self.rows:
            self.fail(self.header_line, "a header but no rows", f"add one row per sample under '{self.expected}'")
        return [self.header.index(n) for n in names]

    def first_of(self, *names: str) -> str | None:
        return next((n for n in names if n in self.header), None)


class _UniqueNames:
    """Checks that sample names are non-empty and unique, remembering where each first appeared."""

    def __init__(self, fail: _Fail) -> None:
        self._fail = fail
        self._first: dict[str, int] = {}

    def add(self, name: str, line: int) -> str:
        if not name:
            self._fail(line, "empty sample name", "fill it in or delete the row")
        if name in self._first:
            self._fail(line, f"duplicate name {name!r} (first on line {self._first[name]})", "keep one row per sample")
        self._first[name] = line
        return name


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _label_lookup(labels: Sequence[str]) -> dict[str, str]:
    return {str(label).lower().strip(): str(label) for label in labels}


def _parse_float(text: str, fail: _Fail, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        fail(line, f"{column} {text!r} is not a number", f"write {column} as a decimal number such as -1.25")
    if not math.isfinite(value):
        fail(line, f"{column} {text!r} is not a finite number", f"write a finite {column}")
    return value


# --------------------------------------------------------------------------------------------------------------------
# DFEW


def dfew_split_path(root: str | Path, fold: int, split: Literal["train", "test"] = "test") -> Path:
    """Path of a DFEW split CSV: ``<root>/EmoLabel_DataSplit/<split>(single-labeled)/set_<fold>.csv``.

    Args:
        root: The DFEW folder, or its ``EmoLabel_DataSplit`` folder.
        fold: Fold 1..5 (Emotion-LLaMA's zero-shot number uses the fold-1 test set).
        split: ``"train"`` or ``"test"``.
    """
    if fold not in DFEW_FOLDS:
        raise ValueError(f"DFEW fold must be one of {DFEW_FOLDS}, got {fold!r}")
    if split not in ("train", "test"):
        raise ValueError(f"DFEW split must be 'train' or 'test', got {split!r}")
    base = Path(root)
    if base.name != "EmoLabel_DataSplit" and (base / "EmoLabel_DataSplit").is_dir():
        base = base / "EmoLabel_DataSplit"
    return base / f"{split}(single-labeled)" / f"set_{fold}.csv"


def read_dfew_split(path: str | Path, labels: Sequence[str] = DFEW_LABELS) -> list[DFEWSample]:
    """Read a DFEW ``EmoLabel_DataSplit`` CSV (``video_name,label``; ``name,label`` is accepted too).

    Args:
        path: The split CSV, e.g. ``EmoLabel_DataSplit/test(single-labeled)/set_1.csv``.
        labels: Class names in index order: label ``i`` in the file is ``labels[i - 1]``.

    Returns:
        One :class:`DFEWSample` per row, in file order, with the label as a class name.
    """
    table = _Csv(path, "video_name,label")
    name_col = table.first_of("video_name", "name") or "video_name"
    i_name, i_label = table.require(name_col, "label")
    names = _UniqueNames(table.fail)
    out: list[DFEWSample] = []
    for line, cells in table.rows:
        name = names.add(cells[i_name], line)
        raw = cells[i_label]
        try:
            index = int(raw)
        except ValueError:
            table.fail(
                line, f"label {raw!r} is not an integer", f"DFEW labels are 1..{len(labels)} ({_legend(labels)})"
            )
        if not 1 <= index <= len(labels):
            hint = " (0 suggests 0-indexed labels; DFEW's are 1-indexed)" if index == 0 else ""
            table.fail(line, f"label {index} is out of range 1..{len(labels)}{hint}", f"use {_legend(labels)}")
        out.append(DFEWSample(name, str(labels[index - 1])))
    return out


def _legend(labels: Sequence[str]) -> str:
    return ", ".join(f"{i} {label}" for i, label in enumerate(labels, start=1))


# --------------------------------------------------------------------------------------------------------------------
# MER2023


def read_mer2023_labels(path: str | Path, labels: Sequence[str] = MER2023_LABELS) -> list[MER2023Sample]:
    """Read a MER2023 label CSV ``name,discrete,valence``.

    The ``valence`` column may be absent (then every ``valence`` is ``None``); when present every cell must be a
    finite number. The unlabelled placeholder ``-10`` (:data:`MER2023_VALENCE_PLACEHOLDER`) is kept as is.

    Args:
        path: The label CSV.
        labels: Allowed ``discrete`` values (case-insensitive; returned in this spelling).

    Returns:
        One :class:`MER2023Sample` per row, in file order.
    """
    table = _Csv(path, "name,discrete,valence")
    i_name, i_disc = table.require("name", "discrete")
    i_val = table.header.index("valence") if table.has("valence") else None
    lookup = _label_lookup(labels)
    names = _UniqueNames(table.fail)
    out: list[MER2023Sample] = []
    for line, cells in table.rows:
        name = names.add(cells[i_name], line)
        label = lookup.get(cells[i_disc].lower())
        if label is None:
            table.fail(line, f"unknown label {cells[i_disc]!r}", f"use one of {', '.join(map(str, labels))}")
        valence = None if i_val is None else _parse_float(cells[i_val], table.fail, line, "valence")
        out.append(MER2023Sample(name, label, valence))
    return out


# --------------------------------------------------------------------------------------------------------------------
# EMER


def read_emer(path: str | Path) -> list[EMERSample]:
    """Read EMER ground truth: v1 ``names,emotions,subtitles,reasons`` or v2 ``name,chinese,english`` (by header).

    Returns:
        One :class:`EMERSample` per row, in file order.
    """
    table = _Csv(path, "names,emotions,subtitles,reasons (EMER v1) or name,chinese,english (EMER v2)")
    names = _UniqueNames(table.fail)
    out: list[EMERSample] = []
    if table.has("names", "reasons"):
        i_name, i_emo, i_sub, i_reason = table.require("names", "emotions", "subtitles", "reasons")
        for line, c in table.rows:
            out.append(EMERSample(names.add(c[i_name], line), c[i_reason], "v1", emotions=c[i_emo], subtitle=c[i_sub]))
    elif table.has("name", "english"):
        i_name, i_chi, i_eng = table.require("name", "chinese", "english")
        for line, c in table.rows:
            out.append(EMERSample(names.add(c[i_name], line), c[i_eng], "v2", chinese=c[i_chi]))
    else:
        table.require("names", "emotions", "subtitles", "reasons")  # raises, naming both accepted headers
    return out


# --------------------------------------------------------------------------------------------------------------------
# MER2024 MER-OV


def read_ov_labels(path: str | Path) -> list[OVSample]:
    """Read a MER-OV CSV ``name,openset`` where ``openset`` is a Python list literal, e.g. ``"['happy', 'calm']"``.

    The list is parsed with :func:`ast.literal_eval` (literals only, nothing is executed). An empty cell gives
    ``[]``. Words are stripped; empty words are dropped.

    Returns:
        One :class:`OVSample` per row, in file order.
    """
    table = _Csv(path, "name,openset")
    i_name, i_set = table.require("name", "openset")
    names = _UniqueNames(table.fail)
    out: list[OVSample] = []
    for line, cells in table.rows:
        name = names.add(cells[i_name], line)
        raw = cells[i_set]
        words: list[str] = []
        if raw:
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                value = None
            if not isinstance(value, (list, tuple)) or not all(isinstance(w, str) for w in value):
                table.fail(line, f"openset {raw!r} is not a list of strings", "write it like \"['happy', 'calm']\"")
            words = [w.strip() for w in value if w.strip()]
        out.append(OVSample(name, words))
    return out


# --------------------------------------------------------------------------------------------------------------------
# MERR / Emotion-LLaMA whitespace lists

_NCEV_COLUMNS = {"ne": 2, "nce": 3, "ncev": 4}


def read_ncev(path: str | Path, fmt: NcevFormat = "auto", labels: Sequence[str] | None = None) -> list[NCEVSample]:
    """Read a whitespace-separated MERR / Emotion-LLaMA list (``MERR_fine_grained.txt``, ``relative_test3_NCEV.txt``).

    Args:
        path: The list file. Rows look like ``sample_00000023 35 angry -1.174107``.
        fmt: ``"ncev"`` (name, frame count, label, valence), ``"nce"`` (no valence), ``"ne"`` (name, label), or
            ``"auto"``, decided per row as Emotion-LLaMA does: 2 columns are N E; 3 or more are N C E [V ...], with
            the name in column 0 and the label in column 2 (columns after V are ignored).
        labels: If given, every label must be one of these (case-insensitive; returned in this spelling).

    Returns:
        One :class:`NCEVSample` per non-blank row, in file order.
    """
    if fmt not in ("auto", *_NCEV_COLUMNS):
        raise ValueError(f"fmt must be one of 'auto', 'ne', 'nce', 'ncev', got {fmt!r}")
    path = Path(path)
    text = _read_text(path, "whitespace-separated rows 'name frames label valence' (or 'name label')")

    def fail(line: int, problem: str, fix: str) -> NoReturn:
        raise ValueError(f"{path}:{line}: {problem}; {fix}")

    lookup = None if labels is None else _label_lookup(labels)
    names = _UniqueNames(fail)
    out: list[NCEVSample] = []
    for line, row in enumerate(text.splitlines(), start=1):
        cols = row.split()
        if not cols:
            continue
        n = len(cols)
        if fmt == "auto":
            if n < 2:
                fail(line, "1 column", "rows need at least 'name label' (N E) or 'name frames label' (N C E)")
        elif n != _NCEV_COLUMNS[fmt]:
            fail(line, f"{n} columns, but fmt={fmt!r} needs {_NCEV_COLUMNS[fmt]}", "fix the row or pass fmt='auto'")
        name = names.add(cols[0], line)
        frames = valence = None
        if n == 2:
            raw_label = cols[1]
        else:
            raw_label = cols[2]
            try:
                frames = int(cols[1])
            except ValueError:
                fail(
                    line, f"frame count {cols[1]!r} is not an integer", "column 2 of an N C E V row is the frame count"
                )
            if n >= 4:
                valence = _parse_float(cols[3], fail, line, "valence")
        label = raw_label
        if lookup is not None:
            label = lookup.get(raw_label.lower())
            if label is None:
                fail(line, f"unknown label {raw_label!r}", f"use one of {', '.join(map(str, labels))}")
        out.append(NCEVSample(name, label, frames, valence))
    return out


# --------------------------------------------------------------------------------------------------------------------
# Predictions


def read_predictions(path: str | Path) -> list[Prediction]:
    """Read a prediction CSV: ``name,prediction`` or ``name,discrete`` with an optional ``valence`` column.

    ``prediction`` / ``discrete`` is kept as written (free text or a label; an empty cell is an empty answer, which
    scores as invalid). An empty ``valence`` cell gives ``None``.

    Returns:
        One :class:`Prediction` per row, in file order.
    """
    table = _Csv(path, "name,prediction (or name,discrete[,valence])")
    if table.has("prediction", "discrete"):
        table.fail(table.header_line, "both 'prediction' and 'discrete' columns", "keep only one of them")
    i_name, i_pred = table.require("name", table.first_of("prediction", "discrete") or "prediction")
    i_val = table.header.index("valence") if table.has("valence") else None
    names = _UniqueNames(table.fail)
    out: list[Prediction] = []
    for line, cells in table.rows:
        name = names.add(cells[i_name], line)
        valence = None
        if i_val is not None and cells[i_val]:
            valence = _parse_float(cells[i_val], table.fail, line, "valence")
        out.append(Prediction(name, cells[i_pred], valence))
    return out
