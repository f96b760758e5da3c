"""Which engine generates: :func:`build_engine` and the command-line flags every text-generating command shares.

``--llm-endpoint URL --llm-model NAME`` sends the prompts to an OpenAI-compatible server. Without it generation
runs in this process, by ``--llm-engine``:

- ``auto`` (default): llama.cpp on a CPU when llama-cpp-python is installed (``make install-engines``) and the
  weights are a GGUF (the embedded SmolLM2, or ``--llm-path x.gguf``): it decodes the same weights about 3x faster
  than transformers here (``bench/RESULTS.md``, ``bench_engines``); transformers otherwise;
- ``transformers``: always transformers (bf16-packed on a CPU with native bf16);
- ``llama.cpp``: always llama.cpp (an error when it is not installed or the weights are not a GGUF).

The choice and its reason are recorded in the engine's ``produced_by()["chosen"]``.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from emollm.engines.base import EngineBase
from emollm.engines.endpoint import DEFAULT_API_KEY_ENV, EndpointEngine

__all__ = [
    "LOCAL_ENGINES",
    "add_engine_arguments",
    "build_engine",
    "choose_local_engine",
    "engine_options",
    "parse_extra_body",
]

LOCAL_ENGINES = ("auto", "transformers", "llama.cpp")


def choose_local_engine(
    engine: str, backbone: str, llm_path: str | os.PathLike[str] | None, device: str = "cpu"
) -> tuple[str, str]:
    """``(engine, why)`` for an in-process engine name (``auto`` resolved)."""
    if engine not in LOCAL_ENGINES:
        raise ValueError(f"--llm-engine must be one of {', '.join(LOCAL_ENGINES)}, got {engine!r}")
    if engine != "auto":
        return engine, "asked"
    from emollm.engines.llamacpp import gguf_of, llama_cpp_version

    if not str(device).startswith("cpu"):
        return "transformers", f"auto: device {device} (llama.cpp is the CPU default)"
    if llama_cpp_version() is None:
        return "transformers", "auto: llama.cpp is not installed (make install-engines)"
    if gguf_of(backbone, llm_path) is None:
        return "transformers", "auto: the weights are not a GGUF file"
    return "llama.cpp", "auto: llama.cpp decodes faster than transformers on this CPU (bench_engines)"


def build_engine(
    backbone: str = "smollm2",
    llm_path: str | os.PathLike[str] | None = None,
    *,
    engine: str = "auto",
    endpoint: str | None = None,
    model: str | None = None,
    api_key_env: str | None = DEFAULT_API_KEY_ENV,
    max_new_tokens: int = 160,
    do_sample: bool = False,
    temperature: float = 0.7,
    top_p: float = 0.9,
    device: str = "cpu",
    precision: str = "fp32",
    concurrency: int = 4,
    timeout: float = 120.0,
    retries: int = 3,
    extra_body: dict[str, Any] | None = None,
    threads: int | None = None,
) -> EngineBase:
    """The text engine a command asks for.

    Args:
        backbone: Registry backbone of an in-process engine (its chat format and weights).
        llm_path: Local weights (HF folder or ``.gguf``) of that backbone.
        engine: ``auto``, ``transformers`` or ``llama.cpp`` (in-process; ignored with ``endpoint``).
        endpoint: Base URL of an OpenAI-compatible server (``http://HOST:PORT/v1``); None: in-process.
        model: The served model's name (required with ``endpoint``).
        api_key_env: Environment variable holding the server's API key.
        max_new_tokens: Answer budget.
        do_sample: Sampling instead of greedy.
        temperature: Sampling temperature.
        top_p: Nucleus mass.
        device: Torch device (transformers).
        precision: ``fp32``, ``bf16`` or ``auto`` (transformers).
        concurrency: Requests in flight at most (server).
        timeout: Seconds per request attempt (server).
        retries: Extra attempts after a transient failure (server).
        extra_body: Extra request fields (server).
        threads: llama.cpp threads (default ``OMP_NUM_THREADS``).
    """
    sampling = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p)
    if endpoint:
        return EndpointEngine(
            endpoint, model or "", api_key_env=api_key_env, concurrency=concurrency, timeout=timeout,
            retries=retries, extra_body=extra_body, **sampling,
        )  # fmt: skip
    if model:
        raise ValueError(f"--llm-model {model!r} names a served model: give its server with --llm-endpoint URL")
    kind, why = choose_local_engine(engine, backbone, llm_path, device)
    out: EngineBase
    if kind == "llama.cpp":
        from emollm.engines.llamacpp import LlamaCppEngine

        out = LlamaCppEngine(backbone, llm_path, threads=threads, **sampling)
    else:
        from emollm.engines.local import TransformersEngine

        out = TransformersEngine(backbone, llm_path, device=device, precision=precision, **sampling)
    out.chosen = why
    return out


def add_engine_arguments(parser: argparse.ArgumentParser, *, concurrency: int = 4) -> None:
    """Add ``--llm-engine``, ``--llm-endpoint``, ``--llm-model``, ``--llm-api-key-env``, ``--llm-concurrency``,
    ``--llm-timeout`` and ``--llm-extra`` to ``parser`` (read them back with :func:`engine_options`)."""
    g = parser.add_argument_group("text generation engine")
    g.add_argument(
        "--llm-engine", choices=LOCAL_ENGINES, default="auto",
        help="in-process engine: auto = llama.cpp on CPU when installed and the weights are a GGUF, else transformers",
    )  # fmt: skip
    g.add_argument("--llm-endpoint", metavar="URL", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--llm-model", metavar="NAME", help="the served model's name (with --llm-endpoint)")
    g.add_argument(
        "--llm-api-key-env", default=DEFAULT_API_KEY_ENV, metavar="VAR",
        help=f"environment variable with the server's API key (default {DEFAULT_API_KEY_ENV})",
    )  # fmt: skip
    g.add_argument("--llm-concurrency", type=int, default=concurrency, help="requests in flight at most (server)")
    g.add_argument("--llm-timeout", type=float, default=120.0, help="seconds per request attempt (server)")
    g.add_argument(
        "--llm-extra", metavar="JSON", help="extra request fields, e.g. '{\"repeat_penalty\": 1.0}' for llama.cpp"
    )


def parse_extra_body(text: str | None, flag: str = "--llm-extra") -> dict[str, Any] | None:
    """A flag's extra request fields for a server (a JSON object), or None when not given.

    Raises:
        ValueError: Not JSON, or JSON that is not an object (the message names ``flag``).
    """
    if not text:
        return None
    try:
        extra = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag}: not JSON ({e}); e.g. '{{\"repeat_penalty\": 1.0}}'") from None
    if not isinstance(extra, dict):
        raise ValueError(f"{flag}: a JSON object is needed, got {text!r}")
    return extra


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`build_engine` keywords of the flags :func:`add_engine_arguments` added."""
    extra = parse_extra_body(args.llm_extra)
    return {
        "engine": args.llm_engine,
        "endpoint": args.llm_endpoint,
        "model": args.llm_model,
        "api_key_env": args.llm_api_key_env,
        "concurrency": args.llm_concurrency,
        "timeout": args.llm_timeout,
        "extra_body": extra,
    }
