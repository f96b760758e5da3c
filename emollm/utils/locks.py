"""Cross-process locks for folders several processes (ranks, nodes, separate runs) write into, and the build-once
pattern for shared caches (``EMOLLM_CACHE``: converted GGUF and Whisper folders).

:class:`FileLock` is ``flock`` on a lock file that names its owner (pid, host, start time). The kernel releases it
when the owner dies, so a killed process never leaves a stale lock. :func:`build_once` makes a cache folder exactly
once however many processes ask at the same time: the first builds it into a temporary sibling and renames it into
place under the lock; the others wait on the lock and then find it ready. A ready folder is never removed or
rewritten, so a process reading it is never disturbed.

What holds on a network filesystem (the cache or the output folder shared by several nodes):

* The atomic rename (``os.replace``) within one folder holds on NFS, Lustre, GPFS, BeeGFS and CephFS: a reader on
  another node sees the whole file or no file, never half of one.
* ``flock`` is coordinated between nodes on NFSv4 (Linux emulates it with byte-range locks the server arbitrates;
  NFSv3 needs ``lockd``), GPFS, CephFS and BeeGFS (``tuneUseGlobalFileLocks``), and on Lustre only when mounted with
  ``-o flock`` (with ``localflock`` it is per node; without either, ``flock`` fails with ``ENOSYS``). Where it is
  not available (:class:`LockUnavailable`), :func:`build_once` still never tears or deletes a ready folder: it only
  risks building the same folder twice, and keeps the first.
* A file written on one node may appear on another only after the NFS attribute cache expires (``acdirmax``,
  60 s by default); the data-parallel jobs wait for the files of other ranks (:mod:`emollm.jobs.distributed`).

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> build_once(root / "model", lambda tmp: (tmp / "config.json").write_text("{}"), marker="config.json").name
    'model'
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["FileLock", "LockBusy", "LockUnavailable", "build_once", "owner_stamp"]


class LockBusy(RuntimeError):
    """A non-blocking :class:`FileLock` is held by another process; the message names the file and its owner."""


class LockUnavailable(OSError):
    """The filesystem offers no ``flock`` (e.g. Lustre mounted without ``-o flock``)."""


def owner_stamp() -> str:
    """``pid N on HOST since TIME``: who holds a lock, for the messages of the processes that wait or are refused."""
    return f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"


class FileLock:
    """An exclusive ``flock`` on ``path`` (created), naming its owner in the file while held.

    Args:
        path: The lock file.
        blocking: Wait for the lock (default) or raise :class:`LockBusy` at once.
        what: How a refusal names the lock's purpose (``"the cache folder X"``).

    Raises:
        LockBusy: ``blocking=False`` and another process holds it.
        LockUnavailable: The filesystem has no ``flock``.
    """

    def __init__(self, path: str | os.PathLike[str], *, blocking: bool = True, what: str | None = None):
        self.path = Path(path)
        self.blocking = blocking
        self.what = what or str(self.path)
        self.fd: int | None = None

    def __enter__(self) -> FileLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            owner = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise LockBusy(f"{self.what} is locked by {owner} ({self.path})") from None
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK):
                raise LockUnavailable(e.errno, f"{self.path}: this filesystem has no flock ({e.strerror})") from None
            raise
        self.fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner_stamp().encode() + b"\n", 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # releases the lock
            self.fd = None


def build_once(target: str | os.PathLike[str], build: Callable[[Path], None], *, marker: str) -> Path:
    """``target`` (a folder), built by ``build(tmp_folder)`` unless ``target/marker`` already exists.

    Safe with any number of processes on one machine or on nodes sharing a filesystem: under the lock
    ``.<target>.lock`` the first one builds into a temporary sibling and renames it into place; the others wait, then
    find ``marker`` and return at once. A folder without ``marker`` (a build killed before the rename could not leave
    one, but a hand-made or older partial folder can) is replaced. A ready folder is never touched.

    Args:
        target: The folder to make.
        build: Writes the folder's content into the temporary folder it is given.
        marker: The file whose presence means ``target`` is complete (e.g. ``config.json``).

    Returns:
        ``target`` as a Path.
    """
    target = Path(target)
    if (target / marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(target.parent / f".{target.name}.lock", what=f"building {target}")
    try:
        held = lock.__enter__()
    except LockUnavailable:
        held = None  # no flock here: racing builders each build, the first rename wins, nobody sees a torn folder
    try:
        if (target / marker).exists():  # built by another process while this one waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            build(tmp)
            if not (tmp / marker).exists():
                raise RuntimeError(f"building {target}: the builder wrote no {marker}")
            if target.exists() and not (target / marker).exists():
                shutil.rmtree(target)  # an incomplete folder nobody can be reading as complete
            try:
                os.replace(tmp, target)
            except OSError:
                if not (target / marker).exists():  # lost a race without flock: keep the winner's folder
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target
    finally:
        if held is not None:
            held.__exit__(None, None, None)
