"""``emollm serve`` under hostile input, each case a test: bodies cut short, slow and vanishing clients (real
sockets on loopback, every loop bounded), jobs stopped mid-way, inputs past the prompt's bound, mislabelled files,
form abuse, hostile names and keys, an empty key in the environment, the docs pages offline.

The other half of the battery is in ``test_service.py`` (oversized uploads and clips, garbage and empty media, no
file, wrong labels, a prompt the analyzer does not take, wrong or missing key, a full queue, a timeout, a crash).
"""

from __future__ import annotations

import gc
import json
import logging
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'emollm[serve]')")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (pip install 'emollm[serve]')")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from emollm.apps.serve.app import create_app  # noqa: E402
from emollm.apps.serve.cli import main  # noqa: E402
from emollm.apps.serve.settings import ServeSettings  # noqa: E402
from emollm.apps.serve.upload import MAX_FIELD_BYTES, MAX_PARTS  # noqa: E402

from .conftest import (  # noqa: E402
    LABELS,
    WAIT_S,
    DeadlineAnalyzer,
    StubAnalyzer,
    assert_no_uploads_left,
    live_server,
    multipart,
    read_status,
    request_head,
)

KIND = {"content-type": "multipart/form-data; boundary=b0undary"}


def _app(tmp_path, analyzers, **settings):
    return create_app(ServeSettings(labels=LABELS, tmp_dir=str(tmp_path), **settings), analyzers)


def _wait(cond, what: str, limit_s: float = WAIT_S) -> float:
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < limit_s, f"timed out waiting for {what}"
        time.sleep(0.01)
    return time.monotonic() - start


def _no_tracebacks(caplog) -> None:
    bad = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not bad, f"tracebacks were logged: {bad}"


# ------------------------------------------------------------------------------------------------ bodies
def test_a_body_cut_short_is_a_400_and_never_analysed(tmp_path):
    stub = StubAnalyzer()
    with TestClient(_app(tmp_path, [stub])) as client:
        body = multipart(("note.txt", b"I am so happy today, this is wonderful news."), closed=False)
        r = client.post("/v1/analyze", content=body, headers=KIND)
        assert r.status_code == 400 and "without its closing boundary (the upload was cut short)" in r.json()["error"]
        whole = client.post("/v1/analyze", content=multipart(("note.txt", b"I am happy.")), headers=KIND)
        assert whole.status_code == 200
        assert stub.calls == ["note.txt"]  # only the complete one
        assert_no_uploads_left(client.app)


@pytest.mark.parametrize(
    ("body", "headers", "fragment"),
    [
        (json.dumps({"file": "x"}).encode(), {"content-type": "application/json"}, "send multipart/form-data"),
        (b"", {"content-type": "multipart/form-data"}, "send multipart/form-data"),  # no boundary
        (multipart(("a.txt", b"hi"), colour="red"), KIND, "unknown form field 'colour'"),
        (multipart(("a.txt", b"hi"), subtitle="x" * (MAX_FIELD_BYTES + 1)), KIND, "longer than 64 KB"),
        (b"--b0undary\r\nno headers at all", KIND, ""),
    ],
    ids=["json", "no-boundary", "unknown-field", "huge-field", "garbage-multipart"],
)
def test_form_abuse_is_one_400(tmp_path, body, headers, fragment):
    stub = StubAnalyzer()
    with TestClient(_app(tmp_path, [stub])) as client:
        r = client.post("/v1/analyze", content=body, headers=headers)
        assert r.status_code == 400 and fragment in r.json()["error"] and "\n" not in r.json()["error"]
        assert stub.calls == []
        assert_no_uploads_left(client.app)


def test_repeated_fields_and_too_many_parts(tmp_path):
    part = '--b0undary\r\nContent-Disposition: form-data; name="{0}"{1}\r\n\r\nx\r\n'
    twice = (part.format("file", '; filename="a.txt"') * 2 + "--b0undary--\r\n").encode()
    many = (part.format("labels", "") * (MAX_PARTS + 1) + "--b0undary--\r\n").encode()
    with TestClient(_app(tmp_path, [StubAnalyzer()])) as client:
        assert "given twice" in client.post("/v1/analyze", content=twice, headers=KIND).json()["error"]
        r = client.post("/v1/analyze", content=many, headers=KIND)
        assert r.status_code == 400 and r.json()["error"] in (
            f"too many form fields (at most {MAX_PARTS})",
            "the form field 'labels' is given twice",
        )


