"""LLM judges for EMER scoring: a small Protocol, a local (emollm / transformers) judge, an optional HTTP judge, and
an on-disk cache of judge calls.

A judge turns one prompt into one answer, deterministically (greedy decoding / temperature 0), and carries an ``id``
that names the model *and* the settings that change its answers, so a score can always be traced to its judge and a
cache entry is never reused by another judge.

- :class:`LocalJudge`: any registry backbone (``smollm2`` runs on the embedded weights; the others need a local
  ``llm_path``), an emollm checkpoint folder, a local HF folder or GGUF, or an already-built ``(model, processor)``.
  It never downloads anything.
- :class:`EngineJudge`: any engine of :mod:`emollm.engines`; llama.cpp in process is the default for a registry
  backbone or GGUF on a CPU when it is installed (``--judge-engine``).
- :class:`OpenAICompatibleJudge`: ``POST {base_url}/chat/completions`` with ``temperature: 0`` through
  :class:`emollm.engines.EndpointEngine` (concurrent, retried, time-limited); it is only contacted when a user
  configures it (a URL as ``--judge`` / ``--llm-endpoint``).
- :class:`JudgeCache`: an append-only JSONL file keyed by ``(judge id, prompt version, sha256(prompt))``.

Example:
    >>> judge = make_judge("smollm2")                       # doctest: +SKIP
    >>> judge.complete("Rate the overlap from 1 to 10 ...")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "CachedJudge",
    "EngineJudge",
    "Judge",
    "JudgeCache",
    "JudgeError",
    "LocalJudge",
    "OpenAICompatibleJudge",
    "make_judge",
]


class JudgeError(RuntimeError):
    """A judge could not answer (HTTP failure, malformed response)."""


@runtime_checkable
class Judge(Protocol):
    """What the EMER scorer needs from a judge.

    Attributes:
        id: Names the model and every setting that changes its answers; stored with every score and used as the
            cache key.
    """

    id: str

    def complete(self, prompt: str) -> str:
        """Answer one prompt (a single user turn), deterministically."""
        ...


def complete_many(judge: Judge, prompts: Sequence[str]) -> list[str]:
    """Answer ``prompts`` with the judge's batched ``complete_batch`` when it has one, else one by one."""
    if not prompts:
        return []
    batch = getattr(judge, "complete_batch", None)
    if callable(batch):
        answers = list(batch(list(prompts)))
        if len(answers) != len(prompts):
            raise JudgeError(f"judge {judge.id!r} returned {len(answers)} answers for {len(prompts)} prompts")
        return answers
    return [judge.complete(p) for p in prompts]


# --------------------------------------------------------------------------------------------------------------------
# Local judge


def _fingerprint(folder: Path) -> str:
    """Short digest of a model folder: its config.json text and the names and sizes of its files."""
    h = hashlib.sha256()
    config = folder / "config.json"
    if config.is_file():
        h.update(config.read_bytes())
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(f"{p.relative_to(folder)}:{p.stat().st_size};".encode())
    return h.hexdigest()[:12]


def _guess_backbone(folder: Path) -> str:
    """The registry backbone of an HF folder, when its ``model_type`` belongs to exactly one entry."""
    from emollm.backbones import get_backbone, list_backbones

    try:
        model_type = json.loads((folder / "config.json").read_text())["model_type"]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{folder}/config.json has no readable model_type ({err}); pass backbone=...") from None
    fits = [n for n in list_backbones() if get_backbone(n).family == model_type]
    if len(fits) != 1:
        choices = ", ".join(fits) if fits else "none registered"
        raise ValueError(
            f"cannot tell the chat format of {folder} (model_type {model_type!r} fits: {choices}); "
            "pass the backbone (--judge-backbone NAME)"
        )
    return fits[0]


