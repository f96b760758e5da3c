"""Timelines (emollm analyze --timeline): causal windows, shared per-frame/per-second work, entries cross-checked
against independent computations, and checkpoints scored per window (or refused where they cannot be)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from emollm.apps.timeline import TimelineSettings, window_bounds, words_in
from emollm.media import fixtures

LABELS = ("neutral", "angry", "happy", "sad", "worried", "surprise")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install)")


# ------------------------------------------------------------------------------------------------ windows
def test_windows_are_causal_and_end_at_each_hop():
    assert window_bounds(4.6, 3.0, 1.0) == [(0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (1.0, 4.0), (1.6, 4.6)]
    assert window_bounds(4.2, 3.0, 1.0)[-1] == (1.0, 4.0)  # a tail under half a hop has no window of its own
    assert window_bounds(0.4, 3.0, 1.0) == [(0.0, 0.4)]  # a clip shorter than a hop: one window
    assert window_bounds(6.0, 2.0, 2.0) == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]  # hop = window: no overlap
    assert window_bounds(0.0, 3.0, 1.0) == []
    for duration, window, hop in [(7.3, 3.0, 1.0), (10.0, 2.5, 0.5), (3.0, 3.0, 3.0)]:
        bounds = window_bounds(duration, window, hop)
        assert all(0 <= a < b <= duration + 1e-9 and b - a <= window + 1e-9 for a, b in bounds)
        assert [b for _, b in bounds] == sorted(b for _, b in bounds)
    with pytest.raises(ValueError, match="at most 10000"):
        window_bounds(3600.0, 3.0, 0.1)


def test_settings_name_the_flag():
    with pytest.raises(ValueError, match="--hop .* must not be longer than --window"):
        TimelineSettings(window_s=2.0, hop_s=3.0)
    with pytest.raises(ValueError, match="--timeline-fps must be in"):
        TimelineSettings(fps=0)
    with pytest.raises(ValueError, match="--window must be a number"):
        TimelineSettings(window_s=float("nan"))
    assert TimelineSettings.from_query({}) is None
    assert TimelineSettings.from_query({"timeline": "1", "window": "2", "hop": "0.5"}) == TimelineSettings(2.0, 0.5)
    with pytest.raises(ValueError, match="window must be a number"):
        TimelineSettings.from_query({"timeline": "1", "window": "x"})
    with pytest.raises(ValueError, match="need timeline=1"):
        TimelineSettings.from_query({"window": "2"})
    with pytest.raises(ValueError, match="hop .* must not be longer than window"):
        TimelineSettings.from_query({"timeline": "true", "window": "1", "hop": "2"})


def test_words_fall_in_every_window_that_holds_their_middle():
    from emollm.encoders.text import Word

    words = [Word("a", 0.1, 0.5), Word("b", 0.9, 1.3), Word("c", 2.0, 2.2)]
    assert [w.text for w in words_in(words, 0.0, 1.0)] == ["a"]  # b's middle is 1.1
    assert [w.text for w in words_in(words, 1.0, 4.0)] == ["b", "c"]


# ------------------------------------------------------------------------------------------------ clue mode
@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("timeline") / "happy.mp4"
    speech = shutil.which("espeak-ng") is not None
    fixtures.make_face_clip(path, "astronaut", seconds=4.0, size=(320, 240), audio="speech" if speech else "tone",
                            text="I passed the exam, this is wonderful news!")  # fmt: skip
    return path


@pytest.mark.slow
@needs_espeak
def test_clue_timeline_shares_the_work_and_each_entry_is_its_windows_aggregate(clip, monkeypatch):
    import emollm.clues.prosody as prosody
    from emollm.apps.clue_mode import ClueAnalyzer, ClueSettings

    runs = {"prosody_track": 0, "face_frames": 0, "transcribe": 0, "text": 0}
    real_track = prosody.prosody_track

    def counted_track(*a, **k):
        runs["prosody_track"] += 1
        return real_track(*a, **k)

    monkeypatch.setattr(prosody, "prosody_track", counted_track)
    settings = TimelineSettings(window_s=3.0, hop_s=1.0, fps=3.0)
    with ClueAnalyzer(LABELS, ClueSettings(reasoning="template")) as analyzer:
        for name in ("face_frames", "_text"):
            real = getattr(analyzer, name)

            def counted(*a, _real=real, _name=name, **k):
                runs["text" if _name == "_text" else _name] += 1
                return _real(*a, **k)

            monkeypatch.setattr(analyzer, name, counted)
        whisper = analyzer._model("whisper")
        real_transcribe = whisper.transcribe

        def counted_transcribe(*a, **k):
            runs["transcribe"] += 1
            return real_transcribe(*a, **k)

        monkeypatch.setattr(whisper, "transcribe", counted_transcribe)
        result = analyzer(clip, timeline=settings)
        with pytest.raises(ValueError, match="a timeline needs a video or an audio file"):
            image = clip.with_name("face.jpg")
            fixtures.make_image(image, "astronaut")
            analyzer(image, timeline=settings)

    tl = result.timeline
    # The per-frame and per-second work ran once for the whole clip, not once per window.
    assert runs["face_frames"] == 1 and runs["transcribe"] == 1 and runs["prosody_track"] == 1
    entries = tl["entries"]
    assert [(e["start"], e["end"]) for e in entries] == window_bounds(4.0, 3.0, 1.0)
    assert runs["text"] <= 1 + len({e["evidence"].get("transcript") for e in entries})  # cached by text
    assert result.label == "happy" and all(e["label"] == "happy" for e in entries[1:])
    assert tl["source"] == "file" and tl["window_s"] == 3.0 and tl["labels"] == list(LABELS)
    json.dumps(result.to_dict())

    # Face: the entry's expression scores are the mean of the whole clip's per-frame rows inside its window.
    face = result.evidence["face"]
    fps = 10.0  # the fixture's frame rate
    rows = np.array([[r[k] for k in r] for r in face["expression_over_time"]])
    times = np.array(face["frames"]) / fps
    assert len(face["frames"]) == tl["frames_analysed"] == 12  # 3 frames/s over 4 s, shared by all windows
    for e in entries:
        inside = (times >= e["start"]) & (times < e["end"])
        ef = e["evidence"]["face"]
        assert ef["frames"] == int(inside.sum())
        assert list(ef["expression_scores"].values()) == pytest.approx(rows[inside].mean(axis=0), abs=2e-4)
        x0, y0, x1, y1 = ef["face_box"]
        assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240 and e["start"] <= ef["face_box_time"] < e["end"]
        # Voters: the fusion weights of the voters present, renormalised (fusion.yaml: 1, 1, 0.7).
        weights = {"face_expression": 1.0, "face_aus": 1.0, "text": 0.7}
        present = {k: weights[k] for k in e["voters"]}
        assert e["voters"] == pytest.approx({k: v / sum(present.values()) for k, v in present.items()}, abs=1e-4)
        assert sum(e["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert max(e["probabilities"], key=e["probabilities"].get) == e["label"]

    # Words: each word of the whole-clip transcript is in exactly the windows that hold its middle.
    words = tl["transcript"]["words"]
    assert " ".join(w["word"] for w in words) == result.subtitle
    for e in entries:
        expected = [w["word"] for w in words if e["start"] <= (w["start"] + w["end"]) / 2 < e["end"]]
        assert [w["word"] for w in e["evidence"].get("words", [])] == expected
    # Voice: each window's numbers are Praat's over its stretch of the whole clip's frames.
    last = entries[-1]["evidence"]["voice"]
    assert last["pitch_mean_hz"] > 50 and last["tone"]
    assert "timeline (3 s windows, 1 s hop, 4 windows)" in result.report()


def test_cli_timeline_flags(clip, capsys):
    from emollm.apps.analyze import main

    assert main([str(clip), "--timeline", "--window", "2", "--hop", "3"]) == 2
    assert "--hop (3 s) must not be longer than --window (2 s)" in capsys.readouterr().err
    assert main([str(clip.parent), "--timeline", "--out", str(clip.parent / "r.jsonl")]) == 2
    assert "--timeline is for one file" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, clip):
    from emollm.checkpoints import save_checkpoint
    from emollm.jobs.features import ExtractSpec, extract, modality_from_cache
    from emollm.model.configuration import ModalityConfig

    from ..emollm.conftest import make_tiny

    root = tmp_path_factory.mktemp("ckpt-timeline")
    cache = extract([clip], ExtractSpec("egemaps"), root / "cache", progress=False)
    mods = {
        "face": ModalityConfig(encoder="fer", feature_dim=7),  # a live tower: the window's face crops
        "audio": modality_from_cache(cache.folder),  # a recorded cache encoder: re-run on the window's audio
    }
    model, proc = make_tiny("llama2", modalities=mods)
    return save_checkpoint(model, proc, root / "ckpt")


def test_checkpoint_timeline_scores_each_window_with_its_media(checkpoint, clip):
    """Each entry equals an independent scoring of that window: the same towers on crops and audio cut by hand."""
    import torch

    from emollm.apps.analyze import CheckpointAnalyzer
    from emollm.jobs.features import build_live_encoder, encode_sample, spec_from_manifest
    from emollm.media import load_sample
    from emollm.media.load import MediaSample
    from emollm.model.likelihood import label_probabilities
    from emollm.model.processing import Sample
    from emollm.model.prompts import EMOTION_INSTRUCTION

    analyzer = CheckpointAnalyzer(checkpoint, LABELS[:3], precision="fp32", asr=False, max_new_tokens=2)
    settings = TimelineSettings(window_s=2.0, hop_s=1.0, fps=3.0)
    result = analyzer(clip, timeline=settings)
    tl = result.timeline
    assert "checkpoint" in tl["scoring"] and [(e["start"], e["end"]) for e in tl["entries"]] == window_bounds(
        4.0, 2.0, 1.0
    )
    media = load_sample(clip, modalities=["audio", "face"], frame_policy="fps:3")
    cfg = analyzer.model.config.modalities["audio"]
    encoder = build_live_encoder(spec_from_manifest(cfg.encoder_options["extracted_with"]))
    times = np.array(media.face_indices) / media.info.fps
    for e in tl["entries"][1:3]:
        a, b = e["start"], e["end"]
        part = MediaSample(name="x", info=media.info, audio=media.audio[round(a * 16000) : round(b * 16000)])
        feats = {
            "face": torch.from_numpy(media.faces[(times >= a) & (times < b)]),
            "audio": torch.from_numpy(encode_sample(encoder, "audio", part)),
        }
        question = "<face><audio> " + EMOTION_INSTRUCTION.format(labels=", ".join(LABELS[:3]))
        sample = Sample(messages=[{"role": "user", "content": question}], features=feats, name="x")
        probs = label_probabilities(analyzer.model, analyzer.processor, sample, list(LABELS[:3]))
        assert e["probabilities"] == pytest.approx(probs, abs=1e-5)
        assert e["voters"] == {"face": 1.0, "audio": 1.0}
        assert math.isclose(sum(e["probabilities"].values()), 1, abs_tol=1e-5)

    with pytest.raises(ValueError, match="reads the feature file .* cannot be cut into windows"):
        refused = CheckpointAnalyzer(checkpoint, LABELS[:3], precision="fp32", feature_files={"audio": "x.npy"})
        refused(clip, timeline=settings)
