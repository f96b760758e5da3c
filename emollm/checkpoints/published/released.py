"""Reading released MiniGPT-style ``.pth`` checkpoints safely, and the report every importer returns.

The released files are ``torch.save({"model": state_dict, "optimizer": ..., "config": ..., "scaler": ...,
"epoch": ...})`` holding only the trained parameters. They are read with ``torch.load(weights_only=True)``: a file
that needs code to unpickle (e.g. an OmegaConf ``config`` object) is refused with the way to re-save it.
"""

from __future__ import annotations

import builtins
import os
import pickle
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["ImportReport", "read_released_checkpoint", "read_released_state_dict", "verify_import"]

_RESAVE = (
    "re-save only its state dict where the original code runs: "
    "torch.save({'model': torch.load(PATH, weights_only=False)['model']}, 'state_dict.pth'), then import that file"
)


def _unpickler_detail(message: str) -> str | None:
    """``Unsupported global: GLOBAL argparse.Namespace`` from torch's weights-only error, or None when the refused
    name cannot be a real one, so the stream is damaged: not dotted identifiers (``coll.``: cut inside
    ``collections.OrderedDict``), or an attribute missing from a module already loaded (``torch.Fl``), or no global
    at all. Nothing is imported to decide (a module that is not loaded, e.g. ``omegaconf``, counts as real)."""
    m = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if not m:
        return None
    name = m.group(1)
    parts = name.split(".")
    if not all(part.isidentifier() for part in parts):
        return None
    if len(parts) == 1:
        return f"Unsupported global: GLOBAL {name}" if hasattr(builtins, name) else None
    for i in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:i]))
        if module is None:
            continue
        obj: Any = module
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return None if ".".join(parts[:i]) != "__main__" else f"Unsupported global: GLOBAL {name}"
            obj = getattr(obj, attr)
        break
    return f"Unsupported global: GLOBAL {name}"


def checkpoint_kind(head: bytes) -> str | None:
    """What a file's first bytes say it is: ``zip`` (``torch.save`` since 1.6), ``pickle`` (a legacy ``torch.save``
    or a bare pickle), ``safetensors``, or None (none of them: a text file, an image...)."""
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (100 << 20):
        return "safetensors"
    return None


def read_released_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The ``"model"`` state dict of a released checkpoint (or a bare state dict), loaded without unpickling code.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file needs arbitrary unpickling, is not a torch file, or holds no tensor state dict; the
            message says how to re-save it.
    """
    return read_released_checkpoint(path)[0]


def read_released_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(state dict, the file's other entries)``: ``"model"`` and e.g. ``"config"`` / ``"epoch"`` of a released
    checkpoint (the optimizer and scaler states are dropped), loaded with ``weights_only=True``. Raises as
    :func:`read_released_state_dict`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): an interrupted download or copy? fetch the checkpoint again")
    with open(path, "rb") as f:
        head = f.read(16)
    kind = checkpoint_kind(head)
    if kind is None:  # checked before torch's unpickler sees it (a text file gave a bare KeyError from it)
        raise ValueError(
            f"{path} is not a torch checkpoint (it starts with {head[:12]!r}: neither a torch zip, a pickle nor "
            "safetensors); give the released .pth file"
        )
    try:
        if kind == "safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = _unpickler_detail(str(e))
        if detail is None:  # not a class it refused: the pickle stream itself is broken (a cut-short legacy file)
            raise ValueError(
                f"{path} is not a readable torch checkpoint (its pickle data is damaged or cut short); fetch it again"
            ) from None
        raise ValueError(
            f"{path} cannot be read with weights_only=True (it stores objects that need code to unpickle: {detail}); "
            f"emollm never runs a checkpoint's pickled code. {_RESAVE}"
        ) from None
    except Exception as e:  # torch's readers raise KeyError, IndexError, struct.error... on damaged bytes
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"{path} is not a readable torch checkpoint ({why[:200]}); is it a damaged or partial copy? fetch it again"
        ) from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no tensor state dict under 'model' (nor at the top level); {_RESAVE}")
    meta = {k: v for k, v in obj.items() if k not in ("model", "optimizer", "scaler")} if "model" in obj else {}
    return {str(k): v for k, v in state.items()}, meta


@dataclass
class ImportReport:
    """What an importer did with each source tensor.

    Attributes:
        source: The released model (``emotion-llama``, ``minigpt-v2``).
        mapped: source key -> emollm parameter name.
        kept: source keys of trained tensors that have no branch in the imported model; saved unchanged in
            ``published/unmapped.safetensors`` beside the checkpoint.
        skipped: source key -> why it is not used (dead code, buffers recomputed by transformers).
        missing: What the emollm model has and the source does not (newly initialised).
        notes: Loud warnings (fewer tokens than the published model, layout differences).
        settings: Facts recorded with the checkpoint (layout, LoRA, token counts).
    """

    source: str
    mapped: dict[str, str] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "settings": self.settings,
            "mapped": self.mapped,
            "kept_unmapped": self.kept,
            "skipped": self.skipped,
            "missing": self.missing,
            "notes": self.notes,
        }

    def summary(self) -> str:
        """A short human-readable report (grouped counts, then the notes)."""
        lora = sum("lora_" in k for k in self.mapped)
        lines = [
            f"imported {self.source}: {len(self.mapped)} tensors mapped ({lora} LoRA, {len(self.mapped) - lora} "
            f"projector), {len(self.kept)} kept unmapped, {len(self.skipped)} skipped, {len(self.missing)} missing",
        ]
        for key, dst in self.mapped.items():
            if "lora_" not in key:
                lines.append(f"  mapped   {key} -> {dst}")
        for key in self.kept:
            lines.append(f"  kept     {key} (no branch for it; saved in published/unmapped.safetensors)")
        reasons: dict[str, int] = {}
        for reason in self.skipped.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        for reason, n in reasons.items():
            lines.append(f"  skipped  {n} tensor(s): {reason}")
        for name in self.missing:
            lines.append(f"  missing  {name} (not in the source; newly initialised)")
        lines += [f"WARNING: {n}" for n in self.notes]
        return "\n".join(lines)


def verify_import(out: str | os.PathLike, state: dict[str, Tensor], report: ImportReport) -> None:
    """Raise unless every mapped and kept source tensor reappears, value for value, in the saved checkpoint, and every
    source tensor was mapped, kept or skipped (the check both imports, Emotion-LLaMA and AffectGPT, end with)."""
    from safetensors.torch import load_file

    out = Path(out)
    saved = load_file(str(out / "adapter_model.safetensors"))
    saved.update(load_file(str(out / "projectors.safetensors")))
    if report.kept:
        saved.update(load_file(str(out / "published" / "unmapped.safetensors")))
    for key, dst in report.mapped.items():
        name = dst.removeprefix("language_model.").replace(".default.", ".") if "lora_" in dst else dst
        if name not in saved:
            raise ValueError(f"{key}: saved checkpoint lacks {name}")
        if not torch.equal(saved[name].to(state[key].dtype), state[key]):
            raise ValueError(f"{key}: saved value differs from the source")
    for key in report.kept:
        if not torch.equal(saved[key], state[key]):
            raise ValueError(f"{key}: kept value differs from the source")
    unaccounted = sorted(set(state) - set(report.mapped) - set(report.kept) - set(report.skipped))
    if unaccounted:
        raise ValueError(f"{len(unaccounted)} source tensor(s) neither mapped, kept nor skipped: {unaccounted[:6]}")
