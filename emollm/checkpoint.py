"""Self-describing checkpoint folders: write (``save_checkpoint``), read (``read_checkpoint``) and load a ready
model (``load_model``); ``emollm.restore.restore_into`` loads a folder's parts into an existing model.

A checkpoint folder holds everything ``load_model`` needs besides the base LLM weights it was trained on:

    checkpoint.json           format, version, backbone, chat format, encoders, where the base LLM came from, LoRA
    emollm_config.json        the resolved ``EmoLLMConfig`` (text config, modality branches, token ids)
    run_config.json           the run's own settings, when a recipe passes them
    tokenizer files + processor_config.json
    projectors.safetensors    projectors, modality-type embeddings, fusion block (and trained encoders)
    adapter_model.safetensors + adapter_config.json   LoRA (peft format), when the LLM has adapters
    llm/                      full LLM weights, only when they cannot be found elsewhere (random-init base, full
                              fine-tune, merged export)

There is one reader for the format. ``read_checkpoint(dir)`` returns a :class:`CheckpointInfo` (metadata, config,
and the compatibility checks against a model or a base LLM); ``emollm.restore.restore_into(model, dir, parts=...)``
loads the stored parts into an existing model with explicit key and shape checks whose errors name the file.
``load_model`` is built on them, and so are the training recipe's ``init_from`` and resume.

Folders are written to a temporary sibling and renamed into place, so a kill never leaves a half-written
checkpoint under the final name. Everything is safetensors or JSON: loading never unpickles.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from emollm.backbones import get_backbone
from emollm.configuration import EmoLLMConfig
from emollm.llm import Quantization, fit_embeddings, load_language_model, resolve_llm_path
from emollm.lora import LoraSettings, TrainableSpec, is_peft, merge_lora
from emollm.modeling import EmoLLMForCausalLM
from emollm.processing import EmoProcessor
from emollm.utils.io import atomic_write_text

__all__ = [
    "ARCH_KEYS",
    "CheckpointInfo",
    "check_export_target",
    "check_safetensors",
    "export_merged",
    "load_model",
    "read_checkpoint",
    "read_checkpoint_meta",
    "save_checkpoint",
]

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


def _connector_state(model: EmoLLMForCausalLM, with_encoders: bool) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for prefix, module in connector_parts(model, with_encoders).items():
        for key, value in module.state_dict().items():
            state[f"{prefix}.{key}"] = value.detach().to("cpu").contiguous().clone()
    return state


def _base_llm_state(lm) -> dict[str, torch.Tensor]:
    """Base weights of a (possibly peft-wrapped) LLM, with peft's wrapper names removed and LoRA left out."""
    if not is_peft(lm):
        return {k: v.detach().cpu().contiguous().clone() for k, v in lm.state_dict().items()}
    out = {}
    for key, value in lm.state_dict().items():
        if "lora_" in key:
            continue
        key = key.removeprefix("base_model.model.").replace(".base_layer.", ".")
        out[key] = value.detach().cpu().contiguous().clone()
    return out


def is_quantized(lm: nn.Module) -> bool:
    """Whether a language model was loaded in 4 or 8 bit."""
    return bool(getattr(lm, "is_loaded_in_4bit", False) or getattr(lm, "is_loaded_in_8bit", False))


