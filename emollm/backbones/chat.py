"""Chat formats: messages -> prompt text with the char spans the loss is computed on (the machinery; each family
file of this package declares its format as data, and ``emollm.backbones.get_chat_format`` finds it by name).

Each format reproduces, character for character, the official Jinja ``chat_template`` of its model family (copies of
those templates live in ``tests/assets/chat_templates/`` and the parity tests render both), and additionally records
where each assistant turn sits in the text, so that :func:`tokenize_chat` can build a loss mask from the tokenizer's
offset mapping in a single tokenizer call.

Formats (registry keys):

- ``llama2``: ``meta-llama/Llama-2-7b-chat-hf``: ``<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {answer}
  </s>``; contents are stripped as the official template does. Nothing is added for a generation prompt.
- ``mistral``: ``mistralai/Mistral-7B-Instruct-v0.1`` (tokenizer v1): ``<s> [INST] {user} [/INST] {answer}</s>``.
  A system message is prepended to the first user message, separated by ``"\\n\\n"``; this is what the current
  published template does (its first versions rejected system messages; see ``tests/assets/chat_templates/SOURCES.md``)
  and what ``mistral-common`` does for v1 models. Nothing is added for a generation prompt.
- ``llama3``: ``meta-llama/Meta-Llama-3-8B-Instruct``: ``<|begin_of_text|>`` then, per message,
  ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>`` with contents trimmed.
- ``chatml``: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` (Qwen2/Qwen2.5, SmolLM2). The Qwen2.5 and SmolLM2
  templates insert a default system message when there is none; the backbone registry sets it through
  ``get_chat_format("chatml", default_system=...)``.
- The current families declare theirs in their family files as :class:`TurnFormat` data: ``llama3_1``
  (llama.py), ``gemma3`` and ``gemma4`` (gemma.py), ``phi4`` (phi.py); ``qwen3``/``qwen3_5`` (qwen.py) and
  ``smollm3`` (smollm.py) are small subclasses, because where their think blocks go depends on the conversation.

Example:
    >>> from emollm.backbones import get_chat_format
    >>> fmt = get_chat_format("llama3")
    >>> chat = fmt.render([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}])
    >>> [chat.text[s:e] for s, e in chat.train_spans]
    ['Hello!<|eot_id|>']
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CHATML",
    "ChatFormat",
    "InstFormat",
    "RenderedChat",
    "Role",
    "TurnFormat",
    "tokenize_chat",
]

Role = Literal["system", "user", "assistant"]
_ROLES: tuple[str, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class RenderedChat:
    """A conversation rendered to prompt text.

    Attributes:
        text: The prompt text, equal to the official chat template's output.
        train_spans: Sorted, non-overlapping ``[start, end)`` character spans of ``text`` on which the loss is
            computed: each assistant turn's content together with its end-of-turn token (``</s>``, ``<|eot_id|>``,
            ``<|im_end|>``). Role headers, user/system text and the whitespace or newline written after the
            end-of-turn token are outside the spans. For ``llama2``/``mistral`` the single space the template writes
            before the answer is inside the span, because sentencepiece glues it to the answer's first token
            (``"▁Hello"``).
    """

    text: str
    train_spans: list[tuple[int, int]]


class _Builder:
    """Concatenates text pieces and records the spans of the trainable ones (adjacent ones merged)."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._spans: list[tuple[int, int]] = []
        self._pos = 0

    def add(self, text: str, *, train: bool = False) -> None:
        if not text:
            return
        start, self._pos = self._pos, self._pos + len(text)
        self._parts.append(text)
        if train:
            if self._spans and self._spans[-1][1] == start:
                self._spans[-1] = (self._spans[-1][0], self._pos)
            else:
                self._spans.append((start, self._pos))

    def build(self) -> RenderedChat:
        return RenderedChat(text="".join(self._parts), train_spans=list(self._spans))


