"""``features extract`` and ``analyze DIR --out`` under ``torchrun`` (and ``accelerate launch``) with 2 CPU processes
(gloo): the same files as one process, a bad file recorded as one process records it, a second writer refused, and a
killed rank never merged and resumed. MERR, eval and bench have theirs beside their recipes' tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emollm.media import fixtures

REPO = Path(__file__).resolve().parents[2]


def launch_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    return env | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"} | extra


def emollm_cmd(*args: str, nproc: int = 1) -> list[str]:
    """``python -m emollm ...``, or the same under ``torchrun --standalone`` (a free port of its own)."""
    if nproc == 1:
        return [sys.executable, "-m", "emollm", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "emollm", *args]  # fmt: skip


def accelerate_cmd(*args: str, nproc: int = 2) -> list[str]:
    """``accelerate launch -m emollm ...`` with real CPU processes (OFFLINE.md: ``--cpu`` would start only one)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", f"--num_processes={nproc}",
            "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no", "--main_process_port=0", "-m",
            "emollm", *args]  # fmt: skip


def run(cmd: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    env = launch_env(ACCELERATE_USE_CPU="true") if "accelerate.commands.launch" in cmd else launch_env()
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Clips of 0.5-3 s (unequal costs), one without a face, one corrupt file."""
    root = tmp_path_factory.mktemp("clips")
    for i in range(6):
        photo = ("astronaut", "grace_hopper")[i % 2]
        fixtures.make_face_clip(root / f"clip{i}.mp4", photo=photo, seconds=0.5 + 0.5 * i, audio="tone")
    fixtures.make_noface_clip(root / "noface.mp4", seconds=1.0, audio="tone")
    fixtures.make_corrupt_file(root / "broken.mp4", kind="garbage")
    return root


FER = ["--encoders", "fer", "--face-detector", "haar", "--frame-policy", "uniform:4", "--workers", "1"]


def test_features_two_processes_write_the_single_process_files(clips, tmp_path):
    one = run(emollm_cmd("features", "extract", "--input", str(clips), "--out", str(tmp_path / "one"), *FER))
    two = run(emollm_cmd("features", "extract", "--input", str(clips), "--out", str(tmp_path / "two"), *FER, nproc=2))
    assert one.returncode == 1, one.stderr  # one bad file: exit 1, as always
    assert two.returncode != 0 and "exitcode  : 1" in two.stderr  # rank 0's status, reported by the launcher
    assert folder_bytes(tmp_path / "one") == folder_bytes(tmp_path / "two")  # features, _missing, failed.jsonl
    acc = run(accelerate_cmd("features", "extract", "--input", str(clips), "--out", str(tmp_path / "acc"), *FER))
    assert "emollm features: 2 processes (accelerate launch)" in acc.stderr, acc.stderr[-3000:]
    assert folder_bytes(tmp_path / "acc") == folder_bytes(tmp_path / "one")  # the other launcher, the same files
    (folder,) = (tmp_path / "two").iterdir()
    failed = [json.loads(x) for x in (folder / "failed.jsonl").read_text().splitlines()]
    assert [f["name"] for f in failed] == ["broken"]  # recorded by whichever rank had it, as one process does
    assert two.stdout.count("6 extracted, 0 already cached, 1 missing the modality, 1 failed") == 1  # rank 0 only
    table = two.stderr[two.stderr.index("emollm features: 2 processes") :].splitlines()
    assert [line.split()[0] for line in table[2:5]] == ["0", "1", "all"] and table[4].split()[1] == "7"


def test_a_second_writer_is_refused_by_every_rank(clips, tmp_path):
    from emollm.jobs.features import lock_cache_folder

    out = tmp_path / "c"
    with lock_cache_folder(out / "F"):  # another extraction holds the folder
        proc = run(emollm_cmd("features", "extract", "--input", str(clips), "--out", str(out), *FER, "--name",
                              "fer=F", nproc=2))  # fmt: skip
    assert proc.returncode != 0
    assert proc.stderr.count(f"is being written by another `emollm features extract` (pid {os.getpid()}") == 1
    assert sorted(p.name for p in (out / "F").iterdir()) == [".lock"]  # no rank wrote anything


# ------------------------------------------------------------------------------------------------ analyze
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny random checkpoint whose face branch is the live FER tower (cheap, deterministic)."""
    import torch

    from emollm.checkpoints import save_checkpoint
    from emollm.model.configuration import ModalityConfig

    from .conftest import make_tiny

    torch.manual_seed(0)
    model, proc = make_tiny("llama2", modalities={"face": ModalityConfig(encoder="fer", feature_dim=7)})
    return save_checkpoint(model, proc, tmp_path_factory.mktemp("ckpt") / "tiny")


def analyze_cmd(clips: Path, ckpt: Path, out: Path, nproc: int = 1) -> list[str]:
    return emollm_cmd("analyze", str(clips), "--out", str(out), "--checkpoint", str(ckpt), "--labels",
                      "happy,sad,neutral", "--no-asr", "--max-new-tokens", "4", nproc=nproc)  # fmt: skip


def results(path: Path) -> list[dict]:
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    for r in rows:
        r.pop("timings", None)  # wall-clock seconds: the one field that differs between runs
    return rows


def kill_rank(proc: subprocess.Popen, rank: int, when: Path, lines: int, timeout: float = 180) -> None:
    """SIGKILL the worker of ``rank`` once its part ``when`` holds ``lines`` lines."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if when.is_file() and len(when.read_text().splitlines()) >= lines:
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                    parent = int(Path(f"/proc/{pid}/stat").read_text().split()[3])
                except OSError:
                    continue
                if parent == proc.pid and f"RANK={rank}".encode() in environ:
                    os.kill(int(pid), signal.SIGKILL)
                    return
        time.sleep(0.02)
    raise AssertionError(f"rank {rank} never wrote {lines} lines to {when}")


def test_analyze_a_killed_rank_is_never_merged_and_the_rerun_writes_the_single_process_file(
    clips, checkpoint, tmp_path
):
    ref = tmp_path / "ref.jsonl"
    assert run(analyze_cmd(clips, checkpoint, ref)).returncode == 1  # one process; the corrupt file: exit 1
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(analyze_cmd(clips, checkpoint, out, nproc=2), cwd=REPO, env=launch_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    kill_rank(proc, 1, tmp_path / ".out.jsonl.parts" / "rank-00001.jsonl", 1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Signal 9 (SIGKILL)" in err  # the launcher names the dead rank ...
    assert not out.exists()  # ... and nothing was merged as if complete
    parts = sorted((tmp_path / ".out.jsonl.parts").glob("rank-*.jsonl"))
    done = {json.loads(x)["file"] for p in parts for x in p.read_text().splitlines() if x.endswith("}")}
    assert done  # finished files on disk, in the ranks' parts
    again = run(analyze_cmd(clips, checkpoint, out, nproc=2))
    assert again.returncode != 0 and "exitcode  : 1" in again.stderr  # rank 0's exit 1: the corrupt file
    assert f"7/8 files analysed into {out} ({len(done)} from an earlier run)" in again.stderr  # none redone
    assert results(out) == results(ref)  # the lines one process writes, in its order
    assert (tmp_path / "out.errors.jsonl").read_bytes() == (tmp_path / "ref.errors.jsonl").read_bytes()
    assert not (tmp_path / ".out.jsonl.parts").exists()  # merged and removed
    assert "emollm analyze: 2 processes (torchrun)" in again.stderr  # the per-rank throughput table


def test_one_process_folds_in_the_parts_of_a_killed_data_parallel_run(tmp_path):
    from emollm.apps.analysis import Analysis
    from emollm.jobs.batch import run_batch
    from emollm.jobs.distributed import JsonlParts

    inputs = [tmp_path / f"{c}.txt" for c in "abcd"]
    calls = []

    def analyzer(path, *, subtitle=None):
        calls.append(path.name)
        return Analysis(str(path), "happy", {"happy": 1.0}, "r", ["text"], mode="clues")

    out = tmp_path / "out.jsonl"
    parts = JsonlParts(out, "file")
    with parts.open(1) as f:  # rank 1 of a killed 2-process run had finished c
        f.write(json.dumps(analyzer(inputs[2]).to_dict()) + "\n")
    calls.clear()
    assert run_batch(analyzer, inputs, out, progress=False, isolate=False) == 0
    assert calls == ["a.txt", "b.txt", "d.txt"]  # c was not redone
    assert [json.loads(x)["file"] for x in out.read_text().splitlines()] == [
        str(p) for p in [inputs[2], *inputs[:2], inputs[3]]
    ]
    assert not parts.folder.exists()
