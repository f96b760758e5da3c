"""``emollm eval`` data-parallel under ``torchrun`` / ``accelerate launch`` (:mod:`emollm.jobs.distributed`).

Rank 0 checks the output folder and records the run (:func:`emollm_eval.resume.start_run`: the config-hash refusal,
``run.json``) before any rank generates. Every rank then answers its share of the samples not yet predicted (the
same count per rank: the samples are equally long prompts over precomputed features) on its own device, appending
its rows to its own part (``.predictions.jsonl.parts/rank-NNNNN.jsonl``, fsynced per batch). Once every rank is done,
rank 0 merges the parts into ``predictions.jsonl`` — the rows an earlier run left, then the new ones in the gold
file's order, as one process writes them — and computes the metrics and reports alone.

A rerun with any number of processes (one included) skips every sample already in ``predictions.jsonl`` or in a part
a killed run left. Greedy answers are the same as one process's when ``batch_size`` is 1; with larger batches the
padding of a batch depends on its neighbours, which differ between shards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from emollm.jobs.distributed import Job, JsonlParts
from emollm_eval.resume import read_rows

__all__ = ["finish", "mine", "predictions_log", "progress", "start"]


def _parts(out: Path) -> JsonlParts:
    return JsonlParts(out / "predictions.jsonl", "name")


def start(
    job: Job, out: Path, start_run: Callable[[], dict[str, dict[str, Any]]], order: Sequence[str] = ()
) -> dict[str, dict[str, Any]]:
    """The rows already predicted: ``start_run()`` on rank 0 (refusals reach every rank), then every rank reads
    ``predictions.jsonl`` and the parts of a killed data-parallel run. One process folds such parts into
    ``predictions.jsonl`` first (after its rows, in ``order``)."""
    import json

    parts = _parts(out)
    if not job.distributed:
        previous = start_run()
        if parts.exists():
            existing = [(name, json.dumps(row, ensure_ascii=False)) for name, row in previous.items()]
            parts.merge_into(existing, order)
            previous = {r["name"]: r for r in read_rows(out / "predictions.jsonl")}
        return previous
    job.on_main(lambda: (start_run(), None)[1])
    previous = {r["name"]: r for r in read_rows(out / "predictions.jsonl")}
    for name, line in parts.read():
        previous.setdefault(name, json.loads(line))
    job.barrier()  # every rank has read what is done before any rank appends
    return previous


def mine(job: Job, names: Sequence[str]) -> set[str]:
    """The names this rank answers (equal shares, by name hash; every sample costs about the same)."""
    return set(job.mine(list(names)))


@contextlib.contextmanager
def predictions_log(job: Job, out: Path) -> Iterator[IO[str]]:
    """Where this process appends its rows: ``predictions.jsonl`` (one process) or its own part."""
    if not job.distributed:
        with open(out / "predictions.jsonl", "a", encoding="utf-8") as f:
            yield f
        return
    with _parts(out).open(job.rank) as f:
        yield f


def progress(job: Job, bar_factory: Callable[..., Any], *, total: int, initial: int, **kwargs: Any) -> Any:
    """One bar for the whole job on rank 0 (distributed), else ``bar_factory``'s own bar."""
    if not job.distributed:
        return bar_factory(total=total, initial=initial, **kwargs)
    enabled = kwargs.get("disable") is not True
    return job.progress(total, initial=initial, desc=kwargs.get("desc", "eval"), enabled=enabled)


def finish(
    job: Job, out: Path, items: Sequence[Any], previous: dict[str, dict[str, Any]], generated: int
) -> tuple[dict[str, dict[str, Any]], int]:
    """After the generation loop (and its bar's barrier): rank 0 merges every part into ``predictions.jsonl``; every
    rank returns the rows by name and how many samples the whole job generated. A no-op for one process.

    Raises:
        RuntimeError: A part is not visible to rank 0, or a sample has no row after the merge (nothing is scored).
    """
    if not job.distributed:
        return previous, generated
    import json

    parts = _parts(out)
    own = parts.path(job.rank)
    sizes = job.gather(own.stat().st_size if own.is_file() else 0)
    total = sum(job.gather(generated))
    order = [it.name for it in items]

    def merge() -> dict[str, dict[str, Any]]:
        parts.wait_for(dict(enumerate(sizes)))
        existing = [(r["name"], json.dumps(r, ensure_ascii=False)) for r in read_rows(out / "predictions.jsonl")]
        parts.merge_into(existing, order)
        rows = {r["name"]: r for r in read_rows(out / "predictions.jsonl")}
        missing = [name for name in order if name not in rows]
        if missing:
            raise RuntimeError(
                f"{out / 'predictions.jsonl'}: {len(missing)} samples have no row after the merge (first: "
                f"{missing[0]}); rerun the same command to resume"
            )
        return {name: rows[name] for name in order}

    return job.on_main(merge), total
