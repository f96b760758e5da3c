"""Shared fixtures of the MERR pipeline tests: one generated clip set per session, config builders."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from .fakes import make_clip_set

FAKE_REASONER = "python:tests.merr.fakes:fake_reasoner"


@pytest.fixture(scope="session")
def clip_set(tmp_path_factory) -> dict[str, Path]:
    """``videos/`` (9 face clips with speech/tone/silence/no audio + 1 corrupt) and ``openface/`` (8 CSVs + 1)."""
    return make_clip_set(tmp_path_factory.mktemp("merr_clips"))


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build_dict(clip_set: dict[str, Path], out: Path, **extra: Any) -> dict[str, Any]:
    """Offline-default build settings over the clip set, with the fake reasoner (contradicts 'sad')."""
    base = {
        "inputs": {"video_dir": str(clip_set["videos"]), "openface_dir": str(clip_set["openface"])},
        "reason": {"client": FAKE_REASONER, "client_options": {"contradict": {"sad": "angry"}}},
        "filter": {"add_neutral": True},
        "output": {"dir": str(out)},
    }
    return _merge(base, extra)


def slow_build_dict(clip_set: dict[str, Path], out: Path, audio_log: Path, reason_log: Path, sleep: float) -> dict:
    """:func:`build_dict` with the audio describer and the reasoner slowed by ``sleep`` s per clip and logging their
    calls (one line per clip / prompt), for the kill-and-resume tests (which count work across processes)."""
    return build_dict(
        clip_set,
        out,
        describe={
            "audio": "python:tests.merr.fakes:SlowMeasured",
            "options": {"audio": {"calls_file": str(audio_log), "sleep": sleep}},
        },
        reason={"client_options": {"contradict": {"sad": "angry"}, "calls_file": str(reason_log), "sleep": sleep}},
    )


@pytest.fixture
def make_cfg(clip_set):
    """``make_cfg(out_dir, **nested_overrides) -> BuildConfig``."""
    from emollm_merr.config import BuildConfig

    def make(out: Path, **extra: Any) -> BuildConfig:
        return BuildConfig.from_dict(build_dict(clip_set, out, **extra))

    return make
