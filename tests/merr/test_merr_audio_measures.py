"""emollm_merr.audio_measures: pitch, loudness, speaking rate and their words on synthetic signals; the describer id
that cache keys depend on."""

from __future__ import annotations

import pytest

from emollm_merr import describe, describe_offline
from emollm_merr.audio_measures import describe_tone, measure_audio

from .fakes import sine, syllables


def test_pitch_words_follow_frequency():
    low, mid, high = (measure_audio(sine(f)) for f in (110.0, 220.0, 440.0))
    assert [round(m.pitch_hz) for m in (low, mid, high)] == [110, 220, 440]
    assert describe_tone(low).startswith("low-pitched")
    assert describe_tone(mid).startswith("medium-pitched")
    assert describe_tone(high).startswith("high-pitched")
    assert describe_tone(high).endswith("with flat, monotone intonation")  # a pure tone does not move


def test_loudness_and_rate_words():
    loud, quiet = measure_audio(sine(220.0, 0.5)), measure_audio(sine(220.0, 0.01))
    assert loud.loudness_dbfs == pytest.approx(-9.03, abs=0.1)
    assert describe_tone(loud) == "medium-pitched and loud, with flat, monotone intonation"
    assert describe_tone(quiet) == "medium-pitched and quiet, with flat, monotone intonation"
    slow, normal, fast = (measure_audio(syllables(r)) for r in (2.0, 4.0, 8.0))
    assert slow.rate_syll_per_s < 3 < normal.rate_syll_per_s < 6 < fast.rate_syll_per_s
    assert [describe_tone(m).split(" and ")[1].split(",")[0] for m in (slow, normal, fast)] == [
        "slow",
        "moderately paced",
        "fast",
    ]
    assert measure_audio(sine(220.0)).rate_syll_per_s is None  # no syllable structure: rate not reported


def test_measured_describer_id_is_stable():
    """The id is part of every cached audio clue's key and of the exported records: changing it redoes stage audio."""
    assert describe.MeasuredAudioDescriber is describe_offline.MeasuredAudioDescriber
    assert describe.measure_audio is measure_audio
    assert describe_offline.MeasuredAudioDescriber().id == "measured:v1:30e5771558cf"
