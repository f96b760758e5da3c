"""Readers and writers for Emotion-LLaMA's MERR files.

============================== ==========================================================================
file                           layout
============================== ==========================================================================
``MERR_coarse_grained.json``   ``{stem: {AU_list, visual_prior_list, audio_prior_list, peak_index (str),
                               peak_AU_list, pseu_emotion, caption}}``
``MERR_fine_grained.json``     same, with ``smp_reason_caption`` + ``text`` instead of ``caption``
``*.txt`` label lists          whitespace ``N C E V`` (``sample_00000023 35 angry -1.174107``), also ``N C E``
                               and ``N E``
``transcription_en_all.csv``   ``name,sentence``; names are read as strings (DFEW ids are numeric)
videos                         ``<root>/<name>.mp4``, else ``<root>/<name>.avi``
============================== ==========================================================================

Writers are atomic: they write a temporary file in the target directory, fsync it and ``os.replace`` it over the
target, so a crash never leaves a half-written file. Readers validate and raise ``ValueError`` naming
``file:line`` and the fix.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from emollm.data.merr_schema import LabelRow, MERRKind, MERRRecord
from emollm.utils.io import atomic_write_text, read_user_text

__all__ = [
    "VIDEO_EXTENSIONS",
    "find_video",
    "read_label_txt",
    "read_merr_json",
    "read_transcriptions_csv",
    "write_label_txt",
    "write_merr_json",
    "write_transcriptions_csv",
]

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi")
TxtFormat = Literal["auto", "ne", "nce", "ncev"]
_TXT_COLUMNS = {"ne": 2, "nce": 3, "ncev": 4}


# ---------------------------------------------------------------------------------------------------------- JSON


def write_merr_json(
    path: str | os.PathLike[str],
    records: Iterable[MERRRecord],
    kind: MERRKind,
    *,
    include_extras: bool = False,
) -> Path:
    """Write ``MERR_coarse_grained.json`` (``kind="coarse"``) or ``MERR_fine_grained.json`` (``"fine"``).

    Emotion-LLaMA's layout: a dict keyed by video stem, 4-space indent, UTF-8 (not ASCII-escaped). Our extras
    go under ``"emollm"`` only with ``include_extras=True``.

    Raises:
        ValueError: duplicate names or a record missing a field the file needs (nothing is written).
    """
    out: dict[str, Any] = {}
    for rec in records:
        if rec.name in out:
            raise ValueError(f"duplicate record name {rec.name!r}; names (video stems) must be unique")
        out[rec.name] = rec.to_emotion_llama(kind, include_extras=include_extras)
    return atomic_write_text(path, json.dumps(out, indent=4, ensure_ascii=False) + "\n")


def _json_key_line(text: str, key: str) -> int | None:
    for enc in {json.dumps(key, ensure_ascii=False), json.dumps(key)}:
        m = re.search(re.escape(enc) + r"\s*:", text)
        if m:
            return text.count("\n", 0, m.start()) + 1
    return None


def _no_duplicates(path: Path, text: str):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for k, v in pairs:
            if k in seen:
                line = _json_key_line(text, k)
                loc = f"{path}:{line}" if line else str(path)
                raise ValueError(f"{loc}: duplicate key {k!r}; each video stem / field may appear once (remove one)")
            seen[k] = v
        return seen

    return hook


def read_merr_json(path: str | os.PathLike[str], kind: MERRKind | Literal["auto"] = "auto") -> list[MERRRecord]:
    """Read an Emotion-LLaMA MERR JSON (coarse or fine), in file order.

    Args:
        path: the JSON file.
        kind: ``"coarse"`` requires ``caption`` in every record, ``"fine"`` requires ``smp_reason_caption``,
            ``"auto"`` requires neither.

    Raises:
        FileNotFoundError: no such file.
        ValueError: invalid JSON, wrong layout, duplicate keys, or a bad value (names ``file:line`` and the key).
    """
    path = Path(path)
    if kind not in ("auto", "coarse", "fine"):
        raise ValueError(f"kind must be 'auto', 'coarse' or 'fine', got {kind!r}")
    text = read_user_text(path, "MERR JSON")
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates(path, text))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}:{e.colno}: invalid JSON ({e.msg}); fix the file or re-export it") from None
    if not isinstance(data, dict):
        raise ValueError(
            f'{path}:1: expected a JSON object keyed by video stem ({{"sample_00000023": {{...}}}}), '
            f"got {type(data).__name__}; is this a MERR_*_grained.json?"
        )
    need = {"coarse": "caption", "fine": "smp_reason_caption"}.get(kind)
    records = []
    for name, entry in data.items():
        line = _json_key_line(text, name)
        loc = f"{path}:{line}" if line else str(path)
        try:
            if not name:
                raise ValueError("empty video name as key")
            rec = MERRRecord.from_emotion_llama(name, entry)
        except ValueError as e:
            raise ValueError(f"{loc}: record {name!r}: {e}; fix the value (see REFERENCE.md §1.6)") from None
        if need and getattr(rec, need) is None:
            raise ValueError(
                f"{loc}: record {name!r} has no {need!r}, required for a {kind}-grained file; "
                f"pass kind='auto' or the other kind if this is the other file"
            )
        records.append(rec)
    return records


# ----------------------------------------------------------------------------------------------------------- TXT


def _fmt_float(v: float) -> str:
    s = repr(float(v))
    return s[:-2] if s.endswith(".0") else s


def write_label_txt(path: str | os.PathLike[str], rows: Iterable[LabelRow | MERRRecord], columns: str = "NCEV") -> Path:
    """Write a whitespace label list: ``columns`` is ``"NCEV"`` (default), ``"NCE"`` or ``"NE"``.

    ``MERRRecord`` rows are converted with :meth:`~emollm.data.merr_schema.MERRRecord.label_row`.

    Raises:
        ValueError: bad ``columns``, a missing C/V value, or whitespace inside a name/label.
    """
    cols = columns.upper()
    if cols not in ("NE", "NCE", "NCEV"):
        raise ValueError(f"columns must be 'NCEV', 'NCE' or 'NE', got {columns!r}")
    lines = []
    for row in rows:
        if isinstance(row, MERRRecord):
            row = row.label_row()
        for what, value in (("name", row.name), ("label", row.label)):
            if not isinstance(value, str) or not value or any(c.isspace() for c in value):
                raise ValueError(
                    f"{what} {value!r} of {row.name!r} is empty or has whitespace; a TXT list can't hold it"
                )
        parts = [row.name]
        if "C" in cols:
            if row.frame_count is None:
                raise ValueError(f"{row.name!r} has no frame_count; needed for {cols} (or write columns='NE')")
            parts.append(str(int(row.frame_count)))
        parts.append(row.label)
        if "V" in cols:
            if row.valence is None:
                raise ValueError(f"{row.name!r} has no valence; needed for NCEV (use -10 as placeholder, or 'NCE')")
            parts.append(_fmt_float(row.valence))
        lines.append(" ".join(parts))
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_label_txt(
    path: str | os.PathLike[str], fmt: TxtFormat = "auto", *, labels: Iterable[str] | None = None
) -> list[LabelRow]:
    """Read a whitespace label list (``N C E V``, ``N C E`` or ``N E``); blank lines are skipped.

    Args:
        path: the TXT file.
        fmt: ``"auto"`` picks per line from the column count (2 = N E, 3 = N C E, 4 = N C E V); otherwise every
            line must have exactly that layout.
        labels: if given, every label must be one of these (e.g. :data:`emollm.data.merr_schema.LABELS`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: wrong column count, non-integer C, non-numeric V, unknown label or duplicate name
            (message names ``file:line``).
    """
    path = Path(path)
    if fmt not in ("auto", *_TXT_COLUMNS):
        raise ValueError(f"fmt must be one of 'auto', 'ne', 'nce', 'ncev', got {fmt!r}")
    allowed = set(labels) if labels is not None else None
    rows: list[LabelRow] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(io.StringIO(read_user_text(path, "label list"), newline=None), start=1):
        parts = raw.split()
        if not parts:
            continue
        loc = f"{path}:{lineno}"
        n = len(parts)
        want = _TXT_COLUMNS.get(fmt)
        if (want is not None and n != want) or not 2 <= n <= 4:
            layout = {2: "N E", 3: "N C E", 4: "N C E V"}.get(want or 0, "N E / N C E / N C E V")
            raise ValueError(
                f"{loc}: expected {layout} ({want or '2-4'} whitespace-separated columns), got {n}: {raw.strip()!r}"
                + ("; pass fmt='auto' to accept mixed layouts" if want else "; fix the line")
            )
        name, count, valence = parts[0], None, None
        label = parts[1] if n == 2 else parts[2]
        if n >= 3:
            try:
                count = int(parts[1])
            except ValueError:
                raise ValueError(
                    f"{loc}: frame count (column 2) must be an integer, got {parts[1]!r}; fix the line"
                ) from None
        if n == 4:
            try:
                valence = float(parts[3])
            except ValueError:
                msg = f"{loc}: valence (column 4) must be a number, got {parts[3]!r}; fix the line"
                raise ValueError(msg) from None
            if not math.isfinite(valence):  # nan would poison every valence MSE it enters
                raise ValueError(f"{loc}: valence (column 4) must be a finite number, got {parts[3]!r}; fix the line")
        if allowed is not None and label not in allowed:
            raise ValueError(f"{loc}: unknown label {label!r}; expected one of {sorted(allowed)}")
        if name in seen:
            raise ValueError(f"{loc}: duplicate name {name!r} (first on line {seen[name]}); remove one")
        seen[name] = lineno
        rows.append(LabelRow(name, label, count, valence))
    return rows


# ----------------------------------------------------------------------------------------------------------- CSV


def write_transcriptions_csv(
    path: str | os.PathLike[str], sentences: Mapping[str, str] | Iterable[tuple[str, str]]
) -> Path:
    """Write ``transcription_en_all.csv`` (columns ``name,sentence``; quoting only where needed)."""
    items = list(sentences.items()) if isinstance(sentences, Mapping) else list(sentences)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "sentence"])
    seen = set()
    for name, sentence in items:
        if not isinstance(name, str) or not name:
            raise ValueError(f"transcription names must be non-empty strings, got {name!r}")
        if name in seen:
            raise ValueError(f"duplicate transcription name {name!r}")
        seen.add(name)
        w.writerow([name, "" if sentence is None else sentence])
    return atomic_write_text(path, buf.getvalue())


def read_transcriptions_csv(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read ``transcription_en_all.csv`` into ``{name: sentence}``; names stay strings (``"00012"``).

    Extra columns are ignored. Raises ``ValueError`` (naming ``file:line``) for a missing ``name``/``sentence``
    column, a short row, an empty name or a duplicate name.
    """
    path = Path(path)
    text = read_user_text(path, "transcript CSV")
    try:
        return _read_transcriptions(path, csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise ValueError(f"{path}: not a valid CSV ({e}); check its quoting") from None


def _read_transcriptions(path: Path, reader) -> dict[str, str]:
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{path}:1: empty file; expected a 'name,sentence' header")
    cols = [h.strip().lower() for h in header]
    if "name" not in cols or "sentence" not in cols:
        raise ValueError(
            f"{path}:1: header {cols} lacks 'name' and/or 'sentence'; the file needs columns name,sentence"
        )
    i_name, i_sent = cols.index("name"), cols.index("sentence")
    line = reader.line_num
    for row in reader:
        start, line = line + 1, reader.line_num
        if not any(c.strip() for c in row):
            continue
        if len(row) <= max(i_name, i_sent):
            raise ValueError(f"{path}:{start}: row has {len(row)} fields, header has {len(cols)}; fix the row")
        name = row[i_name].strip()
        if not name:
            raise ValueError(f"{path}:{start}: empty name; every row needs the video stem in 'name'")
        if name in out:
            first = first_line[name]
            raise ValueError(f"{path}:{start}: duplicate name {name!r} (first on line {first}); remove one")
        out[name] = row[i_sent]
        first_line[name] = start
    return out


# --------------------------------------------------------------------------------------------------------- video


def find_video(root: str | os.PathLike[str], name: str, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> Path:
    """The video of ``name`` under ``root``: ``<name>.mp4`` first, then ``<name>.avi`` (Emotion-LLaMA's order).

    Raises:
        TypeError: ``name`` is not a string (numeric ids must stay strings: ``"00012"`` != ``12``).
        FileNotFoundError: none exists (the message lists the paths tried).
    """
    if not isinstance(name, str):
        raise TypeError(f"video name must be a string (keep numeric ids as text), got {type(name).__name__} {name!r}")
    root = Path(root)
    tried = [root / f"{name}{ext}" for ext in extensions]
    for p in tried:
        if p.is_file():
            return p
    raise FileNotFoundError(f"no video for {name!r}: tried {', '.join(map(str, tried))}")
