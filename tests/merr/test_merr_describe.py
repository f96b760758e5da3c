"""emollm_merr.describe: the measured describer's unavailable cases, subtitles (CSV / ASR stand-in), unavailable clues,
the FER fallback's decision rule, describer specs (measurement itself: test_merr_audio_measures)."""

from __future__ import annotations

import numpy as np
import pytest

from emollm_merr.describe import (
    ASRSubtitleDescriber,
    CheckpointDescriber,
    ClipContext,
    Clue,
    CSVSubtitles,
    FERFallbackAU,
    HFMultimodalDescriber,
    MeasuredAudioDescriber,
    UnavailableDescriber,
    build_describer,
    parse_spec,
)

from .fakes import SR, syllables


def test_silence_noise_and_missing_audio_are_unavailable(tmp_path):
    from emollm.media.fixtures import make_face_clip

    d = MeasuredAudioDescriber()
    ctx = ClipContext("x", tmp_path / "x.mp4")
    ctx._audio = np.zeros(SR, np.float32)
    clue = d.describe(ctx)
    assert (clue.status, clue.text) == ("unavailable", "") and clue.reason.startswith("unavailable: silent audio")
    ctx._audio = np.random.default_rng(0).normal(0, 0.1, SR).astype(np.float32)
    assert d.describe(ctx).reason == "unavailable: no voiced speech in the audio track"
    clip = make_face_clip(tmp_path / "mute.mp4", seconds=1.0, audio=None, size=(160, 120))
    clue = d.describe(ClipContext("mute", clip.path))
    assert not clue.ok and clue.reason == "unavailable: no audio track"
    clip = make_face_clip(tmp_path / "tone.mp4", seconds=1.0, audio="tone", size=(160, 120))
    clue = d.describe(ClipContext("tone", clip.path))  # AAC at 44.1 kHz, decoded and resampled
    assert (
        clue.ok
        and clue.text.startswith("medium-pitched, loud")
        and clue.measures["pitch_hz"] == pytest.approx(180, abs=3)
    )
    assert clue.source == d.id and Clue.from_dict(clue.to_dict()) == clue


def test_csv_subtitles_keep_string_names(tmp_path):
    csv = tmp_path / "transcription_en_all.csv"
    csv.write_text('name,sentence\n00012,"Hello, there."\nsample_2,\n', encoding="utf-8")
    d = CSVSubtitles(csv)
    assert d.describe(ClipContext("00012", tmp_path / "00012.mp4")).text == "Hello, there."
    assert d.describe(ClipContext("12", tmp_path / "12.mp4")).reason.startswith("unavailable: no row for '12'")
    assert d.describe(ClipContext("sample_2", tmp_path / "s.mp4")).reason.startswith("unavailable: empty sentence")
    assert not d.cacheable and d.id.startswith("csv:transcription_en_all.csv:")


def test_asr_describer_skips_non_speech(tmp_path):
    calls = []

    def fake_asr(wave, sr):
        calls.append(len(wave))
        return " I passed the exam. "

    d = ASRSubtitleDescriber(transcriber=fake_asr)
    ctx = ClipContext("a", tmp_path / "a.mp4")
    ctx._audio = syllables(4.0)
    assert d.describe(ctx).text == "I passed the exam."
    ctx._audio = np.zeros(SR, np.float32)
    assert d.describe(ctx).reason == "unavailable: silent audio track"
    ctx._audio = np.random.default_rng(1).normal(0, 0.1, SR).astype(np.float32)
    assert d.describe(ctx).reason == "unavailable: no voiced speech to transcribe"  # Whisper would hallucinate
    assert len(calls) == 1
    assert Clue.available("  ", "x").reason == "unavailable: the describer returned no text"


def test_fer_fallback_decision_rule():
    labels = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

    def probs(rows):
        return np.array([[r.get(lab, 0.0) for lab in labels] for r in rows])

    r = FERFallbackAU._decide(
        labels,
        [0, 5, 10, 15],
        probs(
            [
                {"neutral": 0.9, "happy": 0.1},
                {"happy": 0.6, "neutral": 0.4},
                {"sad": 0.7, "neutral": 0.3},
                {"happy": 0.8, "neutral": 0.2},
            ]
        ),
    )
    # happy and sad are both top once... happy twice: dominant happy; its curve peaks at frame 15
    assert (r.dominant, r.peak_index, r.pseu_emotion) == ("happy", 15, "happy")
    r = FERFallbackAU._decide(labels, [0, 1], probs([{"neutral": 0.9}, {"neutral": 0.95}]))
    assert (r.dominant, r.peak_index, r.pseu_emotion) == ("neutral", 1, "neutral")
    r = FERFallbackAU._decide(labels, [3], probs([{"disgust": 0.8, "neutral": 0.2}]))
    assert r.pseu_emotion is None  # MERR has no disgust


def test_fer_fallback_on_a_real_clip(tmp_path):
    from emollm.media.fixtures import make_face_clip

    clip = make_face_clip(tmp_path / "smile.mp4", "astronaut", seconds=1.0, audio=None, size=(160, 120))
    calls = []

    def classify(crops):
        calls.append(crops.shape)
        return np.tile([0.0, 0.0, 0.0, 0.7, 0.0, 0.0, 0.3], (len(crops), 1))

    labels = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    r = FERFallbackAU("uniform:4", classify=classify, labels=labels).analyze(ClipContext("smile", clip.path))
    assert calls[0][0] == 4 and calls[0][-1] == 3 and r.frame_indices == [1, 3, 6, 8]
    assert (r.pseu_emotion, r.peak_index) == ("happy", 1)


