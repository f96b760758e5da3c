"""The FastAPI app of ``emollm serve``: ``POST /v1/analyze``, ``GET /health``, ``GET /version`` and the web page.

One request's path: API key (401) -> an upload slot (503 + ``Retry-After`` when ``--max-uploads`` are arriving, or
at once when the analysis pool is full) -> the upload streams into a private folder, refused past the size limit as
it arrives (413), past ``--upload-timeout-s`` (408) or when the body ends without its closing boundary (400) ->
admission into the bounded analysis pool (503 + ``Retry-After`` when full) -> the header is probed (400 with the
media layer's one-line message, 413 past the duration limit) -> the analysis runs on a worker thread that owns its
analyzer (504 past the timeout) -> :meth:`emollm.apps.analysis.Analysis.to_dict` with ``file`` set to the upload's name.
The request's folder is deleted on every path. Errors answer ``{"error": one line, "file": upload name}``.

Decisions:

- **Labels per request**: a request may repeat the server's label set (any order or case) but not change it (400
  naming the server's labels). Another set would need another analyzer, i.e. another copy of every model per set;
  run a second server with ``--labels`` instead, so memory stays what ``--workers`` says.
- **Open routes**: ``/health``, the page, its static files and the OpenAPI docs (``/docs``, ``/redoc``, served
  from local files: they work offline) need no key (liveness checks and the page's own start-up); ``/version`` and
  ``/v1/*`` do.
- **Slow clients**: a request is admitted for analysis only once its body is complete, so an upload in progress
  holds an upload slot (``--max-uploads``), never an analysis slot, and loses it at ``--upload-timeout-s``. A client
  that disconnects costs one log line; its job (if any) is stopped.
- **Timeouts**: the clock starts once the upload is in (probe, queue wait, analysis). The job runs under that
  deadline (:mod:`emollm.utils.deadline`): it stops at its next stage or generated token, so the worker and its
  slot are free again moments after the 504. A timed-out job still waiting never runs.
- **Paths**: answers name the upload (``file`` and every message), never the server's temporary path.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict
from starlette.requests import ClientDisconnect

from emollm import __version__
from emollm.apps.serve.jobs import JobPool, Ticket
from emollm.apps.serve.settings import ServeSettings
from emollm.apps.serve.stream import TIMELINE_PARAMETERS, add_stream_route, timeline_query
from emollm.apps.serve.upload import (
    BadUpload,
    Upload,
    UploadTimeout,
    UploadTooLarge,
    receive_upload,
    too_large_message,
)
from emollm.utils.deadline import DeadlineExceeded

__all__ = ["ServiceError", "create_app"]

log = logging.getLogger("emollm.apps.serve")
STATIC = Path(__file__).parent / "static"
FIELD_ALLOWANCE = 1 << 20
"""Body bytes allowed beyond the file limit, for the text fields and multipart headers."""

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY (when the server has a key)")
_x_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="the key (when the server has one)")

_ANALYZE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": "video, audio, image or .txt"},
                    "labels": {"type": "string", "description": "comma-separated; must be the server's label set"},
                    "subtitle": {"type": "string", "description": "what the person says (skips speech recognition)"},
                    "prompt": {"type": "string", "description": "only for analyzers that take one (else 400)"},
                },
            }
        }
    },
}


class ErrorAnswer(BaseModel):
    """Every error: one line, and the upload's name when there was one."""

    error: str
    file: str | None = None


class AnalysisAnswer(BaseModel):
    """The JSON of ``emollm analyze --json`` (:class:`emollm.apps.analysis.Analysis`), ``file`` = the upload's name."""

    model_config = ConfigDict(extra="allow")

    file: str
    label: str | None
    probabilities: dict[str, float]
    reasoning: str
    modalities: list[str]
    missing: dict[str, str]
    subtitle: str | None
    mode: str
    reasoning_source: str
    evidence: dict[str, Any]
    timings: dict[str, float]
    produced_by: dict[str, Any]
    notes: list[str]


def _error(description: str, *headers: str) -> dict[str, Any]:
    documented = {h: {"schema": {"type": "string"}, "description": h} for h in headers}
    return {"model": ErrorAnswer, "description": description, **({"headers": documented} if documented else {})}


