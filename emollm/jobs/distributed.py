"""Data-parallel corpus jobs under the launchers training already uses: ``torchrun``, ``accelerate launch`` and
``srun torchrun`` on Slurm. The command line does not change; the launcher goes in front::

    torchrun --nproc-per-node 8 -m emollm features extract --input clips/ --encoders whisper --out cache/
    accelerate launch --num_processes 8 -m emollm merr build --config configs/merr/build.yaml

Every corpus job (``features extract``, ``merr build``, ``analyze DIR --out``, ``eval``, ``bench backbones``) runs
the same way:

* **Who am I.** :class:`Launch` reads the launcher's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``; the same ones ``emollm train`` gets through accelerate).
  Without them the job is the plain single process, unchanged.
* **Talking.** A ``gloo`` process group carries only small Python objects (barriers, a gather of per-rank results,
  the broadcast of a refusal), so it works on CPUs and GPUs alike and needs no NCCL. Each rank pins its own GPU
  (``LOCAL_RANK``): ``device: cuda`` in a config means this rank's GPU.
* **Shards.** :func:`assign` gives every sample to one rank, as a pure function of the sample names and their costs:
  longest-first onto the least-loaded rank (LPT), with ties broken by a hash of the name. The shard is the same on
  every rank without any communication, whatever order each node lists its folder in, and the same again after a
  restart with the same number of processes. Costs come from :meth:`Job.estimate` (``media_cost``: a fixed second
  plus the clip's duration from its header), computed on a hash slice per rank and gathered, so a long clip does not
  leave one rank working while the others wait.
* **Resume.** Completion is recorded per sample (a feature file, a stage artifact, a line of a part file), never per
  rank, so a job killed at any point and started again with the same or another number of processes redoes exactly
  the unfinished samples. Append-style outputs are written as per-rank part files (:class:`JsonlParts`, appended and
  fsynced per line) and merged by rank 0 into exactly the file one process writes (same order, same lines), only
  after every rank has passed the final barrier: a rank that dies makes the launcher stop the job (its failure
  report names the rank), and nothing is merged as if complete.
* **Progress.** Each rank counts finished samples into the launcher's key-value store; rank 0 shows one bar for the
  whole job (:class:`Progress`). At the end :meth:`Job.summary` prints samples, failures, media seconds, busy time and
  throughput per rank.

Variables: ``EMOLLM_DIST_TIMEOUT_S`` (how long a rank waits for the others at a barrier; default 24 h — a dead rank
ends the job through the launcher long before), ``EMOLLM_DIST_FS_WAIT_S`` (how long rank 0 waits for files written by
other nodes to become visible on a network filesystem; default 120 s).
"""

from __future__ import annotations

import atexit
import hashlib
import heapq
import itertools
import json
import os
import pickle
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = [
    "Job",
    "JsonlParts",
    "Launch",
    "LaunchError",
    "Progress",
    "assign",
    "format_summary",
    "media_cost",
    "merge_lines",
    "name_hash",
    "single_process_env",
    "wait_visible",
]

TIMEOUT_ENV = "EMOLLM_DIST_TIMEOUT_S"
FS_WAIT_ENV = "EMOLLM_DIST_FS_WAIT_S"
_DEFAULT_TIMEOUT_S = 24 * 3600.0
_DEFAULT_FS_WAIT_S = 120.0


class LaunchError(ValueError):
    """The launcher's variables are inconsistent; the message names the variable."""


# ================================================================================================ who am I