def test_specs_and_unavailable_describer(tmp_path):
    assert parse_spec("subtitle", "data/transcription_en_all.csv") == ("csv", "data/transcription_en_all.csv")
    assert parse_spec("subtitle", "asr") == ("asr", None) and parse_spec("audio", "alm:/m") == ("alm", "/m")
    with pytest.raises(ValueError, match="unknown visual describer 'measured'; use one of: none, checkpoint:<dir>"):
        parse_spec("visual", "measured")
    with pytest.raises(ValueError, match="needs an argument"):
        parse_spec("visual", "checkpoint:")
    with pytest.raises(ValueError, match="python:<module>:<factory>"):
        parse_spec("audio", "python:nomodule")
    d = build_describer("visual", "none")
    assert isinstance(d, UnavailableDescriber)
    clue = d.describe(ClipContext("x", tmp_path / "x.mp4"))
    assert clue.text == "" and clue.reason == "unavailable: no visual describer configured (describe.visual: none)"
    with pytest.raises(FileNotFoundError, match="not an emollm checkpoint"):
        CheckpointDescriber(tmp_path, "visual")
    with pytest.raises(FileNotFoundError, match="local transformers model folder with config.json"):
        HFMultimodalDescriber(tmp_path, "visual")
    with pytest.raises(ValueError, match="cannot import 'no_such_mod'"):
        build_describer("audio", "python:no_such_mod:f")
    fake = build_describer("visual", "python:tests.merr.fakes:FakeVisual", options={"calls_file": None})
    assert fake.id == "fake-visual:v1"


def test_checkpoint_describer_on_a_live_face_tower(tmp_path):
    """A tiny random emollm checkpoint with the FER2013 face tower: peak-frame face crop -> chat -> clue."""
    import torch

    from emollm.backbones import get_backbone, get_chat_format
    from emollm.checkpoints import save_checkpoint
    from emollm.media.fixtures import make_face_clip
    from emollm.model.configuration import ModalityConfig, ProjectorConfig
    from emollm.model.factory import build_model
    from emollm.testing import build_tiny_tokenizer

    spec = get_backbone("smollm2")
    tok = build_tiny_tokenizer(get_chat_format(spec.chat_format), extra_special_tokens=["<|endoftext|>"])
    torch.manual_seed(0)
    face = ModalityConfig(encoder="fer", feature_dim=7, projector=ProjectorConfig(kind="linear"))
    model, proc = build_model("smollm2", {"face": face}, text_config=spec.text_config(n_layers=2, hidden=64,
                              vocab_size=len(tok)), tokenizer=tok)  # fmt: skip
    ckpt = save_checkpoint(model, proc, tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"no live audio encoder \(its towers: \{'face': 'fer'\}\)"):
        CheckpointDescriber(ckpt, "audio")
    d = build_describer("visual", f"checkpoint:{ckpt}", max_new_tokens=6)
    assert isinstance(d, CheckpointDescriber) and d.modality == "face" and d.id.startswith("checkpoint:")
    clip = make_face_clip(tmp_path / "c.mp4", "astronaut", seconds=1.0, audio=None, size=(160, 120))
    clue = d.describe(ClipContext("c", clip.path, peak_index=3))
    # a random tiny LLM may say nothing: then the clue is marked, not invented
    assert clue.source == d.id
    assert clue.ok or clue.reason == "unavailable: the describer returned no text"
    assert d.describe(ClipContext("c", clip.path, peak_index=3)) == clue  # greedy: deterministic


@pytest.mark.slow
def test_asr_subtitles_with_embedded_whisper(tmp_path):
    """The real offline Whisper tiny.en (``emollm.encoders.text.WhisperTranscriber``) on espeak speech."""
    pytest.importorskip("emollm.encoders.text")
    from emollm.media.fixtures import make_face_clip

    clip = make_face_clip(tmp_path / "s.mp4", seconds=2.0, audio="speech", text="I passed the exam", size=(160, 120))
    d = build_describer("subtitle", "asr")
    assert isinstance(d, ASRSubtitleDescriber) and d.id == "asr:whisper:embedded-tiny.en"
    clue = d.describe(ClipContext("s", clip.path))
    assert clue.ok and "passed" in clue.text.lower() and "exam" in clue.text.lower()
    assert clue.measures["no_speech_prob"] < 0.6
    mute = make_face_clip(tmp_path / "m.mp4", seconds=1.0, audio="silence", size=(160, 120))
    assert d.describe(ClipContext("m", mute.path)).reason == "unavailable: silent audio track"
    # a voiced hum is not speech: Whisper would transcribe it as "you"; its no-speech probability stops that
    hum = make_face_clip(tmp_path / "h.mp4", seconds=2.0, audio="tone", size=(160, 120))
    clue = d.describe(ClipContext("h", hum.path))
    assert clue.text == "" and clue.reason.startswith("unavailable: Whisper hears no speech (p_no_speech 0.")
