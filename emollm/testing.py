"""Test utilities: tiny deterministic tokenizers and loaders for the real vocabularies used in parity tests.

Nothing here downloads anything. :func:`build_tiny_tokenizer` trains a byte-level BPE on a built-in corpus in a few
tens of milliseconds; :func:`load_gguf_tokenizer` and :func:`load_mistral_tokenizer` load real tokenizers from local
files (llama.cpp vocab-only GGUFs, a sentencepiece model) and repair what transformers' conversion gets wrong, so that
they reproduce the reference tokenizations (llama.cpp's, or Mistral's own instruct tokenization).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emollm.backbones import get_chat_format
from emollm.backbones.chat import ChatFormat

__all__ = [
    "TINY_CORPUS",
    "build_tiny_tokenizer",
    "default_cache_dir",
    "load_gguf_tokenizer",
    "load_mistral_tokenizer",
]

# Bump when the repairs below change, so cached conversions are rebuilt.
_CONVERSION_VERSION = 1

# unk/bos/eos/pad of the tiny tokenizer per chat format, named as in the family's real tokenizer (LLaMA-3.1 calls
# its pad token <|finetune_right_pad_id|>). pad always exists and differs from eos, so padding is never confused
# with the end of a turn.
_TINY_ROLES: dict[str, dict[str, str | None]] = {
    "llama2": {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>"},
    "mistral": {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>"},
    "llama3": {"unk": None, "bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "pad": "<|finetune_right_pad_id|>"},
    "chatml": {"unk": None, "bos": None, "eos": "<|im_end|>", "pad": "<|endoftext|>"},
    "affectgpt": {"unk": None, "bos": None, "eos": "<|im_end|>", "pad": "<|endoftext|>"},  # Qwen2.5's tokenizer
    "llama3_1": {"unk": None, "bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "pad": "<|finetune_right_pad_id|>"},
    "qwen3": {"unk": None, "bos": None, "eos": "<|im_end|>", "pad": "<|endoftext|>"},
    "qwen3_5": {"unk": None, "bos": None, "eos": "<|im_end|>", "pad": "<|endoftext|>"},
    "smollm3": {"unk": None, "bos": None, "eos": "<|im_end|>", "pad": "<|finetune_right_pad_id|>"},
    # Gemma's and Phi-4's tokenizers name <eos> / <|endoftext|> their eos; the chat turn ends at the format's stop.
    "gemma3": {"unk": "<unk>", "bos": "<bos>", "eos": "<end_of_turn>", "pad": "<pad>"},
    "gemma4": {"unk": "<unk>", "bos": "<bos>", "eos": "<turn|>", "pad": "<pad>"},
    "phi4": {"unk": None, "bos": None, "eos": "<|end|>", "pad": "<|endoftext|>"},
}


def _tiny_corpus() -> tuple[str, ...]:
    subjects = ["The woman", "A young man", "The speaker", "My friend", "The child", "An old teacher"]
    emotions = ["happy", "sad", "angry", "surprised", "afraid", "disgusted", "calm", "excited", "worried", "bored"]
    faces = [
        "raises both eyebrows and opens the eyes wide",
        "smiles, and the cheeks lift (AU6 + AU12)",
        "frowns; the brows are lowered and drawn together",
        "presses the lips tightly, with the jaw clenched",
        "looks down and avoids eye contact",
        "wrinkles the nose and raises the upper lip",
        "blinks quickly while the mouth stays open",
    ]
    voices = [
        "a loud, fast voice with a rising pitch",
        "a low, trembling whisper",
        "a flat and monotone voice",
        "short, sharp words and a harsh tone",
        "a soft laugh and a warm tone",
    ]
    sentences = []
    for i, (subject, emotion) in enumerate(itertools.product(subjects, emotions)):
        sentences.append(f"{subject} looks {emotion} because the face {faces[i % len(faces)]}.")
        sentences.append(f"{subject} sounds {emotion}: we hear {voices[i % len(voices)]}!")
        sentences.append(f"Why is {subject.lower()} {emotion}? The words, the face and the voice agree ({i}%).")
    sentences += [
        f"In clip {n:04d}, frame {7 * n % 300} is the apex; the intensity is {n % 5}.{n % 10}." for n in range(40)
    ]
    sentences += [
        "Emotion recognition combines the face, the voice and the words that are spoken.",
        "Facial action units describe muscle movements: AU1 inner brow raiser, AU4 brow lowerer, AU12 lip corner.",
        "A video has 16 frames sampled at 25 fps; the audio is 16 kHz mono, 3.5 seconds long.",
        "Why is she crying? Perhaps she is relieved, not sad - tears of joy happen too.",
        'He said: "I can\'t believe it!" and his voice cracked with excitement.',
        "Valence is positive or negative; arousal is high or low; dominance is weak or strong.",
        "The annotators agreed on 7 labels: neutral, happy, sad, angry, surprise, fear and disgust.",
        "Reasoning: the smile, the raised cheeks and the bright tone all point to happiness.",
        "Numbers like 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 42, 100 and 2024 appear in timestamps.",
        "Punctuation matters: commas, periods. Colons: semicolons; dashes - and (brackets) [too] {also}.",
        "Please describe the person's expression, tone of voice, and the likely emotion in one sentence.",
        "The model answers: the person is frustrated, speaking sharply with furrowed brows.",
    ]
    return tuple(sentences)


TINY_CORPUS: tuple[str, ...] = _tiny_corpus()
"""Built-in English corpus (a few hundred sentences about faces, voices and emotions) for tiny tokenizers."""


def build_tiny_tokenizer(
    fmt: ChatFormat | str, extra_special_tokens: Sequence[str] = (), vocab_size: int = 1000
) -> Any:
    """Builds a small deterministic byte-level BPE tokenizer for a chat format.

    The format's special tokens and ``extra_special_tokens`` are single special tokens; bos/eos/pad/unk are set like
    the real tokenizers of the family (pad always exists and differs from eos). ``chat_template`` is left unset.
    Builds are cached per (format, extras, vocab size); each call returns a deep copy that callers may modify.

    Args:
        fmt: A chat format or its registry name.
        extra_special_tokens: More special tokens, e.g. modality placeholders (``"<audio>"``).
        vocab_size: Target vocabulary size, including the 256 byte tokens and the special tokens.

    Returns:
        A ``transformers.PreTrainedTokenizerFast``.
    """
    if isinstance(fmt, str):
        fmt = get_chat_format(fmt)
    return copy.deepcopy(_build_tiny_tokenizer(fmt.name, fmt.special_tokens, tuple(extra_special_tokens), vocab_size))


@functools.lru_cache(maxsize=32)
def _build_tiny_tokenizer(name: str, format_tokens: tuple[str, ...], extras: tuple[str, ...], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    roles = _TINY_ROLES.get(name, {"unk": None, "bos": None, "eos": None, "pad": "<pad>"})
    named = [roles[k] for k in ("unk", "pad", "bos", "eos") if roles[k] is not None]
    specials = list(dict.fromkeys([*named, *format_tokens, *extras]))  # ordered, without duplicates

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TINY_CORPUS, trainer=trainer)
    named_kwargs = {f"{k}_token": v for k, v in roles.items() if v is not None}
    others = [t for t in specials if t not in named]
    return PreTrainedTokenizerFast(tokenizer_object=tok, **named_kwargs, additional_special_tokens=others)


def default_cache_dir() -> Path:
    """Where converted tokenizers are cached: emollm's cache root (``$EMOLLM_CACHE``, default ``~/.cache/emollm``)."""
    from emollm.utils.cache import cache_dir

    return cache_dir()


