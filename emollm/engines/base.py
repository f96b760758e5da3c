"""The one text-generation interface every engine implements, its settings, its answers and its errors.

- :class:`Sampling`: what changes an answer besides the prompt (length budget, greedy or sampled, temperature,
  top-p); part of every engine's :attr:`~TextEngine.id`.
- :class:`Completion`: one answer with why it stopped and how it was produced (``produced_by``: engine, model as the
  server names it, sampling).
- :class:`TextEngine`: ``complete(messages)``, ``complete_many(conversations)`` (concurrent up to the engine's bound,
  order kept), ``stream(messages)``, ``generate(system, user, seed=)`` (the
  :class:`emollm.apps.reasoning.ReasoningClient` form MERR, clue mode and ``assess`` call) and ``produced_by()``.
  :class:`EngineBase` gives the shared parts (the reasoning post-processing, sequential ``complete_many``).
- Errors: :class:`RequestRejected` refuses one request (HTTP 4xx: too long a prompt); the job goes on without that
  item. :class:`EngineUnavailable` (the server cannot be reached, timed out or kept failing after the retries) and
  :class:`BadResponse` (an answer that is not a chat completion, or a server that changed its model mid-job) are
  ``fatal``: a job stops, keeps what it cached, and resumes when rerun.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "BadResponse",
    "Completion",
    "EngineBase",
    "EngineError",
    "EngineUnavailable",
    "Messages",
    "RequestRejected",
    "Sampling",
    "TextEngine",
    "prompt_seed",
    "trim_to_sentence",
]

Messages = Sequence[Mapping[str, str]]
"""A conversation: ``{"role": "system"|"user"|"assistant", "content": str}`` dicts."""


class EngineError(RuntimeError):
    """A generation engine could not answer. ``fatal``: the whole job should stop (and be resumed later)."""

    fatal = False


class RequestRejected(EngineError):
    """The server refused this one request (HTTP 4xx other than 408/429): the job goes on without it."""


class EngineUnavailable(EngineError):
    """The server cannot be reached, timed out, or kept failing after the retries: stop the job, resume later."""

    fatal = True


class BadResponse(EngineError):
    """The server answered something that is not a chat completion (or changed its model mid-job)."""

    fatal = True


@dataclass(frozen=True)
class Sampling:
    """Generation settings that change the answer (every engine puts them in its id and its ``produced_by``).

    Attributes:
        max_new_tokens: Answer length budget; an answer cut by it is trimmed to its last full sentence.
        do_sample: False: greedy (``temperature 0`` on a server). True: sampling with ``temperature``/``top_p``,
            seeded per prompt (:func:`prompt_seed`).
        temperature: Sampling temperature (ignored when greedy).
        top_p: Nucleus sampling mass (ignored when greedy).
    """

    max_new_tokens: int = 160
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ValueError(f"sampling needs temperature > 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")

    @property
    def label(self) -> str:
        """``greedy:N`` or ``sample:T:P:N`` (the in-process engines' id suffix)."""
        if not self.do_sample:
            return f"greedy:{self.max_new_tokens}"
        return f"sample:{self.temperature}:{self.top_p}:{self.max_new_tokens}"

    def to_dict(self) -> dict[str, Any]:
        """The settings as recorded in ``produced_by`` (greedy: temperature 0, no top-p)."""
        if not self.do_sample:
            return {"do_sample": False, "temperature": 0, "max_new_tokens": self.max_new_tokens}
        return asdict(self)


@dataclass
class Completion:
    """One answer.

    Attributes:
        text: The generated text (special tokens removed, not yet post-processed).
        finish_reason: ``stop`` (an end token or stop string) or ``length`` (the token budget ran out).
        produced_by: How this answer was produced (engine, model as served, sampling, tokens).
    """

    text: str
    finish_reason: str
    produced_by: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class TextEngine(Protocol):
    """A text-only LLM behind any engine.

    Attributes:
        id: Names the model, the engine and every setting that changes the answers (cache keys use it).
        kind: ``transformers``, ``llama.cpp`` or ``openai-compatible``.
        sampling: The generation settings.
        concurrency: How many requests this engine serves at once (1 for the in-process engines).
    """

    id: str
    kind: str
    sampling: Sampling
    concurrency: int

    def complete(self, messages: Messages, *, seed: int = 0, max_new_tokens: int | None = None) -> Completion:
        """The answer to one conversation."""
        ...

    def complete_many(self, conversations: Sequence[Messages], *, seed: int = 0) -> list[Completion]:
        """Answers to several conversations, in order."""
        ...

    def stream(self, messages: Messages, *, max_new_tokens: int | None = None) -> Iterator[str]:
        """A greedy answer, piece by piece."""
        ...

    def generate(self, system: str, user: str, *, seed: int) -> str:
        """A reasoning: one system + user turn, whitespace-normalised, cut back to a full sentence at the limit."""
        ...

    def produced_by(self) -> dict[str, Any]:
        """How this engine's outputs are produced (for every output's ``produced_by``)."""
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


def conversation_seed(seed: int, messages: Messages) -> int:
    """:func:`prompt_seed` of a whole conversation (the system and user turns of a reasoning prompt give the same
    number as ``prompt_seed(seed, system, user)``)."""
    if len(messages) == 2 and messages[0]["role"] == "system" and messages[1]["role"] == "user":
        return prompt_seed(seed, messages[0]["content"], messages[1]["content"])
    return prompt_seed(seed, "", "\0".join(f"{m['role']}:{m['content']}" for m in messages))


class EngineBase:
    """Shared behaviour of the engines: the reasoning form of :meth:`complete` and a sequential
    :meth:`complete_many`. Subclasses set ``id``, ``kind``, ``sampling`` and implement ``complete``, ``stream`` and
    ``produced_by``."""

    id: str
    kind: str
    sampling: Sampling
    concurrency: int = 1
    chosen: str = "asked"
    """Why this engine runs (``asked``, or ``auto: ...`` when :func:`~emollm.engines.build_engine` chose it)."""

    def complete(self, messages: Messages, *, seed: int = 0, max_new_tokens: int | None = None) -> Completion:
        raise NotImplementedError

    def complete_many(self, conversations: Sequence[Messages], *, seed: int = 0) -> list[Completion]:
        """Answers one after the other (in-process engines run one prompt at a time: a batch would make an answer
        depend on its neighbours)."""
        return [self.complete(m, seed=seed) for m in conversations]

    def imap(self, conversations: Sequence[Messages], *, seed: int = 0) -> Iterator[tuple[int, Completion | Exception]]:
        """``(index, answer)`` pairs as answers arrive (here: in order). A failed item yields its exception; a
        fatal :class:`EngineError` is raised."""
        for i, messages in enumerate(conversations):
            try:
                done: Completion | Exception = self.complete(messages, seed=seed)
            except Exception as e:
                if is_fatal(e):
                    raise
                done = e
            yield i, done

    def generate(self, system: str, user: str, *, seed: int) -> str:
        """The answer to one system + user prompt, as MERR and the clue mode store it (``seed`` matters only when
        sampling)."""
        done = self.complete([{"role": "system", "content": system}, {"role": "user", "content": user}], seed=seed)
        return postprocess(done)

    def produced_by(self) -> dict[str, Any]:
        raise NotImplementedError


def is_fatal(error: BaseException) -> bool:
    """Whether ``error`` ends a whole job rather than one item: a fatal :class:`EngineError`, or the caller's
    deadline (:class:`~emollm.utils.deadline.DeadlineExceeded`)."""
    from emollm.utils.deadline import DeadlineExceeded

    return isinstance(error, DeadlineExceeded) or (isinstance(error, EngineError) and error.fatal)


def postprocess(done: Completion) -> str:
    """A completion as a stored reasoning: cut back to a full sentence when the budget ran out, one-line spacing."""
    text = done.text.strip()
    if done.finish_reason == "length":
        text = trim_to_sentence(text)
    return " ".join(text.split())
