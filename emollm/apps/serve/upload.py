"""Stream a ``multipart/form-data`` upload to a private folder, enforcing the size limit as the bytes arrive.

The file part is written straight to disk chunk by chunk (never held in memory); text fields are small and capped.
The whole body counts against the limit, so a client cannot get around it with many parts or no
``Content-Length``. The body must arrive before a deadline (a slow client cannot hold the server), and must end with
its closing boundary (a body cut short is refused, never analysed).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

__all__ = ["BadUpload", "Upload", "UploadTimeout", "UploadTooLarge", "receive_upload", "safe_filename"]

MAX_FIELD_BYTES = 64 * 1024
"""Largest text field (``labels``, ``subtitle``, ``prompt``)."""
MAX_PARTS = 16
FIELDS = ("file", "labels", "subtitle", "prompt")


class BadUpload(ValueError):
    """The request is not a usable upload (no ``file`` field, not multipart, a broken body); the message says why."""


class UploadTooLarge(BadUpload):
    """The body exceeds the limit; the message names the limit and the flag that raises it."""


class UploadTimeout(BadUpload):
    """The body did not arrive before the upload deadline; the message names the limit and its flag."""


@dataclass
class Upload:
    """What :func:`receive_upload` received.

    Attributes:
        path: The saved file (inside the request's private folder).
        filename: The client's file name (sanitised), used in answers instead of the server path.
        size: Bytes of the file.
        fields: Text fields by name.
    """

    path: Path | None = None
    filename: str = ""
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)


def safe_filename(name: str) -> str:
    """The client's base name reduced to ``[A-Za-z0-9._-]`` (at most 100 characters, suffix kept)."""
    base = re.split(r"[\\/]", name or "")[-1]
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, ""
    clean = lambda s: re.sub(r"[^A-Za-z0-9_-]+", "_", s).strip("_")  # noqa: E731
    stem, suffix = clean(stem)[:80] or "upload", clean(suffix)[:10].lower()
    return f"{stem}.{suffix}" if suffix else stem


def too_large_message(limit_bytes: int) -> str:
    """The 413 message."""
    return f"the upload is larger than the server's limit of {limit_bytes / 2**20:g} MB (server flag --max-upload-mb)"


async def receive_upload(
    content_type: str,
    stream: AsyncIterator[bytes],
    folder: Path,
    *,
    max_bytes: int,
    body_bytes: int | None = None,
    drain_bytes: int = 0,
    deadline: float | None = None,
    deadline_message: str = "the upload did not arrive in time",
) -> Upload:
    """Parse the body into ``folder``: the ``file`` part to disk, text fields into memory.

    Args:
        content_type: The request's ``Content-Type`` (must be ``multipart/form-data`` with a boundary).
        stream: The body chunks.
        folder: The request's private folder (created by the caller).
        max_bytes: Largest file accepted.
        body_bytes: Most body bytes accepted (file, text fields and multipart framing); default ``max_bytes`` + 1 MiB.
        drain_bytes: After the limit is passed, read and discard up to this many more bytes before refusing, so an
            HTTP client that sends the whole body before reading the answer sees the 413 instead of a reset.
        deadline: ``time.monotonic()`` by which the whole body must have arrived (None: no deadline).
        deadline_message: The :class:`UploadTimeout` message.

    Raises:
        UploadTooLarge: The file passed ``max_bytes`` or the body ``body_bytes``.
        UploadTimeout: The body was still arriving at ``deadline``.
        BadUpload: Not multipart, no boundary, a broken body or one cut short (no closing boundary), unknown or
            repeated fields, no ``file`` part.
    """
    kind, params = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise BadUpload("send multipart/form-data with the clip in the field 'file' (curl -F file=@clip.mp4)")
    upload = Upload()
    state: dict[str, object] = {"headers": {}, "name": None, "buf": None, "parts": 0, "ended": False}
    pending: list[bytes] = []
    out: list[BinaryIO] = []
    header: dict[str, bytes] = {"field": b"", "value": b""}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][header["field"].lower()] = header["value"]  # type: ignore[index]
        header["field"] = header["value"] = b""

    def on_headers_finished() -> None:
        state["parts"] = int(state["parts"]) + 1  # type: ignore[call-overload]
        if int(state["parts"]) > MAX_PARTS:  # type: ignore[call-overload]
            raise BadUpload(f"too many form fields (at most {MAX_PARTS})")
        _, opts = parse_options_header(state["headers"].get(b"content-disposition", b""))  # type: ignore[union-attr]
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        if name not in FIELDS:
            raise BadUpload(f"unknown form field {name!r}; the fields are {', '.join(FIELDS)}")
        if name in upload.fields or (name == "file" and upload.path is not None):
            raise BadUpload(f"the form field {name!r} is given twice")
        state["name"] = name
        if name == "file":
            upload.filename = safe_filename(opts.get(b"filename", b"").decode("utf-8", "replace"))
            upload.path = folder / upload.filename
            out.append(open(upload.path, "wb"))  # noqa: SIM115 - closed below, also on errors
            state["buf"] = None
        else:
            state["buf"] = bytearray()
        state["headers"] = {}

    def on_part_data(data: bytes, start: int, end: int) -> None:
        buf = state["buf"]
        if buf is None:
            pending.append(data[start:end])
            upload.size += end - start
        else:
            assert isinstance(buf, bytearray)
            if len(buf) + end - start > MAX_FIELD_BYTES:
                raise BadUpload(f"the form field {state['name']!r} is longer than {MAX_FIELD_BYTES // 1024} KB")
            buf.extend(data[start:end])

    def on_part_end() -> None:
        buf = state["buf"]
        if isinstance(buf, bytearray):
            upload.fields[str(state["name"])] = buf.decode("utf-8", "replace")

    def on_end() -> None:  # the closing boundary arrived
        state["ended"] = True

    callbacks = {
        "on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data, "on_part_end": on_part_end,
        "on_end": on_end,
    }  # fmt: skip
    parser = MultipartParser(params[b"boundary"], callbacks)  # type: ignore[arg-type]
    body_bytes = max_bytes + (1 << 20) if body_bytes is None else body_bytes
    received = 0
    chunks = _until(stream, deadline, deadline_message)
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received <= body_bytes:
                parser.write(chunk)
            if received > body_bytes or upload.size > max_bytes:
                drained = 0
                async for more in chunks:  # bounded: past it the answer goes out and the connection is dropped
                    drained += len(more)
                    if drained > drain_bytes:
                        break
                raise UploadTooLarge(too_large_message(max_bytes))
            if pending:
                data = b"".join(pending)
                pending.clear()
                await anyio.to_thread.run_sync(out[-1].write, data)
        parser.finalize()
    except FormParserError as e:
        raise BadUpload(f"the multipart body is broken ({e})") from None
    finally:
        for f in out:
            f.close()
    if not state["ended"]:
        raise BadUpload(
            f"the multipart body ends after {received:,} bytes without its closing boundary (the upload was cut "
            "short): send it again"
        )
    if upload.path is None:
        raise BadUpload("no file: send the clip in the form field 'file' (curl -F file=@clip.mp4)")
    return upload


async def _until(stream: AsyncIterator[bytes], deadline: float | None, message: str) -> AsyncIterator[bytes]:
    """``stream``'s chunks, raising :class:`UploadTimeout` when the next one has not come by ``deadline``."""
    it = stream.__aiter__()
    while True:
        if deadline is None:
            try:
                yield await it.__anext__()
            except StopAsyncIteration:
                return
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            raise UploadTimeout(message)
        try:
            chunk = await asyncio.wait_for(it.__anext__(), left)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise UploadTimeout(message) from None
        yield chunk