# ================================================================================================== write
def save_checkpoint(
    model: EmoLLMForCausalLM,
    processor: EmoProcessor,
    out_dir: str | os.PathLike,
    *,
    lora: LoraSettings | None = None,
    trainable: TrainableSpec | None = None,
    run_config: dict[str, Any] | None = None,
    save_base: bool | None = None,
) -> Path:
    """Write a self-describing checkpoint folder atomically.

    Args:
        model: The model to save.
        processor: Its processor (tokenizer and placeholder settings).
        out_dir: The folder to create or replace (a file there is refused, never replaced; ``emollm export``
            guards its target further, see :func:`check_export_target`).
        lora: The LoRA settings, recorded in ``checkpoint.json`` when the LLM has adapters.
        trainable: What was trained; ``trainable.encoders`` also saves the encoder towers.
        run_config: The run's own settings, written to ``run_config.json``.
        save_base: Store the full LLM weights in ``llm/``. Defaults to True when the base weights exist nowhere
            else (random-init model) or were trained in full; otherwise the folder records ``llm_source`` and
            stays small.

    Returns:
        The checkpoint folder.
    """
    out_dir = Path(out_dir)
    if (out_dir.exists() or out_dir.is_symlink()) and not out_dir.is_dir():
        raise FileExistsError(
            f"{out_dir} is a file, not a checkpoint folder; it was left untouched: choose a new path for the checkpoint"
        )
    config = model.config
    lm = model.language_model
    if save_base is None:
        save_base = config.llm_source is None or (trainable is not None and trainable.llm == "full")
    if save_base and is_quantized(lm):
        raise ValueError("cannot save quantized base weights; the base is re-loaded from its llm_source instead")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        tmp.chmod(_DIR_MODE)  # mkdtemp's 0700 would hide the checkpoint from everyone else
        config.save(tmp / "emollm_config.json")
        processor.save_pretrained(tmp)
        save_file(_connector_state(model, trainable is not None and trainable.encoders), str(tmp / CONNECTORS_FILE))
        has_adapter = is_peft(lm)
        if has_adapter:
            # adapter_model.safetensors + adapter_config.json. Not the resized embedding matrix: its new rows are
            # placeholder rows, re-created deterministically at load time and always overwritten by features.
            lm.save_pretrained(tmp, save_embedding_layers=False)
            (tmp / "README.md").unlink(missing_ok=True)  # peft's model-card stub; checkpoint.json describes the folder
        if save_base:
            (tmp / "llm").mkdir()
            base_config = config.hf_text_config()
            base_config.save_pretrained(tmp / "llm")
            state = _base_llm_state(lm)
            if getattr(base_config, "tie_word_embeddings", False):
                state.pop("lm_head.weight", None)
            save_file(state, str(tmp / BASE_FILE), metadata={"format": "pt"})
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "backbone": config.backbone,
            "chat_format": config.chat_format,
            "encoders": {m: c.encoder for m, c in config.modalities.items()},
            "llm_source": "llm/" if save_base else config.llm_source,
            "lora": None if lora is None or not has_adapter else vars(lora),
            "trainable": None if trainable is None else vars(trainable),
        }
        atomic_write_text(tmp / "checkpoint.json", json.dumps(meta, indent=2) + "\n")
        if run_config is not None:
            atomic_write_text(tmp / "run_config.json", json.dumps(run_config, indent=2, default=str) + "\n")
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None and old.is_symlink():
            old.unlink()  # a link the user pointed at a folder: drop the link, never the folder behind it
        elif old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# =================================================================================================== read
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
    from emollm.chat_formats import get_chat_format

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


# =================================================================================================== load
def load_model(
    path: str | os.PathLike,
    *,
    llm_path: str | os.PathLike | None = None,
    backbone: str | None = None,
    dtype: torch.dtype | None = None,
    quantization: Quantization = None,
    device: str | torch.device | None = None,
) -> tuple[EmoLLMForCausalLM, EmoProcessor]:
    """Load ``(model, processor)`` from a checkpoint folder; needs nothing else but its base LLM.

    Args:
        path: Checkpoint folder.
        llm_path: Base LLM weights (folder or GGUF) when they are not in the checkpoint and not at the recorded
            ``llm_source`` (e.g. on another machine).
        backbone: Expected backbone; a checkpoint of another backbone raises instead of loading garbage.
        dtype: LLM dtype (default: the backbone's; float32 for weights stored in the checkpoint).
        quantization: Load the base in 4/8 bit.
        device: Where to put the model.

    Returns:
        The model (in eval mode) and its processor.
    """
    path = Path(path)
    info = read_checkpoint(path)
    config = info.config
    if backbone is not None:
        info.check_backbone(backbone)
    spec = get_backbone(config.backbone)
    if info.has_base:
        base_path = path / "llm"
        dtype = dtype or torch.float32
    elif llm_path is not None:
        base_path = resolve_llm_path(spec, llm_path)
    elif config.llm_source and config.llm_source.startswith("embedded:"):
        base_path = resolve_llm_path(spec, None)
    elif config.llm_source and Path(config.llm_source).exists():
        base_path = resolve_llm_path(spec, config.llm_source)
    else:
        raise FileNotFoundError(
            f"checkpoint {path} needs its base LLM ({spec.hf_id}), last seen at {config.llm_source!r}; "
            "pass llm_path= / --llm-path with the local folder or GGUF"
        )
    from transformers import AutoTokenizer

    for name in ("tokenizer.json", "tokenizer_config.json"):  # the tokenizers library's own errors name no file
        if (path / name).is_file():
            _read_json(path / name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"the tokenizer files in {path} cannot be read ({e}); {_RESAVE}") from None
    _check_tokenizer(info, tokenizer)
    try:
        lm = load_language_model(spec, base_path, dtype=dtype, quantization=quantization)
    except SafetensorError as e:
        raise ValueError(
            f"the base LLM at {base_path} has a damaged safetensors file ({e}); copy or convert it again"
        ) from None
    info.check_base_llm(lm.config, base_path)
    fit_embeddings(lm, tokenizer)
    model = EmoLLMForCausalLM(config, lm)
    from emollm.restore import restore_into

    restore_into(model, info, parts=("adapter", "connectors") if info.has_adapter else ("connectors",))
    if device is not None:
        model.to(device)
    else:
        lm_device = next(lm.parameters()).device
        for part in [model.towers, *model.connector_modules().values()]:
            part.to(lm_device)
    model.eval()
    processor = EmoProcessor.from_config(config, tokenizer, model.num_tokens)
    return model, processor


