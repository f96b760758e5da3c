"""Praat prosody on espeak-ng speech: pitch follows -p, rate follows -s, loudness follows -a; silence has no speech."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("parselmouth")

from emollm.clues.prosody import (  # noqa: E402
    Prosody,
    ProsodyThresholds,
    describe_prosody,
    egemaps_functionals,
    measure_prosody,
    prosody_from_file,
)
from emollm.media import load_audio  # noqa: E402

SENTENCE = "The quick brown fox jumps over the lazy dog and runs far away into the forest"
VOICES = {  # name -> espeak-ng flags (-p pitch 0-99, -s words per minute, -a amplitude 0-200)
    "p20": ["-p", "20"],
    "p50": ["-p", "50"],
    "p90": ["-p", "90"],
    "s100": ["-s", "100"],
    "s300": ["-s", "300"],
    "a20": ["-a", "20"],
    "a200": ["-a", "200"],
}


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Name -> wav path of espeak-ng renderings of one sentence (22.05 kHz files, read back at 16 kHz)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    folder = tmp_path_factory.mktemp("espeak")
    paths = {}
    for name, flags in VOICES.items():
        paths[name] = folder / f"{name}.wav"
        subprocess.run([exe, *flags, "-w", str(paths[name]), SENTENCE], check=True, capture_output=True)
    return paths


@pytest.fixture(scope="module")
def measured(speech):
    return {name: prosody_from_file(path) for name, path in speech.items()}


def test_higher_espeak_pitch_gives_higher_f0(measured):
    f0 = [measured[n].pitch_mean_hz for n in ("p20", "p50", "p90")]
    assert f0[0] < f0[1] < f0[2]
    assert f0[0] == pytest.approx(77, rel=0.1)  # espeak-ng's default voice: ~77 / 101 / 154 Hz
    assert f0[1] == pytest.approx(101, rel=0.1)
    assert f0[2] == pytest.approx(154, rel=0.1)
    p = measured["p50"]
    assert p.pitch_min_hz < p.pitch_mean_hz < p.pitch_max_hz
    assert p.pitch_mean_st == pytest.approx(12 * math.log2(p.pitch_mean_hz / 100), abs=0.2)
    assert 0 < p.pitch_std_st < 4 and 0 < p.pitch_range_st < 12


def test_faster_espeak_gives_higher_rate(measured):
    slow, normal, fast = (measured[n].rate_segments_per_s for n in ("s100", "p50", "s300"))
    assert slow < normal < fast
    assert measured["s100"].speech_span_s > measured["s300"].speech_span_s


def test_louder_espeak_gives_higher_intensity(measured):
    quiet, normal, loud = (measured[n].loudness_dbfs for n in ("a20", "p50", "a200"))
    assert quiet < normal < loud
    p = measured["p50"]
    assert p.loudness_dbfs == pytest.approx(p.intensity_mean_db - 93.98, abs=0.01)
    assert p.intensity_std_db > 0


def test_voice_quality_and_timing_are_plausible(measured):
    p = measured["p50"]
    assert p.has_speech and p.reason is None
    assert 0 < p.jitter_local < 0.05 and 0 < p.shimmer_local < 0.5
    assert 5 < p.hnr_db < 30
    assert 0.3 < p.voiced_fraction < 0.9
    assert p.voiced_segments >= 5
    assert p.pitch_floor_hz < p.pitch_mean_hz < p.pitch_ceiling_hz
    d = p.to_dict()
    json.dumps(d)
    assert all(v is not None for k, v in d.items() if k != "reason")


def test_phrases(measured):
    assert describe_prosody(measured["s100"]).endswith("slow")
    assert describe_prosody(measured["s300"]).endswith("fast")
    assert measured["p20"].phrase().startswith("low")
    assert "loud" in measured["a200"].phrase().split("; ")
    high = ProsodyThresholds(low_pitch_hz=50, high_pitch_hz=120)
    assert measured["p90"].phrase(high).startswith("high")


@pytest.mark.parametrize(
    ("wave", "reason"),
    [
        (np.zeros(16000, np.float32), "silent"),
        (np.zeros(800, np.float32), "too short"),
        (np.zeros(0, np.float32), "too short"),
        (0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32), "no voiced speech"),
    ],
    ids=["silence", "50ms", "empty", "noise"],
)
def test_no_speech_outcomes(wave, reason):
    p = measure_prosody(wave)
    assert isinstance(p, Prosody)
    assert not p.has_speech and reason in p.reason
    d = p.to_dict()
    assert all(v is None for k, v in d.items() if k not in ("has_speech", "reason", "duration_s"))
    assert describe_prosody(p) == "no voiced speech"


def test_other_sample_rates(speech):
    wave16 = load_audio(speech["p50"])
    wave22 = load_audio(speech["p50"], sample_rate=22050)
    assert measure_prosody(wave22, 22050).pitch_mean_hz == pytest.approx(
        measure_prosody(wave16).pitch_mean_hz, rel=0.02
    )


def test_bad_input_raises():
    with pytest.raises(ValueError, match="mono 1-D"):
        measure_prosody(np.zeros((2, 16000), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        measure_prosody(np.full(16000, np.nan, np.float32))


def test_egemaps_functionals(speech):
    pytest.importorskip("opensmile")
    feats = egemaps_functionals(load_audio(speech["p50"]))
    assert len(feats) == 88
    assert all(math.isfinite(v) for v in feats.values())
    assert "F0semitoneFrom27.5Hz_sma3nz_amean" in feats
    assert feats["F0semitoneFrom27.5Hz_sma3nz_amean"] > 0
    silent = egemaps_functionals(np.zeros(16000, np.float32))
    assert silent["F0semitoneFrom27.5Hz_sma3nz_amean"] == 0.0
    with pytest.raises(ValueError):
        egemaps_functionals(np.zeros(0, np.float32))


# ------------------------------------------------------------------------------------------------ windows of a track
def test_track_window_of_the_whole_is_measure_prosody(speech):
    from emollm.clues.prosody import prosody_track

    wave = load_audio(speech["p50"], sample_rate=16000)
    track = prosody_track(wave)
    assert track.window(0.0, track.duration_s) == measure_prosody(wave)  # the same numbers, not close ones
    silent = prosody_track(np.zeros(16000, dtype=np.float32))
    assert silent.window(0.0, 0.5).reason == measure_prosody(np.zeros(16000)).reason


def test_track_windows_agree_with_measuring_each_stretch(speech):
    """A window is aggregated from the whole recording's Praat frames; cross-checked against Praat run on the stretch
    alone (pitch within 5 %, voiced fraction within 0.1) and against numpy over the track's own frames."""
    from emollm.clues.prosody import prosody_track

    wave = load_audio(speech["p50"], sample_rate=16000)
    track = prosody_track(wave)
    for a, b in [(0.0, 1.5), (0.5, 2.5), (1.0, 3.0)]:
        win, alone = track.window(a, b), measure_prosody(wave[int(a * 16000) : int(b * 16000)])
        assert win.has_speech and alone.has_speech and win.duration_s == pytest.approx(b - a)
        assert win.pitch_mean_hz == pytest.approx(alone.pitch_mean_hz, rel=0.05)
        assert win.voiced_fraction == pytest.approx(alone.voiced_fraction, abs=0.1)
        sel = (track.times >= a) & (track.times < b)
        f0 = track.f0[sel]
        assert win.voiced_fraction == pytest.approx(np.count_nonzero(f0) / f0.size)
        assert win.pitch_mean_hz == pytest.approx(f0[f0 > 0].mean())
        assert win.jitter_local is not None and win.hnr_db is not None


