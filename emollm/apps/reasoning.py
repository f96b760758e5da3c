"""Reasoning text from a local LLM, and the checks that keep a rationale honest.

- :class:`LLMReasoner`: a text-only LLM of the backbone registry (SmolLM2 offline on its embedded weights, or a
  local LLaMA-3 / Qwen / Mistral folder), greedy or with sampling seeded per prompt, one prompt at a time (batching
  would make an output depend on its batch neighbours). It is a :class:`ReasoningClient`: MERR construction and
  the zero-shot clue mode of ``emollm analyze`` both use it.
- :func:`check_reasoning`: whether a rationale supports its label, with :class:`emollm.labels.LabelParser` over the
  label vocabulary (whole words, synonyms):

  * ``empty``: no text;
  * ``missing_label``: the label (or a synonym) is never named;
  * ``contradiction``: the *concluding* sentence (the last sentence naming any label) names other labels but not
    this one;
  * ``mixed``: the concluding sentence names this label and others (``"not angry but happy"``);
  * ``consistent``: otherwise.
- :func:`check_quality`: degenerate text (small LLMs loop or stop mid-sentence): ``repetitive`` when some run of 8
  words occurs 3 or more times, ``truncated`` when the text does not end a sentence.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Consistency",
    "LLMReasoner",
    "ReasoningClient",
    "check_quality",
    "check_reasoning",
    "prompt_seed",
    "trim_to_sentence",
]

_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")


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
        precision: ``fp32`` (default: MERR caches key on the answers), ``bf16`` or ``auto``
            (:mod:`emollm.model.precision`); recorded in :attr:`id` unless fp32.
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
        precision: str = "fp32",
    ):
        from emollm.backbones import get_backbone
        from emollm.model.precision import resolve_precision

        self.spec = get_backbone(backbone)  # unknown backbone -> ValueError listing the known ones
        self.llm_path = None if llm_path is None else str(llm_path)
        self.max_new_tokens = max_new_tokens
        self.do_sample = do_sample
        self.temperature = temperature
        self.top_p = top_p
        self.device = device
        self.precision = resolve_precision(precision, device, weights=self.spec.default_dtype)
        source = "embedded" if self.llm_path is None else str(Path(self.llm_path).expanduser().resolve())
        gen = f"greedy:{max_new_tokens}" if not do_sample else f"sample:{temperature}:{top_p}:{max_new_tokens}"
        self.id = f"llm:{backbone}:{source}:{gen}" + ("" if self.precision == "fp32" else f":{self.precision}")
        self._loaded: tuple[Any, Any, Any, list[int]] | None = None
        self.linear_kernels: str | None = None
        """What :func:`~emollm.model.packed_linear.pack_linears` did at load (None before the model is loaded)."""

    def _load(self):
        if self._loaded is None:
            from emollm.backbones import get_chat_format
            from emollm.backbones.loading import load_language_model, load_tokenizer, resolve_llm_path

            path = resolve_llm_path(self.spec, self.llm_path)
            model = load_language_model(self.spec, path).to(self.device).eval()
            from emollm.model.packed_linear import pack_linears

            self.linear_kernels = pack_linears(model, self.precision, self.device)
            tokenizer = load_tokenizer(path)
            fmt = get_chat_format(self.spec.chat_format, default_system=self.spec.default_system)
            vocab = tokenizer.get_vocab()
            stop = {vocab[s] for s in fmt.stop_strings if s in vocab}
            if tokenizer.eos_token_id is not None:
                stop.add(tokenizer.eos_token_id)
            self._loaded = (model, tokenizer, fmt, sorted(stop))
        return self._loaded

    def generate(self, system: str, user: str, *, seed: int) -> str:
        """The answer to one prompt (``seed`` matters only when sampling)."""
        import torch

        from emollm.backbones.chat import tokenize_chat

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
        from emollm.model.precision import autocast

        with torch.no_grad(), autocast(self.precision, self.device):
            out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
        new = out[0, input_ids.shape[1] :]
        text = tokenizer.decode(new, skip_special_tokens=True).strip()
        if len(new) >= self.max_new_tokens and (len(new) == 0 or int(new[-1]) not in stop):
            text = trim_to_sentence(text)
        return " ".join(text.split())

    def stream(self, messages: Sequence[dict[str, str]], *, max_new_tokens: int | None = None) -> Iterator[str]:
        """Greedy answer to a multi-turn conversation (``system``/``user``/``assistant`` messages), piece by piece.

        Raises:
            Whatever generation raised, in the caller's thread.
        """
        import torch
        from transformers import TextIteratorStreamer

        from emollm.backbones.chat import tokenize_chat
        from emollm.model.generation import stream_in_thread
        from emollm.model.precision import autocast

        model, tokenizer, fmt, stop = self._load()
        ids, _ = tokenize_chat(tokenizer, fmt, list(messages), add_generation_prompt=True)
        input_ids = torch.tensor([ids], device=self.device)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

        def generate() -> None:
            with torch.no_grad(), autocast(self.precision, self.device):
                model.generate(
                    input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer,
                    max_new_tokens=max_new_tokens or self.max_new_tokens, do_sample=False, temperature=None,
                    top_p=None, top_k=None, eos_token_id=stop,
                    pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0],
                )  # fmt: skip

        yield from stream_in_thread(streamer, generate)


@dataclass(frozen=True)
class Consistency:
    """Outcome of :func:`check_reasoning`."""

    status: str
    """``consistent``, ``mixed``, ``missing_label``, ``contradiction`` or ``empty``."""
    mentioned: tuple[str, ...]
    """Labels named anywhere, in order of first mention."""
    concluded: tuple[str, ...]
    """Labels named in the concluding sentence."""

    @property
    def ok(self) -> bool:
        """Kept by the contradiction filter."""
        return self.status in ("consistent", "mixed")

    @property
    def issue(self) -> str:
        """Short text for the review file ("" when consistent)."""
        if self.status == "consistent":
            return ""
        if self.status == "contradiction":
            return f"contradiction: concludes {', '.join(self.concluded)}"
        if self.status == "mixed":
            return f"mixed: concludes {', '.join(self.concluded)}"
        return self.status


def _parser(labels: Sequence[str]):
    from emollm.labels import LabelParser

    return LabelParser(list(labels))


def check_reasoning(text: str | None, label: str, labels: Sequence[str], parser: Any = None) -> Consistency:
    """Whether a reasoning supports ``label`` (see the module docstring).

    Args:
        text: The reasoning.
        label: The label it must explain.
        labels: The vocabulary (other labels count as contradictions).
        parser: A prebuilt ``LabelParser(labels)`` (optional, for speed).
    """
    parser = parser or _parser(labels)
    text = (text or "").strip()
    if not text:
        return Consistency("empty", (), ())
    mentioned = parser.parse(text).candidates
    concluded: tuple[str, ...] = ()
    for sentence in reversed([s for s in _SENTENCES.split(text) if s.strip()]):
        found = parser.parse(sentence).candidates
        if found:
            concluded = found
            break
    if label not in mentioned:
        return Consistency("missing_label", mentioned, concluded)
    if label not in concluded:
        return Consistency("contradiction", mentioned, concluded)
    if len(concluded) > 1:
        return Consistency("mixed", mentioned, concluded)
    return Consistency("consistent", mentioned, concluded)


_WORDS = re.compile(r"[^\W_]+")


def check_quality(text: str | None, ngram: int = 8, max_repeats: int = 2) -> str | None:
    """``"repetitive"``, ``"truncated"`` or None for a usable text (see the module docstring)."""
    text = (text or "").strip()
    words = [w.lower() for w in _WORDS.findall(text)]
    grams = [tuple(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]
    if grams and max(Counter(grams).values()) > max_repeats:
        return "repetitive"
    if text and not re.search(r"[.!?][\"'”’)\]]*$", text):
        return "truncated"
    return None