_KEYED_ERRORS = {401: _error("missing or wrong API key", "WWW-Authenticate")}
_ANALYZE_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"model": AnalysisAnswer, "description": "the analysis", "headers": {"X-Emollm-Media": {
        "schema": {"type": "string"}, "description": "JSON: kind, fps, frames, duration, width, height, box_scale"}}},
    400: _error("not a usable upload (not multipart, no file, cut short) or bad media (the CLI's message)"),
    **_KEYED_ERRORS,
    408: _error("the upload did not arrive within --upload-timeout-s", "Connection"),
    413: _error("larger than --max-upload-mb, or longer than --max-duration-s"),
    422: _error("the request is not a valid form"),
    500: _error("the analysis failed (details in the server log)"),
    503: _error("busy: --workers + --queue analyses or --max-uploads uploads in progress", "Retry-After"),
    504: _error("the analysis took longer than --timeout-s (and was stopped)"),
}  # fmt: skip


class ServiceError(Exception):
    """An error answer: HTTP status, one-line message, the upload's name, extra headers."""

    def __init__(self, status: int, message: str, file: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.file, self.headers = status, message, file, headers or {}


class Service:
    """The state shared by the routes: settings, the worker pool, the upload slots, the private upload root."""

    def __init__(self, settings: ServeSettings, analyzers: Sequence[Any]) -> None:
        self.settings = settings
        self.pool = JobPool(list(analyzers), settings.queue)
        self.uploading = 0  # uploads in progress (touched only on the event loop)
        self.tmp_root = Path(tempfile.mkdtemp(prefix="emollm-serve-", dir=settings.tmp_dir))  # mode 0700
        call = type(analyzers[0]).__call__
        self.takes_prompt = "prompt" in inspect.signature(call).parameters
        self.frame_side = _decode_max_side()
        self.started = time.time()

    def open(self) -> None:
        """(Re)start what :meth:`close` stopped: the workers and the private upload root (an app served again)."""
        if not self.tmp_root.is_dir():
            self.tmp_root = Path(tempfile.mkdtemp(prefix="emollm-serve-", dir=self.settings.tmp_dir))
        self.pool.start()

    def close(self) -> None:
        """Stop the workers, close the analyzers, remove the upload root."""
        self.pool.close()
        shutil.rmtree(self.tmp_root, ignore_errors=True)


def _decode_max_side() -> int | None:
    """The longer side frames are decoded at (:func:`emollm.media.load_sample`'s default): face boxes use it."""
    from emollm.media import load_sample

    return inspect.signature(load_sample).parameters["max_side"].default


def load_analyzers(settings: ServeSettings) -> list[Any]:
    """One analyzer per worker, from :func:`emollm.apps.analyze.load_analyzer`."""
    from emollm.apps.analyze import load_analyzer

    options = settings.analyzer_options
    return [load_analyzer(settings.checkpoint, settings.labels, **options) for _ in range(settings.workers)]


def create_app(
    settings: ServeSettings | None = None, analyzers: Sequence[Any] | Callable[[], Sequence[Any]] | None = None
) -> FastAPI:
    """The service app; the analyzers load here, once, before the first request.

    Args:
        settings: :class:`ServeSettings` (defaults: clue mode, loopback, no key).
        analyzers: One analyzer per worker (or a callable making them); None: :func:`load_analyzers`.

    Returns:
        The app; ``app.state.service`` holds the pool and the upload root, released at shutdown.
    """
    settings = settings or ServeSettings()
    made = analyzers() if callable(analyzers) else analyzers
    service = Service(settings, made if made is not None else load_analyzers(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.open()
        yield
        service.close()

    app = FastAPI(
        title="emollm",
        version=__version__,
        summary="Multimodal emotion recognition: label probabilities, evidence and reasoning for a clip.",
        lifespan=lifespan,
        docs_url=None,  # served below from local files: the default pages load their scripts from CDNs
        redoc_url=None,
    )
    app.state.service = service

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"error": exc.message, "file": exc.file}, status_code=exc.status, headers=exc.headers)

    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:  # 404, 405...: the same shape
        return JSONResponse({"error": str(exc.detail), "file": None}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return JSONResponse({"error": f"invalid request: {where}: {first.get('msg', 'invalid')}", "file": None}, 422)

    async def require_key(
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        x_key: Annotated[str | None, Depends(_x_api_key)],
    ) -> None:
        key = settings.api_key
        if key is None:
            return
        given = x_key or (bearer.credentials if bearer is not None else None)
        if given is None or not hmac.compare_digest(given.encode(), key.encode()):
            raise ServiceError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.get("/health", summary="liveness, load and limits (no key needed)")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "pool": {**service.pool.stats(), "uploading": service.uploading, "max_uploads": settings.max_uploads},
            "limits": {
                "max_upload_mb": settings.max_upload_mb,
                "max_duration_s": settings.max_duration_s,
                "timeout_s": settings.timeout_s,
                "upload_timeout_s": settings.upload_timeout_s,
            },
            "labels": list(settings.labels),
            "auth": settings.api_key is not None,
        }

    @app.get(
        "/version", summary="emollm version and how results are produced", dependencies=[Depends(require_key)],
        responses=_KEYED_ERRORS,
    )  # fmt: skip
    async def version() -> dict[str, Any]:
        return {"emollm": __version__, "produced_by": service.pool.analyzers[0].produced_by()}

    @app.post(
        "/v1/analyze",
        summary="analyse one uploaded clip: the JSON of `emollm analyze --json`",
        dependencies=[Depends(require_key)],
        openapi_extra={"requestBody": _ANALYZE_BODY, "parameters": TIMELINE_PARAMETERS},
        responses=_ANALYZE_ANSWERS,
    )
    async def analyze(request: Request) -> JSONResponse:
        if service.pool.full():  # refuse before the body is read: the client need not send it
            raise _busy()
        limit = settings.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit + FIELD_ALLOWANCE:
            raise ServiceError(413, too_large_message(limit))
        if service.uploading >= settings.max_uploads:
            retry = max(1, min(5, math.ceil(settings.upload_timeout_s)))
            message = (
                f"the server is receiving {settings.max_uploads} uploads already (--max-uploads); retry in {retry} s"
            )
            raise ServiceError(503, message, headers={"Retry-After": str(retry)})
        folder = Path(tempfile.mkdtemp(dir=service.tmp_root))  # mode 0700
        try:
            service.uploading += 1
            try:
                upload = await _receive(request, folder)
            finally:
                service.uploading -= 1
            ticket = service.pool.admit()  # only now, with the whole body in: slow uploads hold no analysis slot
            if ticket is None:
                raise _busy(upload.filename)
            try:
                return await _analyze(request, ticket, upload, folder)
            finally:
                if ticket.future is None:
                    ticket.release()
                else:
                    ticket.cancel("the request ended")  # a no-op once the job is done
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _busy(name: str | None = None) -> ServiceError:
        retry = service.pool.retry_after_s()
        return ServiceError(
            503, f"the server is busy ({service.pool.capacity} requests in progress); retry in {retry} s", name,
            headers={"Retry-After": str(retry)},
        )  # fmt: skip

    async def _receive(request: Request, folder: Path) -> Upload:
        limit = settings.max_upload_bytes
        timeout = settings.upload_timeout_s
        try:
            return await receive_upload(
                request.headers.get("content-type", ""), request.stream(), folder,
                max_bytes=limit, body_bytes=limit + FIELD_ALLOWANCE, drain_bytes=4 * limit,
                deadline=time.monotonic() + timeout,
                deadline_message=f"the upload did not arrive within the server's limit of {timeout:g} s "
                "(--upload-timeout-s): send it over a faster connection",
            )  # fmt: skip
        except UploadTooLarge as e:
            raise ServiceError(413, str(e)) from None
        except UploadTimeout as e:
            log.info("upload from %s refused: %s", _client(request), e)
            raise ServiceError(408, str(e), headers={"Connection": "close"}) from None
        except BadUpload as e:
            raise ServiceError(400, str(e)) from None
        except ClientDisconnect:  # one line, not a traceback: nobody is left to answer
            log.info("the client %s disconnected during the upload", _client(request))
            raise ServiceError(400, "the client disconnected during the upload") from None

    async def _analyze(request: Request, ticket: Ticket, upload: Upload, folder: Path) -> JSONResponse:
        name, path = upload.filename, upload.path
        assert path is not None
        scrub = lambda text: text.replace(str(path), name).replace(str(folder), ".")  # noqa: E731
        _check_labels(upload.fields.get("labels"), name)  # the answer keeps the server's order and spelling
        prompt = (upload.fields.get("prompt") or "").strip() or None
        if prompt is not None and not service.takes_prompt:
            raise ServiceError(400, "this server's analyzer takes no prompt: leave 'prompt' out", name)
        subtitle = (upload.fields.get("subtitle") or "").strip() or None
        try:  # ?timeline=1&window=3&hop=1: the windows too (emollm analyze --timeline)
            timeline = timeline_query(request.query_params, service.pool.analyzers[0])
        except ValueError as e:
            raise ServiceError(400, str(e), name) from None
        due = time.monotonic() + settings.timeout_s  # the clock starts once the upload is in
        info = await anyio.to_thread.run_sync(_probe, path, settings.max_duration_s, scrub, name)

        def job(analyzer: Any) -> dict[str, Any]:
            kwargs: dict[str, Any] = {"subtitle": subtitle}
            if prompt is not None:
                kwargs["prompt"] = prompt
            if timeline is not None:
                kwargs["timeline"] = timeline
            result = _scrubbed(analyzer(path, **kwargs).to_dict(), scrub)  # messages name the upload, not our path
            result["file"] = name
            return result

        limit = f"the server's limit of {settings.timeout_s:g} s (--timeout-s)"
        future = asyncio.wrap_future(ticket.submit(job, at=due, reason=limit))
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # a stopped job's error is expected
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({future, gone}, timeout=max(0.0, due - time.monotonic()),
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        finally:
            gone.cancel()
        if future not in done and gone in done:
            ticket.cancel("the client disconnected")
            log.info("the client %s disconnected while %s was analysed: the job was stopped", _client(request), name)
            raise ServiceError(400, "the client disconnected", name)
        if future not in done or future.cancelled() or isinstance(future.exception(), DeadlineExceeded):
            ticket.cancel(limit)  # stops the job at its next stage or token
            raise ServiceError(504, f"the analysis took longer than {limit} and was stopped", name)
        e = future.exception()
        if e is not None:
            from emollm.media import MediaError, MediaTooLarge

            if isinstance(e, MediaError):
                raise ServiceError(413 if isinstance(e, MediaTooLarge) else 400, scrub(str(e)), name) from None
            log.error("analysis of %s failed", name, exc_info=e)
            message = f"the analysis failed ({type(e).__name__}); the server log has the details"
            raise ServiceError(500, message, name) from None
        result = future.result()
        return JSONResponse(result, headers={"X-Emollm-Media": json.dumps(_media_header(info, service.frame_side))})

    def _check_labels(text: str | None, name: str) -> None:
        if text is None or not text.strip():
            return
        asked = [lab.strip() for lab in text.split(",") if lab.strip()]
        if sorted(a.lower() for a in asked) != sorted(lab.lower() for lab in settings.labels):
            raise ServiceError(
                400,
                f"this server analyses the labels {','.join(settings.labels)}; got {','.join(asked)}: leave 'labels' "
                "out, or run a server with --labels for that set",
                name,
            )

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs-assets", StaticFiles(directory=docs_assets()), name="docs-assets")
    add_stream_route(app, service)  # WS /v1/stream: live sessions on the same workers and limits

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}/docs-assets/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/docs-assets/swagger-ui.css",
            swagger_favicon_url=f"{root}/docs-assets/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
        )  # fmt: skip

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}/docs-assets/redoc.standalone.js",
            redoc_favicon_url=f"{root}/docs-assets/favicon.png", with_google_fonts=False,
        )  # fmt: skip

    return app


