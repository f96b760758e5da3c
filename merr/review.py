"""Human-in-the-loop refinement (MERR stage 6): export doubtful samples to CSV, import the reviewer's labels.

Export (:func:`export_review`) reads the build's ``samples.jsonl`` and writes a CSV with the columns
:data:`REVIEW_COLUMNS`::

    name,pseu_emotion,reasoning,confidence,issue,corrected_label,reviewer,reviewed_at

Rows: every *flagged* sample (contradictory, missing or empty reasoning, or a reasoning that also concludes other
labels) ordered by confidence, then the least confident of the rest, up to ``limit`` rows. ``corrected_label``,
``reviewer`` and ``reviewed_at`` are blank, or hold an earlier correction.

The reviewer fills ``corrected_label`` with a label of the vocabulary, or ``drop`` to exclude the sample; blank
rows are ignored. Import (:func:`import_review`) validates every row (unknown name or label, bad timestamp -> an
error naming ``file:line``; nothing is written), fills ``reviewer`` (the row's, else ``--reviewer``, else the login
name) and ``reviewed_at`` (the row's ISO-8601 time, else now, UTC), and merges the result into
``<output>/review/corrections.json`` (a later import wins for the same name). Every later ``emollm merr build`` uses
the corrected labels: the label of the record, the prompt of its reasoning (so it is regenerated for the new
label) and its confidence (1.0).

Labels can also be imported from Emotion-LLaMA's released files (``MERR_*_grained.json``: ``pseu_emotion``; ``N C E
V`` / ``N E`` lists: ``E``) with :func:`import_labels_file`, e.g. to reuse human annotations.
"""

from __future__ import annotations

import csv
import getpass
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from emollm.utils.io import atomic_write_text

__all__ = [
    "DROP",
    "REVIEW_COLUMNS",
    "Correction",
    "export_review",
    "import_labels_file",
    "import_review",
    "load_corrections",
    "read_review_csv",
    "save_corrections",
    "select_for_review",
]

REVIEW_COLUMNS: tuple[str, ...] = (
    "name",
    "pseu_emotion",
    "reasoning",
    "confidence",
    "issue",
    "corrected_label",
    "reviewer",
    "reviewed_at",
)
DROP = "drop"
"""``corrected_label`` value that excludes a sample from every export."""


@dataclass(frozen=True)
class Correction:
    """One reviewer decision."""

    name: str
    label: str
    """A vocabulary label, or :data:`DROP`."""
    reviewer: str
    reviewed_at: str
    """ISO 8601, UTC (``2026-11-22T10:15:00Z``)."""
    previous: str | None = None
    """The label the reviewer saw."""
    source: str = ""
    """File the correction was imported from."""


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso(value: str, loc: str) -> str:
    text = value.strip()
    try:
        dt = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise ValueError(f"{loc}: reviewed_at {value!r} is not an ISO 8601 time (e.g. 2026-11-22T10:15:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------------------------ export


def read_samples(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a build's ``samples.jsonl``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no samples.jsonl; run `emollm merr build` first")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def select_for_review(samples: Iterable[Mapping[str, Any]], limit: int) -> list[Mapping[str, Any]]:
    """Flagged samples first (lowest confidence first), then the least confident others; at most ``limit``."""
    labelled = [s for s in samples if s.get("label")]
    flagged = sorted((s for s in labelled if s.get("flagged")), key=lambda s: (s.get("confidence", 0.0), s["name"]))
    rest = sorted((s for s in labelled if not s.get("flagged")), key=lambda s: (s.get("confidence", 0.0), s["name"]))
    return (flagged + rest)[: max(0, limit)]


def export_review(
    samples_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    limit: int = 100,
    corrections: Mapping[str, Correction] | None = None,
) -> int:
    """Write the review CSV; returns the number of rows."""
    rows = select_for_review(read_samples(samples_path), limit)
    corrections = corrections or {}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(REVIEW_COLUMNS)
    for s in rows:
        c = corrections.get(s["name"])
        w.writerow(
            [
                s["name"],
                s.get("au_label") or s.get("label") or "",
                s.get("reasoning") or "",
                f"{float(s.get('confidence', 0.0)):.4f}",
                s.get("issue") or "",
                c.label if c else "",
                c.reviewer if c else "",
                c.reviewed_at if c else "",
            ]
        )
    atomic_write_text(out, buf.getvalue())
    return len(rows)


# ------------------------------------------------------------------------------------------------------ import


def read_review_csv(
    path: str | os.PathLike[str],
    labels: Sequence[str],
    *,
    reviewer: str | None = None,
    known_names: Iterable[str] | None = None,
    now: str | None = None,
) -> list[Correction]:
    """Corrections from a filled-in review CSV (rows with an empty ``corrected_label`` are skipped).

    Raises:
        ValueError: missing columns, unknown label or name, duplicate name, bad timestamp (names ``file:line``).
    """
    path = Path(path)
    allowed = set(labels) | {DROP}
    known = None if known_names is None else set(known_names)
    default_reviewer = reviewer or _login()
    stamp = now or _now()
    out: list[Correction] = []
    seen: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in ("name", "corrected_label") if c not in header]
        if missing:
            raise ValueError(f"{path}:1: missing column(s) {missing}; expected the header {','.join(REVIEW_COLUMNS)}")
        for row in reader:
            row = {(k or "").strip(): (v or "") for k, v in row.items()}
            loc = f"{path}:{reader.line_num}"
            label = row.get("corrected_label", "").strip()
            if not label:
                continue
            name = row.get("name", "").strip()
            if not name:
                raise ValueError(f"{loc}: empty name")
            if label not in allowed:
                raise ValueError(f"{loc}: corrected_label {label!r} for {name!r} is not one of {sorted(allowed)}")
            if known is not None and name not in known:
                raise ValueError(f"{loc}: unknown sample {name!r} (not in this build's samples.jsonl)")
            if name in seen:
                raise ValueError(f"{loc}: {name!r} corrected twice (first on line {seen[name]}); keep one row")
            seen[name] = reader.line_num
            when = _iso(row["reviewed_at"], loc) if row.get("reviewed_at", "").strip() else stamp
            who = row.get("reviewer", "").strip() or default_reviewer
            previous = row.get("pseu_emotion", "").strip() or None
            out.append(Correction(name, label, who, when, previous, path.name))
    return out


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers): still record something
        return "unknown"


