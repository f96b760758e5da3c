"""Batch analysis: a folder or a list file in, JSONL out, a progress bar, resumable after a kill.

Each result is one line of the output JSONL (an :class:`~emollm.apps.analysis.Analysis` as JSON), appended and fsynced
as soon as it is made, so a killed run loses at most the file in flight; re-running the same command skips the
files already in the output (a line torn by the kill is dropped and redone). A file that fails is reported with its
reason in ``<out>.errors.jsonl`` and on the console, and does not stop the batch; failures are retried by the next
run. Exit status: 0 when every file succeeded, 1 when some failed, 2 when none succeeded.

Under ``torchrun`` / ``accelerate launch`` (:mod:`emollm.jobs.distributed`) each rank analyses its cost-balanced
shard into its own part (``.<out>.parts/rank-NNNNN.jsonl``, appended and fsynced per file); once every rank is done,
rank 0 merges the parts into ``<out>`` in input order — the file one process writes — and the failures into
``<out>.errors.jsonl``. A run with any number of processes (one included) resumes from ``<out>`` and every part left
by a killed run.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emollm.utils.io import atomic_write_text

__all__ = [
    "MEDIA_SUFFIXES",
    "RESULT_KEYS",
    "BatchError",
    "check_results_file",
    "collect_inputs",
    "not_a_results_file",
    "run_batch",
]

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


RESULT_KEYS = ("file", "label", "probabilities", "mode")
"""Keys every line of an ``emollm analyze`` results file has (:meth:`emollm.apps.analysis.Analysis.to_dict`)."""


def not_a_results_file(path: Path) -> str | None:
    """None when ``path`` holds only ``emollm analyze`` results (JSON lines with :data:`RESULT_KEYS`; the last line may
    be torn by a kill, an empty file is fine), else why not (the first offending line), so that a batch resumes only
    from its own records and never rewrites anything else."""
    try:
        with open(path, "rb") as f:
            for i, raw in enumerate(f, 1):  # streamed: a large foreign file is refused at its first line
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    if not raw.endswith(b"\n") and raw.startswith(b'{"file": '):  # a result torn by a kill: redone
                        continue
                    shown = raw[:40].decode("utf-8", "replace").rstrip()
                    return f"line {i} is not JSON ({shown!r}): not an emollm analyze results file"
                if not isinstance(rec, dict) or not all(k in rec for k in RESULT_KEYS):
                    return f"line {i} is not an emollm analyze result (one has {', '.join(RESULT_KEYS)})"
    except OSError as e:
        return f"cannot read it: {e.strerror or e}"
    return None


def check_results_file(
    out: str | os.PathLike[str], inputs: list[Path], *, list_file: str | None = None, overwrite: bool = False
) -> None:
    """Refuse a batch's ``--out`` that would destroy a file: one of the inputs or the ``--list`` file (always), a
    folder, or an existing file that is not an ``emollm analyze`` results file (unless ``overwrite``).

    Raises:
        BatchError: Naming the file, what it is and the fix.
    """
    from emollm.utils.io import check_output_file

    try:
        check_output_file(out, flag="--out", inputs=[*inputs, list_file], overwrite=overwrite, ours=not_a_results_file)
    except ValueError as e:
        raise BatchError(str(e)) from None


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

    from emollm.jobs.distributed import Job, JsonlParts

    job = Job("analyze", unit="file")
    if job.distributed:
        return _run_distributed(job, analyzer, inputs, out, subtitle=subtitle, debug=debug, progress=progress,
                                isolate=isolate)  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = JsonlParts(out, "file")
    if parts.exists():  # a killed data-parallel run: its finished files count as done
        parts.merge_into(list(_read_done(out).items()), [str(p) for p in inputs])
    done = _read_done(out)
    pending = [p for p in inputs if str(p) not in done]
    failures: list[dict[str, str]] = []
    bar = tqdm(
        total=len(inputs), initial=len(inputs) - len(pending), unit="file", disable=not progress, file=sys.stderr
    )
    with open(out, "a", encoding="utf-8") as f:
        ok = _analyse(analyzer, pending, f, bar, failures, subtitle=subtitle, debug=debug, isolate=isolate)
    bar.close()
    errors = out.with_name(out.stem + ".errors.jsonl")
    if failures:
        atomic_write_text(errors, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in failures))
    elif errors.exists():
        errors.unlink()
    resumed = len(inputs) - len(pending)
    return _report(out, len(inputs), ok + resumed, resumed, len(failures), errors)


def _report(out: Path, total: int, total_ok: int, resumed: int, n_failed: int, errors: Path) -> int:
    """The batch's last line(s) on stderr, and its exit status: 0 all done, 1 some failed, 2 none succeeded."""
    print(
        f"emollm analyze: {total_ok}/{total} files analysed into {out}"
        + (f" ({resumed} from an earlier run)" if resumed else "")
        + (f"; {n_failed} failed, reasons in {errors}" if n_failed else ""),
        file=sys.stderr,
    )
    if n_failed and total_ok == 0:
        print("emollm analyze: no file could be analysed", file=sys.stderr)
        return 2
    return 1 if n_failed else 0