@dataclass(frozen=True)
class ChatFormat:
    """A chat prompt format. Get one with :func:`get_chat_format`; the subclasses below implement the layouts.

    Attributes:
        name: Registry key (``"llama2"``, ``"mistral"``, ``"llama3"``, ``"chatml"``).
        stop_strings: Strings whose token ends an assistant turn in generation. The first one is the end-of-turn
            string the format writes after each answer.
        special_tokens: Strings the format requires to be single special tokens of the tokenizer (used to build tiny
            test tokenizers and checked by :func:`tokenize_chat`).
        default_system: System message inserted when the conversation has none (the Qwen2.5 and SmolLM2 templates do
            this); ``None`` inserts nothing.
        bos_token: Default ``bos_token`` passed to the template ("" where the format writes none).
        eos_token: Default ``eos_token`` passed to the template.
    """

    name: str
    stop_strings: tuple[str, ...]
    special_tokens: tuple[str, ...]
    default_system: str | None = None
    bos_token: str = field(default="", kw_only=True)
    eos_token: str = field(default="", kw_only=True)
    tokenize_apart: bool = field(default=False, kw_only=True)
    """Tokenise each trained span and each stretch between them separately (AffectGPT's collater tokenises prompt
    and answer apart), so no token straddles a span boundary; the default tokenises the whole text at once, as
    ``apply_chat_template`` does."""

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = False,
        bos_token: str | None = None,
        eos_token: str | None = None,
    ) -> RenderedChat:
        """Renders a conversation exactly as the official template of this format does.

        Args:
            messages: ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``: an optional system message
                first, then user and assistant turns alternating, starting with a user turn.
            add_generation_prompt: Append the header that opens an assistant turn (nothing for llama2/mistral,
                whose prompts end with ``[/INST]``).
            bos_token: Overrides :attr:`bos_token` (used only where the official template writes ``bos_token``).
            eos_token: Overrides :attr:`eos_token` (used only where the official template writes ``eos_token``).

        Returns:
            The text and the character spans of the assistant turns (see :class:`RenderedChat`).

        Raises:
            ValueError: On an empty conversation, an unknown role, a misplaced system message or turns that do not
                alternate; the message names the offending index and role.
            TypeError: If a message is not a mapping or its content is not a string.
        """
        turns = _validate(messages)
        if self.default_system is not None and turns[0][0] != "system":
            turns.insert(0, ("system", self.default_system))
        builder = _Builder()
        self._render(
            builder,
            turns,
            add_generation_prompt=add_generation_prompt,
            bos=self.bos_token if bos_token is None else bos_token,
            eos=self.eos_token if eos_token is None else eos_token,
        )
        return builder.build()

    def _render(
        self, b: _Builder, turns: list[tuple[str, str]], *, add_generation_prompt: bool, bos: str, eos: str
    ) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement a layout")

    def stop_token_sequences(self, tokenizer: Any) -> list[list[int]]:
        """Token-id sequences that end generation besides the stop tokens (AffectGPT's ``###`` pieces); none here."""
        return []

    def clean_answer(self, text: str) -> str:
        """A generated answer (special tokens already dropped) as the format's reference code post-processes it."""
        return text


def _split_system(turns: list[tuple[str, str]]) -> tuple[str | None, list[tuple[str, str]]]:
    if turns[0][0] == "system":
        return turns[0][1], turns[1:]
    return None, turns


