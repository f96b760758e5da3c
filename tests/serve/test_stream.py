"""WS /v1/stream through FastAPI's TestClient: the start handshake, the key, bad messages that do not end a session,
the session limits, drops under a slow analyzer, and a disconnect that frees the session."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'emollm[serve]')")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (pip install 'emollm[serve]')")

from fastapi.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

from emollm.apps.live import AUDIO, VIDEO, pack_media  # noqa: E402
from emollm.apps.serve.app import create_app  # noqa: E402
from emollm.apps.serve.settings import ServeSettings  # noqa: E402
from emollm.media import fixtures  # noqa: E402

from .conftest import LABELS, WAIT_S, StubAnalyzer, serve_in_thread  # noqa: E402

START = {"type": "start", "audio": {"format": "pcm16", "sample_rate": 16000}}


def _pcm(seconds: float) -> bytes:
    t = np.arange(round(seconds * 16000)) / 16000
    return (0.1 * np.sin(2 * np.pi * 200 * t) * 32767).astype("<i2").tobytes()


def _jpeg() -> bytes:
    import cv2

    frame = cv2.resize(fixtures.load_photo("astronaut"), (240, 240))
    return cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes()


def _until(ws, kind: str) -> tuple[dict, list[dict]]:
    """Messages until one of ``kind`` (returned with the ones before it)."""
    seen = []
    while True:
        msg = json.loads(ws.receive_text())
        if msg["type"] == kind:
            return msg, seen
        seen.append(msg)


def _analyzer():
    from emollm.apps.clue_mode import ClueAnalyzer, ClueSettings

    return ClueAnalyzer(LABELS, ClueSettings(reasoning="template", asr=False))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = ServeSettings(labels=LABELS, tmp_dir=str(tmp_path_factory.mktemp("up")), api_key="secret",
                             max_duration_s=4.0, max_streams=2)  # fmt: skip
    with TestClient(create_app(settings, [_analyzer()])) as c:
        yield c


AUTH = {"Authorization": "Bearer secret"}


@pytest.mark.parametrize(
    ("first", "error"),
    [
        (b"A" + bytes(8), "the first message must be a text"),
        ("not json", "must be a JSON object"),
        ({"type": "stop"}, 'the first message must be {"type": "start"'),
        ({**START, "frames": 3}, "unknown start field(s) frames"),
        ({**START, "labels": ["happy", "sad"]}, "this server analyses the labels"),
        ({**START, "window_s": 2, "hop_s": 3}, "--hop (3 s) must not be longer than --window"),
        ({**START, "audio": {"format": "mp3"}}, "audio.format must be one of pcm16, f32"),
        ({**START, "face_path": "eyes"}, "face_path must be 'landmarker' or 'detector'"),
    ],
)
def test_a_bad_start_is_refused_with_its_reason(client, first, error):
    with client.websocket_connect("/v1/stream", headers=AUTH) as ws:
        if isinstance(first, bytes):
            ws.send_bytes(first)
        else:
            ws.send_text(first if isinstance(first, str) else json.dumps(first))
        msg = json.loads(ws.receive_text())
        assert msg["type"] == "error" and msg["fatal"] and error in msg["error"], msg
        with pytest.raises(WebSocketDisconnect):
            ws.receive_text()


def test_the_key_is_checked_in_the_handshake_or_the_start_message(client):
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_text(json.dumps(START))
        msg = json.loads(ws.receive_text())
        assert msg["fatal"] and msg["error"].startswith("missing or wrong API key")
    with client.websocket_connect("/v1/stream", headers={"X-API-Key": "wrong"}) as ws:
        ws.send_text(json.dumps(START))
        assert "wrong API key" in json.loads(ws.receive_text())["error"]
    with client.websocket_connect("/v1/stream") as ws:  # a browser: the key in the start message
        ws.send_text(json.dumps({**START, "api_key": "secret", "labels": list(reversed(LABELS))}))
        ready = json.loads(ws.receive_text())
        assert ready["type"] == "ready" and ready["labels"] == list(LABELS) and ready["window_s"] == 3.0
        assert ready["limits"]["max_session_s"] == 4.0 and "jpeg" in ready["accepts"]["video"]
        ws.send_text(json.dumps({"type": "stop"}))
        summary, _ = _until(ws, "summary")
        assert summary["hops"] == 0 and summary["label"] is None


def test_bad_messages_get_an_error_and_the_session_goes_on(client):
    with client.websocket_connect("/v1/stream", headers=AUTH) as ws:
        ws.send_text(json.dumps(START))
        _until(ws, "ready")
        bad = [
            b"A\x00\x01",  # shorter than the header
            b"Z" + bytes(8) + b"xx",  # unknown kind
            pack_media(VIDEO, 0.1, b"not an image"),
            pack_media(VIDEO, 0.1, b"\xff\xd8\xff" + bytes(3 * 1024 * 1024)),  # past the frame size limit
            pack_media(AUDIO, 0.0, _pcm(2.5)),  # a chunk longer than 2 s
            pack_media(AUDIO, -1.0, _pcm(0.1)),
        ]
        for message in bad:
            ws.send_bytes(message)
        ws.send_text("{broken")
        ws.send_text(json.dumps({"type": "dance"}))
        ws.send_bytes(pack_media(AUDIO, 0.0, _pcm(1.2)))
        ws.send_bytes(pack_media(AUDIO, 0.5, _pcm(0.1)))  # out of order
        hop, errors = _until(ws, "hop")
        ws.send_text(json.dumps({"type": "ping"}))
        pong, more = _until(ws, "pong")
        errors += more
        texts = [e["error"] for e in errors]
        assert all(e["type"] == "error" and not e["fatal"] for e in errors) and len(errors) == len(bad) + 3, texts
        for expected in ("9-byte header", "b'A' (audio) or b'V'", "JPEG or PNG", "larger than the limit",
                         "longer than the limit of 2 s", "finite number of seconds", "must be a JSON object",
                         "unknown message type 'dance'", "out of order"):  # fmt: skip
            assert any(expected in t for t in texts), (expected, texts)
        assert hop["seq"] == 1 and (hop["start"], hop["end"]) == (0.0, 1.0) and hop["latency_ms"] >= 0
        assert pong["frames"]["rejected"] == 2 and pong["media_s"] == pytest.approx(1.2)
        ws.send_text(json.dumps({"type": "stop"}))
        summary, rest = _until(ws, "summary")
        assert [m["type"] for m in rest] == [] and summary["hops"] == 1
        assert summary["timeline"]["source"] == "stream" and len(summary["timeline"]["entries"]) == 1
    assert client.get("/health").status_code == 200  # the server is fine


def test_a_session_ends_at_the_media_limit_with_its_summary(client):
    with client.websocket_connect("/v1/stream", headers=AUTH) as ws:
        ws.send_text(json.dumps(START))
        _until(ws, "ready")
        for k in range(5):  # 5 s against the server's --max-duration-s 4
            ws.send_bytes(pack_media(AUDIO, float(k), _pcm(1.0)))
        summary, seen = _until(ws, "summary")
        assert any(m["type"] == "error" and "limit of 4 s of media" in m["error"] for m in seen)
        assert summary["media_s"] == 4.0 and summary["ended"].startswith("the session reached the server's limit")
        with pytest.raises(WebSocketDisconnect):
            ws.receive_text()


def test_sessions_beyond_max_streams_are_refused_and_a_disconnect_frees_one(client):
    with (
        client.websocket_connect("/v1/stream", headers=AUTH) as one,
        client.websocket_connect("/v1/stream", headers=AUTH) as two,
    ):
        for ws in (one, two):
            ws.send_text(json.dumps(START))
            _until(ws, "ready")
        with client.websocket_connect("/v1/stream", headers=AUTH) as third:
            msg = json.loads(third.receive_text())
            assert msg["fatal"] and "already runs 2 live sessions (--max-streams)" in msg["error"]
        one.send_bytes(pack_media(AUDIO, 0.0, _pcm(0.5)))
    # Both clients went away without 'stop': their sessions are freed, a new one opens at once.
    deadline = time.monotonic() + WAIT_S
    while True:
        with client.websocket_connect("/v1/stream", headers=AUTH) as ws:
            ws.send_text(json.dumps(START))
            msg = json.loads(ws.receive_text())
            if msg["type"] == "ready":
                ws.send_text(json.dumps({"type": "stop"}))
                _until(ws, "summary")
                break
        assert time.monotonic() < deadline, "the disconnected sessions were never freed"
        time.sleep(0.05)


def test_an_analyzer_that_cannot_stream_is_refused(tmp_path):
    app = create_app(ServeSettings(labels=LABELS, tmp_dir=str(tmp_path)), [StubAnalyzer()])
    with TestClient(app) as c, c.websocket_connect("/v1/stream") as ws:
        ws.send_text(json.dumps(START))
        msg = json.loads(ws.receive_text())
        assert msg["fatal"] and "cannot analyse a live stream" in msg["error"]


def test_frames_beyond_what_the_analyzer_keeps_up_with_are_dropped_and_counted(tmp_path, monkeypatch):
    """A slow landmarker (0.3 s a frame) and 24 frames sent at once: at most 4 wait, the rest are dropped and
    counted; every frame received is accounted for (analysed, dropped busy, or dropped late)."""
    analyzer = _analyzer()
    app = create_app(ServeSettings(labels=LABELS, tmp_dir=str(tmp_path)), [analyzer])
    jpeg = _jpeg()
    with TestClient(app) as c, c.websocket_connect("/v1/stream") as ws:
        ws.send_text(json.dumps(START))
        _until(ws, "ready")  # the models are loaded (warm-up): now slow the landmarker down
        landmarker = analyzer._model("landmarker")
        real = landmarker.from_images

        def slow(frames):
            time.sleep(0.3)
            return real(frames)

        monkeypatch.setattr(landmarker, "from_images", slow)
        for k in range(24):
            ws.send_bytes(pack_media(AUDIO, k / 8, _pcm(0.125)))
            ws.send_bytes(pack_media(VIDEO, k / 8, jpeg))
        ws.send_text(json.dumps({"type": "stop"}))
        summary, seen = _until(ws, "summary")
    f = summary["frames"]
    assert f["received"] == 24 and f["dropped"] > 0 and f["dropped_share"] == pytest.approx(f["dropped"] / 24, abs=1e-4)
    assert f["received"] == f["analysed"] + f["dropped_busy"] + f["dropped_late"]
    hops = [m for m in seen if m["type"] == "hop"]
    assert hops and all(h["frames"]["received"] >= h["frames"]["analysed"] for h in hops)
    assert summary["label"] == "happy" and summary["evidence"]["face"]["frames"] == f["analysed"] - f["no_face"]


@pytest.mark.slow
def test_emollm_stream_replays_a_file_to_a_real_server_and_saves_the_timeline(tmp_path, capsys):
    """`emollm stream` against uvicorn on 127.0.0.1: the file paced at 4x real time (the clock starts at 'ready', after
    the models load), one hop per second of media, the summary, and the timeline JSON of analyze --timeline."""
    pytest.importorskip("websocket", reason="emollm stream needs websocket-client (the serve extra)")
    from emollm.apps.serve.client import main as stream_main
    from emollm.apps.serve.client import stream_file

    clip = tmp_path / "happy.mp4"
    fixtures.make_face_clip(clip, "astronaut", seconds=3.0, size=(320, 240), audio="tone")
    app = create_app(ServeSettings(labels=LABELS, tmp_dir=str(tmp_path)), [_analyzer()])
    with serve_in_thread(app) as where:
        url = f"ws://{where}/v1/stream"
        result = stream_file(clip, url, speed=4.0, timeout_s=WAIT_S)
        assert result.ready["type"] == "ready" and result.summary["label"] == "happy"
        assert result.sent["video"] == 9 and result.sent["audio"] == 30  # 3 frames/s and 100 ms chunks over 3 s
        assert [(h["start"], h["end"]) for h in result.hops] == [(0.0, 1.0), (0.0, 2.0), (0.0, 3.0)]
        out = tmp_path / "session.json"
        assert stream_main([str(clip), "--url", url, "--speed", "0", "--out", str(out)]) == 0
        saved = json.loads(out.read_text())
        assert saved["source"] == "stream" and saved["labels"] == list(LABELS) and saved["window_s"] == 3.0
        assert "session: happy over 3.0 s" in capsys.readouterr().out
    assert stream_main([str(clip), "--url", url]) == 2  # the server is gone
    assert "cannot open ws://127.0.0.1:" in capsys.readouterr().err
