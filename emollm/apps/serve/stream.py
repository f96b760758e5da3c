"""``WS /v1/stream``: a live session over a WebSocket, on the service's worker pool (:mod:`emollm.apps.live`).

Protocol (client -> server):

1. a text message ``{"type": "start", "audio": {"format": "pcm16", "sample_rate": 16000}, "window_s": 3,
   "hop_s": 1, "labels": [...], "api_key": "...", "face_path": "landmarker"}``, every field optional: ``audio``
   declares the audio (``pcm16`` or ``f32`` little-endian mono, 8000-48000 Hz, 16 kHz preferred: other rates are
   resampled chunk by chunk; leave it out for a video-only session); ``labels`` may repeat the server's set but not
   change it; ``api_key`` is for browsers, which cannot set headers (other clients send ``Authorization: Bearer
   KEY`` or ``X-API-Key``); ``face_path`` is :class:`~emollm.apps.live.LiveSettings`' (``detector``: the file
   path's face detector too);
2. binary media messages: one byte ``A`` (audio chunk) or ``V`` (video frame, JPEG or PNG), the timestamp as a
   float64 little-endian (seconds from the start of the session, the client's clock), then the payload
   (:func:`emollm.apps.live.pack_media`);
3. a text ``{"type": "stop", "rationale": false}``: the server answers the last partial hop and the ``summary``
   (the whole session's fused label, statistics and its timeline, the JSON of ``emollm analyze --timeline``; with
   ``rationale``, the LLM's written rationale), then closes.

Server -> client (text JSON): ``ready`` (the session's settings and limits), one ``hop`` per hop (the timeline entry's
fields, ``seq``, ``latency_ms`` from receiving the message that made the hop due to sending the answer, ``timings``
per stage, ``frames`` received / analysed / dropped, ``skipped_hops``, ``transcript_new``), ``error`` for a message
that could not be used (the session goes on unless ``fatal``), ``summary``.

Limits, the same as ``POST /v1/analyze``: the key, the label set, ``--max-duration-s`` of media per session,
``--timeout-s`` for the end-of-session work; plus ``--max-streams`` sessions at once (more are refused with close code
1013), an idle limit, a message size limit, and at most 50 unusable messages per session. Hops run on the same
worker pool as uploads (a full pool delays a hop; frames that wait too long are dropped and counted). A client that
disconnects frees its session at once (a hop already running on a worker finishes there).
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import time
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from emollm.apps.live import AUDIO, LiveError, LiveLimit, LiveSession, LiveSettings, unpack_media, warm_up

__all__ = ["IDLE_S", "MAX_BAD_MESSAGES", "TIMELINE_PARAMETERS", "add_stream_route", "timeline_query"]

log = logging.getLogger("emollm.apps.serve")
IDLE_S = 30.0
"""Seconds without any message after which a session is closed."""
START_S = 10.0
"""Seconds a client has to send its start message."""
MAX_BAD_MESSAGES = 50
"""Unusable messages after which a session is closed."""
MAX_TEXT_BYTES = 64 * 1024
"""Largest text (JSON) message."""
_ids = itertools.count(1)


TIMELINE_PARAMETERS = [
    {"name": "timeline", "in": "query", "required": False, "schema": {"type": "boolean", "default": False},
     "description": "also give one entry per window (the JSON's 'timeline'), as `emollm analyze --timeline`"},
    {"name": "window", "in": "query", "required": False, "schema": {"type": "number", "default": 3.0,
     "exclusiveMinimum": 0, "maximum": 60}, "description": "window length in seconds (with timeline=1)"},
    {"name": "hop", "in": "query", "required": False, "schema": {"type": "number", "default": 1.0,
     "exclusiveMinimum": 0, "maximum": 60}, "description": "seconds between window ends (with timeline=1)"},
    {"name": "timeline_fps", "in": "query", "required": False, "schema": {"type": "number", "default": 3.0,
     "exclusiveMinimum": 0, "maximum": 30}, "description": "face frames analysed per second (with timeline=1)"},
]  # fmt: skip
"""The OpenAPI description of ``POST /v1/analyze``'s timeline parameters."""


def timeline_query(params: Any, analyzer: Any) -> Any:
    """The :class:`~emollm.apps.timeline.TimelineSettings` a request asks for (None: no timeline).

    Raises:
        ValueError: A bad parameter, or an analyzer that gives no timeline; the message says which.
    """
    import inspect

    from emollm.apps.timeline import TimelineSettings

    timeline = TimelineSettings.from_query(params)
    if timeline is not None and "timeline" not in inspect.signature(type(analyzer).__call__).parameters:
        raise ValueError(f"this server's analyzer ({type(analyzer).__name__}) gives no timeline: leave timeline out")
    return timeline


class _Refused(Exception):
    """Close the session: a fatal error message and a close code."""

    def __init__(self, message: str, code: int = 1008) -> None:
        super().__init__(message)
        self.message, self.code = message, code


