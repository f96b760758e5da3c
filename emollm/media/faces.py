"""Face detection, main-face tracking and cropping.

Detectors (all behind the :class:`FaceDetector` protocol, all offline):

* :class:`MTCNNFaceDetector`: facenet-pytorch's MTCNN with the P/R/O-Net weights bundled in the wheel. More
  accurate (profile and small faces, fewer false positives), ~20-50 ms per 320x240 frame on one CPU thread.
  facenet-pytorch calls ``torchvision.ops.batched_nms``; where torchvision's compiled ops are missing (a torchvision
  wheel that does not match torch), we swap in a NumPy NMS (:func:`batched_nms_numpy`) when the detector is built.
  With torchvision 0.29.1 + torch 2.14.1 the compiled op works and nothing is swapped.
* :class:`HaarFaceDetector`: OpenCV's frontal-face Haar cascade (``opencv-python-headless<5``; 5.x ships no
  cascades). Fast, frontal faces only.

``build_face_detector("auto")`` prefers MTCNN and falls back to Haar (logging why).

Main face: :func:`track_main_face` links detections across frames by IoU into tracks and keeps the most prominent
track, prominence = sum over its frames of ``area / frame_area * (1 - 0.5 * d)``, where ``d`` is the distance from
the box centre to the frame centre divided by the half-diagonal. Bigger, more central and more persistent faces win;
a bystander at the edge or a one-frame false positive does not. Frames where the main face was not detected get a
box interpolated between the nearest detections (held constant before the first / after the last).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from .errors import NoFaceFound

__all__ = [
    "Box",
    "FaceDetector",
    "FaceTrack",
    "HaarFaceDetector",
    "MTCNNFaceDetector",
    "batched_nms_numpy",
    "build_face_detector",
    "crop_faces",
    "detect_faces",
    "track_main_face",
]

logger = logging.getLogger(__name__)

DetectorName = Literal["auto", "mtcnn", "haar"]


@dataclass(frozen=True)
class Box:
    """An axis-aligned face box in pixel coordinates, ``x1``/``y1`` exclusive.

    Attributes:
        x0: Left.
        y0: Top.
        x1: Right.
        y1: Bottom.
        score: Detector confidence (MTCNN: probability; Haar: cascade level weight, unbounded).
    """

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0

    @property
    def width(self) -> float:
        """Box width."""
        return max(0.0, self.x1 - self.x0)

    @property
    def height(self) -> float:
        """Box height."""
        return max(0.0, self.y1 - self.y0)

    @property
    def area(self) -> float:
        """Box area."""
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        """Box centre ``(x, y)``."""
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    def iou(self, other: Box) -> float:
        """Intersection over union with another box."""
        iw = min(self.x1, other.x1) - max(self.x0, other.x0)
        ih = min(self.y1, other.y1) - max(self.y0, other.y0)
        if iw <= 0 or ih <= 0:
            return 0.0
        inter = iw * ih
        return inter / (self.area + other.area - inter)

    def scaled(self, s: float) -> Box:
        """The box with all coordinates multiplied by ``s`` (to map between image scales)."""
        return Box(self.x0 * s, self.y0 * s, self.x1 * s, self.y1 * s, self.score)


@runtime_checkable
class FaceDetector(Protocol):
    """Finds faces in one RGB frame."""

    name: str

    def detect(self, frame_rgb: np.ndarray) -> list[Box]:
        """Detects faces.

        Args:
            frame_rgb: ``uint8`` array ``(H, W, 3)``.

        Returns:
            Face boxes in the frame's pixel coordinates, with scores (any order).
        """
        ...


def detect_faces(detector: FaceDetector, frames: Sequence[np.ndarray] | np.ndarray) -> list[list[Box]]:
    """Runs a detector on every frame, batched when the detector supports it (``detect_batch``).

    Args:
        detector: Any :class:`FaceDetector`.
        frames: ``(N, H, W, 3)`` uint8 frames (or a list of ``(H, W, 3)`` frames).

    Returns:
        One list of boxes per frame.
    """
    batch = getattr(detector, "detect_batch", None)
    if batch is not None:
        return batch(frames)
    return [detector.detect(f) for f in frames]


def _shrink(frame: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Downscales a frame for detection; returns it and the factor mapping its coordinates back."""
    import cv2

    h, w = frame.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return frame, 1.0
    s = max_side / max(h, w)
    small = cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return small, 1.0 / s