@dataclass(frozen=True)
class TurnFormat(ChatFormat):
    """Every message as ``header`` + content + end-of-turn (+ untrained ``after_turn``): LLaMA-3, ChatML, Gemma, Phi
    and kin. The fields below cover what the official templates of these families vary, so a family declares its
    format as data.

    Attributes:
        header: Text that opens a turn; ``{role}`` is replaced by the role's name in ``role_names`` (default: the role).
        after_turn: Text the template writes after the end-of-turn string, outside the loss (ChatML's newline).
        strip: Trim each content as the template does (``| trim``).
        role_names: Template names of our roles where they differ (Gemma's ``assistant`` -> ``model``).
        system_mode: ``"turn"``: the system message is a turn of its own; ``"fold"``: the template has no system role
            and writes ``fold_template`` at the start of the first user turn (Gemma-3).
        fold_template: How a folded system message precedes the first user content (``{system}``; not trimmed).
        system_template: The body of the system turn (``{system}``, ``{date_string}``), e.g. LLaMA-3.1's
            "Cutting Knowledge Date" header.
        always_system: Write the system turn even when the conversation has none (with an empty ``{system}``).
        date_string: Value of ``{date_string}`` in ``system_template`` (LLaMA-3.1's ``date_string`` variable).
        enable_thinking: The template variable of the same name; ``None`` leaves it undefined, as when
            ``apply_chat_template`` is called without it, which means ``thinking_default``.
        thinking_default: What an undefined ``enable_thinking`` means in this template.
        think_on_system: Written at the top of the system turn when thinking is on; a system turn is then written even
            without a system message (Gemma-4's ``<|think|>``).
        think_on_prompt: Written after the generation prompt's header when thinking is on (Qwen3.5's ``<think>\\n``).
        think_off_prompt: Written after the generation prompt's header when thinking is off (the empty think block or
            thought channel: Qwen3's ``<think>\\n\\n</think>\\n\\n``, Gemma-4's ``<|channel>thought\\n<channel|>``).
        closing: Written at the very end when no generation prompt is asked for (``{eos}``: Phi-4-mini appends
            ``eos_token``); outside the loss.
    """

    header: str = field(default="", kw_only=True)
    after_turn: str = field(default="", kw_only=True)
    strip: bool = field(default=False, kw_only=True)
    role_names: Mapping[str, str] = field(default_factory=dict, kw_only=True)
    system_mode: Literal["turn", "fold"] = field(default="turn", kw_only=True)
    fold_template: str = field(default="{system}\n\n", kw_only=True)
    system_template: str = field(default="{system}", kw_only=True)
    always_system: bool = field(default=False, kw_only=True)
    date_string: str = field(default="", kw_only=True)
    enable_thinking: bool | None = field(default=None, kw_only=True)
    thinking_default: bool = field(default=False, kw_only=True)
    think_on_system: str = field(default="", kw_only=True)
    think_on_prompt: str = field(default="", kw_only=True)
    think_off_prompt: str = field(default="", kw_only=True)
    closing: str = field(default="", kw_only=True)

    @property
    def thinking(self) -> bool:
        """Whether thinking is on (``enable_thinking``, or the template's default when that is None)."""
        return self.thinking_default if self.enable_thinking is None else self.enable_thinking

    @property
    def has_thinking_switch(self) -> bool:
        """Whether ``enable_thinking`` changes anything in this template."""
        return bool(self.think_on_system or self.think_on_prompt or self.think_off_prompt)

    @property
    def writes_date(self) -> bool:
        """Whether ``date_string`` appears in the rendered prompt."""
        return "{date_string}" in self.system_template

    def _header(self, role: str) -> str:
        return self.header.format(role=self.role_names.get(role, role))

    def _clean(self, content: str) -> str:
        return content.strip() if self.strip else content

    def _system_turn(self, b: _Builder, system: str | None) -> str:
        """Writes the system turn (if any) and returns the text that opens the first user content (fold mode)."""
        think = self.think_on_system if self.thinking else ""
        if system is None and not (self.always_system or think):
            return ""
        if self.system_mode == "fold":
            return "" if system is None else self.fold_template.format(system=system)
        body = self.system_template.format(system=self._clean(system or ""), date_string=self.date_string)
        b.add(self._header("system"))
        b.add(think + body + self.stop_strings[0])
        b.add(self.after_turn)
        return ""

    def _answer(self, content: str, index: int, turns: list[tuple[str, str]]) -> tuple[str, str]:
        """One assistant turn after its header: (untrained prefix, trained text before the end-of-turn string).

        ``index`` is the turn's position in ``turns`` (the conversation without its system message).
        """
        return "", self._clean(content)

    def _generation_prompt(self) -> str:
        return self._header("assistant") + (self.think_on_prompt if self.thinking else self.think_off_prompt)

    def _render(
        self, b: _Builder, turns: list[tuple[str, str]], *, add_generation_prompt: bool, bos: str, eos: str
    ) -> None:
        eot = self.stop_strings[0]  # the templates write a literal end-of-turn, whatever eos_token is
        system, turns = _split_system(turns)
        b.add(bos)
        prefix = self._system_turn(b, system)
        for i, (role, content) in enumerate(turns):
            b.add(self._header(role))
            if role == "assistant":
                untrained, answer = self._answer(content, i, turns)
                b.add(untrained)
                b.add(answer + eot, train=True)
            else:
                b.add((prefix if i == 0 else "") + self._clean(content) + eot)
            b.add(self.after_turn)
        if add_generation_prompt:
            b.add(self._generation_prompt())
        else:
            b.add(self.closing.format(eos=eos))


@dataclass(frozen=True)
class InstFormat(ChatFormat):
    """``[INST] user [/INST] answer`` layouts (LLaMA-2, Mistral v0.1): no generation prompt, the system message
    folded into the first user turn through ``system_template``.

    Attributes:
        system_template: How the system message joins the first user message (``{system}``, ``{user}``).
        user_turn: One user turn (``{bos}``, ``{user}``); ``{bos}`` only where the template writes bos per turn.
        answer_turn: One answer (``{answer}``, ``{eos}``); trained, including the space before the answer.
        bos_once: Write bos once at the start (Mistral) instead of through ``user_turn``.
        strip: Trim contents as the template does.
    """

    system_template: str = field(default="{system}\n\n{user}", kw_only=True)
    user_turn: str = field(default=" [INST] {user} [/INST]", kw_only=True)
    answer_turn: str = field(default=" {answer}{eos}", kw_only=True)
    bos_once: bool = field(default=True, kw_only=True)
    strip: bool = field(default=False, kw_only=True)

    def _render(
        self, b: _Builder, turns: list[tuple[str, str]], *, add_generation_prompt: bool, bos: str, eos: str
    ) -> None:
        system, turns = _split_system(turns)
        if self.bos_once:
            b.add(bos)
        for i, (role, content) in enumerate(turns):
            if role == "user":
                if i == 0 and system is not None:
                    content = self.system_template.format(system=system, user=content)
                user = content.strip() if self.strip else content
                b.add(self.user_turn.format(bos="" if self.bos_once else bos, user=user))
            else:
                answer = content.strip() if self.strip else content
                b.add(self.answer_turn.format(answer=answer, eos=eos), train=True)


