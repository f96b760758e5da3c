"""``emollm merr build`` under ``torchrun`` (2 CPU processes, gloo): every stage including the LLM reasoning split
over the ranks, a rank killed mid-reasoning (the launcher reports it, nothing is written as if complete), resumed
with another number of processes, and the outputs byte-identical to one process's."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import yaml

from emollm_merr.pipeline import run_build
from tests.emollm.test_distributed_jobs import emollm_cmd, kill_rank, launch_env

from .conftest import slow_build_dict
from .fakes import prompt_hash
from .test_merr_pipeline import DETERMINISTIC, _lines, _snapshot

REPO = Path(__file__).resolve().parents[2]


def _bytes(out: Path) -> dict[str, bytes]:
    return {f: (out / f).read_bytes() for f in DETERMINISTIC}


def test_two_processes_kill_a_rank_resume_with_another_count_same_bytes(clip_set, tmp_path):
    audio_log, reason_log = tmp_path / "audio.log", tmp_path / "reason.log"

    def settings(out: Path, sleep: float) -> dict:
        return slow_build_dict(clip_set, out, audio_log, reason_log, sleep)

    from emollm_merr.config import BuildConfig

    ref = run_build(BuildConfig.from_dict(settings(tmp_path / "ref", 0.0)), progress=False)
    audio_log.unlink()
    reason_log.unlink()
    out = tmp_path / "out"
    cfg_file = tmp_path / "build.yaml"
    cfg_file.write_text(yaml.safe_dump(settings(out, 0.2)))
    args = ("merr", "build", "--config", str(cfg_file), "--no-progress")

    # 1. one process, killed inside the audio stage
    proc = subprocess.Popen(emollm_cmd(*args), cwd=REPO, env=launch_env(), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and len(_lines(audio_log)) < 2:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    before = _snapshot(out)
    assert any("audio" in p.parts for p in before) and not any("reason" in p.parts for p in before)

    # 2. two processes resume it; rank 1 is killed inside the reasoning stage
    n_audio = len(_lines(audio_log))
    proc = subprocess.Popen(emollm_cmd(*args, nproc=2), cwd=REPO, env=launch_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    reason_dir = out / "cache" / "reason"
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline and len(list(reason_dir.glob("*/*.json"))) < 2:
        time.sleep(0.01)
    kill_rank(proc, 1, reason_log, 1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Signal 9 (SIGKILL)" in err  # the launcher reports the dead rank
    assert not (out / "summary.json").exists()  # no output written as if the build were complete
    after = _snapshot(out)
    assert all(after.get(p) == v for p, v in before.items())  # finished artifacts untouched
    assert not {p.stem for p in before if p.parent.name == "audio"} & set(_lines(audio_log)[n_audio:])  # not redone

    # 3. two processes again (any count works): the build completes; only unfinished work is done
    n_reason = len(_lines(reason_log))
    done_prompts = {prompt_hash(json.loads(v[1])["user"]) for p, v in after.items() if "reason" in p.parts}
    assert done_prompts
    final = subprocess.run(emollm_cmd(*args, nproc=2), cwd=REPO, env=launch_env(), capture_output=True, text=True,
                           timeout=240)  # fmt: skip
    assert final.returncode == 0, final.stderr[-3000:]
    assert not done_prompts & set(_lines(reason_log)[n_reason:])  # a cached reasoning is never asked again
    assert len(_lines(reason_log)) <= 8 + 2  # each prompt at most once more than needed (in flight at a kill)
    assert _bytes(out) == _bytes(ref.output_dir)  # the files one process writes, byte for byte
    assert final.stdout.count("MERR build ->") == 1  # rank 0 reports
    run_log = json.loads(_lines(out / "runs.jsonl")[-1])
    assert [r["rank"] for r in run_log["ranks"]] == [0, 1]  # the per-rank throughput of this run
    assert sum(r["clips"] for r in run_log["ranks"]) == 0  # stage au was finished by the earlier runs
    assert "emollm merr build: 2 processes (torchrun)" in final.stderr
    assert not list(out.rglob("*.tmp")) and not (out / "build.lock").exists()
