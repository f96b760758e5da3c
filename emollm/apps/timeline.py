"""Timelines: a clip (or a live stream) as overlapping windows, each with its own label distribution and evidence.

``emollm analyze clip.mp4 --timeline [--window 3 --hop 1]`` adds a ``timeline`` to the whole-clip answer; a live
session of ``WS /v1/stream`` gives the same JSON (:mod:`emollm.apps.live`).

**Windows** are causal: entry ``k`` covers the ``window_s`` seconds that end at ``k * hop_s`` (less at the start:
``[0, 1)``, ``[0, 2)``, ``[0, 3)``, ``[1, 4)``, ... for 3 s windows and a 1 s hop), plus a last one ending at the
clip's end when at least half a hop is left. That is exactly what a live stream shows at each moment, so a file's
timeline and a replayed stream of the same file can be compared entry by entry.

**Shared work** (clue mode): the clip is decoded once, with face frames sampled at ``fps`` per second; every frame's
expression probabilities and blendshape AUs are computed once; Praat runs once over the whole audio
(:func:`emollm.clues.prosody.prosody_track`) and Whisper once, with word times. A window then only aggregates: the
mean expression of its frames, MERR's peak rule and AU table over its frames, the prosody of its stretch of the
Praat frames, the transcript emotion of its words (cached by text), and the fusion. The whole-clip answer is the same
aggregation over all frames (so with ``--timeline`` the face branch reads ``fps`` frames per second instead of
``--frames``).

**Checkpoints** (:func:`checkpoint_timeline`): the clip is decoded once at ``fps`` frames per second (and transcribed
once when the checkpoint analyzer transcribes); each window gives the checkpoint's towers that window's media (its
audio, its face crops or frames) and scores the labels by their answers' likelihoods, with the window's words as the
subtitle. Tower passes are per window (a tower's output depends on its whole input), and no reasoning is generated
per window. A branch that reads one feature file per clip cannot be windowed: that is refused, naming the branch.

An entry::

    {"start": 1.0, "end": 4.0, "label": "happy", "probabilities": {...}, "voters": {"face_expression": 0.37, ...},
     "evidence": {"face": {"frames": 9, "expression_scores": {...}, "aus": {...}, "face_box": [...], ...},
                  "words": [{"word": "passed", "start": 1.1, "end": 1.5}, ...], "transcript": "...",
                  "voice": {"tone": "low pitch; loud", "pitch_mean_hz": 104.2, ...}},
     "missing": {"face": "no face frame in this window"}}
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "TIMELINE_VERSION",
    "FaceRows",
    "TimelineSettings",
    "checkpoint_timeline",
    "clue_entry",
    "clue_timeline",
    "format_timeline",
    "save_timeline",
    "voice_descriptors",
    "window_bounds",
    "words_in",
]

TIMELINE_VERSION = 1
"""Format version of the timeline JSON."""
MAX_WINDOWS = 10_000
"""Most windows of one timeline (a bound on the work of a tiny hop over a long clip)."""


@dataclass(frozen=True)
class TimelineSettings:
    """How a clip is cut into windows; every check names the flag.

    Attributes:
        window_s: Window length in seconds (``--window``).
        hop_s: Seconds between window ends (``--hop``); at most the window.
        fps: Face frames analysed per second (``--timeline-fps``).
    """

    window_s: float = 3.0
    hop_s: float = 1.0
    fps: float = 3.0

    def __post_init__(self) -> None:
        for flag, value, most in (("--window", self.window_s, 60.0), ("--hop", self.hop_s, 60.0),
                                  ("--timeline-fps", self.fps, 30.0)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{flag} must be a number, got {value!r}")
            if not 0 < value <= most:
                raise ValueError(f"{flag} must be in (0, {most:g}], got {value:g}")
        if self.hop_s > self.window_s:
            raise ValueError(f"--hop ({self.hop_s:g} s) must not be longer than --window ({self.window_s:g} s)")
        if self.window_s < 0.5:
            raise ValueError(f"--window must be at least 0.5 s (Praat and Whisper need audio), got {self.window_s:g}")

    @classmethod
    def from_query(cls, params: Any) -> TimelineSettings | None:
        """From ``?timeline=1&window=3&hop=1&timeline_fps=3`` (None unless ``timeline`` is true).

        Raises:
            ValueError: A value that is not a number or out of range, naming the parameter.
        """
        flag = str(params.get("timeline", "")).strip().lower()
        if flag in ("", "0", "false", "no", "off"):
            if any(k in params for k in ("window", "hop", "timeline_fps")):
                raise ValueError("window, hop and timeline_fps need timeline=1")
            return None
        if flag not in ("1", "true", "yes", "on"):
            raise ValueError(f"timeline must be 1 or 0, got {flag!r}")
        values: dict[str, float] = {}
        for key, name in (("window", "window_s"), ("hop", "hop_s"), ("timeline_fps", "fps")):
            if key in params:
                try:
                    values[name] = float(params[key])
                except ValueError:
                    raise ValueError(f"{key} must be a number, got {params[key]!r}") from None
        try:
            return cls(**values)
        except ValueError as e:
            raise ValueError(str(e).replace("--timeline-fps", "timeline_fps").replace("--", "")) from None

    def frame_policy(self) -> str:
        """The :func:`emollm.media.sample_frame_indices` policy of the face frames."""
        return f"fps:{self.fps:g}"

    def to_dict(self) -> dict[str, float]:
        """``{"window_s", "hop_s", "fps"}``."""
        return {"window_s": self.window_s, "hop_s": self.hop_s, "fps": self.fps}


def window_bounds(duration: float, window_s: float, hop_s: float) -> list[tuple[float, float]]:
    """The causal windows of a clip: ends at ``hop, 2 hop, ...`` (and at ``duration`` when at least half a hop is
    left), each starting ``window_s`` earlier or at 0.

    Example:
        >>> window_bounds(4.6, 3.0, 1.0)
        [(0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (1.0, 4.0), (1.6, 4.6)]
    """
    if not duration > 0:
        return []
    count = math.floor(duration / hop_s + 1e-9)
    if count > MAX_WINDOWS:
        raise ValueError(
            f"{count} windows of {hop_s:g} s over {duration:.1f} s: at most {MAX_WINDOWS} (use a longer --hop)"
        )
    ends = [round(k * hop_s, 6) for k in range(1, count + 1)]
    if not ends or duration - ends[-1] >= 0.5 * hop_s:
        ends.append(round(duration, 6))
    return [(round(max(0.0, e - window_s), 6), e) for e in ends]


def words_in(words: Sequence[Any], start: float, end: float) -> list[Any]:
    """The words whose middle lies in ``[start, end)`` (each word falls in every window that holds its middle)."""
    return [w for w in words if start <= 0.5 * (w.start + w.end) < end]


@dataclass
class FaceRows:
    """Per-frame face results of a clip or a stream, computed once and shared by every window.

    Attributes:
        times: (M,) seconds of each frame.
        ids: Frame index in the clip (or sequence number in a stream), one per frame.
        probs: (M, 7) FER2013 probabilities.
        aus: Blendshape AUs per frame (:class:`emollm.clues.FrameAUs`).
        boxes: The main face's box per frame (:class:`emollm.media.Box`).
        fps: The clip's frame rate (None for a stream).
    """

    times: np.ndarray
    ids: list[int]
    probs: np.ndarray
    aus: list[Any]
    boxes: list[Any]
    fps: float | None = None

    def rows(self, start: float, end: float) -> np.ndarray:
        """Indices of the frames in ``[start, end)``."""
        return np.flatnonzero((self.times >= start) & (self.times < end))


@dataclass
class _FaceView:
    """What :meth:`ClueAnalyzer._face` reads of a media sample, for a subset of frames."""

    face_indices: list[int]
    info: Any
    face_track: Any
    faces: Any = None


@dataclass
class _Info:
    fps: float | None


def voice_descriptors(prosody: Any) -> dict[str, Any] | None:
    """The window's voice in a few numbers and the describing phrase; None without voiced speech."""
    from emollm.clues.prosody import describe_prosody

    if prosody is None or not prosody.has_speech:
        return None
    keep = ("pitch_mean_hz", "pitch_std_st", "loudness_dbfs", "rate_segments_per_s", "voiced_fraction", "hnr_db",
            "jitter_local", "shimmer_local")  # fmt: skip
    out: dict[str, Any] = {"tone": describe_prosody(prosody)}
    for k in keep:
        v = getattr(prosody, k)
        out[k] = None if v is None else round(float(v), 4)
    return out


@dataclass
class _TextCache:
    analyzer: Any
    seen: dict[str, Any] = field(default_factory=dict)

    def __call__(self, text: str, timer: Any) -> tuple[Any, dict[str, Any]]:
        if text not in self.seen:
            self.seen[text] = self.analyzer._text(text, timer)
        return self.seen[text]


def clue_entry(
    analyzer: Any,
    start: float,
    end: float,
    *,
    face: FaceRows | None,
    prosody: Any,
    words: Sequence[Any] | None,
    text: Any,
    timer: Any,
    missing_words: str | None = None,
) -> dict[str, Any]:
    """One window's entry in clue mode, aggregated from per-frame and per-window inputs (no model runs on frames).

    Args:
        analyzer: A :class:`~emollm.apps.clue_mode.ClueAnalyzer`.
        start: Window start (seconds).
        end: Window end.
        face: The per-frame face results (None: no face branch).
        prosody: The window's :class:`~emollm.clues.prosody.Prosody` (None: no audio).
        words: The window's words (None: no word times, e.g. a subtitle without times).
        text: A text-vote function ``text(transcript, timer) -> (vote, evidence)`` (cached by the caller).
        timer: The analyzer's stage timer.
        missing_words: Why there are no words, when ``words`` is None.
    """
    from emollm.clues.fusion import fuse
    from emollm.media import FaceTrack

    votes: list[Any] = []
    evidence: dict[str, Any] = {}
    missing: dict[str, str] = {}
    rows = face.rows(start, end) if face is not None else np.zeros(0, dtype=int)
    if face is not None and rows.size:
        boxes = [face.boxes[i] for i in rows]
        view = _FaceView([face.ids[i] for i in rows], _Info(face.fps), FaceTrack(boxes, [True] * len(boxes)))
        face_votes, ev, _ = analyzer._face(view, timer, frames=(face.probs[rows], [face.aus[i] for i in rows]))
        votes += face_votes
        last = boxes[-1]
        evidence["face"] = {
            "frames": int(rows.size),
            "expression_scores": ev["expression_scores"],
            "aus": ev.get("aus"),
            "au_label": ev.get("au_label"),
            "peak_time": None if ev.get("peak_frame") is None else _time_of(face, ev["peak_frame"]),
            "face_box": [round(last.x0, 1), round(last.y0, 1), round(last.x1, 1), round(last.y1, 1)],
            "face_box_time": round(float(face.times[rows[-1]]), 3),
        }
        if ev.get("aus_missing"):
            missing["face_aus"] = ev["aus_missing"]
    elif face is not None:
        missing["face"] = "no analysed face frame in this window"
    if prosody is not None:
        evidence["voice"] = voice_descriptors(prosody)
        if evidence["voice"] is None:
            missing["voice"] = prosody.reason or "no voiced speech"
    if words is not None:
        evidence["words"] = [w.to_dict() for w in words]
        transcript = " ".join(w.text for w in words) or None
        evidence["transcript"] = transcript
        if transcript:
            vote, ev = text(transcript, timer)
            evidence["text"] = {"label": ev.get("label"), "distribution": ev.get("distribution")}
            if vote is not None:
                votes.append(vote)
        else:
            missing["transcript"] = "no words in this window"
    elif missing_words:
        missing["transcript"] = missing_words
    fused = fuse(votes, analyzer.labels, analyzer.fusion)
    if fused.label is None:
        missing["label"] = "no voter in this window (no face, no words)"
    return {
        "start": round(start, 3),
        "end": round(end, 3),
        "label": fused.label,
        "probabilities": fused.probabilities,
        "voters": {k: round(w, 4) for k, w in fused.weights.items() if w > 0},
        "evidence": evidence,
        "missing": missing,
    }


def _time_of(face: FaceRows, frame_id: int) -> float | None:
    try:
        return round(float(face.times[face.ids.index(frame_id)]), 3)
    except ValueError:
        return None


def clue_timeline(
    analyzer: Any,
    media: Any,
    measured: dict[str, Any],
    settings: TimelineSettings,
    *,
    timer: Any,
    subtitle: str | None = None,
) -> dict[str, Any]:
    """The timeline of one decoded clip in clue mode, from the per-frame and per-second results of the whole-clip
    analysis (``measured``: ``face`` = (probs, AUs) of ``media.faces``; ``prosody`` = the Praat track; ``words``);
    ``timer`` is the analyzer's stage timer (the windows' text runs add to its ``text``).

    Raises:
        ValueError: The clip has no time axis (an image or a text file).
    """
    if media.info.kind in ("image", "text"):
        raise ValueError(f"{media.name}: a timeline needs a video or an audio file, not {media.info.kind!r}")
    t0 = time.perf_counter()
    duration = float(media.info.duration)
    face = None
    if measured.get("face") is not None and media.faces is not None:
        probs, aus = measured["face"]
        fps = media.info.fps or None
        times = np.asarray([i / fps if fps else 0.0 for i in media.face_indices], dtype=np.float64)
        face = FaceRows(times, list(media.face_indices), probs, list(aus), list(media.face_track.boxes), fps)
    track = measured.get("prosody")
    words = measured.get("words")
    missing_words = None
    if words is None:
        if subtitle:
            missing_words = "the subtitle has no word times: windows have no text voter (the whole clip has)"
        elif media.audio is not None:
            missing_words = measured.get("no_words") or "no speech recognised"
    text = _TextCache(analyzer)
    entries = []
    for start, end in window_bounds(duration, settings.window_s, settings.hop_s):
        entries.append(
            clue_entry(
                analyzer, start, end, face=face, prosody=None if track is None else track.window(start, end),
                words=None if words is None else words_in(words, start, end), text=text, timer=timer,
                missing_words=missing_words,
            )
        )  # fmt: skip
    return timeline_document(
        entries, settings, source="file", duration=duration, labels=analyzer.labels,
        words=words, timings={"windows": round(time.perf_counter() - t0, 4), "text_runs": len(text.seen)},
        frames=None if face is None else len(face.ids),
    )  # fmt: skip


def timeline_document(
    entries: list[dict[str, Any]],
    settings: TimelineSettings,
    *,
    source: str,
    duration: float,
    labels: Sequence[str],
    words: Sequence[Any] | None,
    timings: dict[str, Any] | None = None,
    frames: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The timeline JSON shared by ``analyze --timeline`` and a stream's saved session."""
    return {
        "version": TIMELINE_VERSION,
        "source": source,
        **settings.to_dict(),
        "windows": "causal: each entry covers the window_s seconds that end at its 'end' (less at the start)",
        "duration_s": round(float(duration), 3),
        "labels": list(labels),
        "frames_analysed": frames,
        "transcript": {
            "text": " ".join(w.text for w in words) if words else None,
            "words": [w.to_dict() for w in words] if words else [],
        },
        "entries": entries,
        "timings": timings or {},
        **(extra or {}),
    }


# ------------------------------------------------------------------------------------------------ checkpoints
def checkpoint_timeline(
    analyzer: Any, path: str | os.PathLike[str], settings: TimelineSettings, *, subtitle: str | None = None
) -> dict[str, Any]:
    """The timeline of a clip with a trained checkpoint: per window, the checkpoint's towers on that window's media
    and the labels' answer likelihoods (see the module docstring).

    Raises:
        ValueError: A branch reads one feature file per clip (``--audio F.npy`` or a cache without a record of its
            encoder), or the clip has no time axis.
        emollm.media.MediaError: The clip cannot be read.
    """
    import torch

    from emollm.jobs.features import encode_sample
    from emollm.media import load_sample, probe, sample_frame_indices
    from emollm.media.load import MediaSample
    from emollm.model.likelihood import label_probabilities
    from emollm.model.precision import autocast
    from emollm.model.processing import Sample
    from emollm.model.prompts import EMOTION_INSTRUCTION

    t0 = time.perf_counter()
    model, processor = analyzer.model, analyzer.processor
    info = probe(path)
    if info.kind in ("image", "text"):
        raise ValueError(f"{Path(path).name}: a timeline needs a video or an audio file, not {info.kind!r}")
    branches = _checkpoint_branches(analyzer)
    sources = {s for s, _, _ in branches.values()}
    media = load_sample(
        path, modalities=sorted(sources & {"audio", "face", "video"}) or ["audio"], frame_policy=settings.frame_policy()
    )
    duration = float(media.info.duration)
    words = None
    if subtitle is None and getattr(analyzer, "asr", False) and media.audio is not None:
        from emollm.encoders.text import WhisperTranscriber

        analyzer._whisper = analyzer._whisper or WhisperTranscriber()
        words = analyzer._whisper.transcribe(media.audio, no_speech_threshold=0.6).words
    fps = media.info.fps or None
    face_t = np.asarray([i / fps for i in media.face_indices]) if fps and media.faces is not None else np.zeros(0)
    video_t = np.asarray([i / fps for i in media.frame_indices]) if fps and media.frames is not None else np.zeros(0)
    markers = "".join(f"<{m}>" for m in model.config.modalities)
    entries = []
    for start, end in window_bounds(duration, settings.window_s, settings.hop_s):
        feats: dict[str, Any] = {}
        missing: dict[str, str] = {}
        for modality, (source, encoder, policy) in branches.items():
            raw = _window_media(media, source, start, end, face_t, video_t, policy, sample_frame_indices)
            if raw is None:
                feats[modality] = None
                missing[modality] = f"no {source} in this window"
                continue
            if encoder is not None:  # a cache encoder, run live on the window as it ran on whole clips
                part = MediaSample(name=media.name, info=media.info, sample_rate=media.sample_rate)
                setattr(part, {"audio": "audio", "face": "faces", "video": "frames"}[source], raw)
                feats[modality] = torch.from_numpy(encode_sample(encoder, source, part))
            else:
                feats[modality] = torch.from_numpy(np.ascontiguousarray(raw))
        said = words_in(words, start, end) if words is not None else []
        transcript = " ".join(w.text for w in said) or None
        entry: dict[str, Any] = {"start": round(start, 3), "end": round(end, 3)}
        if not any(f is not None for f in feats.values()) and not transcript:
            entry.update(label=None, probabilities={}, voters={}, evidence={}, missing={
                **missing, "label": "no modality in this window"})  # fmt: skip
            entries.append(entry)
            continue
        says = f" The person in video says: {transcript}." if transcript else ""
        question = f"{markers}{says} {EMOTION_INSTRUCTION.format(labels=', '.join(analyzer.labels))}"
        sample = Sample(messages=[{"role": "user", "content": question}], features=feats, name=media.name)
        with autocast(analyzer.precision):
            probs = label_probabilities(
                model, processor, sample, analyzer.labels, answer_template=analyzer.answer_template
            )
        entry.update(
            label=max(probs, key=probs.get),
            probabilities={k: round(float(v), 6) for k, v in probs.items()},
            voters={m: 1.0 for m, f in feats.items() if f is not None},  # one model reads them together
            evidence={"words": [w.to_dict() for w in said], "transcript": transcript} if words is not None else {},
            missing=missing,
        )
        entries.append(entry)
    return timeline_document(
        entries, settings, source="file", duration=duration, labels=analyzer.labels, words=words,
        timings={"total": round(time.perf_counter() - t0, 4)},
        frames=None if media.faces is None else len(media.face_indices),
        extra={"scoring": "checkpoint: per window, its towers on the window's media and the labels' answer "
                          "likelihoods; no reasoning per window"},
    )  # fmt: skip


def check_checkpoint_timeline(analyzer: Any) -> None:
    """Refuse, before any work, a checkpoint whose windows cannot be scored (see :func:`checkpoint_timeline`).

    Raises:
        ValueError: Naming the branch that reads one feature file per clip.
    """
    _checkpoint_branches(analyzer, build=False)


def _checkpoint_branches(analyzer: Any, build: bool = True) -> dict[str, tuple[str, Any, str | None]]:
    """Modality -> (the media it reads, the cache encoder to run live or None for a live tower, its frame policy)."""
    from emollm.encoders import ENCODERS
    from emollm.jobs.features import build_live_encoder, spec_from_manifest

    branches: dict[str, tuple[str, Any, str | None]] = {}
    for modality, cfg in analyzer.model.config.modalities.items():
        if getattr(cfg, "fuse", None) is not None:  # a fused slot is computed from its sources by the model
            continue
        if modality in analyzer.feature_files:
            raise ValueError(
                f"the {modality} branch reads the feature file {analyzer.feature_files[modality]} for the whole "
                f"clip, which cannot be cut into windows: leave --{modality} out for a timeline"
            )
        manifest = cfg.encoder_options.get("extracted_with") if cfg.encoder == "precomputed" else None
        if cfg.encoder == "precomputed" and manifest is None:
            raise ValueError(
                f"the checkpoint's {modality} branch reads precomputed features and does not record their encoder, "
                "so windows cannot be encoded: a timeline needs branches with live towers or a recorded cache encoder"
            )
        entry = ENCODERS.get(manifest["encoder"] if manifest else cfg.encoder)
        source = entry.input if entry is not None and entry.input != "features" else modality
        encoder = build_live_encoder(spec_from_manifest(manifest)) if manifest and build else None
        if manifest:
            media_kwargs = spec_from_manifest(manifest).media_kwargs()
        else:  # the encoder entry's media settings, then the branch's own
            media_kwargs = {**(entry.media if entry else {}), **(getattr(cfg, "media", None) or {})}
        branches[modality] = (source, encoder, media_kwargs.get("frame_policy"))
    return branches


def _window_media(
    media: Any,
    source: str,
    start: float,
    end: float,
    face_t: np.ndarray,
    video_t: np.ndarray,
    policy: str | None,
    sample: Any,
) -> np.ndarray | None:
    """The window's part of one decoded modality (None when it has none)."""
    if source == "audio":
        if media.audio is None:
            return None
        a, b = round(start * media.sample_rate), round(end * media.sample_rate)
        part = np.asarray(media.audio[a:b], dtype=np.float32)
        return part if part.size >= int(0.1 * media.sample_rate) else None
    arr, times = (media.faces, face_t) if source == "face" else (media.frames, video_t)
    if arr is None:
        return None
    rows = np.flatnonzero((times >= start) & (times < end))
    if not rows.size:
        return None
    if policy and not policy.startswith(("fps", "uniform", "all")):  # e.g. 'first' for EVA: within the window
        rows = rows[sample(len(rows), policy)]
    return arr[rows]


# ------------------------------------------------------------------------------------------------ output
def save_timeline(timeline: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a timeline JSON atomically (a temporary file in the same folder, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(timeline, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def format_timeline(timeline: dict[str, Any], top: int = 2) -> str:
    """A short table: one line per window with its label, top probabilities and words."""
    lines = [f"timeline ({timeline['window_s']:g} s windows, {timeline['hop_s']:g} s hop, {len(timeline['entries'])} "
             "windows):"]  # fmt: skip
    for e in timeline["entries"]:
        probs = sorted(e["probabilities"].items(), key=lambda kv: -kv[1])[:top]
        best = ", ".join(f"{k} {v:.2f}" for k, v in probs) or "no label"
        said = (e.get("evidence") or {}).get("transcript") or ""
        lines.append(f"  {e['start']:6.2f}-{e['end']:6.2f} s  {str(e['label'] or '-'):<9} {best:<26} {said[:48]}")
    return "\n".join(lines)
