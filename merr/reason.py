"""Fine-grained reasoning (MERR step 7): clues + pseudo-label -> an LLM's explanation, cached on disk.

The published recipe (REFERENCE.md §1.5 step 7) gives LLaMA-3-8B-Instruct every clue and asks

    system: "You are an emotion analysis expert. Please infer emotion label based on the given the emotional
             features."   (sic)
    user:   <clues> + "Please sort out the correct emotional clues and infer why the person in the video feels
             {label}"

:data:`emollm.model.prompts.REASONING_PROMPTS` holds that text as prompt version ``v1``; clues are one line each
(``Visual expression: ...``, ``Visual description: ...``, ``Audio tone: ...``, ``Subtitle: "..."``) and
unavailable clues are left out, never filled in. A new wording is a new version, so cached reasonings of the old
one are not reused by mistake.

Any LLM works through the :class:`emollm.apps.reasoning.ReasoningClient` protocol (``id`` + ``generate(system, user,
seed=...)``); :func:`emollm.engines.build_engine` gives a text-only backbone of the registry in this process
(llama.cpp or transformers; SmolLM2 offline, or ``llm_path`` for a local LLaMA-3 / Qwen / Mistral folder or GGUF), or
any OpenAI-compatible server (``reason.endpoint`` + ``reason.model``: vLLM, llama.cpp, SGLang, TGI), whose requests
run ``reason.concurrency`` at a time.

:class:`ReasoningCache` stores each answer under ``sha256(client id, prompt version, system, user)``: a finished
sample is never generated twice, a changed clue or label (e.g. a reviewer's correction) gets a fresh answer.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from emollm.apps.reasoning import ReasoningClient

__all__ = ["ReasoningCache", "build_reasoning_client"]


class ReasoningCache:
    """Content-addressed answers: ``<root>/<key[:2]>/<key>.json`` with the prompt and the answer.

    Writes are atomic (temp file + ``os.replace``), so a killed run leaves either the whole entry or none; an
    unreadable entry counts as missing.
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    @staticmethod
    def key(client_id: str, version: str, system: str, user: str) -> str:
        """The cache key of one prompt."""
        blob = json.dumps([client_id, version, system, user], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        """The cached answer, or None."""
        entry = self.get_entry(key)
        return None if entry is None else entry["answer"]

    def get_entry(self, key: str) -> dict[str, Any] | None:
        """The whole cached entry (``answer`` and the metadata stored with it, e.g. ``produced_by``), or None."""
        try:
            entry = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        ok = isinstance(entry, dict) and entry.get("key") == key and isinstance(entry.get("answer"), str)
        return entry if ok else None

    def put(self, key: str, answer: str, **meta: Any) -> None:
        """Store an answer (with ``meta`` such as the prompt, for audits)."""
        from emollm.utils.io import atomic_write_text

        entry = json.dumps({"key": key, "answer": answer, **meta}, ensure_ascii=False, sort_keys=True) + "\n"
        atomic_write_text(self.path(key), entry, fsync=False)

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("??/*.json")) if self.root.is_dir() else 0


def build_reasoning_client(cfg: Any) -> ReasoningClient:
    """The client a ``ReasonConfig`` asks for: ``client: python:<module>:<factory>`` or the registry backbone."""
    if cfg.client:
        from emollm_merr.describe import load_python_factory

        factory = load_python_factory(cfg.client.removeprefix("python:"))
        client = factory(**cfg.client_options)
        if not isinstance(getattr(client, "id", None), str) or not callable(getattr(client, "generate", None)):
            raise ValueError(
                f"reason.client {cfg.client}: {type(client).__name__} is not a ReasoningClient "
                "(needs an `id` string and generate(system, user, *, seed))"
            )
        return client
    from emollm.engines import build_engine

    return build_engine(
        cfg.backbone,
        cfg.llm_path,
        engine=cfg.engine,
        endpoint=cfg.endpoint,
        model=cfg.model,
        api_key_env=cfg.api_key_env,
        max_new_tokens=cfg.max_new_tokens,
        do_sample=cfg.do_sample,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        device=cfg.device,
        precision=cfg.resolved_precision(),  # resolved for the backbone's weights: auto is none over bf16/fp16 ones
        concurrency=cfg.concurrency,
        timeout=cfg.timeout,
        retries=cfg.retries,
        extra_body=cfg.extra_body or None,
    )
