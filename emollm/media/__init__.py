"""Media layer: read video/audio/image/text files into arrays the encoders take, robustly.

Typical use::

    from emollm.media import load_many, load_sample

    sample = load_sample("clip.mp4", frame_policy="segments:8:2", min_audio_duration=1.0)
    sample.audio        # float32 (T,) at 16 kHz, or None with sample.missing["audio"] saying why
    sample.frames       # uint8 (16, H, W, 3)
    sample.faces        # uint8 (16, 224, 224, 3) crops of the main face, or None

    for path, result in load_many(paths, workers=2):
        if isinstance(result, MediaError):
            continue  # already logged, names the file

Limits: :func:`probe` checks every declared duration, frame count and picture size against a :class:`MediaLimits`
(defaults: 3 h, 1 M frames, 179 M pixels, 2 GiB decoded; raised by ``EMOLLM_MAX_DURATION_S``, ``EMOLLM_MAX_FRAMES``,
``EMOLLM_MAX_PIXELS``, ``EMOLLM_MAX_BYTES`` or a ``limits=`` argument) before any decoder allocates memory.

Modules: :mod:`.video` (probe, frame sampling, decoding), :mod:`.audio` (16 kHz mono, resampling, silence),
:mod:`.faces` (detectors, main-face track, crops), :mod:`.load` (the sample contract), :mod:`.limits`,
:mod:`.errors`, and
:mod:`.fixtures` (generated test media).

Imports: ``utils`` only (no torch, no model code).
"""

from .audio import is_silent, load_audio, resample, rms_db
from .errors import (
    CorruptMedia,
    EmptyMedia,
    MediaError,
    MediaNotFound,
    MediaTooLarge,
    MissingModality,
    NoAudioTrack,
    NoFaceFound,
    SilentAudio,
    UnreadableMedia,
    UnsupportedFormat,
)
from .faces import (
    Box,
    FaceDetector,
    FaceTrack,
    HaarFaceDetector,
    MTCNNFaceDetector,
    build_face_detector,
    crop_faces,
    detect_faces,
    track_main_face,
)
from .limits import MediaLimits
from .load import MODALITIES, MediaSample, load_many, load_sample
from .video import MediaInfo, probe, read_frames, read_image, sample_frame_indices

__all__ = [
    "MODALITIES",
    "Box",
    "CorruptMedia",
    "EmptyMedia",
    "FaceDetector",
    "FaceTrack",
    "HaarFaceDetector",
    "MTCNNFaceDetector",
    "MediaError",
    "MediaInfo",
    "MediaLimits",
    "MediaNotFound",
    "MediaSample",
    "MediaTooLarge",
    "MissingModality",
    "NoAudioTrack",
    "NoFaceFound",
    "SilentAudio",
    "UnreadableMedia",
    "UnsupportedFormat",
    "build_face_detector",
    "crop_faces",
    "detect_faces",
    "is_silent",
    "load_audio",
    "load_many",
    "load_sample",
    "probe",
    "read_frames",
    "read_image",
    "resample",
    "rms_db",
    "sample_frame_indices",
    "track_main_face",
]