class HaarFaceDetector:
    """OpenCV frontal-face Haar cascade.

    Args:
        scale_factor: Image-pyramid step of ``detectMultiScale``.
        min_neighbors: Overlapping hits needed to accept a face (higher: fewer false positives).
        min_size_frac: Smallest face side as a fraction of the shorter frame side.
        max_side: Frames are downscaled to this longest side before detection (speed); boxes are mapped back.
        cascade: File name under ``cv2.data.haarcascades``.

    Raises:
        ImportError: OpenCV, or its Haar cascade files, are not installed (``opencv-python-headless<5``).
    """

    name = "haar"

    def __init__(
        self,
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size_frac: float = 0.08,
        max_side: int | None = 640,
        cascade: str = "haarcascade_frontalface_default.xml",
    ) -> None:
        import cv2

        data = getattr(cv2, "data", None)
        file = f"{data.haarcascades}{cascade}" if data is not None else ""
        if not hasattr(cv2, "CascadeClassifier") or data is None:
            raise ImportError("OpenCV has no Haar cascades: install opencv-python-headless<5 (5.x dropped them)")
        self._cascade = cv2.CascadeClassifier(file)
        if self._cascade.empty():
            raise ImportError(f"cannot load the Haar cascade {file}: reinstall opencv-python-headless<5")
        self.scale_factor, self.min_neighbors, self.min_size_frac, self.max_side = (
            scale_factor,
            min_neighbors,
            min_size_frac,
            max_side,
        )
        self._lock = threading.Lock()  # CascadeClassifier is not documented as thread-safe

    def detect(self, frame_rgb: np.ndarray) -> list[Box]:
        """Detects frontal faces; see :meth:`FaceDetector.detect`."""
        import cv2

        small, back = _shrink(frame_rgb, self.max_side)
        gray = cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2GRAY))
        m = max(16, int(min(gray.shape) * self.min_size_frac))
        with self._lock:
            rects, _, weights = self._cascade.detectMultiScale3(
                gray, self.scale_factor, self.min_neighbors, minSize=(m, m), outputRejectLevels=True
            )
        return [
            Box(float(x), float(y), float(x + w), float(y + h), float(s)).scaled(back)
            for (x, y, w, h), s in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1), strict=True)
        ]


class MTCNNFaceDetector:
    """facenet-pytorch MTCNN with its bundled weights (no download).

    Args:
        min_prob: Keep faces whose O-Net probability is at least this.
        min_face_size: Smallest face side in pixels (of the downscaled frame) the image pyramid looks for.
        max_side: Frames are downscaled to this longest side before detection; boxes are mapped back.
        device: Torch device.

    Raises:
        ImportError: facenet-pytorch (or torchvision) is not importable.
    """

    name = "mtcnn"

    def __init__(
        self, *, min_prob: float = 0.9, min_face_size: int = 20, max_side: int | None = 640, device: str = "cpu"
    ) -> None:
        try:
            from facenet_pytorch import MTCNN
            from facenet_pytorch.models.utils import detect_face as _df
        except Exception as e:  # a torchvision that does not match torch fails at import with RuntimeError
            raise ImportError(
                f"facenet-pytorch MTCNN is not importable ({type(e).__name__}: {e}); "
                "install facenet-pytorch==2.6.0 --no-deps next to a torchvision matching torch, or use 'haar'"
            ) from e
        _ensure_nms(_df)
        self._mtcnn = MTCNN(keep_all=True, device=device, min_face_size=min_face_size, post_process=False)
        self._mtcnn.eval()
        self.min_prob, self.max_side = min_prob, max_side
        self._lock = threading.Lock()

    def detect(self, frame_rgb: np.ndarray) -> list[Box]:
        """Detects faces; see :meth:`FaceDetector.detect`."""
        return self.detect_batch([frame_rgb])[0]

    def detect_batch(self, frames: Sequence[np.ndarray] | np.ndarray) -> list[list[Box]]:
        """Detects faces in several frames at once (one batched pass when they share a size)."""
        if len(frames) == 0:
            return []
        shrunk = [_shrink(np.ascontiguousarray(f), self.max_side) for f in frames]
        same = len({s.shape for s, _ in shrunk}) == 1
        with self._lock:
            if same:
                boxes, probs = self._mtcnn.detect(np.stack([s for s, _ in shrunk]))
            else:
                pairs = [self._mtcnn.detect(s) for s, _ in shrunk]
                boxes, probs = [b for b, _ in pairs], [p for _, p in pairs]
        out = []
        for (_, back), b, p in zip(shrunk, boxes, probs, strict=True):
            if b is None:  # facenet returns None (not an empty array) for a frame without faces
                out.append([])
                continue
            b = np.asarray(b, dtype=np.float64).reshape(-1, 4)  # object dtype under numpy 2
            p = np.asarray(p, dtype=np.float64).reshape(-1)
            out.append(
                [
                    Box(*map(float, bb), float(pp)).scaled(back)
                    for bb, pp in zip(b, p, strict=True)
                    if pp >= self.min_prob
                ]
            )
        return out


