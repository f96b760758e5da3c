"""A small OpenAI-compatible ``/v1/chat/completions`` server on loopback, for protocol tests of the endpoint client.

It is a test double of the *protocol* (HTTP, JSON shapes, failures), not of generation: each answer is a fixed
function of the last user message (``"answer: <text>"``), so tests can check which answer went to which prompt.
What a test can script, per request in arrival order (``FakeOpenAI.script``) or for every request (``default``):

``ok``            a chat completion (``model``: ``served_model``, ``system_fingerprint``, ``usage``)
``status:N``      HTTP N with a JSON error body (``status:503`` also sends ``Retry-After: 0``)
``garbage``       HTTP 200 with a body that is not JSON
``no_choices``    HTTP 200 JSON without ``choices``
``null_content``  HTTP 200 with ``message.content: null``
``model:NAME``    a chat completion that names another model
``sleep:S``       wait S seconds, then answer ``ok`` (a client with a shorter timeout gives up first)
``trickle:S``     send the headers and one byte every 0.05 s for S seconds (a timeout must be wall-clock)
``drop``          close the connection without an answer
``length``        a completion cut by the token budget (``finish_reason: length``)

``die_after=N``: after N answered requests the server shuts down; later connections are refused. It counts the
requests it saw and the most it had in flight at once. Everything stops at the end of the ``with`` block, and every
loop here is bounded (the tests send a few dozen requests at most).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAI:
    """Start with ``with FakeOpenAI(...) as server:``; ``server.url`` is the ``/v1`` base URL."""

    def __init__(
        self,
        *,
        script: list[str] | None = None,
        default: str = "ok",
        served_model: str = "fake-served-model",
        delay: float = 0.0,
        die_after: int | None = None,
    ):
        self.script = deque(script or [])
        self.default = default
        self.served_model = served_model
        self.delay = delay
        self.die_after = die_after
        self.requests: list[dict[str, Any]] = []
        self.answered = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.dead = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------------ lifecycle
    def __enter__(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                fake._handle(self)

            def log_message(self, *args):  # keep pytest output clean
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client that gave up: expected here, not noise
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def stop(self) -> None:
        """Shut down: the port stops accepting connections."""
        self.dead.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    # ------------------------------------------------------------------------------------------------ answers
    def _action(self) -> str:
        with self.lock:
            return self.script.popleft() if self.script else self.default

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        body = json.loads(h.rfile.read(int(h.headers["Content-Length"])))
        with self.lock:
            self.requests.append({"path": h.path, "body": body, "auth": h.headers.get("Authorization")})
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        done = False
        try:
            if self.dead.is_set():
                h.close_connection = True
                return
            action = self._action()
            if self.delay:
                time.sleep(self.delay)
            with self.lock:  # the work is done before the answer is written: the client may send its next request
                self.in_flight -= 1  # as soon as it reads this one, and that must not count as one more in flight
                done = True
            self._answer(h, action, body)
        finally:
            if not done:
                with self.lock:
                    self.in_flight -= 1

    def _send(self, h: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _answer(self, h: BaseHTTPRequestHandler, action: str, body: dict[str, Any]) -> None:
        kind, _, arg = action.partition(":")
        if kind == "drop":
            h.close_connection = True
            return
        if kind == "status":
            extra = {"Retry-After": "0"} if arg == "503" else None
            self._send(h, int(arg), json.dumps({"error": {"message": f"scripted {arg}"}}).encode(), extra)
            return
        if kind == "garbage":
            self._send(h, 200, b"<html>this is not an API</html>")
            return
        if kind == "no_choices":
            self._send(h, 200, json.dumps({"object": "chat.completion", "id": "x"}).encode())
            return
        if kind == "trickle":
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", "100000")
            h.end_headers()
            end = time.monotonic() + float(arg)
            try:
                while time.monotonic() < end:
                    h.wfile.write(b" ")
                    h.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass  # the client gave up
            h.close_connection = True
            return
        if kind == "sleep":
            time.sleep(float(arg))
        user = next((m["content"] for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
        content: Any = None if kind == "null_content" else f"answer: {user}"
        payload = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "model": arg if kind == "model" else self.served_model,
            "system_fingerprint": "fp-fake-1",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "length" if kind == "length" else "stop",
                }
            ],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }
        self._send(h, 200, json.dumps(payload).encode())
        with self.lock:
            self.answered += 1
            die = self.die_after is not None and self.answered >= self.die_after
        if die:
            self.dead.set()
            threading.Thread(target=self.stop, daemon=True).start()
