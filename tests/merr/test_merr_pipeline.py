"""``merr.pipeline``: a full offline build over generated clips + OpenFace CSVs, Emotion-LLaMA layout, round trips
through our importers and training loader, caching/resume, determinism, setting invalidation, kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from emollm.data.merr_files import read_label_txt, read_merr_json, write_label_txt, write_merr_json
from emollm.data.merr_schema import EL_KEYS
from emollm.utils.stage_cache import file_fingerprint
from emollm_merr.pipeline import run_build

from .conftest import build_dict, slow_build_dict
from .fakes import CORRUPT, prompt_hash

REPO = Path(__file__).resolve().parents[2]
DETERMINISTIC = (
    "MERR_coarse_grained.json",
    "MERR_fine_grained.json",
    "MERR_coarse_grained.txt",
    "MERR_fine_grained.txt",
    "merr_train.jsonl",
    "samples.jsonl",
    "errors.jsonl",
    "summary.json",
)


def _samples(out: Path) -> dict[str, dict]:
    return {r["name"]: r for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}


def _bytes(out: Path) -> dict[str, bytes]:
    return {f: (out / f).read_bytes() for f in DETERMINISTIC}


@pytest.fixture(scope="module")
def built(clip_set, tmp_path_factory):
    """One offline-default build (fake reasoner), shared by the read-only checks below."""
    from emollm_merr.config import BuildConfig

    out = tmp_path_factory.mktemp("merr_build") / "out"
    cfg = BuildConfig.from_dict(build_dict(clip_set, out))
    return cfg, run_build(cfg, progress=False)


def test_counts_and_labels(built):
    cfg, result = built
    s = result.summary
    assert (s["clips"], s["errors"], s["labelled"], s["neutral_added"]) == (10, 1, 6, 2)
    assert s["au_source"] == {"fer": 1, "openface": 8}
    assert (s["coarse"], s["fine"]) == (6, 5)
    assert s["dropped"] == {"contradiction": 1, "duplicate": 2}  # sad (fake contradicts it); 2nd happy; 2nd neutral
    assert s["coarse_by_label"] == {"angry": 1, "happy": 3, "sad": 1, "surprise": 1}
    assert s["fine_by_label"] == {"angry": 1, "happy": 2, "neutral": 1, "surprise": 1}
    rows = _samples(cfg.output_dir)
    assert rows["sample_08_disgust"]["status"] == "label_not_in_vocabulary"  # MERR excludes disgust
    assert rows["sample_09_nocsv"]["au_source"] == "fer" and rows["sample_09_nocsv"]["label"] == "happy"
    assert rows["sample_04_sad"]["issue"] == "contradiction: concludes angry" and rows["sample_04_sad"]["flagged"]
    assert rows["sample_02_happy"]["dropped"] == "duplicate" and rows["sample_02_happy"]["in_coarse"]
    assert {rows[n]["label_source"] for n in ("sample_06_calm", "sample_07_calm")} == {"neutral_added"}
    assert all(r["status"] == "error" for n, r in rows.items() if n == CORRUPT)


def test_emotion_llama_layout_and_round_trip(built, tmp_path):
    cfg, _ = built
    out = cfg.output_dir
    coarse = json.loads((out / "MERR_coarse_grained.json").read_text())
    fine = json.loads((out / "MERR_fine_grained.json").read_text())
    assert all(list(v) == [*EL_KEYS, "caption"] for v in coarse.values())
    assert all(list(v) == [*EL_KEYS, "smp_reason_caption", "text"] for v in fine.values())
    assert all(isinstance(v["peak_index"], str) for v in [*coarse.values(), *fine.values()])
    assert "neutral" not in {v["pseu_emotion"] for v in coarse.values()}  # MERR-coarse has no neutral
    assert fine["sample_06_calm"]["pseu_emotion"] == "neutral"
    happy = coarse["sample_01_happy"]
    assert happy["AU_list"] == happy["peak_AU_list"] == ["AU06", "AU12", "AU14"] and happy["peak_index"] == "8"
    assert happy["visual_prior_list"] == ["cheek raiser", "lip corner puller (smile)", "dimpler"]
    assert happy["caption"].startswith("The person's expression and actions include cheek raiser,")
    # the visual objective is unavailable offline: never invented, so the template's first sentence is left out
    assert not any("This person in the video is" in v["caption"] for v in coarse.values())
    assert coarse["sample_05_angry"]["audio_prior_list"] == ""  # no audio track
    assert (out / "MERR_coarse_grained.txt").read_text().splitlines()[0] == "sample_01_happy 20 happy -10"
    # round trip through our importers: identical bytes back
    for kind in ("coarse", "fine"):
        src = out / f"MERR_{kind}_grained.json"
        recs = read_merr_json(src, kind)
        assert write_merr_json(tmp_path / src.name, recs, kind).read_bytes() == src.read_bytes()
        rows = read_label_txt(out / f"MERR_{kind}_grained.txt", "ncev")
        assert {r.frame_count for r in rows} == {20} and {r.valence for r in rows} == {-10.0}
        assert (
            write_label_txt(tmp_path / f"{kind}.txt", rows).read_bytes()
            == (out / f"MERR_{kind}_grained.txt").read_bytes()
        )


def test_exports_load_in_training_loader(built):
    pytest.importorskip("datasets")
    from emollm.data.datasets import load_records
    from emollm.model.processing import MARKERS

    cfg, _ = built
    out = cfg.output_dir
    fine_names = sorted(json.loads((out / "MERR_fine_grained.json").read_text()))
    for fmt, path in (
        ("merr_json", "MERR_fine_grained.json"),
        ("ncev", "MERR_fine_grained.txt"),
        ("jsonl", "merr_train.jsonl"),
    ):
        ds = load_records(fmt, str(out / path))
        assert sorted(ds["name"]) == fine_names, fmt
        assert None not in ds["label"]
    ds = load_records("jsonl", str(out / "merr_train.jsonl"))
    assert all(r and r.endswith(".") for r in ds["reason"])
    rows = {r["name"]: r for r in map(json.loads, (out / "merr_train.jsonl").read_text().splitlines())}
    assert set(rows["sample_01_happy"]) == {"name", "label", "text", "reason", "caption", "messages"}
    user, answer = rows["sample_01_happy"]["messages"]
    assert user["content"].startswith(MARKERS["audio"] + MARKERS["face"] + MARKERS["video"] + " [reason] ")
    assert answer == {"role": "assistant", "content": rows["sample_01_happy"]["reason"]}
    assert not rows["sample_05_angry"]["messages"][0]["content"].startswith(MARKERS["audio"])  # no audio track


def test_errors_clues_and_summary_files(built):
    cfg, result = built
    out = cfg.output_dir
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["name"], e["stage"], e["type"]) for e in errors] == [(CORRUPT, "au", "CorruptMedia")]
    rows = _samples(out)
    assert rows["sample_05_angry"]["clues"]["audio"] == "unavailable: no audio track"
    assert rows["sample_06_calm"]["clues"]["audio"].startswith("unavailable: silent audio track")
    assert rows["sample_03_surprise"]["clues"]["audio"].startswith("medium-pitched, loud")  # 180 Hz harmonic tone
    assert all(r["clues"]["visual"].startswith("unavailable:") for r in rows.values() if "clues" in r)
    for entry in result.summary["files"].values():
        assert file_fingerprint(out / entry["path"])  # exists
        import hashlib

        assert hashlib.sha256((out / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    assert not list(out.rglob("*.tmp")) and not (out / "build.lock").exists()


def test_resume_is_a_no_op_and_retry_errors(built, make_cfg):
    cfg, first = built
    before = _bytes(cfg.output_dir)
    again = run_build(cfg, progress=False)
    assert {s: (st.computed, st.cached) for s, st in again.stats.items()} == {
        "au": (0, 10),
        "visual": (0, 0),
        "audio": (0, 8),
        "subtitle": (0, 0),
        "reason": (0, 8),
    }
    assert again.stats["visual"].instant == 8 and again.stats["au"].errors == 1
    assert _bytes(cfg.output_dir) == before
    retried = run_build(cfg, progress=False, retry_errors=True)
    assert (retried.stats["au"].computed, retried.stats["au"].errors) == (1, 1)  # still corrupt
    assert _bytes(cfg.output_dir) == before


def test_two_fresh_runs_identical_bytes_any_workers(make_cfg, tmp_path, built):
    _, ref = built
    a = run_build(make_cfg(tmp_path / "a", workers=3), progress=False)
    assert _bytes(a.output_dir) == _bytes(ref.output_dir)


def test_changed_setting_invalidates_only_its_stage(make_cfg, tmp_path):
    out = tmp_path / "out"
    run_build(make_cfg(out), progress=False)
    calls = tmp_path / "visual.log"
    visual = {"visual": "python:tests.merr.fakes:FakeVisual", "options": {"visual": {"calls_file": str(calls)}}}
    r = run_build(make_cfg(out, describe=visual), progress=False)
    counts = {s: (st.computed, st.cached) for s, st in r.stats.items()}
    assert counts["au"] == (0, 10) and counts["audio"] == (0, 8)
    assert counts["visual"] == (8, 0) and len(calls.read_text().splitlines()) == 8
    assert counts["reason"] == (8, 0)  # the prompts now carry the visual description
    coarse = json.loads((out / "MERR_coarse_grained.json").read_text())
    assert coarse["sample_01_happy"]["caption"].startswith(
        "This person in the video is sitting in front of a gradient wall at frame 8. The person's expression"
    )
    # a filter setting touches no stage, only the exports; extras add our fields under "emollm"
    r = run_build(
        make_cfg(out, describe=visual, filter={"max_per_class": 1}, output={"include_extras": True}), progress=False
    )
    assert all(st.computed == 0 for st in r.stats.values()) and len(calls.read_text().splitlines()) == 8
    assert r.summary["fine_by_label"]["happy"] == 1 and r.summary["dropped"]["balance"] == 1
    fine = json.loads((out / "MERR_fine_grained.json").read_text())
    assert fine["sample_03_surprise"]["emollm"]["au_source"] == "openface"
    assert fine["sample_03_surprise"]["emollm"]["clues"]["visual"]["status"] == "ok"
    assert fine["sample_03_surprise"]["emollm"]["frame_count"] == 20


def test_reasoning_disabled_writes_coarse_only(make_cfg, tmp_path):
    r = run_build(make_cfg(tmp_path / "o", reason={"enabled": False}, inputs={"limit": 4}), progress=False)
    out = r.output_dir
    assert (out / "MERR_coarse_grained.json").is_file() and not (out / "MERR_fine_grained.json").exists()
    rows = [json.loads(x) for x in (out / "merr_train.jsonl").read_text().splitlines()]
    assert [x["name"] for x in rows] == ["sample_01_happy", "sample_02_happy", "sample_03_surprise"]
    assert all(x["reason"] is None and " [caption] " in x["messages"][0]["content"] for x in rows)


# ------------------------------------------------------------------------------------------- kill and resume


def _snapshot(out: Path) -> dict[Path, tuple[int, bytes]]:
    cache = out / "cache"
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in cache.rglob("*.json")} if cache.is_dir() else {}


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _run_and_kill(cmd: list[str], env: dict, until: Path, pattern: str, count: int) -> int:
    """Start the build; SIGKILL it as soon as ``until`` holds ``count`` new files matching ``pattern``."""
    start = len(list(until.glob(pattern))) if until.is_dir() else 0
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if until.is_dir() and len(list(until.glob(pattern))) >= start + count:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the build ended before the kill: {proc.stderr.read().decode()[-2000:]}"
    return proc.returncode


def test_kill_at_any_stage_and_resume(clip_set, tmp_path):
    audio_log, reason_log = tmp_path / "audio.log", tmp_path / "reason.log"

    def settings(out: Path, sleep: float) -> dict:
        return slow_build_dict(clip_set, out, audio_log, reason_log, sleep)

    from emollm_merr.config import BuildConfig

    ref = run_build(BuildConfig.from_dict(settings(tmp_path / "ref", 0.0)), progress=False)
    audio_log.unlink()
    reason_log.unlink()
    out = tmp_path / "out"
    cfg_file = tmp_path / "build.yaml"
    cfg_file.write_text(yaml.safe_dump(settings(out, 0.15)))
    cmd = [sys.executable, "-m", "emollm_merr.cli", "build", "--config", str(cfg_file), "--no-progress"]
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    kills = [  # (folder watched, pattern, new files before the kill): inside stage au, audio, then reason
        (out / "cache" / "au", "*.json", 3),
        (out / "cache" / "audio", "*.json", 2),
        (out / "cache" / "reason", "*/*.json", 2),
    ]
    for step in range(len(kills) + 1):
        before = _snapshot(out)
        n_audio, n_reason = len(_lines(audio_log)), len(_lines(reason_log))
        if step < len(kills):
            _run_and_kill(cmd, env, *kills[step])
        else:
            done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
        after = _snapshot(out)
        made = {
            stage: sum(1 for p in after if p.parent.name == stage or p.parent.parent.name == stage)
            for stage in ("au", "audio", "reason")
        }
        if step < len(kills):  # the kill landed inside the intended stage
            stage = ("au", "audio", "reason")[step]
            later = ("au", "audio", "reason")[step + 1 :]
            assert 0 < made[stage] < (10 if stage == "au" else 8) and not any(made[x] for x in later), (step, made)
        # finished work is never redone: every artifact that existed is untouched ...
        assert all(after.get(p) == v for p, v in before.items()), f"step {step}: a finished artifact was rewritten"
        for p in after:  # ... and every artifact on disk is whole (atomic writes)
            json.loads(p.read_bytes())
        # ... and the describer / LLM never ran again for a clip whose result was on disk
        done_audio = {p.stem for p in before if p.parent.name == "audio"}
        assert not done_audio & set(_lines(audio_log)[n_audio:]), f"step {step}: audio redone"
        done_prompts = {prompt_hash(json.loads(v[1])["user"]) for p, v in before.items() if "reason" in p.parts}
        assert not done_prompts & set(_lines(reason_log)[n_reason:]), f"step {step}: reasoning redone"
    # each clip's audio / each prompt ran at most once more than needed (the one in flight at a kill)
    assert len(_lines(audio_log)) <= 8 + 1 and len(_lines(reason_log)) <= 8 + 1
    assert _bytes(out) == _bytes(ref.output_dir)
    assert not list(out.rglob("*.tmp")) and not (out / "build.lock").exists()


def test_run_openface_for_clips_without_csv(make_cfg, tmp_path):
    """``au.run_openface``: a stand-in FeatureExtraction binary writes the CSV; the clip is then labelled from AUs."""
    fake = tmp_path / "FeatureExtraction"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys, pathlib\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from tests.merr.openface_gen import Plant, write_openface_csv\n"
        "a = sys.argv\n"
        "video, out = pathlib.Path(a[a.index('-f') + 1]), pathlib.Path(a[a.index('-out_dir') + 1])\n"
        "out.mkdir(parents=True, exist_ok=True)\n"
        "write_openface_csv(out / (video.stem + '.csv'), 20, [Plant({'AU05': 2.0, 'AU26': 2.0, 'AU01': 2.0,"
        " 'AU02': 2.0}, 5)])\n"
    )
    fake.chmod(0o755)
    cfg = make_cfg(tmp_path / "out", inputs={"openface_dir": None, "limit": 2},
                   au={"run_openface": True, "openface_bin": str(fake)})  # fmt: skip
    r = run_build(cfg, progress=False)
    rows = _samples(r.output_dir)
    happy = rows["sample_01_happy"]
    assert (happy["au_source"], happy["au_label"]) == ("openface", "surprise")
    assert (r.output_dir / "openface" / "sample_01_happy.csv").is_file()
    assert not list((r.output_dir / "openface").glob(".tmp-*"))
    missing = make_cfg(tmp_path / "o2", inputs={"openface_dir": None}, au={"run_openface": True,
                       "openface_bin": str(tmp_path / "nope")})  # fmt: skip
    with pytest.raises(FileNotFoundError, match="OpenFace binary .* not found"):
        run_build(missing, progress=False)


def test_blendshapes_au_source_without_openface(make_cfg, tmp_path):
    """``au.fallback: blendshapes``: a MERR set from raw clips with no OpenFace, AUs from MediaPipe blendshapes."""
    pytest.importorskip("mediapipe")
    cfg = make_cfg(tmp_path / "out", inputs={"openface_dir": None, "limit": 2}, au={"fallback": "blendshapes"})
    r = run_build(cfg, progress=False)  # the first two names: the corrupt clip and the astronaut
    happy = _samples(r.output_dir)["sample_01_happy"]
    assert (happy["au_source"], happy["au_label"], happy["status"]) == ("blendshapes", "happy", "labelled")
    rec = json.loads((r.output_dir / "MERR_coarse_grained.json").read_text())["sample_01_happy"]
    assert rec["pseu_emotion"] == "happy" and "AU12" in rec["peak_AU_list"] and rec["peak_index"].isdigit()
    assert r.summary["au_source"] == {"blendshapes": 1} and r.summary["errors"] == 1
    again = run_build(cfg, progress=False)  # cached: same settings, nothing recomputed
    assert again.summary == r.summary