def docs_assets() -> Path:
    """The folder of Swagger UI's and ReDoc's files, from the ``fastapi-offline`` package (part of the serve extra).

    Raises:
        ImportError: ``fastapi-offline`` is not installed (the message says what to install).
    """
    import importlib.util

    spec = importlib.util.find_spec("fastapi_offline")
    folder = Path(next(iter(spec.submodule_search_locations or []), "")) / "static" if spec else None
    if folder is None or not (folder / "swagger-ui-bundle.js").is_file():
        raise ImportError(
            "the API docs pages need fastapi-offline's local Swagger UI and ReDoc files: "
            "pip install 'emollm[serve]' (or pip install fastapi-offline==1.7.7)"
        )
    return folder


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "(unknown)"


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is read: the next message is the disconnect, or the end of the
    response)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _probe(path: Path, max_duration_s: float, scrub: Callable[[str], str], name: str) -> Any:
    """The file's header (400/413 with the media layer's one-line message), and the server's duration limit."""
    from emollm.media import MediaError, MediaTooLarge, probe

    try:
        info = probe(path)
    except MediaError as e:
        raise ServiceError(413 if isinstance(e, MediaTooLarge) else 400, scrub(str(e)), name) from None
    if info.duration > max_duration_s:
        raise ServiceError(
            413,
            f"{name}: the clip lasts {info.duration:.1f} s, longer than this server's limit of {max_duration_s:g} s "
            "(send a shorter clip, or run the server with a larger --max-duration-s)",
            name,
        )
    return info


def _scrubbed(value: Any, scrub: Callable[[str], str]) -> Any:
    """``value`` (JSON-ready) with ``scrub`` applied to every string in it, keys included."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(k) if isinstance(k, str) else k: _scrubbed(v, scrub) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v, scrub) for v in value]
    return value


def _media_header(info: Any, max_side: int | None) -> dict[str, Any]:
    """What the page needs to draw the face box over the clip: frame rate and the size frames were decoded at."""
    scale = 1.0
    if max_side and max(info.width, info.height) > max_side:
        scale = max_side / max(info.width, info.height)
    return {
        "kind": info.kind, "fps": info.fps, "frames": info.frames, "duration": round(info.duration, 3),
        "width": info.width, "height": info.height, "box_scale": scale,
    }  # fmt: skip
