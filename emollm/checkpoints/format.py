"""The checkpoint folder format and its one reader.

A checkpoint folder holds everything ``load_model`` needs besides the base LLM weights it was trained on:

    checkpoint.json           format, version, backbone, chat format, encoders, where the base LLM came from, LoRA
    emollm_config.json        the resolved ``EmoLLMConfig`` (text config, modality branches, token ids)
    run_config.json           the run's own settings, when a recipe passes them
    tokenizer files + processor_config.json
    projectors.safetensors    projectors, modality-type embeddings, fusion block (and trained encoders)
    adapter_model.safetensors + adapter_config.json   LoRA (peft format), when the LLM has adapters
    llm/                      full LLM weights, only when they cannot be found elsewhere (random-init base, full
                              fine-tune, merged export)

``read_checkpoint(dir)`` returns a :class:`CheckpointInfo` (metadata, config, and the compatibility checks against
a model or a base LLM). Everything is safetensors or JSON: reading never unpickles.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from torch import nn

from emollm.backbones import get_backbone
from emollm.model.configuration import EmoLLMConfig
from emollm.model.lora import LoraSettings, TrainableSpec
from emollm.model.modeling import EmoLLMForCausalLM

FORMAT = "emollm-checkpoint"
VERSION = 1
#: Text-config keys that must agree between a checkpoint and the LLM it is restored onto. ``vocab_size`` is checked
#: too once the model's embeddings are fitted to the tokenizer (:meth:`CheckpointInfo.check_fits`).
ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
CONNECTORS_FILE = "projectors.safetensors"
ADAPTER_FILE = "adapter_model.safetensors"
BASE_FILE = "llm/model.safetensors"
_RESAVE = "re-save the checkpoint (or copy the folder again from where it was saved)"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_DIR_MODE = 0o777 & ~_umask()


def connector_parts(model: EmoLLMForCausalLM, with_encoders: bool) -> dict[str, nn.Module]:
    """The modules ``projectors.safetensors`` holds, by key prefix.

    Args:
        model: The model.
        with_encoders: Include the encoder towers (saved when they were trained).
    """
    parts = dict(model.connector_modules())
    if with_encoders:
        parts["towers"] = model.towers
    return parts


def is_quantized(lm: nn.Module) -> bool:
    """Whether a language model was loaded in 4 or 8 bit."""
    return bool(getattr(lm, "is_loaded_in_4bit", False) or getattr(lm, "is_loaded_in_8bit", False))


def _read_json(file: Path) -> Any:
    """Parse a JSON file of a checkpoint; a damaged one raises ``ValueError`` naming it and the fix."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{file} is not valid JSON ({e}); the checkpoint is damaged: {_RESAVE}") from None


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """``checkpoint.json`` of a folder, with a clear error when it is not an emollm checkpoint.

    Args:
        path: The checkpoint folder.

    Returns:
        The parsed ``checkpoint.json``.

    Raises:
        FileNotFoundError: The folder has no ``checkpoint.json``.
        ValueError: ``checkpoint.json`` is damaged (not JSON, not an object, wrong field types), of another format
            or of a newer version; the message names the file and the fix.
    """
    path = Path(path)
    meta_file = path / "checkpoint.json"
    if not meta_file.is_file():
        raise FileNotFoundError(
            f"{path} is not an emollm checkpoint (no checkpoint.json); pass a folder saved by emollm"
        )
    meta = _read_json(meta_file)
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_file} holds a JSON {type(meta).__name__}, not an object; {_RESAVE}")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_file}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    version = meta.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{meta_file}: version is {version!r}, not an integer; {_RESAVE}")
    if version > VERSION:
        raise ValueError(f"{meta_file}: checkpoint version {version} is newer than this emollm ({VERSION})")
    for key in ("lora", "trainable"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise ValueError(f"{meta_file}: {key!r} is {meta[key]!r}, expected an object or null; {_RESAVE}")
    return meta


def check_safetensors(file: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming ``file`` unless it is a complete safetensors file (header parsed, every tensor's
    bytes present). Reads only the header: cheap even for full LLM weights.

    Args:
        file: The ``.safetensors`` file.
    """
    try:
        with safe_open(str(file), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{file} is truncated or damaged ({e}); {_RESAVE}") from None


def _weight_files(path: Path) -> list[Path]:
    """The safetensors files a checkpoint folder holds (top level and ``llm/``)."""
    files = sorted(path.glob("*.safetensors"))
    if (path / "llm").is_dir():
        files += sorted((path / "llm").glob("*.safetensors"))
    return files


#: Text-config keys that identify a registered backbone's real weights (``BackboneSpec.reference_config``).
_REFERENCE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def _check_registry_facts(path: Path, meta: Mapping[str, Any], config: EmoLLMConfig) -> None:
    """Raise ``ValueError`` unless ``checkpoint.json``, ``emollm_config.json`` and the saved LLM shape all agree with
    the registry entry of the backbone they name (same class is not enough: llama3 and smollm2 are both llama).
    """
    from emollm.backbones import list_backbones

    meta_file, config_file = path / "checkpoint.json", path / "emollm_config.json"
    name = config.backbone
    spec = get_backbone(name)
    for key, ours in (("backbone", name), ("chat_format", config.chat_format)):
        if meta.get(key) is not None and meta[key] != ours:
            raise ValueError(
                f"{meta_file} names {key} {meta[key]!r} but {config_file} names {ours!r}: the metadata was edited or "
                f"mixed from two checkpoints; {_RESAVE}"
            )
    if config.chat_format != spec.chat_format:
        raise ValueError(
            f"{config_file}: chat format {config.chat_format!r} is not the one backbone {name!r} uses "
            f"({spec.chat_format!r}); "
            f"the checkpoint was saved for another backbone: {_RESAVE}"
        )
    wanted = spec.placeholder_tokens()
    for modality, mod in config.modalities.items():
        if mod.placeholder and wanted.get(modality) and mod.placeholder != wanted[modality]:
            raise ValueError(
                f"{config_file}: the {modality} placeholder {mod.placeholder!r} is not the one backbone {name!r} "
                f"uses ({wanted[modality]!r}); the weights were saved for another backbone: {_RESAVE}"
            )
    saved = {k: config.text_config.get(k) for k in _REFERENCE_KEYS}
    if saved == {k: spec.reference_config.get(k) for k in _REFERENCE_KEYS}:
        return
    for other in list_backbones():
        ref = get_backbone(other).reference_config
        if other != name and saved == {k: ref.get(k) for k in _REFERENCE_KEYS}:
            dims = ", ".join(f"{k} {v}" for k, v in saved.items())
            raise ValueError(
                f"{path}: the saved LLM has the dimensions of backbone {other!r} ({dims}), not of {name!r}, which "
                f"the checkpoint names: these are {other!r} weights; restore its original checkpoint.json and "
                f"emollm_config.json (backbone {other!r}) or {_RESAVE}"
            )


def _arch_diffs(saved: Mapping[str, Any], ours: Mapping[str, Any], keys: Iterable[str], ours_name: str) -> list[str]:
    return [
        f"{k}: checkpoint {saved.get(k)!r} vs {ours_name} {ours.get(k)!r}" for k in keys if saved.get(k) != ours.get(k)
    ]


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint folder's metadata and config, read and validated once.

    Attributes:
        path: The checkpoint folder.
        meta: ``checkpoint.json``.
        config: ``emollm_config.json`` as an :class:`EmoLLMConfig`.
    """

    path: Path
    meta: dict[str, Any]
    config: EmoLLMConfig

    @property
    def backbone(self) -> str:
        """The backbone the checkpoint was trained for."""
        return self.config.backbone

    @property
    def lora(self) -> LoraSettings | None:
        """The recorded LoRA settings, or None when the checkpoint has no adapter."""
        return LoraSettings(**self.meta["lora"]) if self.meta.get("lora") else None

    @property
    def trainable(self) -> TrainableSpec | None:
        """What was trained, when recorded."""
        return TrainableSpec(**self.meta["trainable"]) if self.meta.get("trainable") else None

    @property
    def has_adapter(self) -> bool:
        """Whether ``checkpoint.json`` lists a LoRA adapter."""
        return bool(self.meta.get("lora"))

    @property
    def has_base(self) -> bool:
        """Whether the folder stores the full LLM weights (``llm/``)."""
        return (self.path / "llm").is_dir()

    def check_backbone(self, backbone: str, *, what: str = "checkpoint", hint: str | None = None) -> None:
        """Raise ``ValueError`` unless the checkpoint was trained for ``backbone``.

        Args:
            backbone: The expected backbone name.
            what: How the error names the checkpoint (``checkpoint``, ``init_from``, ...).
            hint: What the user should do instead (default: load it with its own backbone).
        """
        if backbone == self.backbone:
            return
        hint = hint or f"Load it with backbone={self.backbone!r}, or train one for {backbone!r}"
        raise ValueError(
            f"{what} {self.path} was trained for backbone {self.backbone!r}, not {backbone!r}: its projectors and "
            f"adapter only fit that LLM. {hint}"
        )

    def check_base_llm(self, lm_config: Any, base_path: str | os.PathLike) -> None:
        """Raise ``ValueError`` unless a freshly loaded base LLM (before embedding resizing) is the checkpoint's.

        Args:
            lm_config: The loaded LLM's transformers config.
            base_path: Where it was loaded from, for the message.
        """
        ours = {k: getattr(lm_config, k, None) for k in ARCH_KEYS}
        diffs = _arch_diffs(self.config.text_config, ours, ARCH_KEYS, "base")
        if diffs:
            raise ValueError(
                f"the base LLM at {base_path} is not the one checkpoint {self.path} was trained on: " + "; ".join(diffs)
            )

    def check_fits(self, model: EmoLLMForCausalLM, *, what: str = "checkpoint", hint: str | None = None) -> None:
        """Raise ``ValueError`` unless the checkpoint was trained on ``model``'s backbone, LLM shape (vocabulary
        included) and placeholder token ids.

        Args:
            model: A built model whose embeddings fit its tokenizer.
            what: How the errors name the checkpoint.
            hint: Passed to :meth:`check_backbone`.
        """
        self.check_backbone(model.config.backbone, what=what, hint=hint)
        diffs = _arch_diffs(self.config.text_config, model.config.text_config, (*ARCH_KEYS, "vocab_size"), "model")
        if diffs:
            raise ValueError(f"{what} {self.path} was trained on a different LLM ({'; '.join(diffs)})")
        for name, mod in self.config.modalities.items():
            ours = model.config.modalities.get(name)
            if ours is not None and mod.token_id != ours.token_id:
                raise ValueError(
                    f"{what} {self.path}: the {name} placeholder token id differs ({mod.token_id} vs "
                    f"{ours.token_id}); was the tokenizer changed?"
                )


def read_checkpoint(path: str | os.PathLike) -> CheckpointInfo:
    """Read and validate a checkpoint folder's ``checkpoint.json`` and ``emollm_config.json``.

    Besides parsing, it checks that both files name the same backbone and chat format, that the placeholders and the
    saved LLM shape fit that backbone's registry entry, and that every ``.safetensors`` file is complete (header only,
    no weights are read).

    Args:
        path: The checkpoint folder.

    Returns:
        Its :class:`CheckpointInfo`.

    Raises:
        FileNotFoundError: The folder is not an emollm checkpoint, or lacks ``emollm_config.json``.
        ValueError: Another format, a newer version, a damaged file, or metadata of another backbone; the message
            names the file and the fix.
    """
    path = Path(path)
    meta = read_checkpoint_meta(path)
    config_file = path / "emollm_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} is missing; the checkpoint is incomplete: {_RESAVE}")
    data = _read_json(config_file)
    if not isinstance(data, dict):
        raise ValueError(f"{config_file} holds a JSON {type(data).__name__}, not an object; {_RESAVE}")
    try:
        config = EmoLLMConfig.from_dict(data)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"{config_file}: {e}; {_RESAVE}") from None
    _check_registry_facts(path, meta, config)
    for file in _weight_files(path):
        check_safetensors(file)
    return CheckpointInfo(path=path, meta=meta, config=config)


def _check_tokenizer(info: CheckpointInfo, tokenizer: Any) -> None:
    """Raise ``ValueError`` unless the checkpoint's tokenizer has its chat format's special tokens and its
    placeholders at the recorded ids (another backbone's tokenizer, or an edited one, would answer garbage)."""
    from emollm.backbones import get_chat_format

    fmt = get_chat_format(info.config.chat_format)
    added = tokenizer.get_added_vocab()
    missing = [t for t in fmt.special_tokens if t not in added]
    if missing:
        raise ValueError(
            f"the tokenizer in {info.path} lacks {missing}, which backbone {info.backbone!r} (chat format "
            f"{fmt.name!r}) needs: the tokenizer files belong to another backbone; {_RESAVE}"
        )
    vocab = tokenizer.get_vocab()
    for modality, mod in info.config.modalities.items():
        if mod.placeholder and vocab.get(mod.placeholder) != mod.token_id:
            raise ValueError(
                f"the tokenizer in {info.path} gives the {modality} placeholder {mod.placeholder!r} id "
                f"{vocab.get(mod.placeholder)}, but emollm_config.json records {mod.token_id}; {_RESAVE}"
            )
