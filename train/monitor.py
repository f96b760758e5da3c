"""Run monitoring: ``train_log.jsonl`` (every step and every validation), TensorBoard, optional W&B.

Only the main process writes. On resume, log lines past the resumed step (written by the killed run after its last
checkpoint) are dropped, so the log of a resumed run reads exactly like an uninterrupted one.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

from emollm.runconfig import ConfigError, LoggingConfig
from emollm.utils.io import atomic_write_text

log = logging.getLogger("emollm.train")

LOG_NAME = "train_log.jsonl"


def truncate_log(path: Path, step: int) -> None:
    """Keep only records with ``step <= step`` (atomic rewrite)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if rec.get("step", 0) <= step:
            kept.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in kept))


def read_log(path: str | Path, kind: str | None = "train") -> list[dict[str, Any]]:
    """Records of a ``train_log.jsonl`` (``kind`` = train / eval / None for all)."""
    out = []
    for line in Path(path).read_text().splitlines():
        rec = json.loads(line)
        if kind is None or rec.get("kind") == kind:
            out.append(rec)
    return out


class RunLogger:
    """JSON lines + TensorBoard + W&B, for the main process; a no-op elsewhere."""

    def __init__(
        self, out_dir: Path, settings: LoggingConfig, *, enabled: bool, resume_step: int | None, config: dict[str, Any]
    ):
        self.enabled = enabled
        self.settings = settings
        self.path = out_dir / LOG_NAME
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.unlink(missing_ok=True)
        else:
            truncate_log(self.path, resume_step)
        self._file = open(self.path, "a", buffering=1)
        tb = settings.tensorboard
        if tb is True or (tb == "auto" and importlib.util.find_spec("tensorboard") is not None):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ConfigError(
                    f"train.logging.tensorboard: cannot import TensorBoard ({e}); pip install tensorboard"
                ) from None
            self.tb = SummaryWriter(
                str(out_dir / "tensorboard"), purge_step=None if resume_step is None else resume_step + 1
            )
        if settings.wandb:
            try:
                import wandb
            except ImportError:
                raise ConfigError(
                    "train.logging.wandb: wandb is not installed (pip install wandb), or set it to false"
                ) from None
            id_file = out_dir / "wandb_id"
            run_id = id_file.read_text().strip() if id_file.is_file() else wandb.util.generate_id()
            atomic_write_text(id_file, run_id)
            self.wandb = wandb.init(
                project=settings.wandb_project, id=run_id, resume="allow", config=config, dir=str(out_dir)
            )

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        step = record.get("step", 0)
        prefix = "val" if record.get("kind") == "eval" else "train"
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k not in ("step", "epoch")}
        for k, v in record.get("lr", {}).items() if isinstance(record.get("lr"), dict) else []:
            scalars[f"lr/{k}"] = v
        if self.tb is not None and (prefix == "val" or step % self.settings.log_every == 0):
            for k, v in scalars.items():
                self.tb.add_scalar(k if k.startswith("lr/") else f"{prefix}/{k}", v, step)
        if self.wandb is not None:
            self.wandb.log({(k if k.startswith("lr/") else f"{prefix}/{k}"): v for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
