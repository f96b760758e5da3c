"""``emollm merr build`` data-parallel under ``torchrun`` / ``accelerate launch`` (:mod:`emollm.jobs.distributed`).

Every rank runs the same pipeline over the same clip list; what is per clip is split:

* fingerprints and estimated costs (clip duration) are computed on a hash slice per rank and gathered; rank 0 saves
  the merged ``cache/fingerprints.json``;
* each per-clip stage (``au``, the clue stages, ``reason``) computes only this rank's cost-balanced shard into the
  shared stage cache, waits for every rank (one progress bar on rank 0), then reads every clip's artifact, so the
  set-level steps between stages (labels, neutral clips, vocabulary) see the whole set on every rank and agree;
* reasoning prompts are sharded by their cache key (a prompt asked by two clips is generated once, as in one
  process); failures are gathered, so every rank records the same ``errors.jsonl`` rows;
* after the last per-clip stage the other ranks stop; rank 0 alone filters and writes the outputs — the same
  bytes a single process writes, since every output is computed from the same artifacts — and its ``runs.jsonl``
  line carries the summed counters and a per-rank throughput table.

A killed build resumes from the stage cache with any number of processes. Rank 0 holds ``build.lock`` for the
whole job; a stage cache on a network filesystem shared by several nodes is supported (artifacts are renamed into
place atomically, and a rank that does not see another node's artifact yet waits for it, ``EMOLLM_DIST_FS_WAIT_S``).
Stages whose describer is not cacheable (``cacheable=False``: cheaper than their cache) run on every rank.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from emollm.jobs.distributed import Job, format_summary, media_cost, name_hash, wait_visible
from emollm.model.prompts import build_reasoning_prompt
from emollm.utils.stage_cache import FingerprintIndex, RunLock, StageCache, StageJob, StageStats, remove_temp_files
from emollm_merr.stages import STAGES

__all__ = ["fingerprints", "merge_stats", "reasoning", "run_lock", "run_stage"]


@contextlib.contextmanager
def run_lock(job: Job, out: Path) -> Iterator[None]:
    """``build.lock`` on ``out`` (held by rank 0 for the whole job) and the sweep of a killed build's temp files,
    done before any rank writes."""
    with contextlib.ExitStack() as held:

        def take() -> None:
            held.enter_context(RunLock(out / "build.lock", owner="`emollm merr build`"))
            remove_temp_files(out)
            for p in (out / "openface").glob(".tmp-*"):  # OpenFace runs of a killed build
                shutil.rmtree(p, ignore_errors=True)

        job.on_main(take)
        yield
        job.barrier()  # the lock is released only when every rank is done


def fingerprints(
    job: Job, clips: Sequence[Any], index: FingerprintIndex
) -> tuple[dict[str, str], dict[str, str | None], dict[str, float] | None]:
    """Video and CSV fingerprints of every clip (and, distributed, its estimated cost), the index saved.

    One process: as before (memoised in ``index``), no costs. Distributed: each rank hashes and probes a hash slice;
    the results and the new index entries are gathered; rank 0 saves the index.
    """
    if not job.distributed:
        fps = {c.name: index.get(c.video) for c in clips}
        csv_fps = {c.name: index.get(c.csv) if c.csv is not None else None for c in clips}
        index.save()
        return fps, csv_fps, None
    part = {}
    for c in clips:
        if name_hash(c.name) % job.world == job.rank:
            part[c.name] = (index.get(c.video), index.get(c.csv) if c.csv is not None else None, media_cost(c.video))
    entries = {k: v for k, v in index.entries.items()} if index.dirty else {}
    fps: dict[str, str] = {}
    csv_fps: dict[str, str | None] = {}
    costs: dict[str, float] = {}
    changed = False
    for got, new in job.gather((part, entries)):
        for name, (fp, csv_fp, cost) in got.items():
            fps[name], csv_fps[name], costs[name] = fp, csv_fp, cost
        index.entries.update(new)
        changed = changed or bool(new)
    if job.is_main and changed:  # a resume that hashed nothing new leaves the index as it was
        index.dirty = True
        index.save()
    return fps, csv_fps, costs


def run_stage(
    job: Job,
    cache: StageCache,
    stage: str,
    jobs: Sequence[StageJob | tuple[str, str, Callable[[], Any]]],
    costs: dict[str, float] | None = None,
    **kwargs: Any,
) -> dict[str, dict[str, Any]]:
    """:meth:`StageCache.run` over this rank's shard, then every clip's artifact (see the module docstring).

    Raises:
        RuntimeError: An artifact another rank computed is not readable here after every rank finished the stage.
    """
    jobs = [StageJob(*j) for j in jobs]
    if not job.distributed or not kwargs.get("cacheable", True):
        return cache.run(stage, jobs, **kwargs)
    names = [j.name for j in jobs]
    mine = set(job.mine(names, {n: (costs or {}).get(n, 1.0) for n in names}))
    bar = job.progress(len(jobs), desc=f"merr {stage}", enabled=cache.progress)
    own = [j for j in jobs if j.name in mine]
    first = stage == STAGES[0]  # the per-rank summary counts each clip once: the clips it computed at stage 1
    retry = kwargs.get("retry_errors", False)
    reused = {j.name for j in own if first and cache.load(stage, j.name, j.key, retry_errors=retry) is not None}
    with bar:
        done = cache.run(stage, own, bar=bar, **kwargs)
    if first:
        new = [n for n in done if n not in reused]
        failed = sum(1 for n in new if not done[n].get("ok"))
        job.count(done=len(new) - failed, failed=failed, cost=sum((costs or {}).get(n, 0.0) for n in new))
    out = {}
    for j in jobs:
        art = cache.load(stage, j.name, j.key)
        if art is None and wait_visible(cache.path(stage, j.name)):
            art = cache.load(stage, j.name, j.key)
        if art is None:
            raise RuntimeError(
                f"{cache.path(stage, j.name)}: no artifact for {j.name} after every rank finished stage {stage} "
                "(another node's write not visible?); rerun the same command to resume"
            )
        out[j.name] = art
    return out


def reasoning(
    job: Job,
    run_reasoning: Callable[..., dict[str, str]],
    chosen: list[str],
    texts: dict[str, Any],
    label: dict[str, str],
    **kwargs: Any,
) -> dict[str, str]:
    """``run_reasoning`` over this rank's prompts (sharded by cache key), then every chosen clip's answer from the
    cache; failures of every rank go to ``on_error`` on every rank (in ``chosen`` order)."""
    if not job.distributed:
        return run_reasoning(chosen, texts, label, **kwargs)
    from emollm_merr.reason import ReasoningCache

    version = kwargs["prompt_version"]
    key = {n: ReasoningCache.key(kwargs["client"].id, version, *build_reasoning_prompt(texts[n], label[n], version))
           for n in chosen}  # fmt: skip
    owner = job.assign(sorted(set(key.values())))
    mine = [n for n in chosen if owner[key[n]] == job.rank]
    on_error = kwargs.pop("on_error")
    produced = kwargs.pop("produced", None)
    failed: list[tuple[str, dict[str, str]]] = []
    with job.progress(len(set(key.values())), desc="merr reason", enabled=kwargs.pop("progress", False)) as bar:
        run_reasoning(mine, texts, label, on_error=lambda n, err: failed.append((n, err)), progress=False,
                      **({"produced": {}} if produced is not None else {}), **kwargs)  # fmt: skip
        bar.update(len({key[n] for n in mine}))
    errors = dict(e for part in job.gather(failed) for e in part)
    for n in chosen:
        if n in errors:
            on_error(n, errors[n])
    kwargs["stats"] = StageStats()  # every answer is cached now: reading them back is not counted
    rest = [n for n in chosen if n not in errors]
    return run_reasoning(rest, texts, label, on_error=on_error, progress=False,
                         **({"produced": produced} if produced is not None else {}), **kwargs)  # fmt: skip


def merge_stats(job: Job, stats: dict[str, StageStats]) -> list[dict[str, Any]]:
    """Sum every rank's stage counters into ``stats`` (``instant`` stages ran on every rank: their maximum), and
    return the per-rank throughput rows (:meth:`Job.summary`). Every rank must call it."""
    if not job.distributed:
        return []
    everyone = job.gather({s: vars(st).copy() for s, st in stats.items()})
    for stage, st in stats.items():
        rows = [r[stage] for r in everyone if stage in r]
        st.computed = sum(r["computed"] for r in rows)
        st.cached = sum(r["cached"] for r in rows)
        st.errors = sum(r["errors"] for r in rows)
        st.instant = max((r["instant"] for r in rows), default=0)
    rows = job.summary()
    if job.is_main:
        print(f"emollm merr build: {job.world} processes ({job.launch.launcher})\n{format_summary(rows)}",
              file=sys.stderr)  # fmt: skip
    return rows
