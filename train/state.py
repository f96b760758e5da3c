"""Trainer state for an exact resume, in files that load without unpickling arbitrary objects.

A resumable checkpoint ``checkpoints/step-N/`` is a self-describing model folder (``emollm.checkpoints``; its weights
are restored by ``emollm.checkpoints.restore.restore_into``, see ``train/build.py``) plus:

    trainer_state.json        step, epoch, position, total steps, best metric, world size, the order-defining config
    optimizer.pt              optimizer.state_dict(): tensors + numbers only, read with torch.load(weights_only=True)
    scheduler.json            LambdaLR state (numbers)
    rng_state_rank{r}.json    python / numpy / torch (and CUDA) RNG states of each process, and its stream position

The folder is assembled under a hidden ``.step-N.partial`` name and renamed into place once complete, so a kill
never leaves a half-written checkpoint that looks valid.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emollm.utils.io import atomic_write, atomic_write_json

log = logging.getLogger("emollm.train")

STEP_RE = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"

#: Config keys that define the data order / model; a resume with other values cannot reproduce the original run.
ORDER_KEYS = (
    "train.seed",
    "train.batch_size",
    "train.grad_accum",
    "train.stage",
    "train.trainable",
    "train.lora",
    "train.grpo",
    "data.format",
    "data.train",
    "data.tasks",
    "data.labels",
    "data.label_order",
    "data.aux",
    "data.modality_dropout",
    "data.balance",
    "data.group_by_length",
    "data.synthetic",
    "model.backbone",
    "model.tiny",
    "model.modalities",
)


def step_dir(root: Path, step: int) -> Path:
    """The folder of the resumable checkpoint of optimizer step ``step``."""
    return root / f"step-{step:08d}"


def partial_dir(root: Path, step: int) -> Path:
    """Where the checkpoint of ``step`` is assembled before it is renamed into place."""
    return root / f".{step_dir(root, step).name}.partial"


def publish(partial: Path, final: Path) -> None:
    """Rename a completed checkpoint folder into place (replacing an older one of the same step)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)


def remove_partial(root: Path) -> None:
    """Delete leftovers of saves that a kill interrupted."""
    if root.is_dir():
        for p in root.glob(".step-*.partial"):
            shutil.rmtree(p, ignore_errors=True)


def find_resume(resume: str, root: Path) -> Path | None:
    """The checkpoint a run resumes from.

    Args:
        resume: ``train.resume``: ``auto`` (newest complete checkpoint under ``root``, if any), ``never`` (refuses
            a ``root`` holding checkpoints, which a later ``auto`` would pick up), or a checkpoint folder.
        root: The run's ``checkpoints/`` folder.

    Returns:
        The checkpoint folder, or None for a fresh start.
    """
    if resume == "never":
        if list_step_checkpoints(root):
            raise FileExistsError(
                f"train.resume=never, but {root} holds checkpoints of an earlier run, which a later "
                "resume=auto would pick up; delete them or choose another train.output_dir"
            )
        return None
    if resume == "auto":
        found = list_step_checkpoints(root)
        return found[-1][1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"train.resume: {path} is not a resumable checkpoint (no {STATE_FILE})")
    return path


def _pick(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def order_config(config: dict[str, Any]) -> dict[str, Any]:
    """The values of :data:`ORDER_KEYS` in a run config dict (``RunConfig.to_dict()``)."""
    return {k: _pick(config, k) for k in ORDER_KEYS}


def warn_if_order_changed(config: dict[str, Any], info: dict[str, Any], path: Path, world_size: int) -> None:
    """Warn when a resume cannot reproduce the original run: other process count or order-defining config.

    Args:
        config: The current run config dict.
        info: The checkpoint's trainer state.
        path: The checkpoint, for the message.
        world_size: The current number of processes.
    """
    if info["world_size"] != world_size:
        log.warning(
            "resuming a %d-process run with %d processes: the data order differs from the original run",
            info["world_size"],
            world_size,
        )
    current = order_config(config)
    changed = [
        k
        for k in ORDER_KEYS
        if json.dumps(current[k], sort_keys=True) != json.dumps(info["order_config"].get(k), sort_keys=True)
    ]
    if changed:
        log.warning("config keys %s changed since %s: the resumed run will not reproduce the original", changed, path)


def read_json(path: Path) -> Any:
    """A JSON file of a checkpoint."""
    return json.loads(path.read_text())


def list_step_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete step checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = STEP_RE.match(p.name)
        if m and (p / STATE_FILE).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def prune(root: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints, and leftovers of interrupted saves."""
    for _, p in list_step_checkpoints(root)[:-keep_last]:
        shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".step-*.partial"):
        shutil.rmtree(p, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    """Write a JSON file of a checkpoint atomically."""
    atomic_write_json(path, data)


def capture_rng() -> dict[str, Any]:
    """RNG states of this process as JSON-friendly lists."""
    version, state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    out: dict[str, Any] = {
        "python": [version, list(state), gauss],
        "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        out["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return out


def restore_rng(state: dict[str, Any]) -> None:
    """Set this process's RNGs from :func:`capture_rng`'s output."""
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def save_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Write ``optimizer.state_dict()`` (tensors and numbers only) atomically."""
    state = optimizer.state_dict()
    atomic_write(path, lambda f: torch.save(state, f))


def load_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Load optimizer state without unpickling objects; the parameter groups must match this run's."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    ours = [(g.get("name"), len(g["params"])) for g in optimizer.param_groups]
    saved = [(g.get("name"), len(g["params"])) for g in state["param_groups"]]
    if ours != saved:
        raise ValueError(
            f"{path}: optimizer groups {saved} do not match this run's {ours}; was train.trainable or "
            "the model changed since the checkpoint?"
        )
    optimizer.load_state_dict(state)


def scheduler_state(scheduler: Any) -> dict[str, Any]:
    """The LR schedule's state as plain numbers (its lambdas are rebuilt from the config)."""
    return {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}


def load_scheduler(scheduler: Any, state: dict[str, Any]) -> None:
    """Restore :func:`scheduler_state`'s output into a freshly built schedule."""
    full = scheduler.state_dict()
    full.update(state)
    scheduler.load_state_dict(full)
