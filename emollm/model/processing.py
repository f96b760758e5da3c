"""``EmoProcessor``: conversations with modality inputs -> token ids, labels and modality batches.

A user turn refers to a modality either with a typed content part (``{"type": "audio"}``) or with a marker in the
text (``"<audio>"``, ``"<face>"``, ``"<video>"``, ``"<frame>"``), as HF processors do with ``<image>``. Each reference
is expanded into exactly N copies of that modality's placeholder token, N = ``num_tokens(modality, frames)`` of the
sample's input, before tokenisation; the model later overwrites those positions with projected features. A sample
whose input for a modality is ``None`` (missing: no face found, no audio track) has that reference removed, so no
tokens are spent on it and nothing is filled with zeros. Labels are ``-100`` everywhere except assistant turns.

One modality may be placed in several runs with token spans: ``{"type": "frame", "span": [0, 256]}`` ...
``{"type": "frame", "span": [256, None]}`` (in a string, ``<frame:0:256>`` ... ``<frame:256:>``) puts the first 256
of its K tokens in one place and the rest in another (Emotion-LLaMA's EVA patch tokens before the feature tokens and
its CLS token after them). The spans of a modality must tile [0, K) in order, without gaps or overlaps (``None`` ends
at K). The model fills placeholder positions in reading order, so token i of the projector output lands at the i-th
placeholder of that modality.

A fused slot (``<multi>``, computed from other modalities' features: ``EmoLLMConfig.fused_sources``) has no input
of its own: it is present in a sample when every one of its sources is, and absent (reference removed) otherwise.
Its sources' features may be given without their own markers; they then feed only the fused slot.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from emollm.backbones import get_chat_format
from emollm.backbones.chat import ChatFormat, tokenize_chat
from emollm.model.configuration import MARKER_RE as _MARKER_RE
from emollm.model.configuration import MARKERS, MODALITIES, EmoLLMConfig
from emollm.model.modeling import ModalityInputs

IGNORE_INDEX = -100


@dataclass
class Sample:
    """One conversation and the modality inputs its user turns refer to.

    Attributes:
        messages: ``[{"role": "system"|"user"|"assistant", "content": str | list[part]}]``; a part is
            ``{"type": "text", "text": ...}`` or ``{"type": "audio"|"face"|"video"|"frame"}``, optionally with
            ``"span": [start, end]`` (a run of that modality's tokens; see the module docstring).
        features: modality -> tensor whose first axis is time ((T, D_e) features, (T_samples,) waveform,
            (T_frames, 3, H, W) frames), or None when the modality is missing for this sample.
        name: Optional sample id (used in error messages).
    """

    messages: list[dict[str, Any]]
    features: dict[str, Tensor | None] = field(default_factory=dict)
    name: str | None = None


@dataclass
class EmoBatch:
    """Model-ready batch. ``labels`` is None when building generation prompts."""

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor | None
    modality_inputs: dict[str, ModalityInputs]

    def to(self, device) -> EmoBatch:
        return EmoBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            None if self.labels is None else self.labels.to(device),
            {m: v.to(device) for m, v in self.modality_inputs.items()},
        )

    def model_inputs(self) -> dict[str, Any]:
        out = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "modality_inputs": self.modality_inputs,
        }
        if self.labels is not None:
            out["labels"] = self.labels
        return out


class EmoProcessor:
    """Chat formatting, placeholder expansion, tokenisation, label masking and padding, in one place."""

    def __init__(
        self,
        tokenizer,
        chat_format: ChatFormat,
        placeholders: dict[str, str],
        num_tokens: Callable[[str, int], int],
        fused: dict[str, Sequence[str]] | None = None,
    ):
        self.tokenizer = tokenizer
        self.chat_format = chat_format
        self.placeholders = dict(placeholders)
        self.num_tokens = num_tokens
        self.fused = {m: tuple(s) for m, s in (fused or {}).items()}
        """Fused slot -> its source modalities."""
        vocab = tokenizer.get_vocab()
        missing = [t for t in self.placeholders.values() if t not in vocab]
        if missing:
            raise ValueError(f"placeholder tokens {missing} are not in the tokenizer; call prepare_tokenizer first")
        self.placeholder_ids = {m: vocab[t] for m, t in self.placeholders.items()}
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; call prepare_tokenizer first")

    @classmethod
    def from_config(cls, config: EmoLLMConfig, tokenizer, num_tokens: Callable[[str, int], int]) -> EmoProcessor:
        fmt = get_chat_format(config.chat_format, default_system=config.default_system)
        placeholders = {m: c.placeholder for m, c in config.modalities.items()}
        return cls(tokenizer, fmt, placeholders, num_tokens, fused=config.fused_sources())

    # ------------------------------------------------------------------ inputs
    def input_length(self, sample: Sample, modality: str) -> int | None:
        """Frames of ``sample``'s input for ``modality`` (1 for a fused slot), or None when it is missing (a fused
        slot: when any of its sources is)."""
        if modality in self.fused:
            return 1 if all(sample.features.get(s) is not None for s in self.fused[modality]) else None
        feats = sample.features.get(modality)
        return None if feats is None else int(feats.shape[0])

    # ------------------------------------------------------------------ text
    def _span_tokens(self, kind: str, part: dict[str, Any], sample: Sample, state: dict[str, int | None]) -> int:
        """Placeholder count of one span part; ``state[kind]`` is the end of the spans so far (None: closed)."""
        span = part["span"]
        where = f"sample {sample.name!r}: {kind} part with span {span!r}"
        if (
            not isinstance(span, (list, tuple))
            or len(span) != 2
            or not all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in span)
            or span[0] is None
            or span[0] < 0
        ):
            raise ValueError(f"{where}: a span is [start, end] with ints 0 <= start < end, or end null (= all tokens)")
        start, end = span
        if end is not None and end <= start:
            raise ValueError(f"{where}: end must be greater than start")
        if kind in state and state[kind] is None:
            raise ValueError(
                f"{where}: {kind} was already placed up to its last token (by a part without span, or a span reaching "
                "its end); the spans of one modality must tile [0, K) in order"
            )
        covered = state.get(kind, 0)
        if start != covered:
            raise ValueError(
                f"{where}: starts at {start}, but the {kind} spans before it cover [0, {covered}); the spans of one "
                "modality must tile [0, K) in order, without gaps or overlaps"
            )
        length = self.input_length(sample, kind)
        if length is None:  # missing modality: no tokens; the tiling is still checked
            state[kind] = None if end is None else end
            return 0
        total = self.num_tokens(kind, length)
        stop = total if end is None else end
        if stop > total or (end is None and start >= total):
            raise ValueError(f"{where}: the {kind} input has only {total} tokens")
        state[kind] = None if stop == total else stop
        return stop - start

    def _render_content(self, content: str | list[dict[str, Any]], sample: Sample, state: dict[str, int | None]) -> str:
        if isinstance(content, str):
            parts: list[dict[str, Any]] = []
            pos = 0
            for match in _MARKER_RE.finditer(content):
                parts.append({"type": "text", "text": content[pos : match.start()]})
                part: dict[str, Any] = {"type": match.group(1)}
                if match.group(2) is not None:  # <frame:0:256>, <frame:256:>
                    part["span"] = [int(match.group(2)), int(match.group(3)) if match.group(3) else None]
                parts.append(part)
                pos = match.end()
            parts.append({"type": "text", "text": content[pos:]})
        else:
            parts = content
        out: list[str] = []
        for part in parts:
            kind = part.get("type")
            if kind == "text":
                out.append(part.get("text", ""))
                continue
            if kind not in MODALITIES:
                raise ValueError(f"sample {sample.name!r}: unknown content part type {kind!r}")
            if kind not in self.placeholders:
                raise ValueError(f"sample {sample.name!r} refers to {kind!r}, but the model has no {kind} branch")
            if part.get("span") is not None:
                out.append(self.placeholders[kind] * self._span_tokens(kind, part, sample, state))
                continue
            if kind in state:
                raise ValueError(
                    f"sample {sample.name!r} refers to {kind!r} twice; one input per modality is supported (to place "
                    f"parts of its tokens in several places, give every {kind} part a span)"
                )
            state[kind] = None
            length = self.input_length(sample, kind)
            if length is None:  # missing modality: its reference disappears, no tokens spent
                continue
            out.append(self.placeholders[kind] * self.num_tokens(kind, length))
        return "".join(out)

    def render(self, sample: Sample) -> list[dict[str, str]]:
        """Messages with modality references expanded into placeholder tokens (plain-string contents)."""
        return self._render(sample)[0]

    def _render(self, sample: Sample) -> tuple[list[dict[str, str]], set[str]]:
        """``render`` and the set of modalities whose tokens the sample places."""
        state: dict[str, int | None] = {}  # modality -> end of its spans so far; None once fully placed
        messages = []
        for msg in sample.messages:
            content = self._render_content(msg["content"], sample, state) if msg["role"] == "user" else msg["content"]
            if not isinstance(content, str):
                raise ValueError(f"sample {sample.name!r}: {msg['role']} content must be text")
            messages.append({"role": msg["role"], "content": content})
        for m, end in state.items():
            length = self.input_length(sample, m)
            if end is None or length is None:  # fully placed, or missing (no tokens, K unknown)
                continue
            total = self.num_tokens(m, length)
            raise ValueError(
                f"sample {sample.name!r}: the {m} spans cover [0, {end}) of {total} tokens; the last span must end at "
                f"K (or null), so that the spans tile [0, K)"
            )
        given = {m for m, f in sample.features.items() if f is not None}
        feeding = {s for m in state if m in self.fused for s in self.fused[m]}  # inputs of a referenced fused slot
        unused = given - set(state) - feeding
        if unused:
            raise ValueError(
                f"sample {sample.name!r} has {sorted(unused)} features but no user turn refers to them; "
                f"add {', '.join(MARKERS[m] for m in sorted(unused))} to the prompt"
            )
        placed = {m for m in state if self.input_length(sample, m) is not None}
        return messages, placed

    # ------------------------------------------------------------------ batch
    def __call__(
        self,
        samples: Sequence[Sample],
        *,
        add_generation_prompt: bool = False,
        padding_side: Literal["right", "left"] = "right",
        max_length: int | None = None,
    ) -> EmoBatch:
        """Tokenise and pad ``samples``. Use ``padding_side="left"`` with ``add_generation_prompt=True`` to generate."""
        rows: list[tuple[list[int], list[bool]]] = []
        placed: list[set[str]] = []
        for sample in samples:
            messages, in_text = self._render(sample)
            placed.append(in_text)
            ids, mask = tokenize_chat(
                self.tokenizer, self.chat_format, messages, add_generation_prompt=add_generation_prompt
            )
            if max_length is not None and len(ids) > max_length:
                cut = set(ids[max_length:]) & set(self.placeholder_ids.values())
                if cut:
                    raise ValueError(
                        f"sample {sample.name!r} is {len(ids)} tokens, over max_length={max_length}, and truncating "
                        "would cut modality tokens; raise max_length or shorten the text"
                    )
                if not add_generation_prompt and any(mask) and not any(mask[:max_length]):
                    raise ValueError(
                        f"sample {sample.name!r} is {len(ids)} tokens and max_length={max_length} cuts off its whole "
                        "answer, so it would train on nothing; raise max_length or shorten the user text"
                    )
                ids, mask = ids[:max_length], mask[:max_length]
            rows.append((ids, mask))
        width = max(len(ids) for ids, _ in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for i, (ids, mask) in enumerate(rows):
            span = slice(width - len(ids), width) if padding_side == "left" else slice(0, len(ids))
            input_ids[i, span] = torch.tensor(ids, dtype=torch.long)
            attention[i, span] = 1
            lab = torch.tensor([t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=False)], dtype=torch.long)
            labels[i, span] = lab
        placeholder_set = torch.tensor(sorted(self.placeholder_ids.values()))
        labels[torch.isin(labels, placeholder_set)] = IGNORE_INDEX  # never trainable, whatever the mask said
        return EmoBatch(
            input_ids=input_ids,
            attention_mask=attention,
            labels=None if add_generation_prompt else labels,
            modality_inputs=self._modality_batches(samples, placed),
        )

    def _modality_batches(self, samples: Sequence[Sample], placed: Sequence[set[str]]) -> dict[str, ModalityInputs]:
        """Per modality, the padded inputs of the rows that place it or feed a fused slot they place."""
        out: dict[str, ModalityInputs] = {}
        for modality in self.placeholders:
            if modality in self.fused:
                rows = [i for i, p in enumerate(placed) if modality in p]
                if rows:  # no input of its own: the model fuses its sources' rows
                    n = len(rows)
                    index = torch.tensor(rows, dtype=torch.long)
                    out[modality] = ModalityInputs(torch.zeros(n, 1, 0), torch.ones(n, dtype=torch.long), index)
                continue
            feeds = {f for f, srcs in self.fused.items() if modality in srcs}
            present = [
                (i, s.features[modality])
                for i, s in enumerate(samples)
                if s.features.get(modality) is not None and (modality in placed[i] or feeds & placed[i])
            ]
            if not present:
                continue
            trailing = {tuple(f.shape[1:]) for _, f in present}
            if len(trailing) != 1:
                raise ValueError(
                    f"{modality} inputs in one batch have different shapes beyond the first axis: {sorted(trailing)}"
                )
            longest = max(f.shape[0] for _, f in present)
            dtype = present[0][1].dtype
            feats = torch.zeros(len(present), longest, *trailing.pop(), dtype=dtype)  # (B_m, T, ...), zero padded
            lengths = torch.zeros(len(present), dtype=torch.long)
            for j, (_, f) in enumerate(present):
                feats[j, : f.shape[0]] = f
                lengths[j] = f.shape[0]
            index = torch.tensor([i for i, _ in present], dtype=torch.long)
            in_text = torch.tensor([modality in placed[i] for i, _ in present], dtype=torch.bool)
            out[modality] = ModalityInputs(feats, lengths, index, None if bool(in_text.all()) else in_text)
        return out

    def decode(self, token_ids: Tensor) -> list[str]:
        """New tokens from ``generate`` -> text (special tokens dropped, then the chat format's own clean-up)."""
        texts = self.tokenizer.batch_decode(token_ids, skip_special_tokens=True)
        return [self.chat_format.clean_answer(t.strip()) for t in texts]

    def stop_sequences(self) -> list[list[int]]:
        """Token-id sequences that also end an answer (the chat format's, e.g. AffectGPT's ``###`` pieces)."""
        return self.chat_format.stop_token_sequences(self.tokenizer)

    def stop_token_ids(self) -> list[int]:
        """Ids that end an assistant turn (the format's stop strings and the tokenizer's eos)."""
        vocab = self.tokenizer.get_vocab()
        ids = {vocab[s] for s in self.chat_format.stop_strings if s in vocab}
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return sorted(ids)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.tokenizer.save_pretrained(directory)
        meta = {
            "chat_format": self.chat_format.name,
            "default_system": self.chat_format.default_system,
            "placeholders": self.placeholders,
        }
        (directory / "processor_config.json").write_text(json.dumps(meta, indent=2) + "\n")