def test_track_window_of_a_pause_is_silent(speech):
    from emollm.clues.prosody import prosody_track

    wave = load_audio(speech["p50"], sample_rate=16000)
    gap = np.concatenate([wave, np.zeros(32000, dtype=np.float32), wave])
    track = prosody_track(gap)
    d = len(wave) / 16000
    pause = track.window(d + 0.5, d + 1.5)
    assert not pause.has_speech and pause.reason.startswith("silent")
    assert track.window(0.0, d).has_speech and track.window(d + 2.0, 2 * d + 2.0).has_speech
    assert track.window(3.0, 3.05).reason.startswith("too short")


def test_harmonicity_measured_apart_gives_the_same_track(speech):
    """A live stream measures HNR piece by piece and hands the frames in: the same frames give the same numbers."""
    from emollm.clues.prosody import harmonicity_frames, prosody_track

    wave = load_audio(speech["p50"], sample_rate=16000)
    track = prosody_track(wave)
    given = prosody_track(wave, harmonicity=harmonicity_frames(wave, floor=track.pitch_floor_hz))
    assert given.window(0.0, given.duration_s) == track.window(0.0, track.duration_s)
    times, db = harmonicity_frames(wave[:16000], offset_s=2.0)
    assert times.shape == db.shape and 2.0 < times[0] < times[-1] < 3.0
