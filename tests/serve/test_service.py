"""``emollm serve`` through FastAPI's TestClient: results, errors, limits, the bounded queue, cleanup."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'emollm[serve]')")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (pip install 'emollm[serve]')")

from fastapi.testclient import TestClient  # noqa: E402

from emollm.apps.serve.app import create_app  # noqa: E402
from emollm.apps.serve.cli import main  # noqa: E402
from emollm.apps.serve.settings import ServeSettings  # noqa: E402
from emollm.media import MediaError, probe  # noqa: E402

from .conftest import LABELS, WAIT_S, StubAnalyzer, assert_no_uploads_left  # noqa: E402


def _client(tmp_path, analyzers, **settings) -> TestClient:
    app = create_app(ServeSettings(labels=LABELS, tmp_dir=str(tmp_path), **settings), analyzers)
    return TestClient(app)


def _post(client, path, headers=None, **data):
    with open(path, "rb") as f:
        return client.post("/v1/analyze", files={"file": (path.name, f)}, data=data, headers=headers or {})


def _wait(cond, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# ------------------------------------------------------------------------------------ the real clue analyzer
@pytest.fixture(scope="module")
def clue_client(tmp_path_factory):
    from emollm.apps.clue_mode import ClueAnalyzer, ClueSettings

    analyzer = ClueAnalyzer(LABELS, ClueSettings(frames=6, reasoning="template"))
    app = create_app(ServeSettings(labels=LABELS, tmp_dir=str(tmp_path_factory.mktemp("up"))), [analyzer])
    with TestClient(app) as client:
        yield client


def test_upload_answers_the_cli_json(clue_client, media):
    r = _post(clue_client, media / "happy.mp4")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["mode"] == "clues" and out["label"] == "happy" and out["file"] == "happy.mp4"
    assert list(out["probabilities"]) == list(LABELS) and sum(out["probabilities"].values()) == pytest.approx(1, 1e-3)
    assert list(out) == ["file", "label", "probabilities", "reasoning", "modalities", "missing", "subtitle", "mode",
                         "reasoning_source", "evidence", "timings", "produced_by", "notes"]  # fmt: skip
    face = out["evidence"]["face"]
    assert "AU12" in face["aus"] and len(face["expression_over_time"]) == len(face["frames"])
    assert "no audio track" in out["missing"]["audio"] and str(clue_client.app.state.service.tmp_root) not in r.text
    info = json.loads(r.headers["x-emollm-media"])
    assert info["kind"] == "video" and info["fps"] == 10 and info["box_scale"] == 1.0
    assert_no_uploads_left(clue_client.app)


def test_labels_in_another_order_pass_other_labels_are_refused(clue_client, media):
    r = _post(clue_client, media / "note.txt", labels=",".join(reversed(LABELS)).upper(), subtitle="")
    assert r.status_code == 200 and r.json()["label"] == "happy" and list(r.json()["probabilities"]) == list(LABELS)
    r = _post(clue_client, media / "note.txt", labels="happy,sad")
    assert r.status_code == 400 and r.json()["file"] == "note.txt"
    assert r.json()["error"].startswith(f"this server analyses the labels {','.join(LABELS)}; got happy,sad")
    r = _post(clue_client, media / "note.txt", prompt="Which emotion?")
    assert r.status_code == 400 and "takes no prompt" in r.json()["error"]
    assert_no_uploads_left(clue_client.app)


def test_bad_media_gives_the_cli_one_line_message(clue_client, media):
    with pytest.raises(MediaError) as cli_error:
        probe(media / "garbage.mp4")
    r = _post(clue_client, media / "garbage.mp4")
    assert r.status_code == 400
    assert r.json() == {"error": str(cli_error.value).replace(str(media / "garbage.mp4"), "garbage.mp4"),
                        "file": "garbage.mp4"}  # fmt: skip
    assert "\n" not in r.json()["error"]
    empty = clue_client.post("/v1/analyze", files={"file": ("empty.mp4", b"")})
    assert empty.status_code == 400 and empty.json()["error"].startswith("empty.mp4: ")
    nofile = clue_client.post("/v1/analyze", data={"subtitle": "hi"})
    assert nofile.status_code == 400 and "in the field 'file'" in nofile.json()["error"]
    assert_no_uploads_left(clue_client.app)


def test_health_version_openapi_and_page(clue_client):
    health = clue_client.get("/health").json()
    assert health["status"] == "ok" and health["pool"]["capacity"] == 5 and health["auth"] is False
    version = clue_client.get("/version").json()
    assert version["emollm"] and version["produced_by"]["mode"] == "clues"
    spec = clue_client.get("/openapi.json").json()
    body = spec["paths"]["/v1/analyze"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert body["schema"]["required"] == ["file"]
    page = clue_client.get("/")
    assert page.status_code == 200 and 'id="prob-chart"' in page.text and "http" not in page.text.split("<body")[0]
    assert clue_client.get("/static/app.js").status_code == 200


def test_concurrent_requests_all_succeed(clue_client, media):
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: _post(clue_client, media / "note.txt"), range(3)))
    assert [r.status_code for r in results] == [200] * 3 and {r.json()["label"] for r in results} == {"happy"}
    assert_no_uploads_left(clue_client.app)


# ------------------------------------------------------------------------------------------------ API key
def test_api_key(tmp_path, media):
    with _client(tmp_path, [StubAnalyzer()], api_key="s3cret") as client:
        assert client.get("/health").status_code == 200  # open: liveness for load balancers
        r = _post(client, media / "note.txt")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "API key" in r.json()["error"]
        assert _post(client, media / "note.txt", {"Authorization": "Bearer nope"}).status_code == 401
        assert client.get("/version").status_code == 401
        assert _post(client, media / "note.txt", {"Authorization": "Bearer s3cret"}).status_code == 200
        assert _post(client, media / "note.txt", {"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/version", headers={"X-API-Key": "s3cret"}).json()["produced_by"]["mode"] == "stub"
        assert_no_uploads_left(client.app)


# ------------------------------------------------------------------------------------------------ limits
def test_upload_size_is_refused_while_streaming(tmp_path, media):
    stub = StubAnalyzer()
    with _client(tmp_path, [stub], max_upload_mb=0.01) as client:  # 10 KiB
        r = client.post("/v1/analyze", files={"file": ("big.txt", b"a" * 20_000)})
        assert r.status_code == 413 and "--max-upload-mb" in r.json()["error"]

        boundary = "b0undary"

        def body():  # no Content-Length: only the streaming count can stop it
            yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.txt"\r\n\r\n'.encode()
            for _ in range(100):
                yield b"x" * 1024
            yield f"\r\n--{boundary}--\r\n".encode()

        kind = {"content-type": f"multipart/form-data; boundary={boundary}"}
        r = client.post("/v1/analyze", content=body(), headers=kind)
        assert r.status_code == 413
        declared = client.post("/v1/analyze", content=b"x", headers={"content-length": str(10**9)})
        assert declared.status_code == 413
        assert _post(client, media / "note.txt").status_code == 200  # small files still pass
        assert stub.calls == ["note.txt"]
        assert_no_uploads_left(client.app)


def test_duration_limit(tmp_path, media):
    with _client(tmp_path, [StubAnalyzer()], max_duration_s=1.0) as client:
        r = _post(client, media / "happy.mp4")
        assert r.status_code == 413 and r.json() == {
            "error": "happy.mp4: the clip lasts 2.0 s, longer than this server's limit of 1 s (send a shorter clip, "
            "or run the server with a larger --max-duration-s)",
            "file": "happy.mp4",
        }
        assert_no_uploads_left(client.app)


def test_full_queue_answers_503_at_once(tmp_path, media):
    gate = threading.Event()
    stub = StubAnalyzer(gate)
    with _client(tmp_path, [stub], queue=1) as client, ThreadPoolExecutor(2) as pool:
        try:
            first = pool.submit(_post, client, media / "note.txt")
            _wait(stub.started.is_set, "the first job to start")
            second = pool.submit(_post, client, media / "note.txt")
            _wait(lambda: client.app.state.service.pool.stats()["admitted"] == 2, "the second job to queue")
            start = time.monotonic()
            r = _post(client, media / "note.txt")
            assert time.monotonic() - start < 5
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1 and "busy" in r.json()["error"]
        finally:
            gate.set()
        assert first.result(WAIT_S).status_code == 200 and second.result(WAIT_S).status_code == 200
        assert_no_uploads_left(client.app)
    assert stub.closed


def test_timeout_answers_504_and_skips_waiting_jobs(tmp_path, media):
    gate = threading.Event()
    stub = StubAnalyzer(gate)
    with _client(tmp_path, [stub], queue=1, timeout_s=0.5) as client, ThreadPoolExecutor(2) as pool:
        try:
            running = pool.submit(_post, client, media / "note.txt")
            _wait(stub.started.is_set, "the first job to start")
            waiting = _post(client, media / "note.txt")  # queued behind the stuck one, times out there
            assert waiting.status_code == 504 and "--timeout-s" in waiting.json()["error"]
            assert running.result(WAIT_S).status_code == 504
            assert_no_uploads_left(client.app)  # deleted at once, although the first job still runs
        finally:
            gate.set()
        _wait(lambda: client.app.state.service.pool.stats()["admitted"] == 0, "the slots to free")
        assert stub.calls == ["note.txt"]  # the timed-out waiting job never ran
        assert _post(client, media / "note.txt").status_code == 200  # the pool recovered


def test_analyzer_crash_is_a_500_without_paths(tmp_path, media):
    class Broken(StubAnalyzer):
        def __call__(self, path, *, subtitle=None):
            raise RuntimeError(f"boom in {path}")

    with _client(tmp_path, [Broken()]) as client:
        r = _post(client, media / "note.txt")
        assert r.status_code == 500 and r.json()["error"] == (
            "the analysis failed (RuntimeError); the server log has the details"
        )
        assert_no_uploads_left(client.app)


def test_two_workers_each_own_an_analyzer(tmp_path, media):
    stubs = [StubAnalyzer(), StubAnalyzer()]
    with _client(tmp_path, stubs, workers=2, queue=6) as client, ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: _post(client, media / "note.txt"), range(8)))
        assert [r.status_code for r in results] == [200] * 8
        assert len(stubs[0].calls) + len(stubs[1].calls) == 8
        assert_no_uploads_left(client.app)


# ------------------------------------------------------------------------------------------------ CLI
@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--port", "70000"], "--port must be in 0..65535"),
        (["--labels", "happy"], "--labels needs at least two labels"),
        (["--queue", "-1"], "--queue must be >= 0"),
        (["--max-upload-mb", "0"], "--max-upload-mb must be a positive number"),
        (["--llm-endpoint", "http://127.0.0.1:9/v1"], "needs the served model's name (--llm-model NAME)"),
        (["--checkpoint", "ckpt", "--llm-endpoint", "http://h/v1"], "a checkpoint generates in this process"),
        (["--llm-extra", "[1]"], "--llm-extra: a JSON object is needed"),
    ],
)
def test_cli_one_line_errors(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1


def test_api_key_from_env(monkeypatch):
    monkeypatch.setenv("EMOLLM_API_KEY", "k")
    assert ServeSettings.api_key_from_env(None) == "k" and ServeSettings.api_key_from_env("given") == "given"
    monkeypatch.delenv("EMOLLM_API_KEY")
    assert ServeSettings.api_key_from_env(None) is None


def test_the_clue_modes_rationale_comes_from_an_openai_compatible_server(tmp_path, media):
    """`emollm serve --llm-endpoint URL --llm-model NAME`: the rationale of each answer is written by the server (its
    model named in reasoning_source and produced_by), with the timeout and extra fields given on the command line."""
    from emollm.apps.serve.cli import _parser, _settings
    from tests.engines.fake_openai import FakeOpenAI

    with FakeOpenAI() as server:
        args = _parser().parse_args([
            "--labels", ",".join(LABELS), "--tmp-dir", str(tmp_path), "--llm-endpoint", server.url,
            "--llm-model", "qwen", "--llm-timeout", "30", "--llm-extra", '{"repeat_penalty": 1.1}',
        ])  # fmt: skip
        with TestClient(create_app(_settings(args))) as client:
            r = _post(client, media / "note.txt", subtitle="")
        assert r.status_code == 200, r.text
        assert len(server.requests) == 1 and server.requests[0]["body"]["repeat_penalty"] == 1.1
    out = r.json()
    assert out["reasoning_source"] == "llm:qwen" and out["reasoning"].startswith("answer: ")