class LocalJudge:
    """A judge over a local causal LM, run through emollm's text-only path (chat format, greedy batched generation).

    Build it with :meth:`from_backbone`, :meth:`from_path` or :meth:`from_model` (or :func:`make_judge`).

    Args:
        model: An ``EmoLLMForCausalLM`` (with or without modality branches).
        processor: Its ``EmoProcessor``.
        judge_id: The judge id (see :class:`Judge`); ``|greedy,max_new_tokens=N`` is appended.
        max_new_tokens: Answer length limit; it is part of the id because it changes the answers.
        batch_size: Prompts per ``generate`` call in :meth:`complete_batch`.
    """

    def __init__(self, model: Any, processor: Any, judge_id: str, *, max_new_tokens: int = 64, batch_size: int = 8):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.id = f"{judge_id}|greedy,max_new_tokens={max_new_tokens}"
        self.calls = 0
        """Number of prompts answered (tests count these)."""

    @classmethod
    def from_model(cls, model: Any, processor: Any, judge_id: str, **kwargs: Any) -> LocalJudge:
        """Wrap an already-built ``(model, processor)`` (e.g. a tiny test model); ``judge_id`` must name it."""
        model.eval()
        return cls(model, processor, judge_id, **kwargs)

    @classmethod
    def from_backbone(cls, backbone: str, llm_path: str | os.PathLike | None = None, **kwargs: Any) -> LocalJudge:
        """A registry backbone (``emollm backbones``), text only; ``llm_path`` is its local folder or GGUF.

        Without ``llm_path`` only backbones with embedded weights (``smollm2``) load; the others raise naming the
        missing weights (nothing is downloaded).
        """
        from emollm.backbones import get_backbone
        from emollm.backbones.loading import resolve_llm_path
        from emollm.model.factory import build_model

        spec = get_backbone(backbone)
        folder = resolve_llm_path(spec, llm_path)
        model, processor = build_model(backbone, {}, llm_path=llm_path)
        source = f"embedded:{spec.embedded}" if llm_path is None else str(Path(llm_path).expanduser().resolve())
        judge_id = f"local:{backbone}:{spec.hf_id}@{source}#{_fingerprint(folder)}"
        return cls.from_model(model, processor, judge_id, **kwargs)

    @classmethod
    def from_path(cls, path: str | os.PathLike, backbone: str | None = None, **kwargs: Any) -> LocalJudge:
        """An emollm checkpoint folder, or an HF model folder / GGUF file of a registry backbone family."""
        path = Path(path).expanduser()
        if (path / "checkpoint.json").is_file():
            from emollm.checkpoints import load_model

            model, processor = load_model(path, backbone=backbone)
            judge_id = f"local:checkpoint:{path.resolve()}#{_fingerprint(path)}"
            return cls.from_model(model, processor, judge_id, **kwargs)
        if path.suffix != ".gguf" and not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"judge {str(path)!r}: not a registry backbone, an emollm checkpoint, an HF model folder "
                "(config.json) or a .gguf file"
            )
        if backbone is None:
            if path.suffix == ".gguf":
                raise ValueError(f"judge {path}: a GGUF file needs its backbone (--judge-backbone NAME)")
            backbone = _guess_backbone(path)
        return cls.from_backbone(backbone, path, **kwargs)

    def complete(self, prompt: str) -> str:
        """Answer one prompt greedily."""
        return self.complete_batch([prompt])[0]

    def complete_batch(self, prompts: list[str]) -> list[str]:
        """Answer prompts greedily in batches (left padding); returns one answer per prompt, in order."""
        from emollm.model.generation import chat
        from emollm.model.processing import Sample

        samples = [Sample(messages=[{"role": "user", "content": p}], name=f"judge-{i}") for i, p in enumerate(prompts)]
        answers = chat(
            self.model,
            self.processor,
            samples,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            batch_size=self.batch_size,
        )
        self.calls += len(prompts)
        return answers


# --------------------------------------------------------------------------------------------------------------------
# Judges over an engine of emollm.engines (llama.cpp in process, an OpenAI-compatible server)


