"""Per-item, per-stage cached artifacts: what makes a long batch job resumable and its settings changes cheap.

A job runs *stages* (``"au"``, ``"audio"``, ...) over *items* (clips). Each stage of each item is one small JSON
*artifact* ``<root>/<stage>/<name>.json`` that records the *key* it was computed under::

    {"key": "...", "name": "clip_01", "stage": "audio", "ok": true, "result": <JSON value>}
    {"key": "...", "name": "clip_02", "stage": "audio", "ok": false, "error": {"type": "...", "message": "..."}}

The caller makes the key: typically ``stable_hash([stage, stable_hash(stage settings), input fingerprints,
upstream values used])``, so changing a setting invalidates exactly the stages it feeds. :meth:`StageCache.run`
reuses an artifact whose key matches and computes the others (in threads when allowed); a failing item becomes an
error artifact instead of stopping the run (``retry_errors=True`` recomputes those).

Artifacts are written atomically without fsync (:mod:`emollm.utils.io`): a killed process leaves a whole artifact
or none, and an artifact torn by a power cut fails to parse and counts as missing. So a SIGKILL at any point loses
at most the items in flight; :func:`remove_temp_files` sweeps the writers' leftover temp files and :class:`RunLock`
keeps two live runs out of one folder while taking over a lock a dead process left.

Input files are keyed by :func:`file_fingerprint` (whole-file sha256 up to 4 MiB, else size + first and last MiB),
memoised by ``(path, size, mtime_ns)`` in a :class:`FingerprintIndex` so a resume does not re-read a large pool.

Example:
    >>> import tempfile, pathlib
    >>> cache = StageCache(pathlib.Path(tempfile.mkdtemp()))
    >>> arts = cache.run("square", [StageJob("a", stable_hash(["square", 3]), lambda: 3 * 3)], thread_safe=True)
    >>> arts["a"]["result"], cache.stats["square"].computed
    (9, 1)
    >>> _ = cache.run("square", [StageJob("a", stable_hash(["square", 3]), lambda: 3 * 3)], thread_safe=True)
    >>> cache.stats["square"].cached
    1
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from emollm.utils.io import atomic_write_json

__all__ = [
    "FingerprintIndex",
    "RunLock",
    "StageCache",
    "StageJob",
    "StageStats",
    "file_fingerprint",
    "file_sha256",
    "remove_temp_files",
    "stable_hash",
    "write_json_compact",
]

log = logging.getLogger(__name__)

Artifact = dict[str, Any]

_FULL_HASH_LIMIT = 4 << 20
_CHUNK = 1 << 20


# ================================================================================================ hashing


def stable_hash(obj: Any) -> str:
    """sha256 hex digest of ``obj`` as canonical JSON (sorted keys, non-JSON values via ``str``).

    Args:
        obj: Any JSON-like value (settings dicts, lists of fingerprints, ...).

    Returns:
        64 hex characters, equal for equal values regardless of dict order.
    """
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a whole file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """Content fingerprint of a file, cheap for large ones.

    Args:
        path: The file.

    Returns:
        sha256 of the size and the whole content up to 4 MiB, else of the size and the first and last MiB.
    """
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= _FULL_HASH_LIMIT:
            h.update(f.read())
        else:
            h.update(f.read(_CHUNK))
            f.seek(size - _CHUNK)
            h.update(f.read(_CHUNK))
    return h.hexdigest()


def write_json_compact(path: str | os.PathLike[str], obj: Any, *, fsync: bool = False) -> Path:
    """Compact, key-sorted JSON written atomically (cache artifacts: no fsync unless asked).

    Args:
        path: Target file (parents are created).
        obj: JSON-serialisable value.
        fsync: Make the write durable (outputs); artifacts skip it, their readers treat a torn file as missing.

    Returns:
        ``path`` as a Path.
    """
    return atomic_write_json(path, obj, indent=None, sort_keys=True, fsync=fsync)


class FingerprintIndex:
    """:func:`file_fingerprint` memoised by ``(path, size, mtime_ns)`` in one JSON file.

    A resumed run over a large pool then reads each file's bytes once, not on every run; a changed size or mtime
    re-hashes the file. An unreadable index starts empty.

    Args:
        path: The index file (e.g. ``<cache>/fingerprints.json``); written by :meth:`save`.
    """

    def __init__(self, path: Path):
        self.path = path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            self.entries: dict[str, list[Any]] = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            self.entries = {}
        self.dirty = False

    def get(self, file: Path) -> str:
        """The fingerprint of ``file`` (hashed now if unknown or changed)."""
        st = file.stat()
        key = str(file.resolve())
        hit = self.entries.get(key)
        if isinstance(hit, list) and len(hit) == 3 and hit[:2] == [st.st_size, st.st_mtime_ns]:
            return str(hit[2])
        fp = file_fingerprint(file)
        self.entries[key] = [st.st_size, st.st_mtime_ns, fp]
        self.dirty = True
        return fp

    def save(self) -> None:
        """Write the index (atomically) if it changed."""
        if self.dirty:
            write_json_compact(self.path, self.entries)
            self.dirty = False


# ================================================================================================ the cache


@dataclass
class StageStats:
    """Per-stage counters of one run."""

    computed: int = 0
    """Items whose result was produced (and cached) in this run."""
    cached: int = 0
    """Items whose cached result was reused."""
    instant: int = 0
    """Items of a stage not worth caching (``cacheable=False``), answered again every run."""
    errors: int = 0
    """Items whose stage failed (cached failures included)."""


class StageJob(NamedTuple):
    """One item of one stage: its name, its cache key, and how to compute its JSON-ready result."""

    name: str
    key: str
    compute: Callable[[], Any]


class StageCache:
    """Artifacts ``<root>/<stage>/<name>.json`` keyed by the caller's cache keys (module docstring).

    Args:
        root: The cache folder.
        workers: Threads for stages that allow them (``thread_safe=True``); 1 runs everything in the caller.
        progress: Show a tqdm bar per stage.
        label: Prefix of the bar text and of worker thread names (``"merr"`` -> ``"merr audio"``).

    Attributes:
        stats: Stage -> :class:`StageStats` of this object's runs.
    """

    def __init__(self, root: str | os.PathLike[str], *, workers: int = 1, progress: bool = False, label: str = ""):
        self.root = Path(root)
        self.workers = workers
        self.progress = progress
        self.label = label
        self.stats: dict[str, StageStats] = defaultdict(StageStats)

    def path(self, stage: str, name: str) -> Path:
        """Where the artifact of ``name`` at ``stage`` lives."""
        return self.root / stage / f"{name}.json"

    def load(self, stage: str, name: str, key: str, *, retry_errors: bool = False) -> Artifact | None:
        """The stored artifact if it parses and carries ``key``, else None (missing, torn, stale).

        Args:
            stage: Stage name.
            name: Item name.
            key: The key the artifact must have been computed under.
            retry_errors: Treat a stored error artifact as missing.
        """
        try:
            art = json.loads(self.path(stage, name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(art, dict) or art.get("key") != key:
            return None
        if retry_errors and not art.get("ok"):
            return None
        return art

    def compute(self, stage: str, job: StageJob, *, store: bool = True) -> Artifact:
        """Run one job into an artifact (an error artifact if it raises), stored unless ``store`` is False.

        ``KeyboardInterrupt`` and ``SystemExit`` propagate; any other exception is recorded.
        """
        name, key, fn = job
        try:
            art = {"key": key, "name": name, "stage": stage, "ok": True, "result": fn()}
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # one bad item never stops the run: it becomes an error artifact
            log.debug("%s failed on %s", stage, name, exc_info=True)
            art = {
                "key": key,
                "name": name,
                "stage": stage,
                "ok": False,
                "error": {"type": type(e).__name__, "message": str(e)},
            }
        if store:
            write_json_compact(self.path(stage, name), art)
        return art

    def run(
        self,
        stage: str,
        jobs: Iterable[StageJob | tuple[str, str, Callable[[], Any]]],
        *,
        thread_safe: bool,
        cacheable: bool = True,
        retry_errors: bool = False,
        bar: Any = None,
    ) -> dict[str, Artifact]:
        """Reuse or compute the artifact of every job.

        Args:
            stage: Stage name (a folder under ``root``).
            jobs: ``(name, key, compute)`` per item.
            thread_safe: ``compute`` may run in several threads at once (used when ``workers > 1``).
            cacheable: False for stages cheaper than their cache: nothing is read or written, and the items count
                as ``instant``.
            retry_errors: Recompute items whose stored artifact is an error.
            bar: A progress object (``update(n)``) that counts every item, reused or computed, instead of this
                cache's own bar; the caller closes it (the data-parallel jobs' one bar per job).

        Returns:
            Item name -> artifact (``ok``, and ``result`` or ``error``). Failed items are counted in
            ``stats[stage].errors``; reporting them is the caller's business.
        """
        from tqdm import tqdm

        jobs = [StageJob(*j) for j in jobs]
        stats = self.stats[stage]
        results: dict[str, Artifact] = {}
        todo: list[StageJob] = []
        for job in jobs:
            art = self.load(stage, job.name, job.key, retry_errors=retry_errors) if cacheable else None
            if art is not None:
                results[job.name] = art
                stats.cached += 1
            else:
                todo.append(job)
        own_bar = bar is None
        if own_bar:
            bar = tqdm(
                total=len(jobs),
                initial=len(jobs) - len(todo),
                desc=f"{self.label} {stage}".strip(),
                unit="clip",
                disable=not self.progress,
                leave=False,
            )
        elif len(jobs) > len(todo):
            bar.update(len(jobs) - len(todo))
        try:
            if self.workers > 1 and thread_safe and len(todo) > 1:
                prefix = f"{self.label}-{stage}" if self.label else stage
                with ThreadPoolExecutor(self.workers, thread_name_prefix=prefix) as pool:
                    futures = {pool.submit(self.compute, stage, job, store=cacheable): job.name for job in todo}
                    for fut in as_completed(futures):
                        results[futures[fut]] = fut.result()
                        bar.update()
            else:
                for job in todo:
                    results[job.name] = self.compute(stage, job, store=cacheable)
                    bar.update()
        finally:
            if own_bar:
                bar.close()
        if cacheable:
            stats.computed += len(todo)
        else:
            stats.instant += len(todo)
        stats.errors += sum(1 for art in results.values() if not art.get("ok"))
        return results


# ================================================================================================ run hygiene


class RunLock:
    """A lock file holding the owner's pid and host: a second live run in the same folder is refused; a lock left by
    a killed process of this host is taken over.

    On a folder shared by several nodes, a lock written on another host is never taken over (its pid means nothing
    here): the refusal names that host, and the lock file is removed by hand once that run is known to be gone.
    ``O_CREAT | O_EXCL`` is atomic on local filesystems and on NFSv3+.

    Args:
        path: The lock file (e.g. ``<out>/build.lock``).
        owner: How the refusal names the other run (``"`emollm merr build`"``).

    Raises:
        RuntimeError: on ``__enter__``, when a live process other than this one (or any process of another host)
            holds the lock.
    """

    def __init__(self, path: Path, owner: str = "run"):
        self.path = path
        self.owner = owner
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        import socket

        here = socket.gethostname()
        for _ in range(2):
            try:
                self.fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                os.write(self.fd, f"{os.getpid()} {here}".encode())
                return self
            except FileExistsError:
                try:
                    pid_text, _, host = self.path.read_text().strip().partition(" ")
                    pid = int(pid_text or 0)
                except (OSError, ValueError):
                    pid, host = 0, ""
                host = host or here  # a lock of an older version names no host: it was written here
                if host != here:
                    raise RuntimeError(
                        f"{self.path.parent}: another {self.owner} (pid {pid} on host {host}) holds this output "
                        f"folder; wait for it, or remove {self.path} if that run is gone"
                    ) from None
                if pid and pid != os.getpid() and _alive(pid):
                    raise RuntimeError(
                        f"{self.path.parent}: another {self.owner} (pid {pid}) is running "
                        f"in this output folder; wait for it or remove {self.path}"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()  # stale: its process is gone
        raise RuntimeError(f"could not take {self.path}")

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_temp_files(root: str | os.PathLike[str]) -> int:
    """Remove the temp files (``.<name>.*.tmp``) that :mod:`emollm.utils.io` writers killed mid-write left under
    ``root``. Call it only while holding the folder's :class:`RunLock` (a live writer's temp file would go too).

    Returns:
        How many files were removed.
    """
    n = 0
    for p in Path(root).rglob(".*.tmp"):
        with contextlib.suppress(OSError):
            p.unlink()
            n += 1
    return n