def _file_key(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    import transformers

    return f"{path.stem}-{digest.hexdigest()[:16]}-tf{transformers.__version__}-v{_CONVERSION_VERSION}"


def _cached(folder: Path, build: Any) -> Path:
    """Returns ``folder``, first creating it with ``build(tmp_dir)`` (atomically: concurrent builders are fine)."""
    if not (folder / "tokenizer.json").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
        try:
            build(tmp)
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "tokenizer.json").exists():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _use_sentencepiece_dummy_prefix(tokenizer: Any) -> None:
    """Makes a LLaMA-2 tokenizer prefix every text piece with "▁", as sentencepiece and the official tokenizer do.

    transformers 5.23 converts a GGUF ``llama`` (sentencepiece) vocabulary with a ``Metaspace(prepend_scheme="first")``
    pre-tokenizer: no "▁" is added when the text starts with a space (``" Hello"`` -> ``▁Hello`` where llama.cpp and
    sentencepiece give ``▁ ▁Hello``), nor after a special token (``"<s>[INST]"`` -> ``<s> [`` where Meta's reference
    chat code, which encodes each ``"[INST] ... [/INST] answer "`` with sentencepiece, gives ``<s> ▁[``). The official
    Llama-2 ``tokenizer.json`` instead normalizes with ``Prepend("▁") + Replace(" ", "▁")`` and has no pre-tokenizer;
    with that, all llama.cpp reference tokenizations match. We restore it.
    """
    from tokenizers import normalizers

    backend = tokenizer.backend_tokenizer
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.pre_tokenizer = None


