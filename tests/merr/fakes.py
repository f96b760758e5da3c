"""Deterministic stand-ins for the model stages of ``emollm merr build`` (test helpers), synthetic voiced signals,
plus a generated clip set.

Used in-process and through ``python:tests.merr.fakes:<factory>`` specs in subprocess builds (kill-and-resume).
Every fake can log its calls to a file (one line per call, appended and flushed), so a test can count work across
processes.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import numpy as np

from emollm_merr.describe import ClipContext, Clue, MeasuredAudioDescriber

from .openface_gen import Plant, write_openface_csv

HAPPY = {"AU06": 2.0, "AU12": 2.0, "AU14": 2.0}
SURPRISE = {"AU01": 2.0, "AU02": 2.0, "AU05": 2.0, "AU26": 2.0}
SAD = {"AU01": 2.0, "AU04": 2.0, "AU15": 2.0, "AU14": 2.0}
ANGRY = {"AU04": 2.0, "AU05": 2.0, "AU07": 2.0, "AU23": 2.0, "AU10": 2.0, "AU17": 2.0}
DISGUST = {"AU09": 2.2, "AU15": 2.2}


# ------------------------------------------------------------------------------------------------ signals

SR = 16000
T = np.arange(2 * SR) / SR  # 2 s at 16 kHz


def sine(freq: float, amp: float = 0.5) -> np.ndarray:
    """A pure tone (voiced, no syllable structure)."""
    return (amp * np.sin(2 * np.pi * freq * T)).astype(np.float32)


def syllables(rate: float, freq: float = 180.0, amp: float = 0.3) -> np.ndarray:
    """A voiced harmonic tone modulated into ``rate`` syllables per second."""
    voice = sum(np.sin(2 * np.pi * freq * k * T) / k for k in range(1, 5))
    return (amp * voice * 0.5 * (1 - np.cos(2 * np.pi * rate * T))).astype(np.float32)


# ------------------------------------------------------------------------------------------------ fakes


def _log(path: str | None, line: str) -> None:
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()


def prompt_hash(user: str) -> str:
    """What :class:`FakeReasoner` logs per call."""
    return hashlib.sha256(user.encode()).hexdigest()[:16]


class FakeReasoner:
    """A ReasoningClient that echoes the visual-expression clue and the label (no model).

    ``contradict``: label -> the label the reasoning concludes instead (after naming the true one first).
    """

    def __init__(self, calls_file: str | None = None, sleep: float = 0.0, contradict: dict[str, str] | None = None):
        self.id = "fake-reasoner:v1"
        self.calls_file = calls_file
        self.sleep = sleep
        self.contradict = dict(contradict or {})
        self.calls = 0

    def generate(self, system: str, user: str, *, seed: int) -> str:
        self.calls += 1
        _log(self.calls_file, prompt_hash(user))
        if self.sleep:
            time.sleep(self.sleep)
        label = re.search(r"feels (\w+)\.$", user).group(1)
        expr = re.search(r"^Visual expression: (.*)\.$", user, re.M)
        cue = expr.group(1) if expr else "few visible cues"
        if label in self.contradict:
            other = self.contradict[label]
            return f"At first the person may look {label}. However, {cue} suggest the person feels {other}."
        return f"The face shows {cue}. These clues suggest the person in the video feels {label}."


def fake_reasoner(**kwargs) -> FakeReasoner:
    """Factory for ``reason.client: python:tests.merr.fakes:fake_reasoner``."""
    return FakeReasoner(**kwargs)


class SlowMeasured(MeasuredAudioDescriber):
    """The measured audio describer, slowed down and logging clip names (kill-and-resume test)."""

    def __init__(self, clue: str = "audio", calls_file: str | None = None, sleep: float = 0.0):
        super().__init__()
        self.calls_file = calls_file
        self.sleep = sleep

    def describe(self, clip: ClipContext) -> Clue:
        _log(self.calls_file, clip.name)
        if self.sleep:
            time.sleep(self.sleep)
        return super().describe(clip)


class FakeVisual:
    """A visual describer that states the clip's peak frame (a stand-in for a VLM)."""

    cacheable = True
    thread_safe = True

    def __init__(self, clue: str = "visual", calls_file: str | None = None):
        self.clue = clue
        self.id = "fake-visual:v1"
        self.calls_file = calls_file

    def describe(self, clip: ClipContext) -> Clue:
        _log(self.calls_file, clip.name)
        return Clue.available(f"sitting in front of a gradient wall at frame {clip.peak_index}", self.id)


# ------------------------------------------------------------------------------------------------ clip set

#: name -> (photo, audio kind or None, text, AU plant or None, CSV written?)
CLIPS: dict[str, tuple] = {
    "sample_01_happy": ("astronaut", "speech", "I passed the exam", HAPPY, True),
    "sample_02_happy": ("grace_hopper", "tone", "", HAPPY, True),
    "sample_03_surprise": ("astronaut", "tone", "", SURPRISE, True),
    "sample_04_sad": ("grace_hopper", "speech", "I lost my keys again", SAD, True),
    "sample_05_angry": ("astronaut", None, "", ANGRY, True),
    "sample_06_calm": ("grace_hopper", "silence", "", None, True),
    "sample_07_calm": ("astronaut", "tone", "", None, True),
    "sample_08_disgust": ("grace_hopper", "tone", "", DISGUST, True),
    "sample_09_nocsv": ("astronaut", "tone", "", None, False),
}
CORRUPT = "sample_00_corrupt"
FRAMES = 20  # 2 s at 10 fps


def make_clip_set(root: Path) -> dict[str, Path]:
    """Write ``videos/`` (9 clips + a corrupt one) and ``openface/`` (CSVs for 8 clips + the corrupt one)."""
    from emollm.media.fixtures import make_corrupt_file, make_face_clip

    videos, openface = root / "videos", root / "openface"
    videos.mkdir(parents=True, exist_ok=True)
    openface.mkdir(parents=True, exist_ok=True)
    for i, (name, (photo, audio, text, plant, csv)) in enumerate(CLIPS.items()):
        make_face_clip(
            videos / f"{name}.mp4",
            photo,
            seconds=FRAMES / 10,
            fps=10,
            size=(160, 120),
            audio=audio,
            text=text or "hello",
        )
        if csv:
            plants = [Plant(plant, 8, width=3)] if plant else []
            write_openface_csv(openface / f"{name}.csv", FRAMES, plants, seed=i)
    make_corrupt_file(videos / f"{CORRUPT}.mp4", "garbage")
    write_openface_csv(openface / f"{CORRUPT}.csv", FRAMES, [Plant(HAPPY, 8)], seed=99)
    return {"videos": videos, "openface": openface}
