"""Audio: containers and plain files to 16 kHz mono, resampling, silence, DFEW padding."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

from emollm.media import NoAudioTrack, SilentAudio, is_silent, load_audio, resample, rms_db


def dominant_hz(wave: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.fft.rfftfreq(wave.size, 1 / sr)[np.argmax(spec)])


@pytest.mark.parametrize("method", ["polyphase", "fft"])
def test_resample_keeps_pitch(method):
    sr = 44100
    t = np.arange(sr) / sr
    wave = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    out = resample(wave, sr, 16000, method=method)
    assert out.dtype == np.float32 and out.shape == (16000,)
    assert dominant_hz(out, 16000) == pytest.approx(440, abs=1.0)
    assert np.sqrt(np.mean(out[1000:-1000] ** 2)) == pytest.approx(np.sqrt(0.5), rel=0.02)


def test_resample_removes_content_above_new_nyquist():
    sr = 44100
    t = np.arange(sr) / sr
    wave = np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 12000 * t)  # 12 kHz would alias to 4 kHz at 16 kHz
    out = resample(wave, sr, 16000)
    spec = np.abs(np.fft.rfft(out))
    freqs = np.fft.rfftfreq(out.size, 1 / 16000)
    assert spec[np.argmin(np.abs(freqs - 4000))] < 0.01 * spec[np.argmin(np.abs(freqs - 440))]


def test_mp4_audio_at_16k_has_the_clip_duration(media):
    clip = media["astronaut"]  # 2 s, AAC at 44.1 kHz
    for backend in ["pyav"] + (["decord"] if importlib.util.find_spec("decord") else []):
        wave = load_audio(clip.path, backend=backend)
        assert wave.dtype == np.float32 and wave.ndim == 1
        assert wave.size == pytest.approx(32000, abs=16), backend  # AAC end padding trimmed
        assert not is_silent(wave)


@pytest.mark.parametrize("key", ["wav", "flac", "mp3"])
def test_audio_files(media, key):
    wave = load_audio(media[key].path)  # 440 Hz sine; wav/mp3 at 44.1 kHz, flac stereo at 22.05 kHz
    assert wave.shape == (16000,) or abs(wave.size - 16000) < 40
    assert dominant_hz(wave, 16000) == pytest.approx(440, abs=2)
    assert wave.dtype == np.float32 and np.abs(wave).max() <= 1.0


def test_stereo_is_averaged(media):
    # flac has L = 0.5 sine, R = 0.25 sine -> mean 0.375 sine (RMS -11.5 dBFS) with soundfile and PyAV alike
    a = load_audio(media["flac"].path, backend="soundfile")
    b = load_audio(media["flac"].path, backend="pyav")
    assert rms_db(a) == pytest.approx(20 * np.log10(0.375 / np.sqrt(2)), abs=0.2)
    assert rms_db(b) == pytest.approx(rms_db(a), abs=0.2)


def test_short_clip_padded_to_one_second(media):
    clip = media["short"]  # 0.3 s (DFEW has clips under 1 s)
    raw = load_audio(clip.path)
    padded = load_audio(clip.path, min_duration=1.0)
    assert raw.size == pytest.approx(4800, abs=16)
    assert padded.size == 16000 and np.array_equal(padded[: raw.size], raw) and not padded[raw.size :].any()


def test_no_audio_track(media):
    with pytest.raises(NoAudioTrack, match="no_audio.mp4.*no audio track"):
        load_audio(media["no_audio"].path)
    with pytest.raises(NoAudioTrack, match="image has no audio"):
        load_audio(media["image"].path)


def test_silence(media):
    wave = load_audio(media["silent"].path)
    assert is_silent(wave) and rms_db(wave) < -50
    with pytest.raises(SilentAudio, match="silent.mp4.*silent"):
        load_audio(media["silent"].path, reject_silent=True)
    assert not is_silent(0.01 * np.ones(100))  # -40 dBFS
    assert is_silent(np.zeros(0)) and is_silent(1e-4 * np.ones(100))


def test_speech_track(media):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed: the clip has a synthetic tone instead")
    wave = load_audio(media["astronaut"].path)  # "I passed the exam", ~1.4 s of speech in a 2 s clip
    frames = wave[: wave.size // 320 * 320].reshape(-1, 320)  # 20 ms frames
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    assert -35 < rms_db(wave) < -5
    assert (level > -40).mean() > 0.4 and (level < -60).mean() > 0.1  # speech, then the padded silence


def test_speech_without_espeak_says_how_to_install(monkeypatch):
    from emollm.media import fixtures

    monkeypatch.setattr(fixtures.shutil, "which", lambda _name: None)
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        fixtures.synth_wave("speech", 1.0, 16000)
