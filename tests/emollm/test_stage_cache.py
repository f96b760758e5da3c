"""emollm.utils.stage_cache: keyed per-item artifacts (hit, miss on a settings change, torn file, error artifacts,
threads), file fingerprints and their index, the run lock and temp-file sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from emollm.utils import stage_cache
from emollm.utils.stage_cache import (
    FingerprintIndex,
    RunLock,
    StageCache,
    StageJob,
    file_fingerprint,
    remove_temp_files,
    stable_hash,
)


class Counting:
    """A compute function that counts its calls."""

    def __init__(self, value=None, error: Exception | None = None):
        self.calls = 0
        self.value = value
        self.error = error

    def __call__(self):
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.value


def _jobs(settings: dict, fns: dict[str, Counting]) -> list[StageJob]:
    sid = stable_hash(settings)
    return [StageJob(n, stable_hash(["s", sid, n]), fn) for n, fn in fns.items()]


def test_stable_hash_ignores_dict_order_and_sees_values():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    assert len(stable_hash(None)) == 64


def test_hit_then_miss_when_settings_change(tmp_path):
    fns = {"a": Counting({"x": 1}), "b": Counting([2])}
    cache = StageCache(tmp_path)
    arts = cache.run("s", _jobs({"v": 1}, fns), thread_safe=True)
    assert {n: a["result"] for n, a in arts.items()} == {"a": {"x": 1}, "b": [2]}
    assert (cache.stats["s"].computed, cache.stats["s"].cached) == (2, 0)
    art = json.loads(cache.path("s", "a").read_text())
    assert art == {"key": arts["a"]["key"], "name": "a", "stage": "s", "ok": True, "result": {"x": 1}}

    again = StageCache(tmp_path)
    assert again.run("s", _jobs({"v": 1}, fns), thread_safe=True) == arts
    assert (again.stats["s"].computed, again.stats["s"].cached) == (0, 2)
    assert [f.calls for f in fns.values()] == [1, 1]

    changed = StageCache(tmp_path)
    changed.run("s", _jobs({"v": 2}, fns), thread_safe=True)  # another settings id: every key differs
    assert (changed.stats["s"].computed, changed.stats["s"].cached) == (2, 0)
    assert [f.calls for f in fns.values()] == [2, 2]


def test_torn_or_foreign_artifact_counts_as_missing(tmp_path):
    fns = {"a": Counting(1), "b": Counting(2)}
    cache = StageCache(tmp_path)
    cache.run("s", _jobs({}, fns), thread_safe=False)
    path_a = cache.path("s", "a")
    path_a.write_bytes(path_a.read_bytes()[:10])  # a power cut mid-write
    cache.path("s", "b").write_text("[1, 2]\n")  # parses, but is not an artifact
    again = StageCache(tmp_path)
    arts = again.run("s", _jobs({}, fns), thread_safe=False)
    assert arts["a"]["result"] == 1 and arts["b"]["result"] == 2
    assert again.stats["s"].computed == 2 and json.loads(path_a.read_text())["ok"]


def test_fingerprint_change_invalidates(tmp_path):
    clip = tmp_path / "clip.bin"
    clip.write_bytes(b"one")
    fn = Counting("r")
    index = FingerprintIndex(tmp_path / "fp.json")
    cache = StageCache(tmp_path / "cache")

    def run() -> StageCache:
        key = stable_hash(["s", index.get(clip)])
        cache.run("s", [StageJob("clip", key, fn)], thread_safe=True)
        return cache

    run()
    run()
    assert fn.calls == 1
    clip.write_bytes(b"two")
    run()
    assert fn.calls == 2


def test_error_artifacts_are_cached_until_retried(tmp_path):
    bad = Counting(error=ValueError("corrupt clip"))
    cache = StageCache(tmp_path)
    arts = cache.run("s", _jobs({}, {"x": bad}), thread_safe=True)
    assert arts["x"]["ok"] is False and arts["x"]["error"] == {"type": "ValueError", "message": "corrupt clip"}
    assert cache.stats["s"].errors == 1
    again = StageCache(tmp_path)
    again.run("s", _jobs({}, {"x": bad}), thread_safe=True)
    assert bad.calls == 1 and again.stats["s"].errors == 1 and again.stats["s"].cached == 1
    retry = StageCache(tmp_path)
    retry.run("s", _jobs({}, {"x": bad}), thread_safe=True, retry_errors=True)
    assert bad.calls == 2 and retry.stats["s"].computed == 1


def test_interrupt_propagates_and_stores_nothing(tmp_path):
    cache = StageCache(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        cache.run("s", _jobs({}, {"x": Counting(error=KeyboardInterrupt())}), thread_safe=False)
    assert not cache.path("s", "x").exists()


def test_not_cacheable_reads_and_writes_nothing(tmp_path):
    fn = Counting(3)
    for _ in range(2):
        cache = StageCache(tmp_path)
        assert cache.run("s", _jobs({}, {"x": fn}), thread_safe=True, cacheable=False)["x"]["result"] == 3
        assert cache.stats["s"].instant == 1
    assert fn.calls == 2 and not (tmp_path / "s").exists()


def test_threads_give_the_same_artifacts(tmp_path):
    names = [f"c{i:02d}" for i in range(8)]
    threads: set[str] = set()

    def make(n: str):
        def fn():
            threads.add(threading.current_thread().name)
            return n.upper()

        return fn

    jobs = [StageJob(n, stable_hash(n), make(n)) for n in names]
    serial = StageCache(tmp_path / "a").run("s", jobs, thread_safe=True)
    parallel = StageCache(tmp_path / "b", workers=3, label="t").run("s", jobs, thread_safe=True)
    assert serial == parallel and list(parallel) != [] and sorted(parallel) == names
    assert any(t.startswith("t-s") for t in threads)
    assert (tmp_path / "a" / "s" / "c03.json").read_bytes() == (tmp_path / "b" / "s" / "c03.json").read_bytes()


def test_file_fingerprint_small_and_large(tmp_path, monkeypatch):
    small = tmp_path / "small.bin"
    small.write_bytes(b"abc")
    other = tmp_path / "other.bin"
    other.write_bytes(b"abd")
    assert file_fingerprint(small) != file_fingerprint(other)
    monkeypatch.setattr(stage_cache, "_FULL_HASH_LIMIT", 8)
    monkeypatch.setattr(stage_cache, "_CHUNK", 4)
    big = tmp_path / "big.bin"
    big.write_bytes(b"HEAD" + b"middle" + b"TAIL")
    fp = file_fingerprint(big)
    big.write_bytes(b"HEAD" + b"MIDDLE" + b"TAIL")
    assert file_fingerprint(big) == fp  # only the ends and the size are read
    big.write_bytes(b"HEAD" + b"middle" + b"TAIX")
    assert file_fingerprint(big) != fp


def test_fingerprint_index_memoises_and_rehashes_on_change(tmp_path, monkeypatch):
    clip = tmp_path / "clip.bin"
    clip.write_bytes(b"one")
    calls = []
    real = stage_cache.file_fingerprint
    monkeypatch.setattr(stage_cache, "file_fingerprint", lambda p: calls.append(p) or real(p))
    index = FingerprintIndex(tmp_path / "fp.json")
    fp = index.get(clip)
    index.save()
    reloaded = FingerprintIndex(tmp_path / "fp.json")
    assert reloaded.get(clip) == fp and len(calls) == 1 and not reloaded.dirty
    clip.write_bytes(b"twoo")
    assert reloaded.get(clip) != fp and len(calls) == 2 and reloaded.dirty
    (tmp_path / "fp.json").write_text("{torn")
    assert FingerprintIndex(tmp_path / "fp.json").entries == {}


def test_run_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path):
    import socket

    lock = tmp_path / "build.lock"
    with RunLock(lock, owner="`job`"):
        assert lock.read_text() == f"{os.getpid()} {socket.gethostname()}"
    assert not lock.exists()
    lock.write_text(str(os.getppid()))  # a live process that is not us
    with pytest.raises(RuntimeError, match=r"another `job` \(pid \d+\) is running"), RunLock(lock, owner="`job`"):
        pass
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(str(dead.pid))  # the older format (no host): written on this host
    with RunLock(lock):
        assert lock.read_text().split()[0] == str(os.getpid())
    # a folder shared between nodes: a pid of another host means nothing here, so its lock is never taken over
    lock.write_text(f"{dead.pid} gpu-node-17")
    with pytest.raises(RuntimeError, match=r"pid \d+ on host gpu-node-17\) holds .* remove .*build.lock"):
        RunLock(lock, owner="`job`").__enter__()
    assert lock.read_text() == f"{dead.pid} gpu-node-17"


def test_remove_temp_files(tmp_path):
    (tmp_path / "cache" / "s").mkdir(parents=True)
    stale = tmp_path / "cache" / "s" / ".a.json.x1y2.tmp"
    stale.write_text("{")
    keep = tmp_path / "cache" / "s" / "a.json"
    keep.write_text("{}")
    assert remove_temp_files(tmp_path) == 1
    assert not stale.exists() and keep.exists()