# The split regex of the official LLaMA-3 tokenizer.json (meta-llama/Meta-Llama-3-8B-Instruct).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


def _fix_llama3_bpe(tokenizer: Any) -> None:
    """Sets LLaMA-3's split regex and ``ignore_merges``, as in the official tokenizer.json.

    LLaMA-3 pre-tokenizes with its own regex (digits in groups of up to 3, letters with one leading non-letter) and
    looks each pre-token up in the vocabulary before applying merges (``ignore_merges=True``). transformers 5.23's GGUF
    conversion already writes the right regex (older versions did not: we set it anyway) but leaves
    ``ignore_merges=False``, which splits words that are whole vocabulary entries but cannot be reached by merges:
    llama.cpp's reference ``"Cửa Việt"`` -> ``[34, 91163, 101798]`` came out as ``[34, 91163, 11655, 26298, 83]``.
    """
    from tokenizers import Regex, pre_tokenizers

    backend = tokenizer.backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    backend.model.ignore_merges = True


_GGUF_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _gguf_string_metadata(path: Path, keys: Sequence[str]) -> dict[str, str]:
    """Reads string values from a GGUF (v2+) header, stopping once all ``keys`` are found.

    ``gguf.GGUFReader`` parses every field up front, which takes ~14 s for LLaMA-3's 128k tokens and 280k merges;
    the tokenizer model and pre-tokenizer names come before those arrays.
    """
    import struct

    wanted, found = set(keys), {}
    with path.open("rb") as f:

        def read(fmt: str) -> Any:
            return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]

        def read_str() -> str:
            return f.read(read("Q")).decode("utf-8", errors="replace")

        def skip(value_type: int) -> None:
            if value_type == _GGUF_STRING:
                f.seek(read("Q"), os.SEEK_CUR)
            elif value_type == _GGUF_ARRAY:
                item_type, count = read("I"), read("Q")
                if item_type in _GGUF_SCALAR_SIZES:
                    f.seek(count * _GGUF_SCALAR_SIZES[item_type], os.SEEK_CUR)
                else:
                    for _ in range(count):
                        skip(item_type)
            else:
                f.seek(_GGUF_SCALAR_SIZES[value_type], os.SEEK_CUR)

        if f.read(4) != b"GGUF" or read("I") < 2:
            raise ValueError(f"{path} is not a GGUF v2+ file")
        _tensor_count, kv_count = read("Q"), read("Q")
        for _ in range(kv_count):
            key, value_type = read_str(), read("I")
            if key in wanted and value_type == _GGUF_STRING:
                found[key] = read_str()
                if len(found) == len(wanted):
                    break
            else:
                skip(value_type)
    return found


