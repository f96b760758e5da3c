"""The feature cache: extraction, missing/failed samples, resume, stale-settings refusal, and live == cached."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emollm.features import ExtractSpec, extract, list_inputs, main, modality_from_cache
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
    assert not [p for p in folder.rglob(".*") if p.is_file()]  # no temp files left behind

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
    out = capsys.readouterr().out
    assert rc == 0 and "2 extracted" in out and "1 missing" in out and "1 failed" in out
    assert np.load(tmp_path / "AUDIO" / "happy.npy").shape == (1, 384)
    assert "no audio" in json.loads((tmp_path / "AUDIO" / "_missing" / "mute.json").read_text())["reason"]
    assert main(["extract", "--input", str(tmp_path / "nope"), "--encoders", "whisper", "--out", str(tmp_path)]) == 2
    assert main(["extract", "--input", str(clips), "--encoders", "bert", "--out", str(tmp_path)]) == 2


def test_cached_features_equal_live_encoding(clips, tmp_path):
    """A model reading the cache and a model running the encoder live see the same tokens."""
    from emollm.configuration import ModalityConfig
    from emollm.media import load_sample
    from emollm.processing import Sample

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