def _analyse(analyzer, pending, f, bar, failures, *, subtitle, debug, isolate, job=None, costs=None) -> int:
    """Analyse ``pending`` into the open JSONL ``f`` (a line per file, fsynced); failures are appended to
    ``failures``. Returns how many files succeeded."""
    from emollm.media import MediaError, load_many

    ok = 0
    load_kwargs = getattr(analyzer, "load_kwargs", None)
    if isolate and load_kwargs is not None and pending:
        # Decode in a spawned worker, one file ahead: a decoder that aborts costs its file, not the batch, and
        # decoding the next clip overlaps the analysis of this one.
        decoded = load_many(pending, workers=1, executor="process", **load_kwargs())
    else:
        decoded = ((p, None) for p in pending)
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
            if job is not None:
                job.count(failed=1, cost=(costs or {}).get(str(path), 0.0))
        else:
            f.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            ok += 1
            if job is not None:
                job.count(done=1, cost=(costs or {}).get(str(path), 0.0))
        bar.update(1)
    return ok


def _run_distributed(job, analyzer, inputs, out, *, subtitle, debug, progress, isolate) -> int:
    """One rank's shard of a batch; rank 0 merges every rank's part into ``out`` (see the module docstring)."""
    from emollm.jobs.distributed import JsonlParts, format_summary, media_cost

    out.parent.mkdir(parents=True, exist_ok=True)
    parts = JsonlParts(out, "file")
    keys = [str(p) for p in inputs]
    if len(set(keys)) != len(keys):
        inputs = list(dict.fromkeys(inputs))  # a list file naming a file twice: analysed once, as one process would
        keys = [str(p) for p in inputs]
    existing = list(_read_existing(out).items())
    done = {k for k, _ in existing} | {k for k, _ in parts.read()}
    job.barrier()  # every rank has read what is done before any rank appends
    costs = job.estimate(keys, media_cost)
    mine = job.mine(keys, costs)
    pending = [Path(k) for k in mine if k not in done]
    failures: list[dict[str, str]] = []
    bar = job.progress(len(inputs), initial=sum(k in done for k in keys), desc="analyze", enabled=progress)
    with parts.open(job.rank) as f:
        _analyse(analyzer, pending, f, bar, failures, subtitle=subtitle, debug=debug, isolate=isolate, job=job,
                 costs=costs)  # fmt: skip
        size = f.tell()
    parts.write_errors(job.rank, failures)
    bar.close()  # every rank is done; a rank that died never gets here, and the launcher stops the job
    sizes = job.gather(size)
    rows = job.summary()

    def merge() -> tuple[int, int, int]:
        parts.wait_for(dict(enumerate(sizes)))
        errors = parts.read_errors(range(job.world))
        lines = parts.merge_into(existing, keys)
        finished = {json.loads(line)["file"] for line in lines}
        failed = {e["file"] for e in errors}
        lost = [k for k in keys if k not in finished and k not in failed]
        if lost:
            raise RuntimeError(f"{len(lost)} files are neither in {out} nor failed (first: {lost[0]}); rerun")
        position = {k: i for i, k in enumerate(keys)}
        errors.sort(key=lambda e: position.get(e["file"], len(position)))
        err_file = out.with_name(out.stem + ".errors.jsonl")
        if errors:
            atomic_write_text(err_file, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in errors))
        elif err_file.exists():
            err_file.unlink()
        return sum(k in finished for k in keys), len(errors), len(done & set(keys))

    total_ok, n_failed, resumed = job.on_main(merge)
    if not job.is_main:
        return 0  # rank 0 reports the whole job; the launcher takes its exit status
    print(f"emollm analyze: {job.world} processes ({job.launch.launcher})\n{format_summary(rows, 'file')}",
          file=sys.stderr)  # fmt: skip
    return _report(out, len(inputs), total_ok, resumed, n_failed, out.with_name(out.stem + ".errors.jsonl"))


def _read_existing(out: Path) -> dict[str, str]:
    """:func:`_read_done` without rewriting ``out`` (ranks only read; rank 0's merge rewrites it)."""
    if not out.is_file():
        return {}
    done: dict[str, str] = {}
    for line in out.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            done[str(json.loads(line)["file"])] = line
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return done