def _overlap(out: Path, src: Path) -> str | None:
    """How ``out`` overlaps ``src`` (both resolved): ``is``, ``contains``, ``is inside``, or None."""
    if out == src:
        return "is"
    if out in src.parents:
        return "contains"
    if src in out.parents:
        return "is inside"
    return None


def check_export_target(
    out_dir: str | os.PathLike, inputs: Iterable[str | os.PathLike], *, overwrite: bool = False
) -> Path:
    """Refuse an export target whose replacement would destroy data; return it.

    Allowed: a new path, an empty folder, or (with ``overwrite``) an existing emollm checkpoint folder. Always
    refused: a regular file (or a link to one), and a folder that is, contains or is inside one of ``inputs`` (the
    checkpoint being exported, its base LLM), whatever ``overwrite`` says.

    Args:
        out_dir: The folder the export would create or replace.
        inputs: Paths the export reads.
        overwrite: Allow replacing an existing, non-empty checkpoint folder.

    Raises:
        FileExistsError: The target may not be written; the message names it and the fix.
    """
    out = Path(out_dir)
    if (out.exists() or out.is_symlink()) and not out.is_dir():
        raise FileExistsError(
            f"{out} is a file, not a folder; it was left untouched: choose a new folder for the export"
        )
    resolved = out.resolve()
    for src in inputs:
        how = _overlap(resolved, Path(src).resolve())
        if how is not None:
            raise FileExistsError(
                f"{out} {how} the input {src}; exporting there would destroy it (even with --overwrite): "
                "choose a folder outside the input"
            )
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out} already exists and is not empty; pass --overwrite to replace it, or choose a new folder"
            )
        if not (out / "checkpoint.json").is_file():
            raise FileExistsError(
                f"{out} is not an emollm checkpoint, so --overwrite will not replace it; choose a new folder "
                "(or remove it yourself)"
            )
    return out


def _export_inputs(path: str | os.PathLike, llm_path: str | os.PathLike | None) -> list[str | os.PathLike]:
    """What an export of ``path`` reads: the checkpoint, ``llm_path``, and a recorded local base LLM."""
    inputs: list[str | os.PathLike] = [path]
    if llm_path is not None:
        inputs.append(llm_path)
    source = read_checkpoint_meta(path).get("llm_source")
    if isinstance(source, str) and Path(source).is_absolute():
        inputs.append(source)
    return inputs


def export_merged(
    path: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False, **load_kwargs: Any
) -> Path:
    """Load a LoRA checkpoint, fold the adapter into the base weights and save a standalone checkpoint.

    Args:
        path: The LoRA checkpoint.
        out_dir: Where to write the merged checkpoint: a new path or an empty folder (see
            :func:`check_export_target`).
        overwrite: Replace an existing checkpoint folder at ``out_dir``.
        **load_kwargs: Passed to :func:`load_model`.

    Returns:
        The merged checkpoint folder.
    """
    check_export_target(out_dir, _export_inputs(path, load_kwargs.get("llm_path")), overwrite=overwrite)
    info = read_checkpoint(path)
    model, processor = load_model(path, **load_kwargs)
    merge_lora(model)
    return save_checkpoint(
        model, processor, out_dir, trainable=info.trainable, save_base=True, run_config=_run_config(info)
    )


def _run_config(info: CheckpointInfo) -> dict[str, Any] | None:
    """The checkpoint's ``run_config.json``, carried into its export (None when it has none)."""
    file = info.path / "run_config.json"
    return _read_json(file) if file.is_file() else None


def cli_main(argv: list[str]) -> int:
    """``emollm export CHECKPOINT OUT [--merge] [--overwrite]``: copy a checkpoint, optionally folding LoRA into the
    base.

    OUT must be a new path or an empty folder; ``--overwrite`` replaces an existing checkpoint folder, never a file,
    a folder that is not a checkpoint, or anything that is, contains or is inside CHECKPOINT. Exit codes: 0 done, 2
    refused or failed (one line on stderr naming the file and the fix; ``--debug`` shows the traceback).
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="emollm export", description="Export a checkpoint (LoRA merged on request).")
    parser.add_argument("checkpoint")
    parser.add_argument("out", help="a new folder (or an empty one)")
    parser.add_argument("--merge", action="store_true", help="fold the LoRA adapter into the base weights")
    parser.add_argument("--llm-path", help="base LLM folder/GGUF if the checkpoint cannot find it")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT when it is an existing checkpoint")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        check_export_target(args.out, _export_inputs(args.checkpoint, args.llm_path), overwrite=args.overwrite)
        if args.merge:
            out = export_merged(args.checkpoint, args.out, llm_path=args.llm_path, overwrite=args.overwrite)
        else:
            info = read_checkpoint(args.checkpoint)
            model, processor = load_model(args.checkpoint, llm_path=args.llm_path)
            out = save_checkpoint(
                model, processor, args.out, lora=info.lora, trainable=info.trainable, run_config=_run_config(info)
            )
    except (OSError, ValueError) as e:
        if args.debug:
            raise
        print(f"emollm export: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0