def load_gguf_tokenizer(path: Path | str, cache_dir: Path | str | None = None) -> Any:
    """Loads the tokenizer stored in a GGUF file (vocab-only or full model) as a fast HF tokenizer.

    The first call converts the GGUF with ``AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)`` (3-15 s
    for 32k-150k vocabularies), repairs what the conversion gets wrong (sentencepiece dummy prefix for ``llama``
    vocabularies, LLaMA-3's ``ignore_merges``), and caches the result as ``tokenizer.json`` under ``cache_dir``;
    later calls load that in under a second. The GGUF's own chat template, if any, is kept.

    Args:
        path: The ``.gguf`` file.
        cache_dir: Cache folder; defaults to ``default_cache_dir() / "tokenizers"``.

    Returns:
        A ``transformers.PreTrainedTokenizerFast``.
    """
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "tokenizers"

    def build(out: Path) -> None:
        from transformers import AutoTokenizer

        meta = _gguf_string_metadata(path, ("tokenizer.ggml.model", "tokenizer.ggml.pre"))
        model, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre")
        if model == "gemma4":
            # AutoTokenizer parses the model config too, which fails on this vocabulary's per-layer KV-head list
            from transformers import GemmaTokenizer

            tokenizer = GemmaTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        else:
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        if model == "llama":
            _use_sentencepiece_dummy_prefix(tokenizer)
        elif pre in ("llama-bpe", "llama3"):
            _fix_llama3_bpe(tokenizer)
        # "qwen2" converts correctly; "smollm" (digits isolated before the GPT-2 regex) needs nothing either,
        # because its vocabulary has no token holding two digits or a space plus a digit.
        tokenizer.save_pretrained(out)

    return PreTrainedTokenizerFast.from_pretrained(_cached(root / _file_key(path), build))


def load_mistral_tokenizer(model_file: Path | str, cache_dir: Path | str | None = None) -> Any:
    """Loads a Mistral sentencepiece model (``tokenizer.model``, v1 = Mistral-7B v0.1) as a fast HF tokenizer.

    transformers 5's ``LlamaTokenizer(vocab_file=...)`` silently ignores the file (a 3-token vocabulary), so the model
    is loaded with ``LlamaTokenizer.from_pretrained(folder)`` from a folder holding it as ``tokenizer.model`` (the
    file's own folder when it has that name, else a copy in the cache).

    Pre-tokenization is ``Metaspace(prepend_scheme="first")`` (HF's non-legacy sentencepiece emulation; set explicitly
    here, it is also 5.23's default): "▁" is prepended only at the very start of the text, not after special tokens.
    With the official Mistral v0.1 template (``"<s> [INST] ... [/INST] answer</s> [INST] ..."``) this gives exactly the
    ids of Mistral's reference instruct tokenization (``mistral-common``: ``[BOS] + sp("[INST] ... [/INST]") +
    sp("answer") + [EOS] + ...``); the legacy "▁"-after-every-special-token normalizer used for LLaMA-2 would turn each
    `` [INST]`` into ``▁▁ [``. Known differences from plain sentencepiece (not repaired): a text that starts with
    whitespace gets no extra "▁", and runs of spaces before a word may split differently (``"a    Hello"`` ->
    ``▁a ▁▁▁▁ Hello`` where sentencepiece gives ``▁a ▁▁▁ ▁Hello``).

    Args:
        model_file: The sentencepiece ``.model`` file (e.g. Mistral-7B v0.1 ``tokenizer.model``).
        cache_dir: Cache folder for the copy; defaults to ``default_cache_dir() / "tokenizers"``.

    Returns:
        A fast ``LlamaTokenizer`` with bos ``<s>``, eos ``</s>``, unk ``<unk>`` and no pad token.
    """
    from tokenizers import pre_tokenizers
    from transformers import LlamaTokenizer

    model_file = Path(model_file)
    if not model_file.is_file():
        raise FileNotFoundError(f"sentencepiece model not found: {model_file}")
    folder = model_file.parent
    if model_file.name != "tokenizer.model":
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "tokenizers"
        folder = root / _file_key(model_file)
        if not (folder / "tokenizer.model").exists():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".tokenizer.model.{os.getpid()}"
            shutil.copyfile(model_file, tmp)
            os.replace(tmp, folder / "tokenizer.model")
    tokenizer = LlamaTokenizer.from_pretrained(folder)
    backend = tokenizer.backend_tokenizer
    backend.normalizer = None
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    return tokenizer
