"""A GGUF file's metadata, and the SentencePiece tokenizer its vocabulary describes.

transformers converts the vocabulary of a SentencePiece-style GGUF (``tokenizer.ggml.model == "llama"``) into a fast
tokenizer whose user-defined pieces never match: Gemma-3's whitespace runs (``"  "`` ... 31 spaces), newline runs
and HTML tags are stored as added tokens spelled with ``▁`` and matched on the raw text, so a run of spaces splits
differently from llama.cpp's tokenisation of the same GGUF (e.g. 31 spaces become ids 152 + 154 instead of 167 +
139). Loading it also takes about 40 s. Here the vocabulary (pieces, scores, token types) becomes a SentencePiece
``ModelProto`` again (``tokenizer.model``), transformers builds the fast tokenizer from that, the user-defined pieces
are re-spelled as the raw text they match, and the result is checked against SentencePiece itself on
:data:`REFERENCE_TEXTS` before it is written. ``tests/emollm/test_gemma3.py`` checks both against an independent
port of llama.cpp's SPM tokenizer on the GGUF vocabulary.

Nothing here imports emollm above ``utils``; ``gguf``'s own reader is not needed (a 262k-entry vocabulary reads in
well under a second with :func:`read_gguf_metadata`, about 35 s with ``gguf.GGUFReader``).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path
from typing import Any

__all__ = [
    "REFERENCE_TEXTS",
    "check_against_sentencepiece",
    "read_gguf_metadata",
    "sentencepiece_proto",
    "write_sentencepiece_tokenizer",
]

# GGUF value types (gguf spec): scalars by struct format, arrays of scalars by numpy dtype.
_SCALAR = dict(zip((0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12), "<B <b <H <h <I <i <f <? <Q <q <d".split(), strict=True))
_ARRAY = dict(
    zip((0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12), "<u1 <i1 <u2 <i2 <u4 <i4 <f4 <u1 <u8 <i8 <f8".split(), strict=True)
)
_STRING, _ARRAY_TYPE = 8, 9

# llama.cpp token types == SentencePiece ModelProto.SentencePiece.Type values.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

#: Strings whose ids the rebuilt fast tokenizer must give exactly as SentencePiece does (checked at conversion time):
#: prose, whitespace and newline runs (Gemma's user-defined pieces), digits, accents, CJK, emoji (byte fallback).
REFERENCE_TEXTS: tuple[str, ...] = (
    "The person in the video says: I can't believe it. Which emotion is shown: happy, sad, angry or neutral?",
    "  two spaces,   three,\tone tab\t\ttwo tabs\n\nand 31 spaces:" + " " * 31 + "end",
    "Numbers 12345 and 3.14159; héllo naïve café, 日本語のテキスト, Ελληνικά, русский, عربى.",
    "emoji 🤗👩\u200d👩\u200d👧 ⚽️ and a control char \u0001 and <table><caption>x</caption></table>",
    "\n\n\nline after three newlines\n   indented line\n",
    " leading space and trailing space ",
)


def read_gguf_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The key-value metadata of a GGUF file (version 2 or 3); arrays of numbers come back as numpy arrays.

    Raises:
        ValueError: When the file is not a GGUF file or its header is cut short (the message names the file).
    """
    import numpy as np

    path = Path(path)
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file (its first bytes are {bytes(data[:4])!r}, not b'GGUF')")
        version, _n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is too old (2 or 3 are read); re-export the file")
        off = 24

        def string(off: int) -> tuple[str, int]:
            (n,) = struct.unpack_from("<Q", data, off)
            return data[off + 8 : off + 8 + n].decode("utf-8"), off + 8 + n

        def value(kind: int, off: int) -> tuple[Any, int]:
            if kind == _STRING:
                return string(off)
            if kind == _ARRAY_TYPE:
                elem, n = struct.unpack_from("<IQ", data, off)
                off += 12
                if elem == _STRING:
                    out = []
                    for _ in range(n):
                        s, off = string(off)
                        out.append(s)
                    return out, off
                arr = np.frombuffer(data[off : off + n * np.dtype(_ARRAY[elem]).itemsize], dtype=_ARRAY[elem]).copy()
                return arr, off + arr.nbytes
            fmt = _SCALAR[kind]
            return struct.unpack_from(fmt, data, off)[0], off + struct.calcsize(fmt)

        meta: dict[str, Any] = {}
        try:
            for _ in range(n_kv):
                key, off = string(off)
                (kind,) = struct.unpack_from("<I", data, off)
                meta[key], off = value(kind, off + 4)
        except (struct.error, KeyError, UnicodeDecodeError) as e:
            raise ValueError(
                f"{path}: unreadable GGUF metadata after {len(meta)} keys ({e}); is the file complete?"
            ) from None
    return meta