def _ensure_nms(detect_face_module) -> None:
    """Replaces facenet's ``batched_nms`` by a NumPy one when torchvision's compiled NMS op is unusable."""
    import torch

    try:
        detect_face_module.batched_nms(
            torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.ones(1), torch.zeros(1, dtype=torch.int64), 0.5
        )
    except Exception as e:  # RuntimeError "operator torchvision::nms does not exist", NotImplementedError
        logger.warning("torchvision NMS unusable (%s); MTCNN uses emollm's NumPy NMS instead", e)
        detect_face_module.batched_nms = _batched_nms_as_torch


def batched_nms_numpy(boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy per-class non-maximum suppression, same semantics as ``torchvision.ops.batched_nms``.

    Args:
        boxes: ``(N, 4)`` boxes ``x0, y0, x1, y1``.
        scores: ``(N,)`` scores.
        idxs: ``(N,)`` class/image ids; boxes with different ids never suppress each other.
        iou_threshold: Discard boxes with IoU above this against a kept, higher-scoring box.

    Returns:
        Indices of the kept boxes, by decreasing score.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    offset = np.asarray(idxs, dtype=np.float64)[:, None] * (boxes.max() + 1)
    b = boxes + offset
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    b = b[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    alive = np.ones(len(b), dtype=bool)
    keep = []
    for i in range(len(b)):
        if not alive[i]:
            continue
        keep.append(i)
        rest = b[i + 1 :]
        iw = np.clip(np.minimum(b[i, 2], rest[:, 2]) - np.maximum(b[i, 0], rest[:, 0]), 0, None)
        ih = np.clip(np.minimum(b[i, 3], rest[:, 3]) - np.maximum(b[i, 1], rest[:, 1]), 0, None)
        inter = iw * ih
        iou = inter / np.maximum(area[i] + area[i + 1 :] - inter, 1e-12)
        alive[i + 1 :] &= iou <= iou_threshold
    return order[np.asarray(keep, dtype=np.int64)]


def _batched_nms_as_torch(boxes, scores, idxs, iou_threshold):
    import torch

    keep = batched_nms_numpy(
        boxes.detach().cpu().numpy(), scores.detach().cpu().numpy(), idxs.detach().cpu().numpy(), iou_threshold
    )
    return torch.as_tensor(keep, dtype=torch.int64, device=boxes.device)


def build_face_detector(name: DetectorName = "auto", **kwargs) -> FaceDetector:
    """Builds a face detector by name.

    Args:
        name: ``"mtcnn"``, ``"haar"``, or ``"auto"`` (MTCNN when facenet-pytorch imports, else Haar).
        **kwargs: Passed to the detector's constructor.

    Returns:
        The detector.

    Raises:
        ImportError: The requested detector (or, for ``"auto"``, both) cannot be built.
        ValueError: Unknown name.
    """
    if name == "mtcnn":
        return MTCNNFaceDetector(**kwargs)
    if name == "haar":
        return HaarFaceDetector(**kwargs)
    if name == "auto":
        try:
            return MTCNNFaceDetector(**kwargs)
        except ImportError as e:
            logger.warning("MTCNN unavailable, using OpenCV Haar cascades: %s", e)
            return HaarFaceDetector()
    raise ValueError(f"unknown face detector {name!r}; use 'auto', 'mtcnn' or 'haar'")


@lru_cache(maxsize=4)
def cached_face_detector(name: DetectorName = "auto") -> FaceDetector:
    """:func:`build_face_detector` with default settings, built once per process (detectors are thread-safe)."""
    return build_face_detector(name)


@dataclass
class FaceTrack:
    """The main face through a clip: one box per frame.

    Attributes:
        boxes: One box per frame (interpolated or held where the face was not detected).
        detected: Whether each frame's box comes from a detection.
        num_tracks: How many distinct faces (tracks) were seen in the clip.
        prominence: The main track's prominence score (see the module docstring).
    """

    boxes: list[Box]
    detected: list[bool]
    num_tracks: int = 1
    prominence: float = 0.0

    def __len__(self) -> int:
        return len(self.boxes)


def track_main_face(
    boxes_per_frame: Sequence[Sequence[Box]],
    frame_size: tuple[int, int] | None = None,
    *,
    iou_threshold: float = 0.3,
    source: str | None = None,
) -> FaceTrack:
    """Links detections across frames and returns the main face's track.

    Tracks are built greedily in frame order: each detection joins the track whose latest box overlaps it most
    (IoU >= ``iou_threshold``, one detection per track per frame), otherwise it starts a new track. The main track
    maximises ``sum(area / frame_area * (1 - 0.5 * d))`` over its frames (``d``: centre distance / half-diagonal;
    without ``frame_size`` only areas count).

    Args:
        boxes_per_frame: Detections for each (sampled) frame, in temporal order.
        frame_size: ``(width, height)`` of the frames, for the centrality term.
        iou_threshold: Minimum IoU to link a detection to a track.
        source: File name used in the error message.

    Returns:
        The :class:`FaceTrack`, with ``len(boxes_per_frame)`` boxes.

    Raises:
        NoFaceFound: No frame has any detection.
    """
    n = len(boxes_per_frame)
    if n == 0 or not any(len(b) for b in boxes_per_frame):
        raise NoFaceFound(
            source,
            f"no face detected in {n} sampled frame{'s' if n != 1 else ''}",
            "the face modality is dropped for this clip; sample more frames or use a stronger detector to keep it",
        )
    w, h = frame_size if frame_size else (1.0, 1.0)
    half_diag = 0.5 * float(np.hypot(w, h))

    def prominence(b: Box) -> float:
        if not frame_size:
            return b.area
        cx, cy = b.center
        d = min(1.0, float(np.hypot(cx - w / 2, cy - h / 2)) / half_diag)
        return b.area / (w * h) * (1.0 - 0.5 * d)

    tracks: list[dict[int, Box]] = []
    last: list[Box] = []
    for t, boxes in enumerate(boxes_per_frame):
        pairs = sorted(((last[k].iou(b), k, j) for k in range(len(tracks)) for j, b in enumerate(boxes)), reverse=True)
        used_t: set[int] = set()
        used_b: set[int] = set()
        for iou, k, j in pairs:
            if iou < iou_threshold:
                break
            if k in used_t or j in used_b:
                continue
            tracks[k][t] = last[k] = boxes[j]
            used_t.add(k)
            used_b.add(j)
        for j, b in enumerate(boxes):
            if j not in used_b:
                tracks.append({t: b})
                last.append(b)
    scores = [sum(prominence(b) for b in tr.values()) for tr in tracks]
    main = tracks[int(np.argmax(scores))]
    seen = sorted(main)
    filled: list[Box] = []
    for t in range(n):
        if t in main:
            filled.append(main[t])
            continue
        before = [s for s in seen if s < t]
        after = [s for s in seen if s > t]
        if before and after:
            a, b = main[before[-1]], main[after[0]]
            r = (t - before[-1]) / (after[0] - before[-1])
            filled.append(
                Box(*(va + r * (vb - va) for va, vb in zip(_coords(a), _coords(b), strict=True)), min(a.score, b.score))
            )
        else:
            filled.append(main[before[-1]] if before else main[after[0]])
    return FaceTrack(filled, [t in main for t in range(n)], num_tracks=len(tracks), prominence=max(scores))


def _coords(b: Box) -> tuple[float, float, float, float]:
    return b.x0, b.y0, b.x1, b.y1


def crop_faces(
    frames: np.ndarray | Sequence[np.ndarray], track: FaceTrack, size: int = 224, margin: float = 0.2
) -> np.ndarray:
    """Cuts a square crop around the tracked face in every frame.

    The crop is centred on the box, its side is ``max(w, h) * (1 + 2 * margin)``; parts outside the frame are
    black. Crops are resized to ``size`` x ``size`` (area interpolation when shrinking, bilinear when enlarging).

    Args:
        frames: ``(N, H, W, 3)`` uint8 frames.
        track: A :class:`FaceTrack` with ``N`` boxes.
        size: Output side in pixels.
        margin: Extra context on each side, as a fraction of the box side.

    Returns:
        ``uint8`` array ``(N, size, size, 3)``.

    Raises:
        ValueError: ``len(frames) != len(track)``.
    """
    import cv2

    if len(frames) != len(track.boxes):
        raise ValueError(f"crop_faces: {len(frames)} frames but the track has {len(track.boxes)} boxes")
    out = np.zeros((len(frames), size, size, 3), dtype=np.uint8)
    for i, (frame, b) in enumerate(zip(frames, track.boxes, strict=True)):
        h, w = frame.shape[:2]
        side = max(2, round(max(b.width, b.height) * (1 + 2 * margin)))
        cx, cy = b.center
        x0, y0 = round(cx - side / 2), round(cy - side / 2)
        canvas = np.zeros((side, side, 3), dtype=np.uint8)
        sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
        if sx1 > sx0 and sy1 > sy0:
            canvas[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = frame[sy0:sy1, sx0:sx1, :3]
        interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        out[i] = cv2.resize(canvas, (size, size), interpolation=interp)
    return out
