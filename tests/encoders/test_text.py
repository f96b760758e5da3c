"""Text side: the embedded all-MiniLM-L6-v2 sentence encoder and Whisper tiny.en ASR on synthetic speech."""

from __future__ import annotations

import shutil
import subprocess
import wave

import numpy as np
import pytest
import torch

from emollm.encoders import build_encoder


@pytest.fixture(scope="module")
def minilm():
    return build_encoder("minilm", feature_dim=384)


def test_minilm_sentence_vectors(minilm):
    texts = ["I am so happy today!", "I feel really joyful today.", "The train leaves at noon."]
    with torch.no_grad():
        feats, lens = minilm(texts)
    assert feats.shape == (3, 1, 384) and lens.tolist() == [1, 1, 1] and minilm.num_tokens(17) == 1
    vecs = feats[:, 0]
    torch.testing.assert_close(vecs.norm(dim=-1), torch.ones(3))  # L2-normalised like sentence-transformers
    sims = vecs @ vecs.T
    assert sims[0, 1] > 0.6 and sims[0, 1] > sims[0, 2] + 0.3, sims
    with torch.no_grad():  # batch padding does not change a sentence's vector
        torch.testing.assert_close(minilm(texts[2:])[0][0], feats[2], atol=1e-5, rtol=1e-5)


def test_minilm_token_pooling():
    enc = build_encoder("minilm", pooling="token")
    text = "Why is she crying?"
    with torch.no_grad():
        feats, lens = enc([text, "Hi"])
    assert lens.tolist() == [enc.num_tokens(text), enc.num_tokens("Hi")] and lens[1] == 3  # [CLS] hi [SEP]
    assert feats.shape == (2, int(lens.max()), 384)
    with pytest.raises(TypeError, match="list of strings"):
        enc("one string")


def test_minilm_wrong_feature_dim():
    with pytest.raises(ValueError, match="outputs 384-d features, but feature_dim=1024"):
        build_encoder("minilm", feature_dim=1024)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_whisper_transcribes_synthetic_speech(tmp_path):
    from emollm.encoders.text import WhisperTranscriber

    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "I passed the exam today"], check=True, capture_output=True)
    with wave.open(str(wav)) as w:
        rate = w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    asr = WhisperTranscriber()
    text = asr(audio, sampling_rate=rate)  # espeak-ng writes 22.05 kHz: resampled to 16 kHz
    words = text.lower()
    assert "passed" in words and "exam" in words, text
    # Whisper writes words for a plain tone too; its no-speech probability tells them apart.
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * 16000) / 16000)).astype(np.float32)
    p_speech, p_tone = asr.no_speech_prob(audio, sampling_rate=rate), asr.no_speech_prob(tone)
    assert 0 <= p_speech < 0.6 <= p_tone <= 1, (p_speech, p_tone)
    # Under a deadline that has passed (the service's --timeout-s), recognition stops instead of running on.
    from emollm.utils.deadline import Deadline, DeadlineExceeded, deadline

    due = Deadline()
    due.cancel("the server's limit of 1 s (--timeout-s)")
    with deadline(scope=due):
        for call in (lambda: asr(audio, sampling_rate=rate), lambda: asr.transcribe(audio, sampling_rate=rate)):
            with pytest.raises(DeadlineExceeded, match="stopped at speech recognition"):
                call()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_whisper_word_times_follow_the_speech():
    """One encoder pass gives the no-speech probability, the text and word times; the words lie where the voice is,
    in order; a shortened encoder context transcribes a short window alike; long audio is cut at a pause."""
    from emollm.encoders.text import WhisperTranscriber, split_at_quiet
    from emollm.media import fixtures

    gap = 1.0
    one = fixtures.synth_wave("speech", 2.0, 16000, text="I passed the exam")
    two = fixtures.synth_wave("speech", 2.0, 16000, text="wonderful news")
    audio = np.concatenate([one, np.zeros(int(gap * 16000), dtype=np.float32), two])
    asr = WhisperTranscriber()
    heard = asr.transcribe(audio, words=True)
    text = heard.text.lower()
    assert "passed" in text and "wonderful" in text and heard.passes == 1 and heard.no_speech_prob < 0.6
    assert heard.text == asr(audio)  # the same greedy text as the plain transcription
    assert [w.text for w in heard.words] == heard.text.split()
    starts = [w.start for w in heard.words]
    assert starts == sorted(starts) and all(w.end >= w.start for w in heard.words)
    late = next(w for w in heard.words if "wonderful" in w.text.lower())
    early = next(w for w in heard.words if "passed" in w.text.lower())
    assert early.end <= 2.2 and late.end >= 2.0 + gap, (early, late)  # each in its own stretch of speech
    short = asr.transcribe(two, words=True, context_s=3.0, offset_s=10.0)
    assert "wonderful" in short.text.lower() and short.context_s == 3.0
    assert all(10.0 <= w.start <= w.end <= 12.5 for w in short.words)
    with pytest.raises(ValueError, match="do not fit a 1 s encoder context"):
        asr.transcribe(two, context_s=1.0)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * 16000) / 16000)).astype(np.float32)
    quiet = asr.transcribe(tone, no_speech_threshold=0.6)
    assert quiet.text is None and quiet.words == [] and quiet.no_speech_prob >= 0.6
    # Longer than 30 s: cut at the quietest 20 ms before the limit (here: the pause).
    long = np.concatenate([np.tile(np.concatenate([one, np.zeros(8000, dtype=np.float32)]), 11), two])
    cuts = split_at_quiet(long, 16000)
    assert cuts[0] == 0 and cuts[-1] == len(long)
    assert all(b - a <= 30 * 16000 for a, b in zip(cuts[:-1], cuts[1:], strict=True))
    assert np.abs(long[cuts[1] - 80 : cuts[1] + 80]).max() == 0.0
