"""Shared pieces of the service tests: stub analyzers, generated media, an app factory that checks cleanup."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from emollm.apps.analysis import Analysis
from emollm.media import fixtures

LABELS = ("neutral", "angry", "happy", "sad", "worried", "surprise")
WAIT_S = 20.0
"""Upper bound of every wait in these tests (nothing may hang)."""


class StubAnalyzer:
    """Answers at once, or, with ``gate``, only after the gate opens (bounded by :data:`WAIT_S`)."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.calls: list[str] = []
        self.started = threading.Event()
        self.closed = False

    def __call__(self, path, *, subtitle=None):
        self.calls.append(Path(path).name)
        self.started.set()
        if self.gate is not None and not self.gate.wait(WAIT_S):
            raise RuntimeError("the test never opened the gate")
        assert Path(path).exists(), "the upload must exist while the analyzer runs"
        probs = {lab: (0.5 if lab == "happy" else 0.1) for lab in LABELS}
        return Analysis(str(path), "happy", probs, "stub", ["text"], subtitle=subtitle, mode="clues")

    def produced_by(self):
        return {"mode": "stub", "models": {}, "precision": "fp32"}

    def close(self):
        self.closed = True


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> Path:
    """A 2 s astronaut clip (no audio: fast), a 0.6 s one, a garbage .mp4 and a text file."""
    root = tmp_path_factory.mktemp("serve-media")
    fixtures.make_face_clip(root / "happy.mp4", "astronaut", seconds=2.0, size=(320, 240), audio=None)
    fixtures.make_corrupt_file(root / "garbage.mp4", "garbage")
    (root / "note.txt").write_text("I am so happy, this is wonderful news!\n")
    return root


def assert_no_uploads_left(app) -> None:
    """The private upload root exists, is 0700, and holds nothing once requests are answered."""
    root = app.state.service.tmp_root
    assert oct(os.stat(root).st_mode & 0o777) == "0o700"
    assert os.listdir(root) == [], f"upload folders left behind: {os.listdir(root)}"