@dataclass(frozen=True)
class Launch:
    """This process's place in a launch: global rank and world size, rank and size on this node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    launcher: str = "single process"

    @property
    def distributed(self) -> bool:
        """More than one process takes part."""
        return self.world > 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Launch:
        """Read ``torchrun``'s / ``accelerate launch``'s variables (a single process when ``WORLD_SIZE`` is unset).

        Raises:
            LaunchError: A variable that is not an integer, a rank outside the world, or no rendezvous address.
        """
        env = os.environ if env is None else env
        if "WORLD_SIZE" not in env:
            return cls()

        def num(var: str, default: int | None = None) -> int:
            raw = env.get(var)
            if raw is None:
                if default is None:
                    raise LaunchError(f"{var} is not set but WORLD_SIZE is; start the job with torchrun or accelerate")
                return default
            try:
                return int(raw)
            except ValueError:
                raise LaunchError(f"{var}={raw!r} is not an integer (set by the launcher)") from None

        world = num("WORLD_SIZE")
        if world < 1:
            raise LaunchError(f"WORLD_SIZE={world}: must be at least 1")
        if world == 1:
            return cls(launcher=_launcher_name(env))
        rank = num("RANK")
        local_rank = num("LOCAL_RANK", rank)
        local_world = num("LOCAL_WORLD_SIZE", world)
        if not 0 <= rank < world:
            raise LaunchError(f"RANK={rank} is outside WORLD_SIZE={world}")
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not env.get(v)]
        if missing:
            raise LaunchError(
                f"{' and '.join(missing)} not set: start the job with torchrun or accelerate launch, which set them"
            )
        return cls(rank, world, local_rank, local_world, _launcher_name(env))


def _launcher_name(env: Mapping[str, str]) -> str:
    if any(k.startswith("ACCELERATE_") for k in env):
        return "accelerate launch"
    if "TORCHELASTIC_RUN_ID" in env:
        return "torchrun"
    return "env:// variables"


def _ensure_group() -> None:
    """Join the launch's gloo process group once per process (kept for the process's life)."""
    from datetime import timedelta

    import torch.distributed as dist

    if dist.is_initialized():
        return
    try:
        timeout = float(os.environ.get(TIMEOUT_ENV, _DEFAULT_TIMEOUT_S))
    except ValueError:
        raise LaunchError(f"{TIMEOUT_ENV}={os.environ[TIMEOUT_ENV]!r}: give seconds, e.g. 86400") from None
    dist.init_process_group("gloo", timeout=timedelta(seconds=timeout))
    atexit.register(_leave_group)


def _leave_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # interpreter shutdown after a failed peer: nothing left to release
            pass


def pin_device(launch: Launch) -> str:
    """This rank's GPU (``cuda:LOCAL_RANK``, made the current device so ``"cuda"`` means it), else ``"cpu"``."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    index = launch.local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return f"cuda:{index}"


#: What the launchers set for their workers; a subprocess that should be a plain single process must not inherit it.
LAUNCH_VARIABLES = (
    *("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE"),
    *("ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT"),
    *("TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS"),
    *("TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_ERROR_FILE", "TORCHELASTIC_SIGNALS_TO_HANDLE"),
)


