"""In-process generation with transformers: a text-only LLM of the backbone registry (SmolLM2 offline on its
embedded weights, or a local LLaMA-3 / Qwen / Mistral folder or GGUF), greedy or with sampling seeded per prompt,
one prompt at a time (batching would make an output depend on its batch neighbours)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emollm.engines.base import Completion, EngineBase, Messages, Sampling, conversation_seed
from emollm.utils.deadline import check_deadline, stopping_criteria

__all__ = ["TransformersEngine", "chat_stop_ids"]


def chat_stop_ids(tokenizer: Any, fmt: Any) -> list[int]:
    """Token ids that end an answer: the chat format's stop strings that are single tokens, and eos."""
    vocab = tokenizer.get_vocab()
    stop = {vocab[s] for s in fmt.stop_strings if s in vocab}
    if tokenizer.eos_token_id is not None:
        stop.add(tokenizer.eos_token_id)
    return sorted(stop)


class TransformersEngine(EngineBase):
    """A text-only LLM from the backbone registry, run by transformers in this process (loaded on first use).

    Args:
        backbone: Registry name (``smollm2`` runs offline).
        llm_path: Local HF folder or ``.gguf`` (needed by backbones without embedded weights).
        max_new_tokens: Generation budget; a reasoning cut by it is trimmed to its last full sentence.
        do_sample: False: greedy. True: sampling with ``temperature`` / ``top_p``, seeded per prompt.
        device: Torch device.
        precision: ``fp32`` (default: MERR caches key on the answers), ``bf16`` or ``auto``
            (:mod:`emollm.model.precision`); recorded in :attr:`id` unless fp32.
    """

    kind = "transformers"

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
        self.backbone = backbone
        self.llm_path = None if llm_path is None else str(llm_path)
        self.sampling = Sampling(max_new_tokens, do_sample, temperature, top_p)
        self.device = device
        self.precision = resolve_precision(precision, device, weights=self.spec.default_dtype)
        self.source = "embedded" if self.llm_path is None else str(Path(self.llm_path).expanduser().resolve())
        # The id of the in-process path is unchanged since it was LLMReasoner's: MERR caches stay valid.
        self.id = f"llm:{backbone}:{self.source}:{self.sampling.label}" + (
            "" if self.precision == "fp32" else f":{self.precision}"
        )
        self._loaded: tuple[Any, Any, Any, list[int]] | None = None
        self.linear_kernels: str | None = None
        """What :func:`~emollm.model.packed_linear.pack_linears` did at load (None before the model is loaded)."""

    # The pre-engine attribute names (LLMReasoner's), still read by callers and tests.
    @property
    def max_new_tokens(self) -> int:
        return self.sampling.max_new_tokens

    @property
    def do_sample(self) -> bool:
        return self.sampling.do_sample

    @property
    def temperature(self) -> float:
        return self.sampling.temperature

    @property
    def top_p(self) -> float:
        return self.sampling.top_p

    def _load(self):
        if self._loaded is None:
            from emollm.backbones import get_chat_format
            from emollm.backbones.loading import load_language_model, load_tokenizer, resolve_llm_path
            from emollm.model.packed_linear import pack_linears

            path = resolve_llm_path(self.spec, self.llm_path)
            model = load_language_model(self.spec, path).to(self.device).eval()
            self.linear_kernels = pack_linears(model, self.precision, self.device)
            tokenizer = load_tokenizer(path)
            fmt = get_chat_format(self.spec.chat_format, default_system=self.spec.default_system)
            self._loaded = (model, tokenizer, fmt, chat_stop_ids(tokenizer, fmt))
        return self._loaded

    def prompt_ids(self, messages: Messages) -> list[int]:
        """The prompt's token ids as this engine feeds them (chat format of the backbone, generation prompt)."""
        from emollm.backbones.chat import tokenize_chat

        _, tokenizer, fmt, _ = self._load()
        ids, _ = tokenize_chat(tokenizer, fmt, list(messages), add_generation_prompt=True)
        return ids

    def _kwargs(self, tokenizer: Any, stop: list[int], max_new_tokens: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "do_sample": self.sampling.do_sample,
            "eos_token_id": stop,
            "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0],
        }
        if self.sampling.do_sample:
            kwargs.update(temperature=self.sampling.temperature, top_p=self.sampling.top_p, top_k=None)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    def complete(self, messages: Messages, *, seed: int = 0, max_new_tokens: int | None = None) -> Completion:
        """The answer to one conversation (``seed`` matters only when sampling)."""
        import torch

        from emollm.model.precision import autocast

        model, tokenizer, _, stop = self._load()
        budget = max_new_tokens or self.sampling.max_new_tokens
        input_ids = torch.tensor([self.prompt_ids(messages)], device=self.device)
        kwargs = self._kwargs(tokenizer, stop, budget)
        if self.sampling.do_sample:
            torch.manual_seed(conversation_seed(seed, messages))
        with torch.no_grad(), autocast(self.precision, self.device):
            out = model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), stopping_criteria=stopping_criteria(), **kwargs
            )
        check_deadline("generation")  # under a deadline generate() stopped early: that is an error, not an answer
        new = out[0, input_ids.shape[1] :]
        ended = len(new) > 0 and int(new[-1]) in stop
        text = tokenizer.decode(new, skip_special_tokens=True)
        reason = "length" if len(new) >= budget and not ended else "stop"
        return Completion(text, reason, {**self.produced_by(), "prompt_tokens": int(input_ids.shape[1])})

    def stream(self, messages: Messages, *, max_new_tokens: int | None = None) -> Iterator[str]:
        """Greedy answer to a multi-turn conversation (``system``/``user``/``assistant`` messages), piece by piece.

        Raises:
            Whatever generation raised, in the caller's thread.
        """
        import torch
        from transformers import TextIteratorStreamer

        from emollm.model.generation import stream_in_thread
        from emollm.model.precision import autocast

        model, tokenizer, _, stop = self._load()
        input_ids = torch.tensor([self.prompt_ids(messages)], device=self.device)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = self._kwargs(tokenizer, stop, max_new_tokens or self.sampling.max_new_tokens)
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)

        criteria = stopping_criteria()  # read here: the generating thread does not see the caller's deadline

        def generate() -> None:
            with torch.no_grad(), autocast(self.precision, self.device):
                model.generate(
                    input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer,
                    stopping_criteria=criteria, **kwargs,
                )  # fmt: skip

        yield from stream_in_thread(streamer, generate)
        check_deadline("generation")

    def produced_by(self) -> dict[str, Any]:
        """Engine, backbone, weights, precision and kernels (once loaded), sampling, and why this engine runs."""
        return {
            "engine": self.kind,
            "backbone": self.backbone,
            "weights": self.source,
            "precision": self.precision,
            "linear_kernels": self.linear_kernels,
            "sampling": self.sampling.to_dict(),
            "chosen": self.chosen,
        }
