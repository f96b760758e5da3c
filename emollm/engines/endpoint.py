"""Generation through any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, SGLang, TGI, llama.cpp's server,
llama-cpp-python's server, OpenAI itself), over httpx.

What a MERR-scale job needs from it:

- **Concurrency up to a bound**: at most ``concurrency`` requests in flight from this engine, whatever the number of
  calling threads (a semaphore); :meth:`EndpointEngine.imap` keeps that many busy and yields answers as they come.
- **Retries with backoff**: connection failures, a connection dropped mid-answer, timeouts, HTTP 408/429/5xx are
  retried ``retries`` times, waiting ``backoff * 2**attempt`` seconds (capped at ``max_backoff``, jittered; a
  ``Retry-After`` header is honoured up to the cap). Other HTTP 4xx refuse that one request
  (:class:`~emollm.engines.base.RequestRejected`) and are not retried.
- **Time limits**: ``timeout`` seconds per attempt, wall clock (a server that trickles bytes does not escape it).
- **No silent fallback**: a server that stays unreachable raises :class:`~emollm.engines.base.EngineUnavailable`;
  an answer that is not a chat completion (not JSON, no ``choices[0].message.content``), or a server whose model
  changes mid-job, raises :class:`~emollm.engines.base.BadResponse`. Both are fatal: MERR and the EMER judge stop
  with what they cached and resume when rerun.
- **Provenance**: every answer carries the model id the server returned, its ``system_fingerprint``, the endpoint,
  the sampling sent and the token usage (``Completion.produced_by``); the API key (read from an environment variable
  at request time) is never stored or logged.
"""

from __future__ import annotations

import contextvars
import json
import os
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from emollm.engines.base import (
    BadResponse,
    Completion,
    EngineBase,
    EngineUnavailable,
    Messages,
    RequestRejected,
    Sampling,
    conversation_seed,
    is_fatal,
)
from emollm.utils.deadline import DeadlineExceeded, check_deadline, current_deadline

__all__ = ["DEFAULT_API_KEY_ENV", "EndpointEngine"]

DEFAULT_API_KEY_ENV = "EMOLLM_LLM_API_KEY"
"""Where the key is read from unless told otherwise (not ``OPENAI_API_KEY``: a local server should never receive a
user's OpenAI key by accident; pass ``api_key_env="OPENAI_API_KEY"`` for OpenAI)."""

