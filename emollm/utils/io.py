"""Atomic file writes: the one implementation every writer of the project uses.

A file is written to a temporary sibling in the same folder, flushed and (by default) fsynced, then renamed over
the target with ``os.replace``, so a reader or a killed process never sees half a file; the rename is made durable
by fsyncing the folder. The new file gets the usual permissions of a new file (``0666`` minus the umask), not the
temporary file's ``0600``. ``fsync=False`` keeps the atomic rename but skips the fsyncs: a crash of the process
cannot tear the file, a power cut can, so use it only for caches whose readers treat an unparseable file as
missing.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "out" / "m.json"
    >>> atomic_write_json(p, {"a": 1}).read_text()
    '{\\n  "a": 1\\n}\\n'
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_output_file",
    "read_user_text",
    "same_file",
]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file; mkstemp's own 0600 would hide outputs


def _fsync_dir(folder: Path) -> None:
    try:  # make the rename itself durable (POSIX); harmless to skip elsewhere
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any], *, fsync: bool = True) -> Path:
    """Create ``path`` atomically from ``write(binary_file)``; the parent folder is created if needed.

    ``write`` gets an open binary file (``torch.save``, ``np.save`` and ``savefig`` accept one). If it raises, the
    temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with contextlib.suppress(OSError, AttributeError):  # no os.fchmod on Windows
            os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if fsync:
        _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(data), fsync=fsync)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", fsync: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically; newlines are written as given (no translation)."""
    return atomic_write_bytes(path, text.encode(encoding), fsync=fsync)


def atomic_write_json(
    path: str | os.PathLike[str], data: Any, *, indent: int | None = 2, sort_keys: bool = False, fsync: bool = True
) -> Path:
    """Write ``data`` as JSON (UTF-8, not ASCII-escaped, newline-terminated) to ``path`` atomically."""
    text = json.dumps(data, indent=indent, ensure_ascii=False, sort_keys=sort_keys) + "\n"
    return atomic_write_text(path, text, fsync=fsync)


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` name one file (the same resolved path, or the same inode through a link)."""
    a, b = Path(a), Path(b)
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):  # a symlink loop
        return False
    try:
        return a.samefile(b)
    except OSError:  # one of them does not exist
        return False


def check_output_file(
    path: str | os.PathLike[str],
    *,
    flag: str,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    overwrite: bool = False,
    ours: Callable[[Path], str | None] | None = None,
) -> None:
    """Refuse an output file that would destroy something, as git refuses to clobber.

    Refused: an input of the command (always, even with ``overwrite``), a folder, a dangling symlink, and an existing
    file, unless ``overwrite`` or ``ours(path)`` returns None (a file this command wrote itself and may replace or
    resume; otherwise ``ours`` returns why the file is not one).

    Args:
        path: The output file.
        flag: How the user named it (``--out``, ``--per-sample``), first word of every message.
        inputs: The command's input files (None entries are ignored).
        overwrite: The user asked to replace an existing file (``--overwrite``).
        ours: Recognises this command's own output: ``None`` when ``path`` is one, else the reason it is not.

    Raises:
        ValueError: Naming the path, what it is, and the fix.
    """
    out = Path(path)
    for given in inputs:
        if given is not None and same_file(out, given):
            raise ValueError(
                f"{flag} {out} is the input {given}; writing it would destroy the input (even with --overwrite): "
                "choose another output file"
            )
    if out.is_dir():
        raise ValueError(f"{flag} {out} is a folder; give a file path inside it, e.g. {out / 'results.jsonl'}")
    if out.is_symlink() and not out.exists():
        raise ValueError(f"{flag} {out} is a symlink to nothing ({os.readlink(out)}); remove it or choose another file")
    if not out.exists() or overwrite:
        return
    why = ours(out) if ours is not None else ""
    if why is not None:
        raise ValueError(
            f"{flag} {out} already exists{f' ({why})' if why else ''}; pass --overwrite to replace it, or choose "
            "another output file"
        )


def read_user_text(path: str | os.PathLike[str], what: str = "text") -> str:
    """A user's text file as ``str`` (UTF-8, a BOM dropped), or one ``ValueError`` naming the file, the line and
    byte of the first byte that is not UTF-8, and the fix (a bare ``UnicodeDecodeError`` names neither).

    Args:
        path: The file.
        what: What the file should be (``"a labels CSV"``), for the message.

    Raises:
        FileNotFoundError: No such file.
        ValueError: A folder, or not UTF-8.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the {what} file inside it")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); save the {what} as UTF-8"
        ) from None
