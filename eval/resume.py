"""Resuming ``emollm eval`` runs: what determines a run's predictions, and the ``predictions.jsonl`` log.

A run's *fingerprint* holds everything that can change a prediction (files by content, so a moved checkpoint or gold
file still resumes); its digest is the config hash recorded in ``run.json``. A rerun with the same hash skips the
names already in ``predictions.jsonl``; a different hash is refused (:class:`ConfigMismatchError`), naming the keys
that differ. ``predictions.jsonl`` is an append-only log, fsynced after every batch, so a kill loses at most the
batch in flight and leaves at most a torn last line, which :func:`read_rows` cuts off.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from emollm.utils.io import atomic_write_json
from emollm_eval.config import EvalConfig

__all__ = [
    "NOT_HASHED",
    "ConfigMismatchError",
    "append_rows",
    "check_resume",
    "checkpoint_fingerprint",
    "config_hash",
    "prediction_fingerprint",
    "read_rows",
    "start_run",
]

NOT_HASHED = frozenset(
    {
        *("output_dir", "limit", "batch_size", "device", "n_bootstrap", "seed", "split", "protocol", "ov_gold"),
        *("judge", "judge_model", "judge_backbone", "judge_max_new_tokens", "judge_cache"),
    }
)
"""Config keys that cannot change a prediction: left out of the hash, so they may differ between resumed runs."""


class ConfigMismatchError(ValueError):
    """An output folder holds predictions of another config."""


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
    """Digest of a checkpoint's small files (config, projectors, adapter) and of the names and sizes in ``llm/``."""
    path = Path(path)
    h = hashlib.sha256()
    for name in ("checkpoint.json", "emollm_config.json", "projectors.safetensors", "adapter_model.safetensors"):
        p = path / name
        h.update(f"{name}:{_sha256_file(p) if p.is_file() else '-'};".encode())
    llm = path / "llm"
    if llm.is_dir():
        for p in sorted(llm.rglob("*")):
            if p.is_file():
                h.update(f"llm/{p.relative_to(llm)}:{p.stat().st_size};".encode())
    return h.hexdigest()[:16]


def prediction_fingerprint(config: EvalConfig, feature_dirs: dict[str, str]) -> dict[str, Any]:
    """Everything that determines the predictions of a run (the config hash is the digest of this)."""
    data = {k: v for k, v in config.to_dict().items() if k not in NOT_HASHED}
    csv_subtitles = config.subtitles not in (None, "gold")
    data.update(  # files by content, so a moved checkpoint or gold file still resumes
        checkpoint=checkpoint_fingerprint(config.checkpoint),
        gold=_sha256_file(Path(config.gold)),
        subtitles=_sha256_file(Path(config.subtitles)) if csv_subtitles else config.subtitles,  # type: ignore[arg-type]
        feature_root=str(Path(config.feature_root).resolve()) if config.feature_root else None,
        features=dict(sorted(feature_dirs.items())),
        drop_modalities=sorted(config.drop_modalities),
        prompt=config.resolved_prompt(),
        labels=list(config.resolved_labels()),
        label_order=list(config.resolved_label_order()),
        max_new_tokens=config.resolved_max_new_tokens(),
        decoding=config.decoding,
    )
    if config.decoding == "greedy":  # the seed changes nothing; greedy runs hash as before the option existed
        data.pop("decoding_seed", None)
    return data


def config_hash(fingerprint: dict[str, Any]) -> str:
    """The 16-hex-digit digest of a :func:`prediction_fingerprint` (key order does not matter)."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def read_rows(path: str | os.PathLike, *, repair: bool = False) -> list[dict[str, Any]]:
    """Rows of a ``predictions.jsonl``. A torn last line (a kill mid-write) is ignored, and cut off with ``repair``.

    Raises:
        ValueError: On a damaged line that is not the last one.
    """
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        if repair:
            with open(path, "r+b") as f:
                f.truncate(cut)
        data = data[:cut]
    rows = []
    for i, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as err:
            raise ValueError(f"{path}:{i}: damaged row ({err}); delete the file to start over") from None
    return rows


def check_resume(out: Path, fingerprint: dict[str, Any], digest: str) -> None:
    """Refuse to add predictions of this config to a folder that holds another config's.

    Args:
        out: The output folder.
        fingerprint: :func:`prediction_fingerprint` of this run.
        digest: :func:`config_hash` of ``fingerprint``.

    Raises:
        ConfigMismatchError: The folder has predictions but no ``run.json``, or a ``run.json`` of another config
            (the message lists the keys that differ).
    """
    run_file, pred_file = out / "run.json", out / "predictions.jsonl"
    has_rows = pred_file.is_file() and pred_file.stat().st_size > 0
    if not has_rows:
        return
    if not run_file.is_file():
        raise ConfigMismatchError(
            f"{pred_file} exists but {run_file} does not, so its config is unknown; refusing to mix predictions. "
            "Use another output_dir, or delete the predictions to start over"
        )
    old = json.loads(run_file.read_text())
    if old.get("config_hash") == digest:
        return
    before = old.get("fingerprint", {})
    diff = sorted(k for k in set(before) | set(fingerprint) if before.get(k) != fingerprint.get(k))
    details = "; ".join(f"{k}: {before.get(k)!r} -> {fingerprint.get(k)!r}" for k in diff[:6])
    raise ConfigMismatchError(
        f"{out} holds predictions of a different config (hash {old.get('config_hash')} vs {digest}); refusing to "
        f"mix them. Differences: {details}. Use another output_dir, or delete {pred_file} to start over"
    )


def start_run(out: Path, config: EvalConfig, fingerprint: dict[str, Any], digest: str) -> dict[str, dict[str, Any]]:
    """Check that ``out`` may take this run's predictions, record the run, and return the rows already predicted.

    ``run.json`` (config hash, fingerprint, resolved config) is written atomically when the folder has no
    predictions yet, or no ``run.json``.

    Args:
        out: The output folder (created if missing).
        config: The run's config.
        fingerprint: :func:`prediction_fingerprint` of the run.
        digest: :func:`config_hash` of ``fingerprint``.

    Returns:
        The rows of ``predictions.jsonl`` by sample name (a torn last line is cut off).

    Raises:
        ConfigMismatchError: See :func:`check_resume`.
    """
    out.mkdir(parents=True, exist_ok=True)
    check_resume(out, fingerprint, digest)
    previous = {r["name"]: r for r in read_rows(out / "predictions.jsonl", repair=True)}
    if not (out / "run.json").is_file() or not previous:
        atomic_write_json(
            out / "run.json", {"config_hash": digest, "fingerprint": fingerprint, "config": config.to_dict()}
        )
    return previous


def append_rows(f: IO[str], rows: Iterable[dict[str, Any]]) -> None:
    """Append prediction rows to an open ``predictions.jsonl`` and fsync, so a kill loses at most this batch.

    This is the one file ``emollm eval`` does not write atomically: it is an append-only log that a rerun resumes.
    """
    for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())