class EngineJudge:
    """A judge over any :class:`emollm.engines.TextEngine`: each prompt is one user turn, answered greedily; a batch
    goes through the engine's ``complete_many`` (a server answers ``concurrency`` prompts at a time).

    Args:
        engine: The engine (greedy sampling; its ``id`` is the judge id).
    """

    def __init__(self, engine: Any):
        if engine.sampling.do_sample:
            raise ValueError("a judge decodes greedily: build its engine with do_sample=False")
        self.engine = engine
        self.id = engine.id
        self.calls = 0
        """Prompts answered so far."""

    def produced_by(self) -> dict[str, Any]:
        """The engine's provenance (engine, model as served, sampling)."""
        return self.engine.produced_by()

    def complete(self, prompt: str) -> str:
        """Answer one prompt."""
        return self.complete_batch([prompt])[0]

    def complete_batch(self, prompts: list[str]) -> list[str]:
        """Answer prompts (concurrently on a server), in order; an engine failure is a :class:`JudgeError`."""
        from emollm.engines import EngineError

        try:
            done = self.engine.complete_many([[{"role": "user", "content": p}] for p in prompts])
        except EngineError as e:
            raise JudgeError(f"{e}; answers received so far are cached: rerun the same command to resume") from e
        self.calls += len(done)
        return [c.text for c in done]