def add_stream_route(app: FastAPI, service: Any) -> None:
    """Register ``WS /v1/stream`` on ``app`` (``service``: the app's :class:`~emollm.apps.serve.app.Service`)."""
    settings = service.settings
    state = {"active": 0}

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        if state["active"] >= settings.max_streams:
            await _close(ws, f"the server already runs {settings.max_streams} live sessions (--max-streams); retry "
                             "later", 1013)  # fmt: skip
            return
        state["active"] += 1
        session: LiveSession | None = None
        try:
            session = await _open(ws, service)
            await _run(ws, service, session)
        except _Refused as e:
            await _close(ws, e.message, e.code)
        except WebSocketDisconnect:
            pass
        finally:
            state["active"] -= 1
            if session is not None:
                session.close()


async def _close(ws: WebSocket, message: str, code: int) -> None:
    try:
        await ws.send_text(json.dumps({"type": "error", "error": message, "fatal": True}))
        await ws.close(code=code, reason=message[:120])
    except (WebSocketDisconnect, RuntimeError):
        pass


async def _open(ws: WebSocket, service: Any) -> LiveSession:
    """Read the start message; check the key, the labels and the analyzer; send ``ready``."""
    settings = service.settings
    try:
        first = await asyncio.wait_for(ws.receive(), START_S)
    except asyncio.TimeoutError:
        raise _Refused(f"no start message within {START_S:g} s") from None
    if first.get("type") == "websocket.disconnect":
        raise WebSocketDisconnect(first.get("code", 1000))
    text = first.get("text")
    if text is None:
        raise _Refused('the first message must be a text {"type": "start", ...} message', 1003)
    try:
        start = _json(text)
    except LiveError as e:
        raise _Refused(str(e), 1003) from None
    if start.get("type") != "start":
        raise _Refused(f'the first message must be {{"type": "start", ...}}, got type {start.get("type")!r}', 1003)
    if settings.api_key is not None:
        given = ws.headers.get("x-api-key") or _bearer(ws.headers.get("authorization")) or start.get("api_key")
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise _Refused(
                "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY' with the handshake, "
                "or 'api_key' in the start message",
            )
    labels = start.get("labels")
    if labels is not None:
        asked = labels.split(",") if isinstance(labels, str) else labels
        if not isinstance(asked, list) or sorted(str(a).strip().lower() for a in asked) != sorted(
            lab.lower() for lab in settings.labels
        ):
            raise _Refused(f"this server analyses the labels {','.join(settings.labels)}; leave 'labels' out, or run "
                           "a server with --labels for that set")  # fmt: skip
    analyzer = service.pool.analyzers[0]
    if not hasattr(analyzer, "face_frames"):
        raise _Refused(
            f"this server's analyzer ({type(analyzer).__name__}) cannot analyse a live stream: streams need the clue "
            "mode (a server without --checkpoint)",
            1011,
        )
    extra = set(start) - {"type", "audio", "window_s", "hop_s", "labels", "api_key", "face_path"}
    if extra:
        raise _Refused(f"unknown start field(s) {', '.join(sorted(extra))}; the fields are audio, window_s, hop_s, "
                       "labels, api_key, face_path", 1003)  # fmt: skip
    try:
        live = LiveSettings(
            window_s=_number(start, "window_s", 3.0), hop_s=_number(start, "hop_s", 1.0),
            max_session_s=settings.max_duration_s,
            max_frame_bytes=min(2 * 1024 * 1024, settings.max_upload_bytes),
            face_path=str(start.get("face_path", "landmarker")),
        )  # fmt: skip
        audio = start.get("audio")  # (face_path and window checks: LiveSettings)
        if audio is not None and not isinstance(audio, dict):
            raise LiveError('audio must be an object like {"format": "pcm16", "sample_rate": 16000}')
        session = LiveSession(tuple(settings.labels), live, audio)
    except (LiveError, ValueError) as e:
        raise _Refused(str(e), 1003) from None
    session.id = next(_ids)  # type: ignore[attr-defined]
    try:  # the first session of a worker loads the models here, not in its first hop
        warm = await asyncio.wait_for(_on_worker(service, lambda a: warm_up(a, live)), settings.timeout_s)
    except asyncio.TimeoutError:
        raise _Refused(f"the models did not load within the server's limit of {settings.timeout_s:g} s", 1011) from None
    await ws.send_text(json.dumps({
        "type": "ready", "session": session.id, "labels": list(settings.labels),  # type: ignore[attr-defined]
        "window_s": live.window_s, "hop_s": live.hop_s, "face_path": live.face_path,
        "limits": {"max_session_s": live.max_session_s, "max_frame_bytes": live.max_frame_bytes,
                   "max_frame_pixels": live.max_frame_pixels, "max_chunk_s": live.max_chunk_s,
                   "max_pending_frames": live.max_pending_frames, "idle_s": IDLE_S,
                   "max_bad_messages": MAX_BAD_MESSAGES},
        "accepts": {"audio": {"formats": ["pcm16", "f32"], "channels": 1, "sample_rate": "8000-48000 Hz, 16000 "
                              "preferred"}, "video": ["jpeg", "png"],
                    "binary": "1 byte kind (A = audio, V = video frame) + float64 LE seconds + payload"},
        "produced_by": analyzer.produced_by(), **warm,
    }))  # fmt: skip
    return session


