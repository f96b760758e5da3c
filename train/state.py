"""Trainer state for an exact resume, in files that load without unpickling arbitrary objects.

A resumable checkpoint ``checkpoints/step-N/`` is a self-describing model folder (``emollm.checkpoint``) plus:

    trainer_state.json        step, epoch, position, total steps, best metric, world size, the order-defining config
    optimizer.pt              optimizer.state_dict(): tensors + numbers only, read with torch.load(weights_only=True)
    scheduler.json            LambdaLR state (numbers)
    rng_state_rank{r}.json    python / numpy / torch (and CUDA) RNG states of each process, and its stream position

The folder is assembled under a hidden ``.step-N.partial`` name and renamed into place once complete, so a kill
never leaves a half-written checkpoint that looks valid.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emollm.utils.io import atomic_write, atomic_write_json

STEP_RE = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


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
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def save_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    state = optimizer.state_dict()
    atomic_write(path, lambda f: torch.save(state, f))


def load_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    ours = [(g.get("name"), len(g["params"])) for g in optimizer.param_groups]
    saved = [(g.get("name"), len(g["params"])) for g in state["param_groups"]]
    if ours != saved:
        raise ValueError(
            f"{path}: optimizer groups {saved} do not match this run's {ours}; was train.trainable or "
            "the model changed since the checkpoint?"
        )
    optimizer.load_state_dict(state)


def scheduler_state(scheduler) -> dict[str, Any]:
    return {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}


def load_scheduler(scheduler, state: dict[str, Any]) -> None:
    full = scheduler.state_dict()
    full.update(state)
    scheduler.load_state_dict(full)
