"""``emollm serve``: the analysis service and its web page (FastAPI + uvicorn), on loopback unless asked.

Endpoints: ``POST /v1/analyze`` (multipart ``file``; optional ``labels``, ``subtitle``, ``prompt``; ``?timeline=1``
adds the timeline) answers the JSON of ``emollm analyze --json``; ``WS /v1/stream`` (a live session,
:mod:`emollm.apps.serve.stream`); ``GET /health`` (never needs the key); ``GET /version``; the page at ``/``; OpenAPI
at ``/docs`` and ``/openapi.json``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from emollm.apps.analysis import MAX_TEXT_CHARS
from emollm.apps.serve.settings import API_KEY_ENV, ServeSettings
from emollm.labels import MER2023_LABELS

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="emollm serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="a trained checkpoint folder; without it: the zero-shot clue mode")
    p.add_argument("--labels", default=",".join(MER2023_LABELS), help="comma-separated label set, in prompt order")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help=f"require this key on /v1/* and /version (better: set {API_KEY_ENV})")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest upload, checked as it arrives (413)")
    p.add_argument("--max-duration-s", type=float, default=120.0, help="longest clip, from its header (413)")
    p.add_argument("--workers", type=int, default=1, help="worker threads, one analyzer (and its memory) each")
    p.add_argument("--queue", type=int, default=4, help="requests admitted beyond the running ones; more get 503")
    p.add_argument(
        "--timeout-s",
        type=float,
        default=120.0,
        help="seconds per request after the upload (504); the analysis stops at it",
    )
    p.add_argument(
        "--upload-timeout-s",
        type=float,
        default=60.0,
        help="seconds the whole upload may take (408): a slow or stalled client loses its slot",
    )
    p.add_argument(
        "--max-uploads",
        type=int,
        default=8,
        help="uploads received at once (more get 503); uploads hold no analysis slot",
    )
    p.add_argument(
        "--max-text-chars",
        type=int,
        default=MAX_TEXT_CHARS,
        help="longest subtitle, transcript or text file given to the models; longer is cut (noted)",
    )
    p.add_argument("--tmp-dir", help="parent of the private upload folder (default: the system temporary folder)")
    p.add_argument("--max-streams", type=int, default=4, help="live sessions (WS /v1/stream) at once; more are refused")
    clue = p.add_argument_group("clue mode")
    clue.add_argument("--frames", type=int, default=12, help="frames sampled for the face branch")
    clue.add_argument("--reasoning", default="llm", choices=["llm", "template"])
    clue.add_argument("--no-asr", action="store_true", help="do not transcribe speech")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--llm-path", help="LLM folder/GGUF (checkpoint base, or the clue-mode reasoning backbone)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    from emollm.engines import add_engine_arguments

    add_engine_arguments(p, concurrency=1)  # the clue mode's rationale: in process, or an OpenAI-compatible server
    return p


def _settings(args: argparse.Namespace) -> ServeSettings:
    from emollm.engines import engine_options

    labels = [lab.strip() for lab in args.labels.split(",") if lab.strip()]
    options: dict[str, Any] = {
        "precision": args.precision, "llm_path": args.llm_path, "asr": not args.no_asr,
        "max_text_chars": args.max_text_chars,
    }  # fmt: skip
    if args.checkpoint is None:
        options.update(
            frames=args.frames, reasoning=args.reasoning, engine=args.llm_engine, llm_endpoint=args.llm_endpoint,
            llm_model=args.llm_model, llm_api_key_env=args.llm_api_key_env, llm_timeout=args.llm_timeout,
            llm_extra=engine_options(args)["extra_body"],
        )  # fmt: skip
        if args.llm_endpoint and not args.llm_model:
            raise ValueError(f"--llm-endpoint {args.llm_endpoint} needs the served model's name (--llm-model NAME)")
    elif args.llm_endpoint:
        raise ValueError(
            "--llm-endpoint serves the clue mode's rationale; a checkpoint generates in this process (to serve it on "
            "vLLM: emollm export CHECKPOINT OUT --vllm)"
        )
    return ServeSettings(
        checkpoint=args.checkpoint, labels=tuple(labels), host=args.host, port=args.port,
        api_key=ServeSettings.api_key_from_env(args.api_key), max_upload_mb=args.max_upload_mb,
        max_duration_s=args.max_duration_s, workers=args.workers, queue=args.queue, timeout_s=args.timeout_s,
        upload_timeout_s=args.upload_timeout_s, max_uploads=args.max_uploads, tmp_dir=args.tmp_dir,
        analyzer_options=options, max_streams=args.max_streams,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``emollm serve``; returns the exit status (2 on a bad flag or checkpoint)."""
    args = _parser().parse_args(argv)
    import uvicorn

    from emollm.apps.serve.app import create_app
    from emollm.media import MediaError

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = _settings(args)
        app = create_app(settings)
    except (OSError, ValueError, ImportError, MediaError) as e:
        print(f"emollm serve: {e}", file=sys.stderr)
        return 2
    if settings.host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        logging.getLogger("emollm.apps.serve").warning(
            "serving on %s without an API key: anyone who can reach it can use it (set %s)", settings.host, API_KEY_ENV
        )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
