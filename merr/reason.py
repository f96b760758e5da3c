"""Fine-grained reasoning (MERR step 7): clues + pseudo-label -> an LLM's explanation, cached on disk.

The published recipe (REFERENCE.md §1.5 step 7) gives LLaMA-3-8B-Instruct every clue and asks

    system: "You are an emotion analysis expert. Please infer emotion label based on the given the emotional
             features."   (sic)
    user:   <clues> + "Please sort out the correct emotional clues and infer why the person in the video feels
             {label}"

:data:`emollm.prompts.REASONING_PROMPTS` holds that text as prompt version ``v1``; clues are one line each
(``Visual expression: ...``, ``Visual description: ...``, ``Audio tone: ...``, ``Subtitle: "..."``) and
unavailable clues are left out, never filled in. A new wording is a new version, so cached reasonings of the old
one are not reused by mistake.

Any LLM works through the :class:`ReasoningClient` protocol (``id`` + ``generate(system, user, seed=...)``):
:class:`LLMReasoner` runs a text-only backbone from the registry (``emollm.backbones``; SmolLM2 offline on its
embedded weights, or ``llm_path`` for a local LLaMA-3 / Qwen / Mistral folder) with its own chat format, greedy or
with sampling seeded per prompt, one prompt at a time (batching would make an output depend on its batch
neighbours, so a resumed run could differ from an uninterrupted one).

:class:`ReasoningCache` stores each answer under ``sha256(client id, prompt version, system, user)``: a finished
sample is never generated twice, a changed clue or label (e.g. a reviewer's correction) gets a fresh answer.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "LLMReasoner",
    "ReasoningCache",
    "ReasoningClient",
    "build_reasoning_client",
    "trim_to_sentence",
]


@runtime_checkable
class ReasoningClient(Protocol):
    """Anything that turns a prompt into a reasoning.

    Attributes:
        id: Stable identity of the model and its generation settings (part of the cache key).
    """

    id: str

    def generate(self, system: str, user: str, *, seed: int) -> str:
        """The answer to one prompt; deterministic for the same arguments."""
        ...


_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


def trim_to_sentence(text: str) -> str:
    """Cut a generation stopped by the token limit back to its last complete sentence (unchanged if it has none)."""
    text = text.strip()
    if not text or text[-1] in ".!?\"')":
        return text
    ends = list(_SENTENCE_END.finditer(text))
    return text[: ends[-1].end()].strip() if ends else text


def prompt_seed(seed: int, system: str, user: str) -> int:
    """A per-prompt seed: the same prompt samples the same answer whatever the order or batch it runs in."""
    digest = hashlib.sha256(f"{seed}\0{system}\0{user}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class LLMReasoner:
    """A text-only LLM from the backbone registry as a :class:`ReasoningClient` (loaded lazily, on first use).

    Args:
        backbone: Registry name (``smollm2`` runs offline).
        llm_path: Local HF folder or ``.gguf`` (needed by backbones without embedded weights).
        max_new_tokens: Generation budget; a reasoning cut by it is trimmed to its last full sentence.
        do_sample: False: greedy. True: sampling with ``temperature`` / ``top_p``, seeded per prompt.
        device: Torch device.
    """

    def __init__(
        self,
        backbone: str = "smollm2",
        llm_path: str | os.PathLike[str] | None = None,
        *,
        max_new_tokens: int = 160,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.9,
        device: str = "cpu",
    ):
        from emollm.backbones import get_backbone

        self.spec = get_backbone(backbone)  # unknown backbone -> ValueError listing the known ones
        self.llm_path = None if llm_path is None else str(llm_path)
        self.max_new_tokens = max_new_tokens
        self.do_sample = do_sample
        self.temperature = temperature
        self.top_p = top_p
        self.device = device
        source = "embedded" if self.llm_path is None else str(Path(self.llm_path).expanduser().resolve())
        gen = f"greedy:{max_new_tokens}" if not do_sample else f"sample:{temperature}:{top_p}:{max_new_tokens}"
        self.id = f"llm:{backbone}:{source}:{gen}"
        self._loaded: tuple[Any, Any, Any, list[int]] | None = None

    def _load(self):
        if self._loaded is None:
            from emollm.chat_formats import get_chat_format
            from emollm.llm import load_language_model, load_tokenizer, resolve_llm_path

            path = resolve_llm_path(self.spec, self.llm_path)
            model = load_language_model(self.spec, path).to(self.device).eval()
            tokenizer = load_tokenizer(path)
            fmt = get_chat_format(self.spec.chat_format, default_system=self.spec.default_system)
            vocab = tokenizer.get_vocab()
            stop = {vocab[s] for s in fmt.stop_strings if s in vocab}
            if tokenizer.eos_token_id is not None:
                stop.add(tokenizer.eos_token_id)
            self._loaded = (model, tokenizer, fmt, sorted(stop))
        return self._loaded

    def generate(self, system: str, user: str, *, seed: int) -> str:
        import torch

        from emollm.chat_formats import tokenize_chat

        model, tokenizer, fmt, stop = self._load()
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        ids, _ = tokenize_chat(tokenizer, fmt, messages, add_generation_prompt=True)
        input_ids = torch.tensor([ids], device=self.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.do_sample,
            "eos_token_id": stop,
            "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0],
        }
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=None)
            torch.manual_seed(prompt_seed(seed, system, user))
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.no_grad():
            out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
        new = out[0, input_ids.shape[1] :]
        text = tokenizer.decode(new, skip_special_tokens=True).strip()
        if len(new) >= self.max_new_tokens and (len(new) == 0 or int(new[-1]) not in stop):
            text = trim_to_sentence(text)
        return " ".join(text.split())


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
        try:
            entry = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return entry.get("answer") if isinstance(entry, dict) and entry.get("key") == key else None

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
    return LLMReasoner(
        cfg.backbone,
        cfg.llm_path,
        max_new_tokens=cfg.max_new_tokens,
        do_sample=cfg.do_sample,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        device=cfg.device,
    )