_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class EndpointEngine(EngineBase):
    """A model behind an OpenAI-compatible server.

    Args:
        base_url: Up to and including the version, e.g. ``http://127.0.0.1:8000/v1``.
        model: The ``model`` field of the requests (``--llm-model``).
        api_key_env: Environment variable with the API key; unset or empty: no ``Authorization`` header.
        max_new_tokens: ``max_tokens`` of each request.
        do_sample: False: ``temperature 0`` (greedy on vLLM and llama.cpp). True: ``temperature``/``top_p`` and a
            per-prompt ``seed``.
        temperature: Sampling temperature.
        top_p: Nucleus mass.
        concurrency: Requests in flight at most.
        timeout: Seconds per attempt (wall clock).
        retries: Extra attempts after a transient failure.
        backoff: First wait before a retry, in seconds (doubles each retry).
        max_backoff: Longest wait between attempts.
        extra_body: Extra request fields a server understands (e.g. llama.cpp's ``{"repeat_penalty": 1.0}``);
            part of the id and of ``produced_by``, since they change answers.
    """

    kind = "openai-compatible"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = DEFAULT_API_KEY_ENV,
        max_new_tokens: int = 160,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.9,
        concurrency: int = 4,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        extra_body: Mapping[str, Any] | None = None,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"--llm-endpoint must start with http:// or https://, got {base_url!r}")
        if not model:
            raise ValueError(f"--llm-endpoint {base_url} needs the served model's name (--llm-model NAME)")
        for name, value, low in (("concurrency", concurrency, 1), ("retries", retries, 0)):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if timeout <= 0 or backoff < 0:
            raise ValueError(f"timeout must be > 0 and backoff >= 0, got {timeout} and {backoff}")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.sampling = Sampling(max_new_tokens, do_sample, temperature, top_p)
        self.concurrency = concurrency
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.extra_body = dict(extra_body or {})
        self.precision = "as served"
        """The server decides its numerics (recorded as such in ``produced_by`` of callers that report one)."""
        if self.sampling.do_sample:
            settings = f"temperature={temperature},top_p={top_p},max_tokens={max_new_tokens},seeded"
        else:
            settings = f"temperature=0,max_tokens={max_new_tokens}"
        if self.extra_body:
            settings += ",extra=" + json.dumps(self.extra_body, sort_keys=True, separators=(",", ":"))
        self.id = f"openai-compatible:{model}@{self.base_url}|{settings}"
        self.calls = 0
        """Answers received (tests and the EMER report count these)."""
        self.served_model: str | None = None
        """The model id the server answered with first (every later answer must name the same)."""
        self.system_fingerprint: str | None = None
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._client: Any = None
        self.in_flight = 0
        self.max_in_flight = 0
        """Most requests this engine had in flight at once (the bound is ``concurrency``)."""

    # ------------------------------------------------------------------------------------------------ requests
    def _http(self):
        with self._lock:
            if self._client is None:
                import httpx

                limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
                self._client = httpx.Client(timeout=httpx.Timeout(self.timeout), limits=limits)
            return self._client

    def close(self) -> None:
        """Close the connection pool (the engine reopens it if used again)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def body(self, messages: Messages, *, seed: int = 0, max_new_tokens: int | None = None) -> dict[str, Any]:
        """The JSON request for one conversation."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": max_new_tokens or self.sampling.max_new_tokens,
            "stream": False,
        }
        if self.sampling.do_sample:
            body.update(
                temperature=self.sampling.temperature,
                top_p=self.sampling.top_p,
                seed=conversation_seed(seed, messages),
            )
        else:
            body["temperature"] = 0
        return {**body, **self.extra_body}

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _attempt(self, body: dict[str, Any], url: str | None = None) -> tuple[int, bytes, dict[str, str]]:
        """One POST, its body read under a wall-clock deadline (``timeout``, or the caller's
        :func:`~emollm.utils.deadline.deadline` when that comes first): ``(status, bytes, headers)``."""
        import httpx

        limit = self.timeout
        scope = current_deadline()
        left = scope.remaining() if scope is not None else None
        if left is not None:
            check_deadline("the LLM server's answer")
            limit = min(limit, left)
        deadline = time.monotonic() + limit
        timeout = httpx.Timeout(limit)
        url = url or self.url
        with self._http().stream("POST", url, json=body, headers=self._headers(), timeout=timeout) as resp:
            chunks = []
            for chunk in resp.iter_bytes():
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    check_deadline("the LLM server's answer")  # the caller's limit, not the server's fault
                    raise TimeoutError(f"no complete answer within {limit:g} s")
            return resp.status_code, b"".join(chunks), dict(resp.headers)

    def _wait(self, attempt: int, headers: dict[str, str] | None) -> float:
        wait_s = min(self.backoff * 2**attempt, self.max_backoff)
        retry_after = (headers or {}).get("retry-after")
        if retry_after:
            try:
                wait_s = min(max(wait_s, float(retry_after)), self.max_backoff)
            except ValueError:
                pass
        return wait_s * (0.5 + random.random() / 2)  # jitter: many workers do not retry in lockstep

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``{base_url}{path}`` (e.g. ``/completions``) with this engine's retries, time limits and
        concurrency bound; the parsed JSON answer (not checked beyond being an object)."""
        with self._slots:
            return self._post(body, f"{self.base_url}{path}")

    def _post(self, body: dict[str, Any], url: str | None = None) -> dict[str, Any]:
        import httpx

        url = url or self.url
        last = ""
        for attempt in range(self.retries + 1):
            headers = None
            try:
                status, data, headers = self._attempt(body, url)
            except DeadlineExceeded:
                raise
            except (httpx.TimeoutException, TimeoutError) as e:
                check_deadline("the LLM server's answer")
                last = f"timed out after {self.timeout:g} s ({type(e).__name__})"
            except httpx.TransportError as e:  # refused, reset, dropped mid-answer, DNS
                last = f"cannot connect or the connection broke ({type(e).__name__}: {e}); is the server running?"
            else:
                if status == 200:
                    return self._parse_json(data, url)
                detail = data[:300].decode("utf-8", "replace").strip()
                if status not in _RETRY_STATUS:
                    raise RequestRejected(f"LLM server {url}: HTTP {status}: {detail}")
                last = f"HTTP {status}: {detail}"
            if attempt < self.retries:
                time.sleep(self._wait(attempt, headers))
                check_deadline("the LLM server's answer")
        raise EngineUnavailable(f"LLM server {url}: {last} (after {self.retries + 1} attempts)")

    def _parse_json(self, data: bytes, url: str) -> dict[str, Any]:
        try:
            payload = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BadResponse(
                f"LLM server {url}: the answer is not JSON ({data[:120]!r}); is --llm-endpoint an "
                "OpenAI-compatible /v1 base URL?"
            ) from None
        if not isinstance(payload, dict):
            raise BadResponse(f"LLM server {url}: the answer is a JSON {type(payload).__name__}, not an object")
        return payload

    def _completion(self, payload: dict[str, Any]) -> Completion:
        try:
            choice = payload["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise BadResponse(
                f"LLM server {self.url}: unexpected answer {str(payload)[:300]!r}; expected choices[0].message.content"
            ) from None
        if not isinstance(content, str):
            kind = type(content).__name__
            raise BadResponse(f"LLM server {self.url}: choices[0].message.content is {kind}, not text")
        served = payload.get("model") if isinstance(payload.get("model"), str) else self.model
        fingerprint = payload.get("system_fingerprint") if isinstance(payload.get("system_fingerprint"), str) else None
        with self._lock:
            if self.served_model is None:
                self.served_model, self.system_fingerprint = served, fingerprint
            elif served != self.served_model:
                raise BadResponse(
                    f"LLM server {self.url} now answers as model {served!r}, earlier as {self.served_model!r}: "
                    "the server changed mid-job; restart the job against one model"
                )
            self.calls += 1
        reason = "length" if choice.get("finish_reason") == "length" else "stop"
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else None
        meta = {
            "engine": self.kind,
            "endpoint": self.base_url,
            "model": served,
            "system_fingerprint": fingerprint,
            "sampling": self._sampling_record(),
            "usage": usage,
        }
        return Completion(content, reason, meta)

    def _sampling_record(self) -> dict[str, Any]:
        return {**self.sampling.to_dict(), **self.extra_body}

    # ------------------------------------------------------------------------------------------------ interface
    def complete(self, messages: Messages, *, seed: int = 0, max_new_tokens: int | None = None) -> Completion:
        """The answer to one conversation (waits for a free slot when ``concurrency`` requests are in flight)."""
        body = self.body(messages, seed=seed, max_new_tokens=max_new_tokens)
        with self._slots:
            with self._lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                payload = self._post(body)
            finally:
                with self._lock:
                    self.in_flight -= 1
        return self._completion(payload)

    def imap(self, conversations: Sequence[Messages], *, seed: int = 0) -> Iterator[tuple[int, Completion | Exception]]:
        """``(index, answer)`` as answers arrive, ``concurrency`` requests at a time. A refused request yields its
        :class:`RequestRejected`; a fatal error stops new requests, yields the answers already in flight, then
        raises (so a job can cache everything it received before it stops)."""
        if not conversations:
            return
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="emollm-llm")
        pending: dict[Future, int] = {}
        todo = iter(enumerate(conversations))
        fatal: Exception | None = None

        def submit() -> None:
            for i, messages in todo:  # each request in a copy of the caller's context: its deadline applies
                pending[pool.submit(contextvars.copy_context().run, self.complete, messages, seed=seed)] = i
                if len(pending) >= self.concurrency:
                    return

        try:
            submit()
            while pending:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    try:
                        done_i: Completion | Exception = fut.result()
                    except Exception as e:
                        if is_fatal(e):
                            fatal = fatal or e
                            continue
                        done_i = e
                    yield i, done_i
                if fatal is None:
                    submit()
            if fatal is not None:
                raise fatal
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def complete_many(self, conversations: Sequence[Messages], *, seed: int = 0) -> list[Completion]:
        """Answers in order, ``concurrency`` at a time; any error (after the others in flight finished) raises."""
        out: list[Completion | None] = [None] * len(conversations)
        for i, done in self.imap(conversations, seed=seed):
            if isinstance(done, Exception):
                raise done
            out[i] = done
        return [c for c in out if c is not None]

    def stream(self, messages: Messages, *, max_new_tokens: int | None = None) -> Iterator[str]:
        """The answer in one piece (the server is asked without streaming; retries and limits as for
        :meth:`complete`)."""
        yield self.complete(messages, max_new_tokens=max_new_tokens).text

    def produced_by(self) -> dict[str, Any]:
        """Engine, endpoint, model (as asked and as served), fingerprint, sampling sent, concurrency, and why this
        engine runs. Never the key."""
        return {
            "engine": self.kind,
            "endpoint": self.base_url,
            "model": self.model,
            "served_model": self.served_model,
            "system_fingerprint": self.system_fingerprint,
            "sampling": self._sampling_record(),
            "concurrency": self.concurrency,
            "chosen": self.chosen,
        }
