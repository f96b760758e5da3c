"""Errors raised by the media layer.

Every error names the offending file and says how to fix it. All derive from :class:`MediaError` (a ``ValueError``),
so a batch loop needs a single ``except MediaError`` to log a bad file and move on.

Two kinds of problems are distinguished:

* **File-level** problems (the file is missing, unreadable, empty, corrupt, in an unsupported format, or too large)
  are raised by :func:`emollm.media.load_sample`: there is nothing useful to return.
* **Modality-level** problems (no audio track, silent audio, no detectable face) are raised by the low-level readers
  (:func:`~emollm.media.load_audio`, :func:`~emollm.media.track_main_face`), but ``load_sample`` catches them and
  records the message in ``MediaSample.missing`` instead, so the processor simply omits that modality's tokens.
"""

from __future__ import annotations

from os import PathLike

__all__ = [
    "CorruptMedia",
    "EmptyMedia",
    "MediaError",
    "MediaNotFound",
    "MediaTooLarge",
    "MissingModality",
    "NoAudioTrack",
    "NoFaceFound",
    "SilentAudio",
    "UnreadableMedia",
    "UnsupportedFormat",
]


class MediaError(ValueError):
    """Base class of every media problem.

    Args:
        path: The file the problem is about (``None`` when not tied to a file).
        problem: What is wrong, in a few words.
        fix: What the user can do about it.
    """

    def __init__(self, path: str | PathLike[str] | None, problem: str, fix: str = "") -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}" + (f" ({fix})" if fix else ""))

    def __reduce__(self):  # keep the three fields when pickled across processes
        return (type(self), (self.path, self.problem, self.fix))


class MediaNotFound(MediaError):
    """The path does not exist or is not a regular file (a folder, a FIFO, a broken symlink, a symlink loop)."""


class UnreadableMedia(MediaError):
    """The file exists but cannot be read: permission denied, or an I/O error."""


class EmptyMedia(MediaError):
    """The file has 0 bytes, or a stream in it has no frames/samples."""


class CorruptMedia(MediaError):
    """The decoder could not read the file (truncated, garbage, broken stream)."""


class UnsupportedFormat(MediaError):
    """The file's extension or codec is not one the loaders handle."""


class MediaTooLarge(MediaError):
    """The header declares more than a :class:`~emollm.media.MediaLimits` allows, or decoding as asked would need
    an unreasonable amount of memory; the message names the declared value, the limit and how to raise it."""


class MissingModality(MediaError):
    """A modality is absent from an otherwise readable file; ``load_sample`` records these instead of raising."""


class NoAudioTrack(MissingModality):
    """The container has no audio stream, or (beside a video stream) one that holds no samples."""


class SilentAudio(MissingModality):
    """The audio is (digital) silence: its RMS level is below the threshold."""


class NoFaceFound(MissingModality):
    """The face detector found no face in any sampled frame."""
