"""``emollm stream FILE --url ws://HOST:PORT/v1/stream``: replay a file as a live stream and print the timeline.

The file is decoded in pieces (frames at ``--fps`` per second as JPEG, 16 kHz mono PCM16 audio in ``--chunk-ms``
chunks), sent in time order with the client's timestamps, at real time (``--speed 1``), faster (``--speed 4``) or as
fast as possible (``--speed 0``). Every hop answer is printed as it arrives; at the end the session's summary, and
with ``--out FILE`` the session's timeline (the JSON of ``emollm analyze --timeline``). The same as an API:
:func:`stream_file`. Uses ``websocket-client`` (the ``serve`` extra).

Protocol (``WS /v1/stream``, see :mod:`emollm.apps.serve.stream`): a text ``start`` message, then binary media
messages (:func:`emollm.apps.live.pack_media`), then a text ``stop``; the server answers ``ready``, one ``hop`` per
hop, ``error`` for a message it could not use, and ``summary``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emollm.apps.live import AUDIO, VIDEO, pack_media

__all__ = ["StreamResult", "file_messages", "main", "stream_file"]


def file_messages(
    path: str | os.PathLike[str], *, fps: float = 3.0, chunk_ms: int = 100, quality: int = 80, max_side: int = 640
) -> Iterator[tuple[float, bytes, bytes]]:
    """The file as ``(t, kind, payload)`` messages in time order: JPEG frames at ``fps`` and PCM16 16 kHz audio
    chunks of ``chunk_ms``. Frames are decoded 32 at a time (memory stays small for long files).

    Raises:
        emollm.media.MediaError: The file cannot be read.
    """
    import cv2

    from emollm.media import MediaError, load_audio, probe, read_frames, sample_frame_indices

    info = probe(path)
    audio = None
    if info.kind in ("video", "audio"):
        try:
            audio = load_audio(path, sample_rate=16000, min_duration=None, reject_silent=False, info=info)
        except MediaError:
            audio = None  # a video without a usable audio track streams its frames only
    chunks: list[tuple[float, bytes, bytes]] = []
    if audio is not None:
        step = max(1, int(16000 * chunk_ms / 1000))
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
        chunks = [(i / 16000, AUDIO, pcm[i : i + step].tobytes()) for i in range(0, pcm.size, step)]
    indices: list[int] = []
    if info.kind == "video" and info.frames:
        indices = sample_frame_indices(info.frames, f"fps:{fps:g}", fps=info.fps)
    ai = 0
    for k in range(0, len(indices), 32):
        batch = indices[k : k + 32]
        frames = read_frames(path, batch, max_side=max_side, info=info)
        for i, frame in zip(batch, frames, strict=True):
            t = i / info.fps
            while ai < len(chunks) and chunks[ai][0] <= t:
                yield chunks[ai]
                ai += 1
            ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok:
                yield t, VIDEO, jpg.tobytes()
    yield from chunks[ai:]


@dataclass
class StreamResult:
    """What a streamed session gave back.

    Attributes:
        ready: The server's ``ready`` message.
        hops: The ``hop`` messages, in order.
        errors: The ``error`` messages.
        summary: The ``summary`` message (None if the session ended without one).
        sent: Messages sent (audio, video).
        seconds: Wall time of the session.
    """

    ready: dict[str, Any] = field(default_factory=dict)
    hops: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    sent: dict[str, int] = field(default_factory=lambda: {"audio": 0, "video": 0})
    seconds: float = 0.0

    @property
    def timeline(self) -> dict[str, Any] | None:
        """The session's timeline (from the summary)."""
        return None if self.summary is None else self.summary.get("timeline")


def stream_file(
    path: str | os.PathLike[str],
    url: str,
    *,
    api_key: str | None = None,
    speed: float = 1.0,
    fps: float = 3.0,
    chunk_ms: int = 100,
    window_s: float | None = None,
    hop_s: float | None = None,
    rationale: bool = False,
    face_path: str | None = None,
    on_message: Any = None,
    timeout_s: float = 60.0,
) -> StreamResult:
    """Replay ``path`` to a ``WS /v1/stream`` server as a live session.

    Args:
        path: A video or audio file.
        url: ``ws://HOST:PORT/v1/stream``.
        api_key: The server's key (sent as ``Authorization: Bearer``).
        speed: 1 = real time, 2 = twice as fast, 0 = as fast as possible.
        fps: Frames per second to send.
        chunk_ms: Audio chunk length.
        window_s: Window length to ask for (None: the server's).
        hop_s: Hop to ask for (None: the server's).
        rationale: Ask for the written rationale of the whole session at the end.
        face_path: ``landmarker`` or ``detector`` (None: the server's; see :class:`emollm.apps.live.LiveSettings`).
        on_message: Called with every message from the server as it arrives.
        timeout_s: Longest wait for the server's answers after the last message is sent.

    Raises:
        ConnectionError: The server refused the session or closed it; the message says why.
    """
    import websocket  # websocket-client

    headers = [f"Authorization: Bearer {api_key}"] if api_key else []
    try:
        ws = websocket.create_connection(url, header=headers, timeout=timeout_s)
    except (OSError, websocket.WebSocketException) as e:
        raise ConnectionError(f"cannot open {url}: {e}") from None
    result = StreamResult()
    done = threading.Event()
    lock = threading.Lock()

    def read() -> None:
        try:
            while True:
                raw = ws.recv()
                if not raw:
                    break
                msg = json.loads(raw)
                if on_message is not None:
                    on_message(msg)
                with lock:
                    kind = msg.get("type")
                    if kind == "ready":
                        result.ready = msg
                    elif kind == "hop":
                        result.hops.append(msg)
                    elif kind == "error":
                        result.errors.append(msg)
                    elif kind == "summary":
                        result.summary = msg
                        break
        except (OSError, ValueError, websocket.WebSocketException):
            pass
        finally:
            done.set()

    start: dict[str, Any] = {"type": "start", "audio": {"format": "pcm16", "sample_rate": 16000}}
    if window_s is not None:
        start["window_s"] = window_s
    if hop_s is not None:
        start["hop_s"] = hop_s
    if face_path is not None:
        start["face_path"] = face_path
    t0 = time.monotonic()
    try:
        ws.send(json.dumps(start))
        first = json.loads(ws.recv())
        if first.get("type") != "ready":
            raise ConnectionError(f"the server refused the session: {first.get('error') or first}")
        result.ready = first
        if on_message is not None:
            on_message(first)
        paced = time.monotonic()  # the media clock starts now: the first session's warm-up is not media time
        reader = threading.Thread(target=read, name="emollm-stream-reader", daemon=True)
        reader.start()
        for t, kind, payload in file_messages(path, fps=fps, chunk_ms=chunk_ms):
            if done.is_set():
                break  # the server ended the session
            if speed > 0:
                wait = paced + t / speed - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            ws.send_binary(pack_media(kind, t, payload))
            result.sent["audio" if kind == AUDIO else "video"] += 1
        if not done.is_set():
            ws.send(json.dumps({"type": "stop", "rationale": rationale}))
        if not done.wait(timeout_s):
            raise ConnectionError(f"no summary from {url} within {timeout_s:g} s of the end")
    except (OSError, websocket.WebSocketException) as e:
        raise ConnectionError(f"the session with {url} broke: {e}") from None
    finally:
        ws.close()
        result.seconds = round(time.monotonic() - t0, 3)
    return result


