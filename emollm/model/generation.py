"""Chat-level generation: conversations in, answers out; batched (left padding) or streamed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from emollm.model.modeling import EmoLLMForCausalLM
from emollm.model.processing import EmoProcessor, Sample


class SequenceStop:
    """A ``StoppingCriteria``: a row is done once its generated tokens end with one of ``sequences`` (per row, so a
    batch behaves as the release's batch of one)."""

    def __init__(self, sequences: Sequence[Sequence[int]]):
        self.sequences = [list(s) for s in sequences if s]

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for seq in self.sequences:
            n = len(seq)
            if input_ids.shape[1] >= n:
                tail = torch.tensor(seq, device=input_ids.device)
                done |= (input_ids[:, -n:] == tail).all(dim=1)
        return done


def _gen_kwargs(processor: EmoProcessor, max_new_tokens: int, do_sample: bool, **kwargs: Any) -> dict[str, Any]:
    out = {
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "eos_token_id": processor.stop_token_ids(),
        "pad_token_id": processor.tokenizer.pad_token_id,
    }
    if not do_sample:  # greedy: make sure sampling settings from a generation_config do not leak in
        out.update(temperature=None, top_p=None, top_k=None)
    stops = processor.stop_sequences()
    if stops and "stopping_criteria" not in kwargs:
        from transformers import StoppingCriteriaList

        out["stopping_criteria"] = StoppingCriteriaList([SequenceStop(stops)])
    out.update(kwargs)
    return out


def _device(model: EmoLLMForCausalLM) -> torch.device:
    return model.get_input_embeddings().weight.device


@torch.no_grad()
def chat(
    model: EmoLLMForCausalLM,
    processor: EmoProcessor,
    samples: Sequence[Sample],
    *,
    max_new_tokens: int = 128,
    do_sample: bool = False,
    batch_size: int = 8,
    **generate_kwargs: Any,
) -> list[str]:
    """Answer each sample's conversation (ending in a user turn); returns one string per sample, in order."""
    answers: list[str] = []
    for start in range(0, len(samples), batch_size):
        batch = processor(samples[start : start + batch_size], add_generation_prompt=True, padding_side="left")
        batch = batch.to(_device(model))
        new = model.generate(
            batch.input_ids,
            batch.attention_mask,
            batch.modality_inputs,
            **_gen_kwargs(processor, max_new_tokens, do_sample, **generate_kwargs),
        )
        answers.extend(processor.decode(new))
    return answers


def stream_chat(
    model: EmoLLMForCausalLM,
    processor: EmoProcessor,
    sample: Sample,
    *,
    max_new_tokens: int = 128,
    do_sample: bool = False,
    **generate_kwargs: Any,
) -> Iterator[str]:
    """Yield the answer to one sample piece by piece as it is generated."""
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=False, skip_special_tokens=True)
    batch = processor([sample], add_generation_prompt=True, padding_side="left").to(_device(model))
    kwargs = _gen_kwargs(processor, max_new_tokens, do_sample, streamer=streamer, **generate_kwargs)
    yield from stream_in_thread(
        streamer, lambda: model.generate(batch.input_ids, batch.attention_mask, batch.modality_inputs, **kwargs)
    )


def stream_in_thread(streamer: Any, generate: Callable[[], Any]) -> Iterator[str]:
    """Run ``generate`` (which feeds ``streamer``, a ``TextIteratorStreamer``) in a thread and yield its pieces;
    an exception in the thread ends the stream and is re-raised in the caller's thread."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            generate()
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield from streamer
    thread.join()
    if errors:
        raise errors[0]