#: ChatML (``<|im_start|>{role}\n{content}<|im_end|>\n``), shared by the Qwen2/2.5 and SmolLM families; a family sets
#: its template's default system message through ``get_chat_format("chatml", default_system=...)``.
CHATML = TurnFormat(
    name="chatml",
    stop_strings=("<|im_end|>",),
    special_tokens=("<|im_start|>", "<|im_end|>"),
    eos_token="<|im_end|>",
    header="<|im_start|>{role}\n",
    after_turn="\n",
)


def _validate(messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Checks roles and alternation like the official templates; returns ``[(role, content), ...]``."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}")
    if not messages:
        raise ValueError("messages is empty: a conversation needs at least one user message")
    turns: list[tuple[str, str]] = []
    offset = 1 if isinstance(messages[0], Mapping) and messages[0].get("role") == "system" else 0
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(f"messages[{i}] must be a dict with 'role' and 'content', got {type(message).__name__}")
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES:
            raise ValueError(f"messages[{i}] has unknown role {role!r}; expected one of {', '.join(_ROLES)}")
        if not isinstance(content, str):
            raise TypeError(f"messages[{i}] (role {role!r}): content must be a str, got {type(content).__name__}")
        if role == "system":
            if i != 0:
                raise ValueError(f"messages[{i}] has role 'system': a system message is only allowed first")
        else:
            expected = "user" if (i - offset) % 2 == 0 else "assistant"
            if role != expected:
                raise ValueError(
                    f"messages[{i}] has role {role!r} but {expected!r} was expected: after the optional system "
                    "message, roles must alternate user/assistant/user/... starting with user"
                )
        turns.append((role, content))
    if len(turns) == offset:
        raise ValueError("messages has a system message but no user message")
    return turns


def tokenize_chat(
    tokenizer: Any,
    fmt: ChatFormat,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = False,
) -> tuple[list[int], list[bool]]:
    """Renders a conversation, tokenizes it in one call and marks the tokens the loss is computed on.

    The whole text is tokenized once with ``add_special_tokens=False`` (the format writes bos itself), which is what
    ``tokenizer.apply_chat_template(..., tokenize=True)`` does, so the ids are identical. A token is trainable iff its
    start offset lies inside a train span of :class:`RenderedChat` (so a token that straddles a span boundary is
    trainable iff it starts inside the span).

    Args:
        tokenizer: A fast (``tokenizers``-backed) Hugging Face tokenizer in which the format's special tokens are
            single added tokens.
        fmt: The chat format.
        messages: The conversation (see :meth:`ChatFormat.render`).
        add_generation_prompt: Append the assistant header (for generation).

    Returns:
        ``(input_ids, loss_mask)`` of equal length.

    Raises:
        TypeError: If the tokenizer is not a fast tokenizer (offset mappings are needed).
        ValueError: If a special token the rendered text uses is not an added token of the tokenizer (it would be
            split into pieces), or on invalid messages.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"tokenize_chat needs a fast tokenizer (offset mappings), got {type(tokenizer).__name__}; "
            "load it with use_fast=True / as a PreTrainedTokenizerFast"
        )
    chat = fmt.render(messages, add_generation_prompt=add_generation_prompt)
    added = tokenizer.get_added_vocab()
    missing = [t for t in fmt.special_tokens if t in chat.text and t not in added]
    if missing:
        raise ValueError(
            f"chat format {fmt.name!r} needs {missing} to be special tokens of the tokenizer, but "
            f"{type(tokenizer).__name__} would split them into pieces; add them with tokenizer.add_special_tokens"
        )
    if fmt.tokenize_apart:
        ids: list[int] = []
        mask: list[bool] = []
        cuts = sorted({0, len(chat.text), *(b for span in chat.train_spans for b in span)})
        trained = set(chat.train_spans)
        for a, b in zip(cuts, cuts[1:], strict=False):
            piece = tokenizer(chat.text[a:b], add_special_tokens=False)["input_ids"]
            ids += piece
            mask += [(a, b) in trained] * len(piece)
        return ids, mask
    enc = tokenizer(chat.text, add_special_tokens=False, return_offsets_mapping=True)
    starts = [s for s, _ in chat.train_spans]
    loss_mask = []
    for start, _ in enc["offset_mapping"]:
        k = bisect.bisect_right(starts, start) - 1
        loss_mask.append(k >= 0 and start < chat.train_spans[k][1])
    return list(enc["input_ids"]), loss_mask
