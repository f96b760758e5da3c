"""Batch analysis: a folder or a list file in, JSONL out, a progress bar, resumable after a kill.

Each result is one line of the output JSONL (an :class:`~emollm.apps.analysis.Analysis` as JSON), appended and fsynced
as soon as it is made, so a killed run loses at most the file in flight; re-running the same command skips the
files already in the output (a line torn by the kill is dropped and redone). A file that fails is reported with its
reason in ``<out>.errors.jsonl`` and on the console, and does not stop the batch; failures are retried by the next
run. Exit status: 0 when every file succeeded, 1 when some failed, 2 when none succeeded.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emollm.utils.io import atomic_write_text

__all__ = ["MEDIA_SUFFIXES", "BatchError", "collect_inputs", "run_batch"]

MEDIA_SUFFIXES = frozenset(
    {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".wav", ".mp3", ".flac", ".m4a", ".ogg",
     ".jpg", ".jpeg", ".png", ".bmp", ".webp", ".txt"}
)  # fmt: skip
"""File types a folder batch picks up (others are listed as skipped)."""


class BatchError(ValueError):
    """A batch cannot start (bad folder or list file); the message names it and the fix."""


def _walk(folder: Path, skipped: list[str], seen: set[Path]) -> list[Path]:
    out = []
    real = folder.resolve()
    if real in seen:
        skipped.append(f"{folder}: symlink loop (already visited {real})")
        return out
    seen.add(real)
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            out += _walk(entry, skipped, seen)
        elif entry.is_file() and entry.suffix.lower() in MEDIA_SUFFIXES:
            out.append(entry)
        elif entry.name.startswith("."):
            continue
        else:
            kind = "not a regular file" if not entry.is_file() else f"unsupported type {entry.suffix or '(none)'}"
            skipped.append(f"{entry}: {kind}")
    return out


def collect_inputs(media: str | None, list_file: str | None, *, skipped: list[str] | None = None) -> list[Path]:
    """The files to analyse: one file, every media file under a folder (sorted), or the lines of a list file.

    Args:
        media: A file or a folder.
        list_file: A text file with one path per line (blank lines and ``#`` comments ignored; relative paths are
            relative to the list file's folder).
        skipped: Receives a line for each folder entry that is not analysed (unsupported type, symlink loop).

    Raises:
        BatchError: Neither given or both, an empty folder or list, a missing list file.
    """
    skipped = skipped if skipped is not None else []
    if (media is None) == (list_file is None):
        raise BatchError("give one media file, a folder, or --list FILE (one path per line)")
    if list_file is not None:
        path = Path(list_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise BatchError(
                f"--list {path}: cannot read it ({e}); give a UTF-8 text file, one path per line"
            ) from None
        items = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        if not items:
            raise BatchError(f"--list {path}: no paths in it; write one media path per line")
        return [p if (p := Path(i)).is_absolute() else path.parent / p for i in items]
    path = Path(media)
    if path.is_dir():
        files = _walk(path, skipped, set())
        if not files:
            raise BatchError(f"{path}: no media files in this folder (looked for {', '.join(sorted(MEDIA_SUFFIXES))})")
        return files
    return [path]


def _read_done(out: Path) -> dict[str, str]:
    """Files already in ``out`` -> their line; a torn last line is dropped (and the file rewritten without it)."""
    if not out.is_file():
        return {}
    done: dict[str, str] = {}
    lines = out.read_text(encoding="utf-8", errors="replace").splitlines()
    torn = False
    for line in lines:
        try:
            rec = json.loads(line)
            done[str(rec["file"])] = line
        except (json.JSONDecodeError, KeyError, TypeError):
            torn = True
    if torn:
        atomic_write_text(out, "".join(v + "\n" for v in done.values()))
    return done


def run_batch(
    analyzer: Callable[..., Any],
    inputs: list[Path],
    out: Path,
    *,
    subtitle: str | None = None,
    debug: bool = False,
    progress: bool = True,
    isolate: bool = True,
) -> int:
    """Analyse ``inputs`` into ``out`` (JSONL), resuming what is there.

    Args:
        analyzer: ``analyzer(path, subtitle=..., [media=...]) -> Analysis``; when it has ``load_kwargs()`` and
            ``isolate`` is on, files are decoded in a separate process (a decoder crash costs one file).
        inputs: Files in order.
        out: The results JSONL.
        subtitle: A transcript for every file (rarely useful in a batch).
        debug: Raise instead of recording a failure.
        progress: Show a progress bar.
        isolate: Decode in a child process (see ``analyzer``).

    Returns:
        0 when every file succeeded, 1 when some failed, 2 when none succeeded.
    """
    from tqdm import tqdm

    from emollm.media import MediaError, load_many

    out.parent.mkdir(parents=True, exist_ok=True)
    done = _read_done(out)
    pending = [p for p in inputs if str(p) not in done]
    failures: list[dict[str, str]] = []
    ok = 0
    bar = tqdm(
        total=len(inputs), initial=len(inputs) - len(pending), unit="file", disable=not progress, file=sys.stderr
    )
    load_kwargs = getattr(analyzer, "load_kwargs", None)
    if isolate and load_kwargs is not None and pending:
        # Decode in a spawned worker, one file ahead: a decoder that aborts costs its file, not the batch, and
        # decoding the next clip overlaps the analysis of this one.
        decoded = load_many(pending, workers=1, executor="process", **load_kwargs())
    else:
        decoded = ((p, None) for p in pending)
    with open(out, "a", encoding="utf-8") as f:
        for path_str, media in decoded:
            path = Path(path_str)
            bar.set_postfix_str(path.name[:40])
            try:
                if isinstance(media, MediaError):
                    raise media
                result = analyzer(path, subtitle=subtitle, **({"media": media} if media is not None else {}))
            except (OSError, ValueError, ImportError, RuntimeError, MediaError) as e:
                if debug:
                    raise
                failures.append({"file": str(path), "error": f"{type(e).__name__}: {e}"})
                bar.write(f"failed: {e}" if str(e).startswith(str(path)) else f"failed: {path}: {e}")
            else:
                f.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
                ok += 1
            bar.update(1)
    bar.close()
    errors = out.with_name(out.stem + ".errors.jsonl")
    if failures:
        atomic_write_text(errors, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in failures))
    elif errors.exists():
        errors.unlink()
    resumed = len(inputs) - len(pending)
    total_ok = ok + resumed
    print(
        f"emollm analyze: {total_ok}/{len(inputs)} files analysed into {out}"
        + (f" ({resumed} from an earlier run)" if resumed else "")
        + (f"; {len(failures)} failed, reasons in {errors}" if failures else ""),
        file=sys.stderr,
    )
    if failures and total_ok == 0:
        print("emollm analyze: no file could be analysed", file=sys.stderr)
        return 2
    return 1 if failures else 0