async def _run(ws: WebSocket, service: Any, session: LiveSession) -> None:
    """Receive media until stop (or a limit); a pump task answers hops as the worker pool allows."""
    settings = service.settings
    send_lock = asyncio.Lock()
    wake = asyncio.Event()
    stopping = asyncio.Event()
    bad = 0

    async def send(msg: dict[str, Any]) -> None:
        async with send_lock:
            await ws.send_text(json.dumps(msg))

    async def run_job(fn: Any) -> Any:
        return await _on_worker(service, fn)

    async def pump() -> None:
        while True:
            await wake.wait()
            wake.clear()
            while session.has_work():
                try:
                    messages = await run_job(session.work)
                except Exception as e:  # an analysis error: said, and the session goes on
                    log.exception("live session %s: a hop failed", getattr(session, "id", "?"))
                    await send({"type": "error", "error": f"a hop failed ({type(e).__name__}: {e})", "fatal": False})
                    continue
                for m in messages:
                    due = m.pop("due_at")
                    m["latency_ms"] = round((time.monotonic() - due) * 1000, 1)
                    session.latencies_ms.append(m["latency_ms"])
                    await send(m)
            if stopping.is_set():
                return

    task = asyncio.create_task(pump())
    rationale = False
    try:
        while not stopping.is_set():
            try:
                msg = await asyncio.wait_for(ws.receive(), IDLE_S)
            except asyncio.TimeoutError:
                raise _Refused(f"no message for {IDLE_S:g} s: the session is closed", 1001) from None
            if msg.get("type") == "websocket.disconnect":
                raise WebSocketDisconnect(msg.get("code", 1000))
            try:
                if msg.get("bytes") is not None:
                    kind, t, payload = unpack_media(msg["bytes"])  # sizes: checked (and counted) by the session
                    (session.add_audio if kind == AUDIO else session.add_frame)(t, payload)
                    wake.set()
                else:
                    text = msg.get("text") or ""
                    if len(text.encode()) > MAX_TEXT_BYTES:
                        raise LiveError(f"a text message is larger than {MAX_TEXT_BYTES // 1024} KB")
                    body = _json(text)
                    if body.get("type") == "stop":
                        rationale = bool(body.get("rationale", False))
                        stopping.set()
                    elif body.get("type") == "ping":
                        await send({"type": "pong", **session.stats()})
                    else:
                        raise LiveError(f"unknown message type {body.get('type')!r}: send 'stop' or binary media")
            except LiveLimit as e:
                await send({"type": "error", "error": str(e), "fatal": False})
                stopping.set()
            except LiveError as e:
                bad += 1
                await send({"type": "error", "error": str(e), "fatal": False})
                if bad >= MAX_BAD_MESSAGES:
                    raise _Refused(f"{bad} unusable messages: the session is closed") from None
        wake.set()
        await asyncio.wait_for(task, settings.timeout_s)
        final = await asyncio.wait_for(run_job(lambda a: session.work(a, final=True)), settings.timeout_s)
        for m in final:
            due = m.pop("due_at")
            m["latency_ms"] = round((time.monotonic() - due) * 1000, 1)
            await send(m)
        session.flush_words()
        summary = await asyncio.wait_for(run_job(lambda a: session.summary(a, rationale=rationale)), settings.timeout_s)
        await send(summary)
        await ws.close(code=1000)
    except asyncio.TimeoutError:
        raise _Refused(f"the end of the session took longer than the server's limit of {settings.timeout_s:g} s",
                       1011) from None  # fmt: skip
    finally:
        task.cancel()


async def _on_worker(service: Any, fn: Any) -> Any:
    """``fn(analyzer)`` on a worker of the pool; waits (briefly, repeatedly) for a free slot."""
    while True:
        ticket = service.pool.admit()
        if ticket is not None:
            break
        await asyncio.sleep(0.05)  # meanwhile frames keep arriving and the oldest are dropped
    return await asyncio.wrap_future(ticket.submit(fn))


def _json(text: str) -> dict[str, Any]:
    try:
        body = json.loads(text)
    except ValueError:
        raise LiveError("a text message must be a JSON object") from None
    if not isinstance(body, dict):
        raise LiveError("a text message must be a JSON object")
    return body


def _bearer(value: str | None) -> str | None:
    if value and value.lower().startswith("bearer "):
        return value[7:].strip()
    return None


def _number(body: dict[str, Any], key: str, default: float) -> float:
    v = body.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise LiveError(f"{key} must be a number of seconds, got {v!r}")
    return float(v)