def _line(msg: dict[str, Any]) -> str | None:
    kind = msg.get("type")
    if kind == "hop":
        probs = sorted((msg.get("probabilities") or {}).items(), key=lambda kv: -kv[1])[:2]
        top = ", ".join(f"{k} {v:.2f}" for k, v in probs) or "no label"
        said = (msg.get("evidence") or {}).get("transcript") or ""
        f = msg.get("frames") or {}
        return (f"#{msg['seq']:<3} {msg['start']:6.2f}-{msg['end']:6.2f} s  {str(msg.get('label') or '-'):<9} "
                f"{top:<26} {msg.get('latency_ms', 0):6.0f} ms  dropped {f.get('dropped', 0)}/{f.get('received', 0)}"
                f"  {said[:40]}")  # fmt: skip
    if kind == "error":
        return f"server: {msg.get('error')}"
    return None


def main(argv: list[str] | None = None) -> int:
    """``emollm stream``."""
    p = argparse.ArgumentParser(prog="emollm stream", description=__doc__.split("\n\n")[0])
    p.add_argument("media", help="a video or audio file to replay as a live stream")
    p.add_argument("--url", default="ws://127.0.0.1:8000/v1/stream", help="the server's stream endpoint")
    p.add_argument("--api-key", help="the server's key (better: set EMOLLM_API_KEY)")
    p.add_argument("--speed", type=float, default=1.0, help="1 = real time, 4 = four times faster, 0 = no pacing")
    p.add_argument("--fps", type=float, default=3.0, help="video frames sent per second")
    p.add_argument("--chunk-ms", type=int, default=100, help="audio chunk length")
    p.add_argument("--window", type=float, help="window length in seconds (default: the server's)")
    p.add_argument("--hop", type=float, help="seconds between answers (default: the server's)")
    p.add_argument("--rationale", action="store_true", help="ask for the written rationale of the whole session")
    p.add_argument("--out", metavar="JSON", help="save the session's timeline (the JSON of analyze --timeline)")
    p.add_argument("--json", action="store_true", help="print every server message as one JSON line")
    args = p.parse_args(argv)
    if args.speed < 0 or not 0 < args.fps <= 30 or not 10 <= args.chunk_ms <= 2000:
        p.error("--speed must be >= 0, --fps in (0, 30], --chunk-ms in 10..2000")
    from emollm.media import MediaError

    def show(msg: dict[str, Any]) -> None:
        line = json.dumps(msg) if args.json else _line(msg)
        if line:
            print(line, flush=True)

    key = args.api_key or os.environ.get("EMOLLM_API_KEY") or None
    try:
        result = stream_file(
            args.media, args.url, api_key=key, speed=args.speed, fps=args.fps, chunk_ms=args.chunk_ms,
            window_s=args.window, hop_s=args.hop, rationale=args.rationale, on_message=show,
        )  # fmt: skip
    except (ConnectionError, MediaError, OSError) as e:
        print(f"emollm stream: {e}", file=sys.stderr)
        return 2
    s = result.summary
    if s is None:
        print("emollm stream: the session ended without a summary", file=sys.stderr)
        return 1
    if not args.json:
        lat = s.get("latency_ms") or {}
        frames = s.get("frames") or {}
        print(f"session: {s.get('label') or 'no label'} over {s.get('media_s')} s; {s.get('hops')} hops, latency p50 "
              f"{lat.get('p50')} ms, p95 {lat.get('p95')} ms; frames dropped {frames.get('dropped')}/"
              f"{frames.get('received')}; {s.get('ended')}")  # fmt: skip
        if s.get("reasoning"):
            print(f"rationale ({s.get('reasoning_source')}): {s['reasoning']}")
    if args.out:
        from emollm.apps.timeline import save_timeline

        save_timeline(s["timeline"], Path(args.out))
        print(f"timeline written to {args.out}", file=sys.stderr)
    return 0