# ------------------------------------------------------------------------------------------------ files
@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        ("clip.mp4", b"I am a text file wearing a video's name.\n" * 20, "clip.mp4: "),
        ("note.txt", bytes(range(256)) * 8, "not UTF-8 text"),
        ("voice.wav", b"\xff\xd8\xff\xe0" + b"\x00" * 2000, "voice.wav: "),
        ("clip", b"no extension at all", "unsupported file type"),
    ],
    ids=["text-as-mp4", "binary-as-txt", "jpeg-as-wav", "no-extension"],
)
def test_mislabelled_uploads_get_the_media_layers_one_line(tmp_path, name, data, fragment):
    stub = StubAnalyzer()
    with TestClient(_app(tmp_path, [stub])) as client:
        r = client.post("/v1/analyze", files={"file": (name, data)})
        assert r.status_code == 400 and fragment in r.json()["error"] and r.json()["file"] == name
        assert str(client.app.state.service.tmp_root) not in r.text and stub.calls == []
        assert_no_uploads_left(client.app)


def test_hostile_file_names_are_reduced_and_paths_never_leak(tmp_path):
    stub = StubAnalyzer()
    with TestClient(_app(tmp_path, [stub])) as client:
        for given, kept in (("../../../etc/passwd.txt", "passwd.txt"), ("..\\..\\boot.ini.txt", "boot_ini.txt"),
                            ("x" * 900 + ".txt", "x" * 80 + ".txt"), ("ÿ€$(rm -rf ~).txt", "rm_-rf.txt")):  # fmt: skip
            r = client.post("/v1/analyze", files={"file": (given, b"I am happy.")})
            assert r.status_code == 200 and r.json()["file"] == kept, (given, r.text)
            assert str(client.app.state.service.tmp_root) not in r.text
        r = client.post("/v1/analyze", files={"file": ("x" * 9000 + ".txt", b"I am happy.")})  # past the header limit
        assert r.status_code == 400 and "Maximum header size exceeded" in r.json()["error"]
        assert not (tmp_path.parent / "etc").exists()
        assert_no_uploads_left(client.app)


