"""Shared pieces of the service tests: stub analyzers, generated media, an app factory that checks cleanup."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from emollm.apps.analysis import Analysis
from emollm.media import fixtures

LABELS = ("neutral", "angry", "happy", "sad", "worried", "surprise")
WAIT_S = 20.0
"""Upper bound of every wait in these tests (nothing may hang)."""


class StubAnalyzer:
    """Answers at once, or, with ``gate``, only after the gate opens (bounded by :data:`WAIT_S`)."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.calls: list[str] = []
        self.started = threading.Event()
        self.closed = False

    def __call__(self, path, *, subtitle=None):
        self.calls.append(Path(path).name)
        self.started.set()
        if self.gate is not None and not self.gate.wait(WAIT_S):
            raise RuntimeError("the test never opened the gate")
        assert Path(path).exists(), "the upload must exist while the analyzer runs"
        probs = {lab: (0.5 if lab == "happy" else 0.1) for lab in LABELS}
        return Analysis(str(path), "happy", probs, "stub", ["text"], subtitle=subtitle, mode="clues")

    def produced_by(self):
        return {"mode": "stub", "models": {}, "precision": "fp32"}

    def close(self):
        self.closed = True


class DeadlineAnalyzer(StubAnalyzer):
    """Works like a real analyzer's stages: ``steps`` of ``step_s`` each, checking the deadline between them
    (:func:`emollm.utils.deadline.check_deadline`), so a timeout or a cancel stops it. Records how far it got."""

    def __init__(self, steps: int = 400, step_s: float = 0.05) -> None:
        super().__init__()
        self.steps, self.step_s = steps, step_s
        self.done_steps: list[int] = []
        self.stopped: list[str] = []
        self.finished = threading.Event()

    def __call__(self, path, *, subtitle=None):
        from emollm.utils.deadline import DeadlineExceeded, check_deadline

        self.calls.append(Path(path).name)
        self.started.set()
        try:
            for i in range(self.steps):  # bounded: steps * step_s
                check_deadline(f"stage {i}")
                time.sleep(self.step_s)
                self.done_steps.append(i)
        except DeadlineExceeded as e:
            self.stopped.append(str(e))
            raise
        finally:
            self.finished.set()
        return super().__call__(path, subtitle=subtitle)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(app) -> Iterator[tuple[str, int]]:
    """A real uvicorn server for ``app`` on 127.0.0.1 in a thread (loopback only); stopped, bounded, on exit.

    Logging is left to the test's handlers (``log_config=None``), so ``caplog`` sees uvicorn's records too.
    """
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield "127.0.0.1", port
    finally:
        srv.should_exit = True
        thread.join(WAIT_S)
        assert not thread.is_alive(), "uvicorn did not stop"


def multipart(file: tuple[str, bytes], boundary: str = "b0undary", closed: bool = True, **fields: str) -> bytes:
    """A ``multipart/form-data`` body; ``closed=False`` leaves out the closing boundary (a body cut short)."""
    out = b""
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    name, data = file
    out += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'.encode()
    out += b"Content-Type: application/octet-stream\r\n\r\n" + data
    return out + (f"\r\n--{boundary}--\r\n".encode() if closed else b"")


def request_head(port: int, length: int, boundary: str = "b0undary", headers: dict[str, str] | None = None) -> bytes:
    """The head of ``POST /v1/analyze`` with a multipart body of ``length`` bytes."""
    lines = ["POST /v1/analyze HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {length}",
             f"Content-Type: multipart/form-data; boundary={boundary}"]  # fmt: skip
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_status(sock: socket.socket, timeout_s: float = WAIT_S) -> tuple[int, bytes]:
    """The status code and raw answer of an HTTP/1.1 response on ``sock`` (0 when the server closed first)."""
    sock.settimeout(timeout_s)
    data = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")),
                      0)  # fmt: skip
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        data = head + b"\r\n\r\n" + body
    first = data.split(b"\r\n", 1)[0].split()
    return (int(first[1]) if len(first) > 1 and first[1].isdigit() else 0), data


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> Path:
    """A 2 s astronaut clip (no audio: fast), a 0.6 s one, a garbage .mp4 and a text file."""
    root = tmp_path_factory.mktemp("serve-media")
    fixtures.make_face_clip(root / "happy.mp4", "astronaut", seconds=2.0, size=(320, 240), audio=None)
    fixtures.make_corrupt_file(root / "garbage.mp4", "garbage")
    (root / "note.txt").write_text("I am so happy, this is wonderful news!\n")
    return root


def assert_no_uploads_left(app) -> None:
    """The private upload root exists, is 0700, and holds nothing once requests are answered."""
    root = app.state.service.tmp_root
    assert oct(os.stat(root).st_mode & 0o777) == "0o700"
    assert os.listdir(root) == [], f"upload folders left behind: {os.listdir(root)}"


@contextlib.contextmanager
def serve_in_thread(app) -> Iterator[str]:
    """A real uvicorn server for ``app`` on 127.0.0.1 and a free port, in a thread; yields its host:port, stopped
    (bounded) on exit."""
    uvicorn = pytest.importorskip("uvicorn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not srv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(15)
        assert not thread.is_alive(), "uvicorn did not stop"
