"""The feature cache: extraction, missing/failed samples, resume, stale-settings refusal, and live == cached."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emollm.jobs.features import ExtractSpec, extract, list_inputs, main, modality_from_cache
from emollm.media import fixtures


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    fixtures.make_face_clip(root / "happy.mp4", photo="astronaut", seconds=1.0, audio="tone")
    fixtures.make_face_clip(root / "mute.mp4", photo="grace_hopper", seconds=1.0, audio=None)
    fixtures.make_noface_clip(root / "noface.mp4", seconds=1.0, audio="tone")
    fixtures.make_corrupt_file(root / "broken.mp4", kind="garbage")
    return root


FER = ExtractSpec("fer", frame_policy="uniform:4", face_detector="haar")


def test_extract_marks_missing_and_failed_and_resumes(clips, tmp_path):
    files = list_inputs(clips)
    assert [f.name for f in files] == ["broken.mp4", "happy.mp4", "mute.mp4", "noface.mp4"]
    s = extract(files, FER, tmp_path, progress=False)
    folder = s.folder
    assert s.extracted == 2 and s.cached == 0
    assert set(s.missing) == {"noface"} and "noface.mp4" in s.missing["noface"]
    assert set(s.failed) == {"broken"} and "broken.mp4" in s.failed["broken"]
    feats = np.load(folder / "happy.npy")
    assert feats.shape == (4, 7) and feats.dtype == np.float32  # 4 sampled frames x FER2013 logits
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["encoder"] == "fer" and manifest["output_dim"] == 7 and len(manifest["weights_sha256"]) == 64
    assert json.loads((folder / "failed.jsonl").read_text().splitlines()[0])["name"] == "broken"
    assert not list(folder.rglob(".*.tmp"))  # no temp files left behind

    again = extract(files, FER, tmp_path, progress=False)  # resume: nothing redone but the failure
    assert again.folder == folder and again.extracted == 0 and again.cached == 3 and set(again.failed) == {"broken"}
    (folder / "mute.npy").unlink()
    third = extract(files, FER, tmp_path, progress=False)
    assert third.extracted == 1 and np.load(folder / "mute.npy").shape == (4, 7)


def test_changed_settings_never_reuse_features(clips, tmp_path):
    files = [clips / "happy.mp4"]
    a = extract(files, FER, tmp_path, progress=False)
    b = extract(files, ExtractSpec("fer", frame_policy="uniform:2", face_detector="haar"), tmp_path, progress=False)
    assert a.folder != b.folder and np.load(b.folder / "happy.npy").shape == (2, 7)
    extract(files, FER, tmp_path, name="FACE", progress=False)
    with pytest.raises(ValueError, match="other settings .*media"):
        extract(
            files,
            ExtractSpec("fer", frame_policy="middle", face_detector="haar"),
            tmp_path,
            name="FACE",
            progress=False,
        )


def test_audio_cache_and_cli(clips, tmp_path, capsys):
    rc = main(
        [
            "extract",
            "--input",
            str(clips),
            "--encoders",
            "whisper",
            "--out",
            str(tmp_path),
            "--option",
            'whisper.pooling="utterance"',
            "--name",
            "whisper=AUDIO",
            "--workers",
            "1",
        ]
    )
    captured = capsys.readouterr()
    out = captured.out
    assert rc == 1 and "2 extracted" in out and "1 missing" in out and "1 failed" in out  # 1: some failed
    assert "failed  broken: " in out and "1 of 4 inputs failed" in captured.err
    assert np.load(tmp_path / "AUDIO" / "happy.npy").shape == (1, 384)
    assert "no audio" in json.loads((tmp_path / "AUDIO" / "_missing" / "mute.json").read_text())["reason"]
    assert main(["extract", "--input", str(tmp_path / "nope"), "--encoders", "whisper", "--out", str(tmp_path)]) == 2
    assert main(["extract", "--input", str(clips), "--encoders", "bert", "--out", str(tmp_path)]) == 2


def test_cached_features_equal_live_encoding(clips, tmp_path):
    """A model reading the cache and a model running the encoder live see the same tokens."""
    from emollm.media import load_sample
    from emollm.model.configuration import ModalityConfig
    from emollm.model.processing import Sample

    from .conftest import make_tiny

    s = extract([clips / "happy.mp4"], FER, tmp_path, progress=False)
    cached_branch = modality_from_cache(s.folder)
    assert cached_branch.encoder_options["extracted_with"]["encoder"] == "fer"
    live, lproc = make_tiny("llama2", modalities={"face": ModalityConfig(encoder="fer", feature_dim=7)})
    cached, cproc = make_tiny("llama2", modalities={"face": cached_branch})
    cached.projectors.load_state_dict(live.projectors.state_dict())
    cached.modality_embedding.load_state_dict(live.modality_embedding.state_dict())
    cached.language_model.load_state_dict(live.language_model.state_dict())
    media = load_sample(clips / "happy.mp4", modalities=["face"], **FER.media_kwargs())
    from emollm.encoders import FeatureStore

    msg = [{"role": "user", "content": "<face> Emotion?"}]
    live_batch = lproc([Sample(messages=msg, features={"face": torch.from_numpy(media.faces)})])
    store = FeatureStore(tmp_path, cached_branch.feature_dir, cached_branch.feature_dim)
    cached_batch = cproc([Sample(messages=msg, features={"face": store.load("happy")})])
    assert torch.equal(live_batch.input_ids, cached_batch.input_ids)
    with torch.no_grad():
        a = live.embed(live_batch.input_ids, live_batch.modality_inputs)
        b = cached.embed(cached_batch.input_ids, cached_batch.modality_inputs)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------- reliability
def _cli(*args: str) -> list[str]:
    return ["extract", *args]


def test_bad_options_exit_2_with_one_line_before_any_file(clips, tmp_path, capsys):
    base = ["--input", str(clips), "--encoders", "fer", "--out", str(tmp_path / "c"), "--face-detector", "haar"]
    cases = {
        ("--frame-policy", "uniform:0"): "--frame-policy uniform:0",
        ("--frame-policy", "uniform:100000000"): "asks for 100000000 frames",
        ("--min-audio-duration", "1e12"): "--min-audio-duration 1e+12",
        ("--min-audio-duration", "nan"): "--min-audio-duration nan: must be a number",
        ("--option", "fer.x=1"): "--option fer.x: fer does not take option 'x'",
        ("--option", "whisper.pooling=1"): "'whisper' is not in --encoders",
        ("--name", "fer=../x"): "--name fer= '../x': must be one plain folder name",
        ("--name", f"fer={tmp_path / 'abs'}"): "must be one plain folder name",
        ("--workers", "0"): "--workers 0",
    }
    for extra, text in cases.items():
        assert main(_cli(*base, *extra)) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and text in err[0] and "Traceback" not in err[0], (extra, err)
    assert not (tmp_path / "c").exists() and not (tmp_path / "x").exists() and not (tmp_path / "abs").exists()
    with pytest.raises(ValueError, match="fer.x"):  # --debug: the traceback, not one line
        main(_cli(*base, "--option", "fer.x=1", "--debug"))


def test_name_outside_the_cache_is_refused_in_the_api_too(clips, tmp_path):
    for bad in ("../x", "a/b", str(tmp_path / "abs"), "..", ""):
        with pytest.raises(ValueError, match="one plain folder name"):
            extract([clips / "happy.mp4"], FER, tmp_path / "c", name=bad, progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "abs").exists()


def test_one_writer_per_folder_and_stale_temp_files_are_removed(clips, tmp_path):
    import os

    from emollm.jobs.features import CacheBusy, lock_cache_folder

    folder = tmp_path / "FACE"
    folder.mkdir()
    stale = folder / ".happy.npy.k1ll3d.tmp"  # what a run killed inside atomic_write leaves
    stale.write_bytes(b"half a file")
    with lock_cache_folder(folder):  # another writer holds the folder
        other = ExtractSpec("fer", frame_policy="uniform:2", face_detector="haar")
        with pytest.raises(CacheBusy, match=rf"{folder} is being written by .*pid {os.getpid()}"):
            extract([clips / "happy.mp4"], other, tmp_path, name="FACE", progress=False, isolate=False)
    assert not (folder / "manifest.json").exists()  # the refused run wrote nothing
    s = extract([clips / "happy.mp4"], FER, tmp_path, name="FACE", progress=False, isolate=False)
    assert s.extracted == 1 and not stale.exists() and not list(folder.rglob(".*.tmp"))
    assert (folder / ".lock").read_text() == ""  # released: no owner recorded


def test_folder_entries_that_are_not_files_are_reported(clips, tmp_path, capsys):
    import os
    import shutil

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(clips / "happy.mp4", src / "happy.mp4")
    (src / "dir.mp4").mkdir()  # a folder named like a clip
    os.mkfifo(src / "pipe.wav")
    (src / "loop.mp4").symlink_to("loop.mp4")
    (src / "sub").mkdir()  # a sub-folder: not searched, but said so
    (src / "notes.csv").write_text("x\n")
    out = tmp_path / "c"
    base = ["--encoders", "fer", "--out", str(out), "--face-detector", "haar", "--frame-policy", "uniform:2"]
    rc = main(_cli("--input", str(src), *base, "--workers", "1"))
    captured = capsys.readouterr()
    assert rc == 1, captured  # 1 ok, 3 failed
    assert "1 extracted" in captured.out and "3 failed" in captured.out
    assert "dir.mp4: is a folder, not a regular file" in captured.out
    assert "pipe.wav: is a FIFO (named pipe), not a regular file" in captured.out
    assert "loop.mp4: symlink loop" in captured.out
    assert "no such file" not in captured.out
    assert "sub: a folder (not searched" in captured.err and "notes.csv: not a media file" in captured.err
    # nothing usable at all: exit 2 and say so
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "dir.mp4").mkdir()
    assert main(_cli("--input", str(bad), *base)) == 2
    assert "nothing extracted: all 1 inputs failed" in capsys.readouterr().err


def test_a_hostile_header_costs_one_file_not_the_batch(clips, tmp_path, monkeypatch):
    import shutil

    from tests.media.hostile import mkv_with_duration

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(clips / "happy.mp4", src / "happy.mp4")
    mkv_with_duration(src / "huge.mkv", 1e9)  # decord aborts the process on this one (std::bad_alloc)
    spec = ExtractSpec("fer", frame_policy="uniform:2", face_detector="haar")
    s = extract(list_inputs(src), spec, tmp_path / "c", progress=False, workers=1)
    assert s.extracted == 1 and set(s.failed) == {"huge"}
    assert "1,000,000,000 s (limit 10,800 s)" in s.failed["huge"] and "EMOLLM_MAX_DURATION_S" in s.failed["huge"]
    monkeypatch.setenv("EMOLLM_MAX_DURATION_S", "2e9")  # the user raises the limit: measured, decoded by PyAV
    monkeypatch.setenv("EMOLLM_MAX_FRAMES", "1e11")
    again = extract(list_inputs(src), spec, tmp_path / "c", progress=False, workers=1)
    assert again.cached == 1 and again.extracted == 1, again