def sentencepiece_proto(meta: dict[str, Any]) -> bytes:
    """A serialized SentencePiece BPE ``ModelProto`` for a GGUF vocabulary of type ``llama`` (SPM).

    Pieces, scores and types come from the GGUF; user-defined pieces are spelled as SentencePiece matches them (after
    whitespace escaping: ``"  "`` -> ``"▁▁"``); the unknown token (a control token in Gemma-3's GGUF) becomes the
    one ``UNKNOWN`` piece SentencePiece requires; the normalizer is the identity with whitespace escaping and a dummy
    prefix only where the GGUF asks for one (``tokenizer.ggml.add_space_prefix``, llama.cpp's default True).

    Raises:
        ValueError: When the vocabulary is not SentencePiece-style or its arrays disagree in length.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    kind = meta.get("tokenizer.ggml.model")
    if kind != "llama":
        raise ValueError(f"tokenizer.ggml.model is {kind!r}: only SentencePiece ('llama') vocabularies are rebuilt")
    tokens = meta["tokenizer.ggml.tokens"]
    scores = meta["tokenizer.ggml.scores"]
    types = meta["tokenizer.ggml.token_type"]
    if not len(tokens) == len(scores) == len(types):
        raise ValueError(f"GGUF vocabulary arrays differ in length: {len(tokens)}, {len(scores)}, {len(types)}")
    unk = int(meta.get("tokenizer.ggml.unknown_token_id", 0))
    proto = pb.ModelProto()
    ts = proto.trainer_spec
    ts.model_type = pb.TrainerSpec.BPE
    ts.vocab_size = len(tokens)
    ts.byte_fallback = bool((types == BYTE).any())
    ts.unk_id = unk
    ts.bos_id = int(meta.get("tokenizer.ggml.bos_token_id", -1))
    ts.eos_id = int(meta.get("tokenizer.ggml.eos_token_id", -1))
    ts.pad_id = int(meta.get("tokenizer.ggml.padding_token_id", -1))
    ts.allow_whitespace_only_pieces = True
    ns = proto.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    ns.remove_extra_whitespaces = False
    ns.escape_whitespaces = True
    for i, (text, score, kind_) in enumerate(zip(tokens, scores.tolist(), types.tolist(), strict=True)):
        piece = proto.pieces.add()
        piece.piece = text.replace(" ", "\u2581") if kind_ == USER_DEFINED else text
        piece.score = score
        known = kind_ in (NORMAL, CONTROL, USER_DEFINED, UNUSED, BYTE)
        piece.type = UNKNOWN if i == unk else (kind_ if known else NORMAL)
    return proto.SerializeToString()


def write_sentencepiece_tokenizer(meta: dict[str, Any], out_dir: str | os.PathLike[str], tokenizer_class: str) -> None:
    """Write ``tokenizer.model`` and the fast tokenizer built from it (``tokenizer.json`` + config) into ``out_dir``.

    Args:
        meta: :func:`read_gguf_metadata` of the GGUF.
        out_dir: An existing folder (the model folder being converted).
        tokenizer_class: The transformers class that converts the SentencePiece model (``GemmaTokenizer``).

    Raises:
        RuntimeError: When the fast tokenizer and SentencePiece disagree on a reference text (never written so).
    """
    from transformers import AutoTokenizer

    out = Path(out_dir)
    (out / "tokenizer.model").write_bytes(sentencepiece_proto(meta))
    tokens = meta["tokenizer.ggml.tokens"]

    def token(key: str) -> str | None:
        i = meta.get(f"tokenizer.ggml.{key}_token_id")
        return None if i is None else tokens[int(i)]

    config = {
        "tokenizer_class": tokenizer_class,
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "unk_token": token("unknown"),
        "pad_token": token("padding"),
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", True)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "model_max_length": int(meta.get(f"{meta.get('general.architecture')}.context_length", 2048)),
    }
    (out / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    tok = AutoTokenizer.from_pretrained(out)  # converts tokenizer.model into a fast tokenizer
    # The converter keeps user-defined pieces as added tokens spelled with "▁" and matched on the raw text, where
    # spaces are still spaces: respell them as the text they stand for, so "   " finds its piece as in SentencePiece.
    # The BPE vocabulary gets the same spelling (an added token keeps its id only when the model has its text), and
    # merges into or out of these pieces go: SentencePiece never forms a user-defined piece by merging either.
    spec = json.loads(tok.backend_tokenizer.to_str())
    respelled: dict[str, str] = {}
    for added in spec["added_tokens"]:
        if not added["special"] and "\u2581" in added["content"]:
            respelled[added["content"]] = added["content"] = added["content"].replace("\u2581", " ")
    model = spec["model"]
    for old, new in respelled.items():
        model["vocab"][new] = model["vocab"].pop(old)
    pairs = [m.split(" ", 1) if isinstance(m, str) else m for m in model["merges"]]
    model["merges"] = [[a, b] for a, b in pairs if a not in respelled and b not in respelled and a + b not in respelled]
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    tok = AutoTokenizer.from_pretrained(out)
    tok.save_pretrained(out)
    check_against_sentencepiece(out)


def check_against_sentencepiece(folder: str | os.PathLike[str], texts: tuple[str, ...] = REFERENCE_TEXTS) -> None:
    """Raise unless the fast tokenizer in ``folder`` gives SentencePiece's ids (from ``tokenizer.model``) on ``texts``.

    Raises:
        RuntimeError: Naming the first text that differs, with both id lists.
    """
    import sentencepiece as spm
    from transformers import AutoTokenizer

    folder = Path(folder)
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    fast = AutoTokenizer.from_pretrained(folder)
    for text in texts:
        want, got = sp.encode(text), fast(text, add_special_tokens=False).input_ids
        if want != got:
            raise RuntimeError(
                f"the tokenizer rebuilt in {folder} disagrees with SentencePiece on {text!r}: "
                f"fast {got[:24]} vs sentencepiece {want[:24]}; please report this with the GGUF file's name"
            )