class OpenAICompatibleJudge(EngineJudge):
    """A judge behind an OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp server, OpenAI, ...)
    through :class:`emollm.engines.EndpointEngine`.

    Only contacted when a user configures it. Requests use ``temperature: 0``; transient failures (connection errors,
    timeouts, HTTP 408/429/5xx) are retried ``retries`` times with backoff; ``concurrency`` requests run at once.

    Args:
        base_url: Up to and including the version, e.g. ``http://127.0.0.1:8000/v1``.
        model: The ``model`` field of the request (part of the judge id).
        api_key_env: Environment variable holding the API key; when unset or empty no ``Authorization`` header is
            sent (local servers need none). The key itself is never stored or logged.
        max_tokens: Answer length limit (part of the judge id).
        timeout: Seconds per request.
        retries: Extra attempts after a transient failure.
        concurrency: Requests in flight at most.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        max_tokens: int = 256,
        timeout: float = 60.0,
        retries: int = 2,
        concurrency: int = 4,
    ):
        from emollm.engines import EndpointEngine

        if not model:
            raise ValueError("an OpenAI-compatible judge needs a model name (--judge-model NAME)")
        engine = EndpointEngine(
            base_url, model, api_key_env=api_key_env, max_new_tokens=max_tokens, timeout=timeout, retries=retries,
            concurrency=concurrency, backoff=0.5,
        )  # fmt: skip
        super().__init__(engine)
        self.base_url = engine.base_url
        self.model = model


# --------------------------------------------------------------------------------------------------------------------
# Cache


class JudgeCache:
    """On-disk cache of judge answers: an append-only JSONL file, one ``{key, judge_id, prompt_version,
    prompt_sha256, response}`` object per line, keyed by ``(judge id, prompt version, sha256(prompt))``.

    Lines are flushed and fsynced as they are written, so a killed run keeps every answer it paid for; a torn last
    line is ignored on the next read.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._entries: dict[str, str] = {}
        if self.path.is_file():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                        self._entries[row["key"]] = row["response"]
                    except (ValueError, KeyError, TypeError):
                        continue  # a torn last line from a killed run
        self.hits = 0
        self.misses = 0

    @staticmethod
    def prompt_sha256(prompt: str) -> str:
        return hashlib.sha256(prompt.encode("utf-8")).hexdigest()

    @classmethod
    def key(cls, judge_id: str, prompt_version: str, prompt: str) -> str:
        """The cache key of one call."""
        raw = json.dumps([judge_id, prompt_version, cls.prompt_sha256(prompt)])
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, judge_id: str, prompt_version: str, prompt: str) -> str | None:
        """The cached answer, or None."""
        value = self._entries.get(self.key(judge_id, prompt_version, prompt))
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put_many(self, judge_id: str, prompt_version: str, items: Sequence[tuple[str, str]]) -> None:
        """Store ``(prompt, response)`` pairs and fsync them."""
        if not items:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for prompt, response in items:
                key = self.key(judge_id, prompt_version, prompt)
                row = {
                    "key": key,
                    "judge_id": judge_id,
                    "prompt_version": prompt_version,
                    "prompt_sha256": self.prompt_sha256(prompt),
                    "response": response,
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                self._entries[key] = response
            f.flush()
            os.fsync(f.fileno())


class CachedJudge:
    """A judge with a :class:`JudgeCache` in front: only prompts not answered before reach the judge.

    Args:
        judge: The judge.
        cache: The cache, or None for no caching.
        prompt_version: Version of the prompt templates (part of the key).
    """

    def __init__(self, judge: Judge, cache: JudgeCache | None, prompt_version: str):
        self.judge = judge
        self.cache = cache
        self.prompt_version = prompt_version
        self.id = judge.id

    def complete_many(self, prompts: Sequence[str]) -> tuple[list[str], list[bool]]:
        """Answers for ``prompts`` and, per prompt, whether it came from the cache. Duplicates are asked once."""
        answers: dict[str, str] = {}
        cached: dict[str, bool] = {}
        todo: list[str] = []
        for p in dict.fromkeys(prompts):
            hit = None if self.cache is None else self.cache.get(self.id, self.prompt_version, p)
            if hit is None:
                todo.append(p)
            else:
                answers[p], cached[p] = hit, True
        fresh = complete_many(self.judge, todo)
        for p, a in zip(todo, fresh, strict=True):
            answers[p], cached[p] = a, False
        if self.cache is not None:
            self.cache.put_many(self.id, self.prompt_version, list(zip(todo, fresh, strict=True)))
        return [answers[p] for p in prompts], [cached[p] for p in prompts]


def make_judge(
    spec: str,
    *,
    model: str | None = None,
    backbone: str | None = None,
    llm_path: str | None = None,
    api_key_env: str | None = "OPENAI_API_KEY",
    max_new_tokens: int = 64,
    batch_size: int = 8,
    engine: str = "auto",
    concurrency: int = 4,
) -> Judge:
    """Build a judge from a command-line spec.

    Args:
        spec: A registry backbone name (``smollm2``), a local path (emollm checkpoint, HF folder, ``.gguf``), or an
            ``http(s)://`` base URL of an OpenAI-compatible server.
        model: The served model name (URL judges only; required there).
        backbone: The backbone of a local path whose family is ambiguous (e.g. a LLaMA folder).
        llm_path: Local weights for a registry backbone without embedded weights.
        api_key_env: URL judges: environment variable with the API key.
        max_new_tokens: Answer length limit.
        batch_size: Local transformers judges: prompts per generate call.
        engine: Registry backbones and ``.gguf`` files: ``auto`` (llama.cpp on a CPU when installed and the
            weights are a GGUF, see :func:`emollm.engines.choose_local_engine`), ``transformers`` or ``llama.cpp``.
        concurrency: URL judges: requests in flight at most.
    """
    if spec.startswith(("http://", "https://")):
        return OpenAICompatibleJudge(
            spec, model or "", api_key_env=api_key_env, max_tokens=max_new_tokens, concurrency=concurrency
        )
    from emollm.backbones import list_backbones
    from emollm.engines import build_engine, choose_local_engine

    gguf = Path(spec).expanduser().suffix == ".gguf" and backbone is not None
    if spec in list_backbones() or gguf:
        name, weights = (spec, llm_path) if spec in list_backbones() else (backbone or "", spec)
        if choose_local_engine(engine, name, weights)[0] == "llama.cpp":
            return EngineJudge(build_engine(name, weights, engine=engine, max_new_tokens=max_new_tokens))
    if spec in list_backbones():
        return LocalJudge.from_backbone(spec, llm_path, max_new_tokens=max_new_tokens, batch_size=batch_size)
    if Path(spec).expanduser().exists():
        return LocalJudge.from_path(spec, backbone, max_new_tokens=max_new_tokens, batch_size=batch_size)
    raise ValueError(
        f"judge {spec!r} is not a registry backbone ({', '.join(list_backbones())}), an existing local path, "
        "or an http(s):// URL"
    )
