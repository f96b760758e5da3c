"""Data-parallel corpus jobs (``emollm.jobs.distributed``): who am I, deterministic cost-balanced shards, part files
and their merge, and the shared-cache locks (``emollm.utils.locks``) raced by real processes. The 2-process runs of
each job against one process are in ``test_distributed_jobs.py`` and beside each recipe's tests."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import time
from pathlib import Path

import pytest

from emollm.jobs.distributed import (
    Job,
    JsonlParts,
    Launch,
    LaunchError,
    assign,
    format_summary,
    merge_lines,
    name_hash,
    single_process_env,
)
from emollm.utils.locks import FileLock, LockBusy, build_once

TORCHRUN_ENV = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "x"}


# ------------------------------------------------------------------------------------------------ who am I
def test_launch_from_the_launchers_variables():
    assert Launch.from_env({}) == Launch()  # no launcher: the single process
    assert not Launch.from_env({"WORLD_SIZE": "1", "RANK": "0"}).distributed
    env = {"WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", **TORCHRUN_ENV}
    launch = Launch.from_env(env)
    assert (launch.rank, launch.world, launch.local_rank, launch.local_world) == (5, 8, 1, 4)
    assert launch.launcher == "torchrun" and launch.distributed
    assert Launch.from_env({**env, "ACCELERATE_MIXED_PRECISION": "no"}).launcher == "accelerate launch"
    for bad, message in (
        ({"WORLD_SIZE": "2", **TORCHRUN_ENV}, "RANK is not set"),
        ({"WORLD_SIZE": "2", "RANK": "2", **TORCHRUN_ENV}, "RANK=2 is outside WORLD_SIZE=2"),
        ({"WORLD_SIZE": "two", "RANK": "0"}, "WORLD_SIZE='two' is not an integer"),
        ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR and MASTER_PORT not set"),
    ):
        with pytest.raises(LaunchError, match=message):
            Launch.from_env(bad)


def test_single_process_job_needs_no_process_group():
    job = Job("t", Launch())
    assert job.is_main and not job.distributed and job.tag() == ""
    assert job.gather(3) == [3] and job.broadcast("x") == "x" and job.on_main(lambda: 7) == 7
    assert job.mine(["b", "a"]) == ["b", "a"] and job.resolve_device("cuda") == "cuda"
    with pytest.raises(ValueError, match="refused"):
        job.on_main(lambda: (_ for _ in ()).throw(ValueError("refused")))
    with job.progress(2, enabled=False) as bar:
        bar.update(2)


def test_a_child_process_gets_no_launcher_variables():
    launch = Launch(rank=1, world=2, local_rank=1, local_world=2, launcher="torchrun")
    env = single_process_env(launch, {"WORLD_SIZE": "2", "RANK": "1", "PATH": "/bin", **TORCHRUN_ENV})
    assert env == {"PATH": "/bin"}  # no GPU here: CUDA_VISIBLE_DEVICES untouched


# ------------------------------------------------------------------------------------------------ shards
def test_shards_are_deterministic_order_free_complete_and_balanced():
    rng = random.Random(0)
    names = [f"clip_{i:05d}" for i in range(500)]
    costs = {n: rng.uniform(1.0, 30.0) for n in names}  # clip durations, seconds
    a = assign(names, 8, costs)
    shuffled = names[:]
    rng.shuffle(shuffled)
    assert assign(shuffled, 8, costs) == a  # independent of listing order (each node lists its own folder)
    assert assign(list(reversed(names)), 8, dict(reversed(list(costs.items())))) == a
    assert sorted(a) == sorted(names) and set(a.values()) == set(range(8))  # each sample exactly once
    loads = [sum(costs[n] for n in names if a[n] == r) for r in range(8)]
    assert max(loads) - min(loads) <= max(costs.values())  # LPT: within one clip of each other
    by_count = [sum(1 for n in names if a[n] == r) for r in range(8)]
    naive = [sum(costs[n] for n in names if name_hash(n) % 8 == r) for r in range(8)]  # count/hash-based
    assert max(loads) / min(loads) < max(naive) / min(naive)  # duration-balanced beats hash-balanced
    assert len(set(by_count)) > 1  # ... because it does not give every rank the same count
    plain = assign(names, 3)  # no costs: counts differ by at most one
    assert sorted(sum(1 for v in plain.values() if v == r) for r in range(3)) == [166, 167, 167]
    with pytest.raises(ValueError, match="unique"):
        assign(["a", "a"], 2)


def test_the_per_rank_summary_table():
    rows = [
        {"rank": 0, "host": "n1", "device": "cuda:0", "clips": 30, "failed": 1, "media_s": 90.0, "busy_s": 60.0},
        {"rank": 1, "host": "n1", "device": "cuda:1", "clips": 20, "failed": 0, "media_s": 88.0, "busy_s": 30.0},
    ]
    table = format_summary(rows).splitlines()
    assert table[1].split()[-1] == "30.0" and table[2].split()[-1] == "40.0"  # clips per busy minute, per rank
    assert table[-1].split() == ["all", "50", "1", "178.0", "60.0", "50.0"]  # the job's pace: the slowest rank


# ------------------------------------------------------------------------------------------------ part files
def test_merge_gives_the_single_process_order():
    existing = [("b", "B0"), ("b", "B-dup")]
    new = [("c", "C"), ("a", "A"), ("b", "B1"), ("z", "Z")]
    assert merge_lines(existing, new, ["a", "b", "c"]) == ["B0", "A", "C", "Z"]


def test_parts_survive_a_torn_line_and_merge_atomically(tmp_path):
    out = tmp_path / "results.jsonl"
    parts = JsonlParts(out, "file")
    with parts.open(1) as f:
        f.write(json.dumps({"file": "b", "v": 1}) + "\n")
        f.write('{"file": "c", "v"')  # a kill in the middle of a line
    with parts.open(1) as f:  # the same rank resumes: the torn tail is cut, not glued to the next line
        f.write(json.dumps({"file": "c", "v": 2}) + "\n")
    with parts.open(0) as f:
        f.write(json.dumps({"file": "a", "v": 0}) + "\n")
    parts.write_errors(0, [{"file": "d", "error": "bad"}])
    assert [k for k, _ in parts.read()] == ["a", "b", "c"]
    assert parts.read_errors([0, 1]) == [{"file": "d", "error": "bad"}]
    lines = parts.merge_into([], ["a", "b", "c", "d"])
    assert [json.loads(x)["file"] for x in lines] == ["a", "b", "c"]
    assert out.read_text().splitlines() == lines and not parts.folder.exists()


# ------------------------------------------------------------------------------------------------ shared cache
def _build_in_process(target: str, log: str, start_at: float) -> str:
    def build(tmp: Path) -> None:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        (tmp / "weights.bin").write_bytes(b"w" * 100_000)
        time.sleep(0.3)  # slow enough for every other process to arrive while this one builds
        (tmp / "config.json").write_text("{}")

    time.sleep(max(0.0, start_at - time.time()))
    folder = build_once(target, build, marker="config.json")
    return (folder / "weights.bin").read_bytes().decode()[:1] + str(len(list(folder.iterdir())))


def test_shared_cache_race_builds_once_and_readers_never_see_a_partial_folder(tmp_path):
    """Six processes ask for one converted-weights folder at the same instant (six ranks loading the embedded LLM
    on first use): one builds it, the five others wait on the lock and read the finished folder."""
    target, log = tmp_path / "cache" / "hf" / "smollm2", tmp_path / "builds.log"
    start_at = time.time() + 0.5
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(6) as pool:
        got = pool.starmap(_build_in_process, [(str(target), str(log), start_at)] * 6)
    assert got == ["w2"] * 6  # every process saw both files
    assert len(log.read_text().splitlines()) == 1  # built exactly once
    assert sorted(p.name for p in target.parent.iterdir()) == [".smollm2.lock", "smollm2"]  # no temp folder left


def test_a_stale_partial_folder_is_rebuilt_and_a_lock_names_its_owner(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "half.bin").write_bytes(b"x")  # no marker: an older, interrupted conversion
    build_once(target, lambda tmp: (tmp / "config.json").write_text("{}"), marker="config.json")
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]
    with FileLock(tmp_path / ".x.lock"), pytest.raises(LockBusy, match=rf"pid {os.getpid()} on "):
        with FileLock(tmp_path / ".x.lock", blocking=False):
            pass


def test_the_embedded_llm_and_whisper_conversions_go_through_build_once(monkeypatch, tmp_path):
    import emollm.backbones.loading as loading
    from emollm.backbones import get_backbone

    calls = []

    def fake_convert(src, out):
        calls.append(out)
        (Path(out) / "config.json").write_text("{}")

    monkeypatch.setenv("EMOLLM_CACHE", str(tmp_path))
    monkeypatch.setattr(loading, "convert_gguf", fake_convert)
    monkeypatch.setattr(loading, "embedded_gguf", lambda name: tmp_path / "x.gguf")
    spec = get_backbone("smollm2")
    first = loading.resolve_llm_path(spec, None)
    assert loading.resolve_llm_path(spec, None) == first and len(calls) == 1  # the second call reuses it
    assert calls[0] != first and calls[0].parent == first.parent  # converted into a temp sibling, then renamed