def single_process_env(launch: Launch, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process that works alone on this rank's device: the launcher's variables removed
    (else it would try to join the job's process group) and, on a GPU node, ``CUDA_VISIBLE_DEVICES`` narrowed to this
    rank's GPU."""
    env = dict(os.environ if env is None else env)
    for var in LAUNCH_VARIABLES:
        env.pop(var, None)
    if launch.distributed:
        visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        try:
            import torch

            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        except ImportError:
            count = 0
        if count:
            index = launch.local_rank % count
            env["CUDA_VISIBLE_DEVICES"] = visible[index] if index < len(visible) else str(index)
    return env


# ================================================================================================ shards


def name_hash(name: str) -> int:
    """A stable 64-bit hash of a sample name (sha256; never Python's salted ``hash``)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")


def assign(names: Iterable[str], world: int, costs: Mapping[str, float] | None = None) -> dict[str, int]:
    """Sample name -> rank: longest first onto the least-loaded rank (LPT), ties by :func:`name_hash`.

    A pure function of the set of names, their costs and ``world`` (never of the order given), so every rank computes
    the same assignment alone. Without costs every sample costs 1 and the shards differ in size by at most one.

    Raises:
        ValueError: A name given twice, or ``world < 1``.
    """
    names = list(names)
    if world < 1:
        raise ValueError(f"world size {world}: must be at least 1")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:3]
        raise ValueError(f"sample names must be unique to be sharded; given twice: {dup}")

    def cost(n: str) -> float:
        return float(costs[n]) if costs is not None else 1.0

    order = sorted(names, key=lambda n: (-cost(n), name_hash(n), n))
    loads = [(0.0, r) for r in range(world)]
    out: dict[str, int] = {}
    for n in order:
        load, r = heapq.heappop(loads)
        out[n] = r
        heapq.heappush(loads, (load + cost(n), r))
    return out


def media_cost(path: str | os.PathLike[str]) -> float:
    """Estimated work of one media file in seconds-of-media units: 1 (opening, the model's fixed part) + its duration
    from the header (:func:`emollm.media.probe`, ~1-3 ms, nothing decoded). A file whose header cannot be read costs
    1: it fails fast."""
    from emollm.media import probe

    try:
        return 1.0 + float(probe(path).duration or 0.0)
    except Exception:  # any unreadable header: the job itself reports it
        return 1.0


def wait_visible(path: Path, *, size: int = 0, timeout_s: float | None = None) -> bool:
    """Wait until ``path`` exists with at least ``size`` bytes (a file another node wrote may appear late on a network
    filesystem: NFS caches a folder's listing for up to ``acdirmax``). Returns whether it did within the timeout."""
    timeout = float(os.environ.get(FS_WAIT_ENV, _DEFAULT_FS_WAIT_S)) if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout
    while True:
        try:
            if path.stat().st_size >= size:
                return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        try:  # listing the folder makes an NFS client revalidate it
            os.listdir(path.parent)
        except OSError:
            pass
        time.sleep(0.5)


# ================================================================================================ the job


_JOB_IDS = itertools.count()
"""Jobs made by this process, in order: every rank makes the same jobs in the same order, so the n-th job has the same
id on every rank and its progress counters never collide with an earlier job's (``eval ablate`` runs several)."""


class Job:
    """One data-parallel job: this rank's place, the collectives it needs, its shard, progress and summary.

    A single process (no launcher) is a job of world size 1: every collective is a no-op and nothing imports
    ``torch.distributed``.

    Args:
        name: The job's name (``"features"``, ``"merr"``, ...): it prefixes the progress keys and messages.
        launch: The launch (default: read from the environment).
        unit: What one sample is called in the bar and the summary.
    """

    def __init__(self, name: str, launch: Launch | None = None, *, unit: str = "clip"):
        self.name = name
        self.id = next(_JOB_IDS)
        self.launch = launch or Launch.from_env()
        self.unit = unit
        self.rank, self.world = self.launch.rank, self.launch.world
        self.host = socket.gethostname()
        self.device = "cpu"
        self._phase = 0
        self.t0 = time.perf_counter()
        self.done = 0
        self.failed = 0
        self.cost = 0.0
        self.busy_s = 0.0
        if self.world > 1:
            _ensure_group()
            self.device = pin_device(self.launch)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the merged outputs and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def tag(self) -> str:
        """``[rank R/W] `` for messages of a distributed job, empty otherwise."""
        return f"[rank {self.rank}/{self.world}] " if self.distributed else ""

    def resolve_device(self, requested: str | None) -> str | None:
        """A config's device for this rank: ``cuda`` (or ``cuda:0`` with one GPU per rank) becomes this rank's GPU."""
        if not self.distributed or requested is None or not requested.startswith("cuda"):
            return requested
        return self.device if self.device.startswith("cuda") else requested

    # ---------------------------------------------------------------------------------------- collectives
    def barrier(self) -> None:
        """Wait for every rank."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on rank 0 only; every rank returns its result, or raises the error it raised (a lock refused,
        a folder of other settings), so all ranks stop together with the same message."""
        if not self.distributed:
            return fn()
        outcome: tuple[str, Any] = ("ok", None)
        error: BaseException | None = None
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except Exception as e:
                error = e
                try:  # the other ranks get the same exception if it survives pickling, else its message
                    sent: BaseException = pickle.loads(pickle.dumps(e))
                except Exception:
                    sent = RuntimeError(str(e))
                outcome = ("error", sent)
        kind, value = self.broadcast(outcome)
        if kind == "error":
            raise error if error is not None else value
        return value

    # ---------------------------------------------------------------------------------------- shards
    def assign(self, names: Iterable[str], costs: Mapping[str, float] | None = None) -> dict[str, int]:
        """:func:`assign` for this job's world size."""
        return assign(names, self.world, costs)

    def mine(self, names: Sequence[str], costs: Mapping[str, float] | None = None) -> list[str]:
        """This rank's names, in the order given."""
        if not self.distributed:
            return list(names)
        owner = self.assign(names, costs)
        return [n for n in names if owner[n] == self.rank]

    def estimate(self, names: Sequence[str], fn: Callable[[str], float]) -> dict[str, float]:
        """``fn(name)`` for every name, each rank computing a hash slice, gathered to all (one pass over the corpus,
        not one per rank)."""
        if not self.distributed:
            return {n: fn(n) for n in names}
        part = {n: fn(n) for n in names if name_hash(n) % self.world == self.rank}
        out: dict[str, float] = {}
        for p in self.gather(part):
            out.update(p)
        return out

    # ---------------------------------------------------------------------------------------- progress, summary
    def progress(self, total: int, *, initial: int = 0, desc: str = "", enabled: bool = True) -> Progress:
        """One bar for the whole job on rank 0 (see :class:`Progress`); every rank creates it at the same point."""
        self._phase += 1
        return Progress(self, total, initial=initial, desc=desc or self.name, enabled=enabled)

    def count(self, *, done: int = 0, failed: int = 0, cost: float = 0.0) -> None:
        """Add to this rank's counters for :meth:`summary`."""
        self.done += done
        self.failed += failed
        self.cost += cost

    def summary(self) -> list[dict[str, Any]]:
        """Every rank's counters (gathered; every rank must call it): samples done and failed, media seconds, busy
        and wall seconds, throughput."""
        wall = time.perf_counter() - self.t0
        row = {
            "rank": self.rank,
            "host": self.host,
            "device": self.device,
            self.unit + "s": self.done,
            "failed": self.failed,
            "media_s": round(self.cost, 3),
            "busy_s": round(self.busy_s or wall, 3),
            "wall_s": round(wall, 3),
        }
        return self.gather(row)


class Progress:
    """One progress bar for a whole data-parallel job.

    Each rank adds its finished samples to a counter in the launcher's key-value store (the ``TCPStore`` the process
    group was set up with: one small message per sample); rank 0 reads the sum twice a second into its bar. Other
    ranks show nothing. :meth:`close` waits for every rank (a barrier) and records how long this rank was busy.

    Args:
        job: The job.
        total: Samples of the whole job.
        initial: Samples already done before this run (resume).
        desc: Bar label.
        enabled: Show the bar (rank 0 only in any case).
    """

    def __init__(self, job: Job, total: int, *, initial: int = 0, desc: str = "", enabled: bool = True):
        from tqdm import tqdm

        self.job = job
        self.initial = initial
        self.key = f"emollm/{job.name}/{job.id}/{job._phase}/done"
        self.started = time.perf_counter()
        self.store = _default_store() if job.distributed else None
        show = enabled and job.is_main
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=job.unit, disable=not show, file=sys.stderr)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if job.distributed and self.store is not None and show:
            self._thread = threading.Thread(target=self._poll, name=f"{job.name}-progress", daemon=True)
            self._thread.start()

    def update(self, n: int = 1) -> None:
        """``n`` more samples finished on this rank."""
        if self.store is None:
            if self.job.is_main:
                self.bar.update(n)
            return
        self.store.add(self.key, n)

    def write(self, message: str) -> None:
        """A line above the bar (rank 0) or on this rank's stderr, tagged with the rank."""
        if self.job.is_main:
            self.bar.write(self.job.tag() + message, file=sys.stderr)
        else:
            print(self.job.tag() + message, file=sys.stderr, flush=True)

    def set_postfix_str(self, text: str) -> None:
        if self.job.is_main:
            self.bar.set_postfix_str(text)

    def _refresh(self) -> None:
        value = int(self.store.add(self.key, 0))  # type: ignore[union-attr]
        self.bar.n = self.initial + value
        self.bar.refresh()

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self._refresh()
            except Exception:  # the store went away (a peer died): the launcher ends the job
                return

    def close(self) -> None:
        """Wait for every rank (barrier), then close the bar at the job's total."""
        self.job.busy_s += time.perf_counter() - self.started
        self.job.barrier()
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._refresh()
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:  # a failing rank does not wait at a barrier: the launcher stops the others
            self._stop.set()
            self.bar.close()


def _default_store() -> Any:
    try:
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store()
    except Exception:  # no store: rank 0 counts its own samples only
        return None


def format_summary(rows: Sequence[Mapping[str, Any]], unit: str = "clip") -> str:
    """The per-rank throughput table of :meth:`Job.summary` rows, with a total line.

    ``per min`` is samples per minute of the rank's busy time; the total's is samples per minute of the slowest
    rank's busy time (the job's own pace); ``media s`` is the estimated cost (:func:`media_cost`).
    """
    key = unit + "s"
    head = (
        f"{'rank':>4}  {'host':<16} {'device':<8} {unit + 's':>7} {'failed':>6} {'media s':>9} {'busy s':>8} "
        f"{'per min':>8}"
    )
    lines = [head]
    for r in rows:
        rate = 60.0 * r[key] / r["busy_s"] if r["busy_s"] > 0 else 0.0
        lines.append(
            f"{r['rank']:>4}  {str(r['host'])[:16]:<16} {r['device']:<8} {r[key]:>7} {r['failed']:>6} "
            f"{r['media_s']:>9.1f} {r['busy_s']:>8.1f} {rate:>8.1f}"
        )
    done = sum(r[key] for r in rows)
    slowest = max((r["busy_s"] for r in rows), default=0.0)
    rate = 60.0 * done / slowest if slowest > 0 else 0.0
    lines.append(
        f"{'all':>4}  {'':<16} {'':<8} {done:>7} {sum(r['failed'] for r in rows):>6} "
        f"{sum(r['media_s'] for r in rows):>9.1f} {slowest:>8.1f} {rate:>8.1f}"
    )
    return "\n".join(lines)


# ================================================================================================ part files


def merge_lines(existing: Sequence[tuple[str, str]], new: Iterable[tuple[str, str]], order: Sequence[str]) -> list[str]:
    """The lines one process would have written: ``existing`` (an earlier run's file, in its order) then the new
    ``(key, line)`` pairs in ``order`` (keys not in ``order`` after them, by key). The first line of a key wins."""
    seen: set[str] = set()
    out: list[str] = []
    for key, line in existing:
        if key not in seen:
            seen.add(key)
            out.append(line)
    fresh: dict[str, str] = {}
    for key, line in new:
        if key not in seen and key not in fresh:
            fresh[key] = line
    position = {k: i for i, k in enumerate(order)}
    out += [fresh[k] for k in sorted(fresh, key=lambda k: (position.get(k, len(position)), k))]
    return out


class JsonlParts:
    """Per-rank parts of an append-only JSONL output: ``.<name>.parts/rank-00003.jsonl`` beside ``out``.

    Each rank appends (and fsyncs) its own lines to its own part; rank 0 merges every part into ``out``
    (:meth:`merge_into`) once all ranks are done, and removes them. A later run with another number of processes reads
    every part that is there, whichever rank wrote it, so nothing done is redone.

    Args:
        out: The output file one process writes.
        key: The record field that names a sample (``"file"``, ``"name"``).
    """

    def __init__(self, out: Path, key: str):
        self.out = Path(out)
        self.key = key
        self.folder = self.out.parent / f".{self.out.name}.parts"

    def path(self, rank: int, suffix: str = ".jsonl") -> Path:
        return self.folder / f"rank-{rank:05d}{suffix}"

    def exists(self) -> bool:
        return self.folder.is_dir() and any(self.folder.glob("rank-*.jsonl"))

    def _records(self, path: Path) -> list[tuple[str, str]]:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            try:
                rec = json.loads(line)
                out.append((str(rec[self.key]), line))
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line torn by a kill: that sample is redone
        return out

    def read(self) -> list[tuple[str, str]]:
        """``(key, line)`` of every part's complete lines (parts in name order)."""
        if not self.folder.is_dir():
            return []
        out: list[tuple[str, str]] = []
        for p in sorted(self.folder.glob("rank-*.jsonl")):
            if not p.name.endswith(".errors.jsonl"):
                out += self._records(p)
        return out

    def open(self, rank: int) -> IO[str]:
        """This rank's part, opened for appending, with a line torn by an earlier kill cut off first."""
        path = self.path(rank)
        self.folder.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                with open(path, "r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)
        return open(path, "a", encoding="utf-8")

    def write_errors(self, rank: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """This rank's failures of this run (atomically; replaced by the next run of the same rank)."""
        from emollm.utils.io import atomic_write_text

        path = self.path(rank, ".errors.jsonl")
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def read_errors(self, ranks: Iterable[int]) -> list[dict[str, Any]]:
        """The failures the given ranks recorded in this run."""
        rows = []
        for r in ranks:
            for _, line in self._records(self.path(r, ".errors.jsonl")):
                rows.append(json.loads(line))
        return rows

    def wait_for(self, sizes: Mapping[int, int]) -> None:
        """Wait until each rank's part is visible with the size that rank reported (network filesystems).

        Raises:
            RuntimeError: A part did not appear in time; nothing is merged.
        """
        for rank, size in sizes.items():
            if size and not wait_visible(self.path(rank), size=size):
                raise RuntimeError(
                    f"{self.path(rank)}: rank {rank} reported {size} bytes written but the file is not visible here "
                    f"(a network filesystem's cache?); nothing merged. Raise {FS_WAIT_ENV} or rerun the command"
                )

    def merge_into(self, existing: Sequence[tuple[str, str]], order: Sequence[str]) -> list[str]:
        """Write ``out`` = ``existing`` lines + every part's new lines in ``order`` (atomically), remove the parts.

        Returns:
            The lines written.
        """
        from emollm.utils.io import atomic_write_text

        lines = merge_lines(existing, self.read(), order)
        atomic_write_text(self.out, "".join(line + "\n" for line in lines))
        self.remove()
        return lines

    def remove(self) -> None:
        """Delete the part files (after a merge)."""
        if self.folder.is_dir():
            for p in self.folder.iterdir():
                try:
                    p.unlink()
                except OSError:
                    pass
            try:
                self.folder.rmdir()
            except OSError:
                pass
