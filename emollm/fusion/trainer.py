"""A small deterministic trainer for the fusion baselines, with resume and best-on-validation selection.

Files in the run folder (``out``):

    config.json          the resolved config (and its fingerprint)
    model.json           what rebuilds the model: method, modality widths, classes, steps, options
    last.safetensors     weights + AdamW state + torch RNG state of the last finished epoch; its metadata holds the
                         trainer state (epoch, best epoch/score, epochs without improvement). The one source of truth
                         for resuming: written atomically, so a run killed at any point resumes from the last epoch
                         it finished and ends with the same weights as an uninterrupted run.
    best.safetensors     weights of the best validation epoch (the last epoch when there is no validation split)
    state.json           a readable copy of the trainer state
    log.jsonl            one line per epoch: train loss, validation loss/accuracy/UAR/weighted F1, seconds

Selection and early stopping use the validation split only; the trainer never sees the test split.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from emollm.fusion.data import FeatureSet
from emollm.fusion.metrics import classification_report, confusion_matrix
from emollm.fusion.models import FusionModel
from emollm.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["TrainResult", "evaluate", "load_weights", "predict", "save_weights", "to_tensors", "train_model"]

LAST, BEST, STATE, LOG = "last.safetensors", "best.safetensors", "state.json", "log.jsonl"


@dataclass
class TrainResult:
    best_epoch: int
    best_score: float | None
    epochs_run: int
    stopped_early: bool
    selection: str
    seconds_per_epoch: float


def to_tensors(data: FeatureSet, modalities: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return (
        {m: torch.from_numpy(data.features[m]) for m in modalities},
        {m: torch.from_numpy(data.present[m]) for m in modalities},
    )


@torch.no_grad()
def predict(model: FusionModel, data: FeatureSet, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class per clip (N,), log-probabilities (N, C)); the model is put in eval mode."""
    model.eval()
    x, present = to_tensors(data, model.modalities)
    out = []
    for s in range(0, len(data), batch_size):
        sl = slice(s, s + batch_size)
        out.append(model({m: v[sl] for m, v in x.items()}, {m: v[sl] for m, v in present.items()}).log_softmax(-1))
    logp = torch.cat(out).numpy() if out else np.zeros((0, model.n_classes), np.float32)
    return logp.argmax(-1), logp


def evaluate(model: FusionModel, data: FeatureSet) -> dict[str, Any]:
    """Classification report (accuracy, UAR, weighted F1, per class) plus the mean cross-entropy ``loss``."""
    pred, logp = predict(model, data)
    report = classification_report(confusion_matrix(data.labels, pred, len(data.classes)), data.classes)
    report["loss"] = float(-logp[np.arange(len(data)), data.labels].mean()) if len(data) else 0.0
    return report


def save_weights(model: FusionModel, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, st_save(state, metadata=metadata))


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118


def load_weights(model: FusionModel, path: str | Path) -> FusionModel:
    """Load ``path`` (model tensors; ``last.safetensors``' optimizer entries are skipped) with exact key checks."""
    tensors, _ = _read(Path(path))
    state = {k.removeprefix("model."): v for k, v in tensors.items() if not k.startswith(("optim.", "rng."))}
    model.load_state_dict(state, strict=True)
    return model


