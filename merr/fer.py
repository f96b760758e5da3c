"""The stage-1 fallback without OpenFace: FER2013 expression probabilities as the intensity curve.

With no OpenFace CSV (:class:`FERFallbackAU`), face crops of ``uniform:16`` frames are classified by
the FER2013 mini-Xception (``emollm.encoders.face.classify_faces``). The *dominant* expression is the most frequent
per-frame top class other than neutral (ties: higher mean probability, then FER order); neutral only when every
frame's top class is neutral. Its per-frame probability is the intensity curve; the peak is its earliest maximum.
The pseudo-label maps FER2013 -> MERR vocabulary by name (:data:`FER_TO_MERR`: angry, fear, happy, sad, surprise,
neutral; ``disgust`` -> no label, as MERR excludes disgust). The record says ``au_source: "fer"``, ``AU_list`` and
``peak_AU_list`` are empty, and the visual expression clue is ``"<adjective> facial expression"``
(``emollm_merr.stages.AUStage``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from emollm_merr.clue import ClipContext

__all__ = ["FER_ADJECTIVES", "FER_TO_MERR", "FERFallbackAU", "FERResult"]

#: FER2013 class -> MERR label (None: no MERR label; MERR excludes disgust).
FER_TO_MERR: dict[str, str | None] = {
    "angry": "angry",
    "disgust": None,
    "fear": "fear",
    "happy": "happy",
    "sad": "sad",
    "surprise": "surprise",
    "neutral": "neutral",
}
#: FER2013 class -> the adjective of the visual-expression clue (``"happy facial expression"``).
FER_ADJECTIVES: dict[str, str] = {
    "angry": "angry",
    "disgust": "disgusted",
    "fear": "fearful",
    "happy": "happy",
    "sad": "sad",
    "surprise": "surprised",
    "neutral": "neutral",
}


@dataclass(frozen=True)
class FERResult:
    """Per-frame FER2013 probabilities of one clip and what the fallback makes of them."""

    labels: tuple[str, ...]
    frame_indices: list[int]
    probs: np.ndarray
    """(K, C) probabilities, one row per scored frame."""
    dominant: str
    peak_pos: int
    """Row of ``probs`` at the peak."""

    @property
    def peak_index(self) -> int:
        """0-based video frame of the peak."""
        return int(self.frame_indices[self.peak_pos])

    @property
    def pseu_emotion(self) -> str | None:
        """MERR label of the dominant expression (None for disgust)."""
        return FER_TO_MERR.get(self.dominant)

    @property
    def peak_probs(self) -> dict[str, float]:
        """Class -> probability at the peak."""
        return {lab: round(float(p), 4) for lab, p in zip(self.labels, self.probs[self.peak_pos], strict=True)}


class FERFallbackAU:
    """Stage-1 fallback without OpenFace: FER2013 expression probabilities as the intensity curve.

    Args:
        frame_policy: Frames to score (``emollm.media.sample_frame_indices`` policy).
        face_detector: ``auto`` / ``mtcnn`` / ``haar``.
        classify: ``crops (N, H, W, 3) -> probs (N, C)``; default ``emollm.encoders.face.classify_faces``.
        labels: Class names of ``classify``'s columns; default ``emollm.encoders.face.FER_LABELS``.
    """

    VERSION = 1

    def __init__(
        self,
        frame_policy: str = "uniform:16",
        face_detector: str = "auto",
        classify: Callable[[np.ndarray], Any] | None = None,
        labels: tuple[str, ...] | None = None,
    ):
        self.frame_policy = frame_policy
        self.face_detector = face_detector
        self._classify = classify
        self._labels = labels
        self._lock = threading.Lock()
        self.id = f"fer:mini_xception:v{self.VERSION}:{frame_policy}:{face_detector}"

    def _model(self) -> tuple[Callable[[np.ndarray], Any], tuple[str, ...]]:
        if self._classify is None:
            from emollm.encoders.face import FER_LABELS, classify_faces  # lazy: torch

            self._classify, self._labels = classify_faces, tuple(FER_LABELS)
        return self._classify, tuple(self._labels or ())

    def analyze(self, clip: ClipContext) -> FERResult:
        """Score the clip's faces.

        Raises:
            emollm.aus.openface.NoFaceError: no face in any scored frame.
            emollm.media.MediaError: the video cannot be decoded.
        """
        from emollm.aus.openface import NoFaceError
        from emollm.media import load_sample

        sample = load_sample(
            clip.path,
            modalities=("face",),
            frame_policy=self.frame_policy,
            face_detector=self.face_detector,
            min_audio_duration=None,
        )
        if sample.faces is None:
            raise NoFaceError(f"{clip.path}: no face detected for the FER fallback ({sample.missing.get('face', '')})")
        classify, labels = self._model()
        with self._lock:
            probs = classify(sample.faces)
        probs = np.asarray(probs.detach().cpu().numpy() if hasattr(probs, "detach") else probs, dtype=np.float64)
        if probs.ndim != 2 or probs.shape[1] != len(labels):
            raise ValueError(f"FER classifier returned shape {probs.shape}, expected (frames, {len(labels)})")
        probs = np.round(probs, 6)  # stable across BLAS thread counts in the cached record
        return self._decide(labels, list(sample.face_indices), probs)

    @staticmethod
    def _decide(labels: tuple[str, ...], indices: list[int], probs: np.ndarray) -> FERResult:
        top = probs.argmax(axis=1)
        neutral = labels.index("neutral") if "neutral" in labels else -1
        counts = np.bincount(top, minlength=len(labels))
        mean = probs.mean(axis=0)
        expressive = [c for c in range(len(labels)) if c != neutral and counts[c] > 0]
        if expressive:
            dom = min(expressive, key=lambda c: (-counts[c], -mean[c], c))
        else:
            dom = neutral if neutral >= 0 else int(np.argmax(mean))
        curve = probs[:, dom]
        peak = int(np.flatnonzero(curve >= curve.max() - 1e-9)[0])
        return FERResult(labels, indices, probs, labels[dom], peak)