def import_labels_file(
    path: str | os.PathLike[str],
    labels: Sequence[str],
    *,
    reviewer: str | None = None,
    known_names: Iterable[str] | None = None,
    now: str | None = None,
) -> list[Correction]:
    """Labels from Emotion-LLaMA's MERR JSON (``pseu_emotion``) or a ``N C E V`` / ``N E`` list, as corrections.

    Names not in ``known_names`` are skipped (a released file covers far more clips than one build).
    """
    from emollm.data.merr_files import read_label_txt, read_merr_json

    path = Path(path)
    if path.suffix.lower() == ".json":
        pairs = [(r.name, r.pseu_emotion) for r in read_merr_json(path, "auto") if r.pseu_emotion]
    else:
        pairs = [(r.name, r.label) for r in read_label_txt(path, "auto")]
    known = None if known_names is None else set(known_names)
    bad = sorted({lab for _, lab in pairs if lab not in set(labels)})
    if bad:
        raise ValueError(f"{path}: labels {bad} are not in the vocabulary {list(labels)}")
    who, when = reviewer or f"import:{path.name}", now or _now()
    return [Correction(n, lab, who, when, None, path.name) for n, lab in pairs if known is None or n in known]


def load_corrections(path: str | os.PathLike[str]) -> dict[str, Correction]:
    """Stored corrections (empty when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("corrections"), dict):
        raise ValueError(f"{path}: not a corrections file (expected {{'corrections': {{name: ...}}}})")
    return {
        name: Correction(name=name, **{k: v for k, v in c.items() if k != "name"})
        for name, c in data["corrections"].items()
    }


def save_corrections(path: str | os.PathLike[str], corrections: Mapping[str, Correction]) -> Path:
    """Write corrections atomically (sorted by name)."""
    body = {
        "format": "emollm-merr-corrections",
        "version": 1,
        "corrections": {n: {k: v for k, v in asdict(c).items() if k != "name"} for n, c in sorted(corrections.items())},
    }
    return atomic_write_text(path, json.dumps(body, indent=2, ensure_ascii=False) + "\n")


def import_review(
    review_file: str | os.PathLike[str],
    corrections_path: str | os.PathLike[str],
    labels: Sequence[str],
    *,
    reviewer: str | None = None,
    known_names: Iterable[str] | None = None,
    now: str | None = None,
) -> tuple[int, int]:
    """Merge a review CSV (or an Emotion-LLaMA JSON/TXT label file) into the corrections file.

    Returns:
        (corrections imported now, corrections stored in total).
    """
    review_file = Path(review_file)
    if review_file.suffix.lower() in (".json", ".txt"):
        new = import_labels_file(review_file, labels, reviewer=reviewer, known_names=known_names, now=now)
    else:
        new = read_review_csv(review_file, labels, reviewer=reviewer, known_names=known_names, now=now)
    stored = load_corrections(corrections_path)
    stored.update({c.name: c for c in new})
    save_corrections(corrections_path, stored)
    return len(new), len(stored)