# ------------------------------------------------------------------------------------------------ keys
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer "}, {"Authorization": "Basic czNjcmV0"}, {"X-API-Key": "S3CRET"},
     {"X-API-Key": "s3cret" * 2000}, {"X-API-Key": "s3cré"}, {"Authorization": "Bearer s3cret\u00a0"}],
    ids=["none", "empty-bearer", "basic", "wrong-case", "10kB", "non-ascii", "trailing-nbsp"],
)  # fmt: skip
def test_wrong_keys_are_401_never_500(tmp_path, media, headers):
    with TestClient(_app(tmp_path, [StubAnalyzer()], api_key="s3cret")) as client:
        encoded = {k: v.encode("utf-8") for k, v in headers.items()}  # raw bytes on the wire
        with open(media / "note.txt", "rb") as f:
            r = client.post("/v1/analyze", files={"file": ("note.txt", f)}, headers=encoded)
        assert r.status_code == 401 and r.json()["error"].startswith("missing or wrong API key")


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_key_in_the_environment_refuses_to_start(monkeypatch, capsys, value):
    monkeypatch.setenv("EMOLLM_API_KEY", value)
    assert main(["--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "EMOLLM_API_KEY is set but empty" in err and "unset EMOLLM_API_KEY" in err


# ------------------------------------------------------------------------------------------------ slow clients
def _slow_upload(port: int, result: list, stop: threading.Event, headers: dict[str, str] | None = None) -> None:
    """Sends the head and the first bytes, then one byte every 0.1 s (at most 100) until the server answers."""
    body = multipart(("slow.txt", b"I am so happy." * 200))
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(request_head(port, len(body), headers=headers) + body[:100])
        sock.settimeout(0.1)
        for i in range(100):  # bounded: 10 s
            if stop.is_set():
                break
            try:
                sock.sendall(body[100 + i : 101 + i])
                if sock.recv(1, socket.MSG_PEEK):
                    break  # the server answered
            except TimeoutError:
                continue
            except OSError:
                break  # the server closed the connection
        result.append(read_status(sock, 5.0))


def test_slow_clients_hold_no_analysis_slot_and_lose_their_upload_slot_at_the_deadline(tmp_path, media, caplog):
    """Before: a request was admitted before its body arrived, so two clients sending one byte at a time held the
    only analysis slot (and the server answered 503 until they finished). Now a fast client is analysed meanwhile,
    the slow ones get 408 at --upload-timeout-s, and past --max-uploads a new upload is refused at once."""
    stub = StubAnalyzer()
    app = _app(tmp_path, [stub], queue=0, upload_timeout_s=1.5, max_uploads=3)  # 1 analysis slot
    caplog.set_level(logging.INFO)
    stop = threading.Event()
    with live_server(app) as (_, port), ThreadPoolExecutor(3) as pool:
        results: list = []
        slow = [pool.submit(_slow_upload, port, results, stop) for _ in range(2)]
        url = f"http://127.0.0.1:{port}"
        try:
            _wait(lambda: app.state.service.uploading == 2, "two slow uploads")
            health = httpx.get(f"{url}/health", timeout=WAIT_S).json()["pool"]
            assert health["uploading"] == 2 and health["admitted"] == 0  # uploads hold no analysis slot
            with open(media / "note.txt", "rb") as f:
                fast = httpx.post(f"{url}/v1/analyze", files={"file": ("note.txt", f)}, timeout=WAIT_S)
            assert fast.status_code == 200 and stub.calls == ["note.txt"]  # served while the slow ones upload
            third: list = []
            pool.submit(_slow_upload, port, third, stop)
            _wait(lambda: app.state.service.uploading == 3, "a third slow upload")
            start = time.monotonic()
            with open(media / "note.txt", "rb") as f:
                busy = httpx.post(f"{url}/v1/analyze", files={"file": ("note.txt", f)}, timeout=WAIT_S)
            assert busy.status_code == 503 and "--max-uploads" in busy.json()["error"]
            assert int(busy.headers["retry-after"]) >= 1 and time.monotonic() - start < 2
            for fut in slow:
                fut.result(WAIT_S)
        finally:
            stop.set()
        assert [status for status, _ in results] == [408, 408]
        answer = results[0][1].decode("latin-1")
        assert "--upload-timeout-s" in answer and "connection: close" in answer.lower()
        _wait(lambda: app.state.service.uploading == 0, "the upload slots to free")
        with open(media / "note.txt", "rb") as f:  # and the server serves again
            assert httpx.post(f"{url}/v1/analyze", files={"file": ("note.txt", f)}, timeout=WAIT_S).status_code == 200
        assert_no_uploads_left(app)
    _no_tracebacks(caplog)


def test_a_client_that_vanishes_mid_upload_costs_one_log_line(tmp_path, media, caplog):
    stub = StubAnalyzer()
    app = _app(tmp_path, [stub])
    caplog.set_level(logging.INFO)
    with live_server(app) as (_, port):
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
                sock.sendall(request_head(port, 200_000) + multipart(("gone.txt", b"x" * 5000))[:3000])
                _wait(lambda: app.state.service.uploading == 1, "the upload to start")
            _wait(lambda: app.state.service.uploading == 0, "the server to notice the disconnect")
        with open(media / "note.txt", "rb") as f:
            r = httpx.post(f"http://127.0.0.1:{port}/v1/analyze", files={"file": ("note.txt", f)}, timeout=WAIT_S)
        assert r.status_code == 200 and stub.calls == ["note.txt"]
        assert_no_uploads_left(app)
    lines = [r.getMessage() for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(lines) == 3 and all(line.endswith("disconnected during the upload") for line in lines), lines
    assert not any("ClientDisconnect" in r.getMessage() for r in caplog.records)
    _no_tracebacks(caplog)


# ------------------------------------------------------------------------------------------------ jobs stopped
def test_a_timed_out_job_is_stopped_and_frees_its_worker(tmp_path, media, caplog):
    """Before: a timed-out job ran to its end on its worker (here 20 s) and held its slot. Now it stops at its next
    deadline check, within a step of the 504."""
    slow = DeadlineAnalyzer(steps=400, step_s=0.05)  # 20 s of work
    with TestClient(_app(tmp_path, [slow], timeout_s=0.5, queue=0)) as client:
        start = time.monotonic()
        with open(media / "note.txt", "rb") as f:
            r = client.post("/v1/analyze", files={"file": ("note.txt", f)})
        answered = time.monotonic() - start
        assert r.status_code == 504 and r.json()["error"] == (
            "the analysis took longer than the server's limit of 0.5 s (--timeout-s) and was stopped"
        )
        freed = _wait(slow.finished.is_set, "the job to stop", limit_s=5)
        _wait(lambda: client.app.state.service.pool.stats()["admitted"] == 0, "the slot", limit_s=5)
        print(f"504 after {answered:.2f} s; the job stopped {freed:.2f} s later after {len(slow.done_steps)} steps")
        assert answered < 3 and freed < 1.0 and len(slow.done_steps) < 40
        assert slow.stopped and "the server's limit of 0.5 s (--timeout-s)" in slow.stopped[0]
        assert client.app.state.service.pool.stats()["stopped"] == 1
        assert_no_uploads_left(client.app)
    gc.collect()  # an unretrieved future's error is logged when it is collected
    _no_tracebacks(caplog)


def test_a_client_that_leaves_during_the_analysis_stops_its_job(tmp_path, media, caplog):
    slow = DeadlineAnalyzer(steps=400, step_s=0.05)
    app = _app(tmp_path, [slow], timeout_s=60)
    caplog.set_level(logging.INFO)
    with live_server(app) as (_, port):
        body = multipart(("note.txt", (media / "note.txt").read_bytes()))
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
            sock.sendall(request_head(port, len(body)) + body)
            _wait(slow.started.is_set, "the job to start")
        freed = _wait(slow.finished.is_set, "the job to stop", limit_s=5)
        _wait(lambda: app.state.service.pool.stats()["admitted"] == 0, "the slot", limit_s=5)
        assert_no_uploads_left(app)
    assert freed < 2 and slow.stopped and "the client disconnected" in slow.stopped[0]
    assert any("disconnected while note.txt was analysed" in r.getMessage() for r in caplog.records)
    _no_tracebacks(caplog)


# ------------------------------------------------------------------------------------------------ bounded input
@pytest.fixture(scope="module")
def clue_app(tmp_path_factory):
    from emollm.apps.clue_mode import ClueAnalyzer, ClueSettings

    analyzer = ClueAnalyzer(LABELS, ClueSettings(frames=4, reasoning="template", asr=False))
    app = create_app(ServeSettings(labels=LABELS, tmp_dir=str(tmp_path_factory.mktemp("up"))), [analyzer])
    with TestClient(app) as client:
        yield client


def test_a_4mb_text_upload_is_cut_to_the_bound_with_a_note(clue_app):
    text = ("I am so happy today, this is wonderful news. " * 90_000)[:4_000_000]
    clue_app.post("/v1/analyze", files={"file": ("warm.txt", b"I am happy.")})  # loads the text model
    start = time.monotonic()
    r = clue_app.post("/v1/analyze", files={"file": ("big.txt", text.encode())})
    took = time.monotonic() - start
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["label"] == "happy" and len(out["subtitle"]) <= 2000 and took < 30
    assert out["notes"] == [
        f"text file: 4,000,000 characters, cut to the first {len(out['subtitle']):,} (limit 2,000 characters, "
        "max_text_chars)"
    ]
    assert out["produced_by"]["max_text_chars"] == 2000
    assert_no_uploads_left(clue_app.app)


def test_a_61kb_subtitle_on_a_short_wav_is_cut_to_the_bound_with_a_note(clue_app, tmp_path):
    from emollm.media.fixtures import make_audio_file

    wav = make_audio_file(tmp_path / "voice.wav", "tone", seconds=2.0, sample_rate=16000).path
    subtitle = ("I cannot believe you lied to me again. " * 1600)[:61_000]
    with open(wav, "rb") as f:
        r = clue_app.post("/v1/analyze", files={"file": ("voice.wav", f)}, data={"subtitle": subtitle})
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["subtitle"]) <= 2000 and out["notes"][0].startswith("subtitle: 61,000 characters, cut to")
    assert_no_uploads_left(clue_app.app)


# ------------------------------------------------------------------------------------------------ docs
def test_docs_pages_load_nothing_from_the_network(tmp_path):
    with TestClient(_app(tmp_path, [StubAnalyzer()], api_key="k")) as client:
        for page in ("/docs", "/redoc"):
            r = client.get(page)
            assert r.status_code == 200
            refs = re.findall(r'(?:src|href)="([^"]+)"', r.text) + re.findall(r"url: *'([^']+)'", r.text)
            assert refs and not [u for u in refs if "//" in u], f"{page} references {refs}"
            assert not re.search(r"https?://", r.text), f"{page} names a remote URL"
            for ref in refs:
                if ref.startswith("/docs-assets/"):
                    asset = client.get(ref)
                    assert asset.status_code == 200 and len(asset.content) > 1000, ref
        assert client.get("/docs-assets/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")
        spec = client.get("/openapi.json").json()
        answers = spec["paths"]["/v1/analyze"]["post"]["responses"]
        assert {"200", "400", "401", "408", "413", "503", "504"} <= set(answers)
        assert answers["503"]["headers"]["Retry-After"]


def test_docs_assets_missing_is_one_clear_error(monkeypatch):
    import importlib.util

    from emollm.apps.serve import app as app_module

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi_offline" else real(name))
    with pytest.raises(ImportError, match=r"pip install 'emollm\[serve\]'"):
        app_module.docs_assets()
