"""emollm analyze: raw clip -> features per branch (live tower or cache-recorded encoder) -> probabilities + text."""

from __future__ import annotations

import json

import pytest

from emollm.apps.analyze import analyze_checkpoint as analyze
from emollm.apps.analyze import main
from emollm.checkpoints import save_checkpoint
from emollm.jobs.features import ExtractSpec, extract, modality_from_cache
from emollm.media import fixtures
from emollm.model.configuration import ModalityConfig

from .conftest import make_tiny

LABELS = ["happy", "sad", "neutral"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze")
    fixtures.make_face_clip(root / "happy.mp4", photo="astronaut", seconds=1.0, audio="tone")
    fixtures.make_noface_clip(root / "noface.mp4", seconds=1.0, audio=None)
    audio = extract(
        [root / "happy.mp4"], ExtractSpec("whisper", options={"pooling": "utterance"}), root / "cache", progress=False
    )
    mods = {
        "face": ModalityConfig(encoder="fer", feature_dim=7),  # live tower
        "audio": modality_from_cache(audio.folder),  # trained on a cache: recomputed live from the clip
        "video": ModalityConfig(feature_dim=16),  # precomputed, origin unknown: needs a file
    }
    model, proc = make_tiny("llama2", modalities=mods)
    ckpt = save_checkpoint(model, proc, root / "ckpt")
    return root, model, proc, ckpt


def test_analyze_clip(setup):
    root, model, proc, _ = setup
    model.eval()
    result = analyze(model, proc, root / "happy.mp4", labels=LABELS, max_new_tokens=4)
    assert set(result.probabilities) == set(LABELS) and abs(sum(result.probabilities.values()) - 1) < 1e-5
    assert result.label == max(result.probabilities, key=result.probabilities.get)
    assert sorted(result.modalities) == ["audio", "face"]
    assert "does not record their encoder" in result.missing["video"]
    assert isinstance(result.reasoning, str)


def test_missing_face_and_audio_are_reported(setup):
    root, model, proc, _ = setup
    result = analyze(model, proc, root / "noface.mp4", labels=LABELS, max_new_tokens=2)
    assert result.modalities == []
    assert "noface.mp4" in result.missing["face"] and "noface.mp4" in result.missing["audio"]
    # Nothing to go on: no label from the prompt alone (it would be a guess)
    assert (
        result.label is None and result.probabilities == {} and "no modality gave evidence" in result.missing["label"]
    )
    with_text = analyze(model, proc, root / "noface.mp4", labels=LABELS, subtitle="I passed", max_new_tokens=2)
    assert with_text.label in LABELS  # a transcript is evidence


def test_a_long_subtitle_is_cut_with_a_note_and_the_deadline_stops_the_work(setup, monkeypatch):
    import emollm.model.generation as generation
    from emollm.utils.deadline import Deadline, DeadlineExceeded, deadline

    root, model, proc, _ = setup
    result = analyze(model, proc, root / "happy.mp4", labels=LABELS, subtitle="I passed " * 100, max_new_tokens=2,
                     max_text_chars=40)  # fmt: skip
    assert result.subtitle.startswith("I passed") and len(result.subtitle) <= 40
    assert result.notes == [f"subtitle: 900 characters, cut to the first {len(result.subtitle)} (limit 40 "
                            "characters, max_text_chars)"]  # fmt: skip
    cancelled = Deadline()
    cancelled.cancel("the server's limit of 1 s (--timeout-s)")
    with deadline(scope=cancelled), pytest.raises(DeadlineExceeded, match="stopped at media"):
        analyze(model, proc, root / "happy.mp4", labels=LABELS, max_new_tokens=2)

    scope, criteria, real_chat = Deadline(), [], generation.chat

    def chat(*args, **kwargs):  # the deadline passes as generation starts
        criteria.append(kwargs.get("stopping_criteria"))
        scope.cancel("passed during generation")
        return real_chat(*args, **kwargs)

    monkeypatch.setattr(generation, "chat", chat)
    with deadline(scope=scope), pytest.raises(DeadlineExceeded, match="stopped at reasoning: passed during"):
        analyze(model, proc, root / "happy.mp4", labels=LABELS, max_new_tokens=50)
    assert criteria and criteria[0] is not None  # generation got the deadline's stopping criterion


def test_a_missing_clip_is_an_error_even_with_feature_files(setup, tmp_path):
    import numpy as np

    from emollm.media import MediaNotFound

    root, model, proc, _ = setup
    feats = {}
    for m, dim in (("video", 16), ("face", 7), ("audio", model.config.modalities["audio"].feature_dim)):
        np.save(tmp_path / f"{m}.npy", np.zeros((1, dim), np.float32))
        feats[m] = str(tmp_path / f"{m}.npy")
    with pytest.raises(MediaNotFound, match="nope.mp4"):
        analyze(model, proc, tmp_path / "nope.mp4", labels=LABELS, feature_files=feats, max_new_tokens=2)


def test_cli_json_and_errors(setup, tmp_path, capsys):
    root, _, _, ckpt = setup
    assert (
        main(
            [
                str(root / "happy.mp4"),
                "--checkpoint",
                str(ckpt),
                "--labels",
                ",".join(LABELS),
                "--json",
                "--max-new-tokens",
                "3",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert set(out["probabilities"]) == set(LABELS) and out["label"] in LABELS
    broken = fixtures.make_corrupt_file(tmp_path / "broken.mp4", kind="garbage")
    assert main([str(broken), "--checkpoint", str(ckpt)]) == 2
    assert "broken.mp4" in capsys.readouterr().err
    assert main([str(root / "happy.mp4"), "--checkpoint", str(tmp_path)]) == 2


def test_checkpoint_reasoning_that_names_another_label_is_flagged(setup, monkeypatch):
    import emollm.model.generation

    root, model, proc, _ = setup
    monkeypatch.setattr(emollm.model.generation, "chat", lambda *a, **k: ["The person is clearly sad."])
    result = analyze(model, proc, root / "happy.mp4", labels=LABELS, max_new_tokens=2)
    if result.label != "sad":
        assert result.reasoning_source == f"checkpoint (the text names sad; the likelihoods favour {result.label})"
    else:
        assert result.reasoning_source == "checkpoint"