def _save_last(path: Path, model: FusionModel, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    for i, s in optimizer.state_dict()["state"].items():
        for key, value in s.items():
            tensors[f"optim.{i}.{key}"] = torch.as_tensor(value).contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    atomic_write_bytes(path, st_save(tensors, metadata={"state": json.dumps(state)}))


def _load_last(path: Path, model: FusionModel, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    tensors, meta = _read(path)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, i, key = k.split(".", 2)
            opt_state.setdefault(int(i), {})[key] = v
    sd = optimizer.state_dict()
    sd["state"] = opt_state
    optimizer.load_state_dict(sd)
    torch.set_rng_state(tensors["rng.torch"])
    return json.loads(meta["state"])


def _epoch_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["epoch"])
    except (ValueError, KeyError, TypeError):  # a line torn by a kill
        return None


def _better(score: float, best: float | None, select: str) -> bool:
    if best is None:
        return True
    return score < best if select == "loss" else score > best


def train_model(
    model: FusionModel,
    train: FeatureSet,
    val: FeatureSet | None,
    out: str | Path,
    *,
    epochs: int = 50,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    patience: int = 10,
    select: str = "uar",
    seed: int = 0,
    resume: bool = True,
    stop_after: int | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train``, select on ``val``; resume from ``out/last.safetensors`` when it exists.

    Args:
        stop_after: Stop after this many epochs *in this call* (as if killed; a later call resumes).
        log: Called with one line per epoch (default: silent; the JSONL log is always written).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    x, present = to_tensors(train, model.modalities)
    y = torch.from_numpy(train.labels)
    model.set_normalization(x, present)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    state: dict[str, Any] = {"epoch": 0, "best_epoch": 0, "best_score": None, "bad_epochs": 0, "stopped_early": False}
    if resume and (out / LAST).is_file():
        state = _load_last(out / LAST, model, optimizer)
        lines = (out / LOG).read_text().splitlines() if (out / LOG).is_file() else []
        kept = [ln for ln in lines if _epoch_of(ln) is not None and _epoch_of(ln) <= state["epoch"]]
        atomic_write_text(out / LOG, "".join(ln + "\n" for ln in kept))  # drop epochs after the checkpoint
    elif (out / LOG).exists():
        (out / LOG).unlink()
    selection = f"best validation {select}" if val is not None and len(val) else "last epoch (no validation split)"
    times = []
    ran = 0
    n = len(train)
    while state["epoch"] < epochs and not state["stopped_early"]:
        if stop_after is not None and ran >= stop_after:
            break
        epoch = state["epoch"] + 1
        t0 = time.perf_counter()
        model.train()
        order = np.random.default_rng(seed * 1_000_003 + epoch).permutation(n)  # per-epoch order: resumable
        total, batches = 0.0, 0
        for s in range(0, n, batch_size):
            idx = torch.from_numpy(order[s : s + batch_size])
            loss = model.loss({m: v[idx] for m, v in x.items()}, {m: v[idx] for m, v in present.items()}, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            batches += 1
        row: dict[str, Any] = {"epoch": epoch, "train_loss": total / max(batches, 1)}
        if val is not None and len(val):
            rep = evaluate(model, val)
            row.update({f"val_{k}": rep[k] for k in ("loss", "accuracy", "uar", "weighted_f1")})
            score = rep[select]
            improved = _better(score, state["best_score"], select)
        else:
            score, improved = None, True
        if improved:
            state.update(best_epoch=epoch, best_score=score, bad_epochs=0)
            save_weights(model, out / BEST, {"epoch": str(epoch)})
        else:
            state["bad_epochs"] += 1
            if patience and state["bad_epochs"] >= patience:
                state["stopped_early"] = True
        state["epoch"] = epoch
        row["seconds"] = time.perf_counter() - t0
        row["best_epoch"] = state["best_epoch"]
        times.append(row["seconds"])
        with open(out / LOG, "a", encoding="utf-8") as f:  # a torn last line is dropped on resume
            f.write(json.dumps(row) + "\n")
        _save_last(out / LAST, model, optimizer, state)
        atomic_write_json(out / STATE, state)
        ran += 1
        if log is not None:
            msg = f"epoch {epoch}: train loss {row['train_loss']:.4f}"
            if score is not None:
                msg += f", val {select} {score:.4f}" + (" *" if improved else "")
            log(msg)
    return TrainResult(
        state["best_epoch"],
        state["best_score"],
        state["epoch"],
        state["stopped_early"],
        selection,
        float(np.mean(times)) if times else math.nan,
    )
