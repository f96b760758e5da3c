"""Live sessions without a transport: intake checks, bounded buffers, drops and skipped hops counted, the committed
transcript, and a replayed file cross-checked entry by entry against the file's timeline."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from emollm.apps.live import (
    AUDIO,
    VIDEO,
    LiveError,
    LiveLimit,
    LiveSession,
    LiveSettings,
    decode_image,
    pack_media,
    unpack_media,
)
from emollm.media import fixtures

LABELS = ("neutral", "angry", "happy", "sad", "worried", "surprise")
PCM = {"format": "pcm16", "sample_rate": 16000}


def _pcm(seconds: float, value: float = 0.0) -> bytes:
    return (np.full(round(seconds * 16000), value * 32767)).astype("<i2").tobytes()


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", cv2.cvtColor(fixtures.load_photo("astronaut"), cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def test_binary_messages_round_trip_and_refuse_garbage():
    kind, t, payload = unpack_media(pack_media(AUDIO, 1.25, b"\x01\x02"))
    assert (kind, t, payload) == (AUDIO, 1.25, b"\x01\x02")
    with pytest.raises(LiveError, match="9-byte header"):
        unpack_media(b"A\x00")
    with pytest.raises(LiveError, match="starts with b'A' .* or b'V'"):
        unpack_media(b"X" + bytes(8))


def test_audio_intake_checks_order_gaps_size_and_the_session_limit():
    s = LiveSession(LABELS, LiveSettings(max_session_s=6.0), PCM)
    s.add_audio(0.0, _pcm(1.0))
    assert s.clock == pytest.approx(1.0) and s.due_end() == 1.0
    with pytest.raises(LiveError, match="out of order"):
        s.add_audio(0.5, _pcm(0.1))
    s.add_audio(1.005, _pcm(0.5))  # 5 ms late: within tolerance, continues the audio
    assert s.clock == pytest.approx(1.5) and s.stats()["audio_gaps"] == 0
    s.add_audio(2.5, _pcm(0.5))  # a 1 s gap: filled with silence, counted
    assert s.clock == pytest.approx(3.0) and s.stats()["audio_gaps"] == 1
    with pytest.raises(LiveError, match="longer than the limit of 2 s"):
        s.add_audio(3.0, _pcm(2.5))
    with pytest.raises(LiveError, match="whole 2-byte samples"):
        s.add_audio(3.0, b"\x00\x01\x02")
    with pytest.raises(LiveError, match="finite number of seconds"):
        s.add_audio(float("nan"), _pcm(0.1))
    for k in range(3):
        s.add_audio(3.0 + k, _pcm(1.0))
    assert s._wave.size <= round((3.0 + 2.0) * 16000)  # only a window (+ 2 s) of audio is ever kept
    with pytest.raises(LiveLimit, match="limit of 6 s of media"):
        s.add_audio(6.0, _pcm(1.0))
    assert s.clock == 6.0 and s.ended
    with pytest.raises(LiveError, match="audio.format must be one of"):
        LiveSession(LABELS, LiveSettings(), {"format": "mp3"})
    with pytest.raises(LiveError, match="sample_rate must be a whole number of Hz in 8000..48000"):
        LiveSession(LABELS, LiveSettings(), {"format": "pcm16", "sample_rate": 4000})
    f32 = LiveSession(LABELS, LiveSettings(), {"format": "f32", "sample_rate": 8000})
    with pytest.raises(LiveError, match="NaN or inf"):
        f32.add_audio(0.0, np.array([np.nan] * 8, dtype="<f4").tobytes())
    f32.add_audio(0.0, np.zeros(8000, dtype="<f4").tobytes())  # resampled to 16 kHz
    assert f32.clock == pytest.approx(1.0) and f32._wave.size == 16000
    with pytest.raises(LiveError, match="declared no audio"):
        LiveSession(LABELS, LiveSettings(), None).add_audio(0.0, _pcm(0.1))


def test_frames_wait_in_a_bounded_queue_and_drops_are_counted(jpeg):
    s = LiveSession(LABELS, LiveSettings(max_pending_frames=4, max_lead_s=2.0, max_frame_bytes=len(jpeg)), PCM)
    s.add_audio(0.0, _pcm(1.0))
    for k in range(10):
        s.add_frame(0.1 * k, jpeg)
        assert len(s._pending) <= 4
    counts = s.counts.to_dict()
    assert counts["received"] == 10 and counts["dropped_busy"] == 6 and counts["dropped_share"] == 0.6
    assert [f.t for f in s._pending] == pytest.approx([0.6, 0.7, 0.8, 0.9])  # the newest are kept
    with pytest.raises(LiveError, match="older than the previous frame"):
        s.add_frame(0.5, jpeg)
    with pytest.raises(LiveError, match="ahead of the audio received"):
        s.add_frame(3.5, jpeg)
    with pytest.raises(LiveError, match="JPEG or PNG"):
        s.add_frame(1.0, b"GIF89a" + bytes(10))
    with pytest.raises(LiveError, match="larger than the limit"):
        s.add_frame(1.0, jpeg + b"\x00")
    assert s.counts.rejected == 4 and s.counts.received == 10
    with pytest.raises(LiveError, match="larger than the limit of 100 pixels"):
        decode_image(jpeg, 100, 640)
    with pytest.raises(LiveError, match="cannot be decoded"):
        decode_image(jpeg[:200], 10**7, 640)
    rgb, back = decode_image(jpeg, 10**7, 256)
    assert max(rgb.shape[:2]) <= 256 and back == pytest.approx(512 / rgb.shape[1])
    video_only = LiveSession(LABELS, LiveSettings(), None)  # without audio the frames set the clock
    video_only.add_frame(2.0, jpeg)
    assert video_only.clock == 2.0 and video_only.due_end() == 2.0


def test_a_late_worker_answers_the_newest_window_and_counts_the_skipped_hops():
    from emollm.apps.clue_mode import ClueAnalyzer, ClueSettings

    s = LiveSession(LABELS, LiveSettings(), PCM)
    for k in range(5):
        s.add_audio(float(k), _pcm(1.0))  # five hops fall due before the worker gets to them
    with ClueAnalyzer(LABELS, ClueSettings(reasoning="template", asr=False)) as analyzer:
        (hop,) = s.work(analyzer)
        assert (hop["seq"], hop["start"], hop["end"], hop["skipped_hops"]) == (1, 2.0, 5.0, 4)
        assert hop["label"] is None and "silent" in hop["missing"]["voice"]  # silence: nothing to vote
        assert s.work(analyzer) == [] and not s.has_work()
        s.add_audio(5.0, _pcm(0.6))
        assert s.work(analyzer) == []  # 5.6 s: no hop due yet ...
        (last,) = s.work(analyzer, final=True)  # ... but the end of the session answers the partial hop
        assert (last["start"], last["end"]) == (2.6, 5.6)
        timeline = s.timeline(analyzer)
    assert timeline["source"] == "stream" and len(timeline["entries"]) == 2 and timeline["stream"]["skipped_hops"] == 4


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install espeak-ng)")
def test_a_replayed_file_matches_its_timeline_and_commits_each_word_once(tmp_path):
    """The same clip as a file timeline and as a replayed stream (every frame analysed, every hop answered): the
    same windows, the same labels, expression scores within 0.05 (JPEG and a per-frame face box instead of the
    clip's track), and a transcript whose words are committed once each, in order."""
    from emollm.apps.clue_mode import ClueAnalyzer, ClueSettings
    from emollm.apps.serve.client import file_messages
    from emollm.apps.timeline import TimelineSettings

    clip = tmp_path / "happy.mp4"
    fixtures.make_face_clip(clip, "astronaut", seconds=5.0, size=(320, 240),
                            text="I passed the exam, this is wonderful news! I am so happy.")  # fmt: skip
    with ClueAnalyzer(LABELS, ClueSettings(reasoning="template")) as analyzer:
        file_tl = analyzer(clip, timeline=TimelineSettings()).timeline
        s = LiveSession(LABELS, LiveSettings(), PCM)
        hops = []
        for t, kind, payload in file_messages(clip, fps=3.0):
            (s.add_audio if kind == AUDIO else s.add_frame)(t, payload)
            if kind == VIDEO or s.due_end() is not None:
                hops += s.work(analyzer)
        hops += s.work(analyzer, final=True)
        s.flush_words()
        summary = s.summary(analyzer)
    assert summary["frames"]["dropped"] == 0 and summary["skipped_hops"] == 0 and summary["label"] == "happy"
    assert [(h["start"], h["end"]) for h in hops] == [(e["start"], e["end"]) for e in file_tl["entries"]]
    for h, e in zip(hops, file_tl["entries"], strict=True):
        assert h["label"] == e["label"]
        assert h["evidence"]["face"]["frames"] == e["evidence"]["face"]["frames"]
        stream_scores = np.array(list(h["evidence"]["face"]["expression_scores"].values()))
        file_scores = np.array(list(e["evidence"]["face"]["expression_scores"].values()))
        assert np.abs(stream_scores - file_scores).max() < 0.05
    words = summary["timeline"]["transcript"]["words"]
    ends = [w["end"] for w in words]
    assert ends == sorted(ends) and len({(w["word"], w["start"]) for w in words}) == len(words)
    said = summary["transcript"].lower()
    assert "passed" in said and "wonderful" in said and "happy" in said
    assert [w for h in hops for w in h["transcript_new"]] == words[: sum(len(h["transcript_new"]) for h in hops)]
    assert hops[0]["asr"] == "run" and {h["asr"].split(":")[0] for h in hops} <= {"run", "reused", "skipped"}
