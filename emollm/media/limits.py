"""Resource limits checked against a file's *header* before any decoder allocates memory.

A hostile or broken header can claim a 1e9-second duration, 2^31 frames or a 60000x60000 picture in a 30 KB file;
decoders that trust it allocate accordingly (decord aborts the whole process with ``std::bad_alloc``). :func:`probe`
compares every declared value with a :class:`MediaLimits` and raises :class:`~emollm.media.MediaTooLarge` naming the
file, the declared value, the limit and how to raise it.

Defaults (raise them with the environment variables, or pass ``limits=MediaLimits(...)`` to ``probe`` /
``load_sample`` / ``load_audio`` / ``read_frames``):

====================  ===================  ==========================  ================================================
field                 default              environment variable        what it bounds
====================  ===================  ==========================  ================================================
``max_duration_s``    10800 (3 h)          ``EMOLLM_MAX_DURATION_S``   declared duration of the container or a stream
``max_frames``        1000000              ``EMOLLM_MAX_FRAMES``       declared video frames (4.6 h at 60 fps)
``max_pixels``        178956970            ``EMOLLM_MAX_PIXELS``       width x height of a frame or image (Pillow's
                                                                       decompression-bomb limit, ~13377x13377)
``max_bytes``         2 GiB                ``EMOLLM_MAX_BYTES``        decoded output of one call (RGB frames, audio)
====================  ===================  ==========================  ================================================

Images above Pillow's own limit (``2 * PIL.Image.MAX_IMAGE_PIXELS``) also need that raised.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields

__all__ = ["ENV_VARS", "MediaLimits"]

ENV_VARS = {
    "max_duration_s": "EMOLLM_MAX_DURATION_S",
    "max_frames": "EMOLLM_MAX_FRAMES",
    "max_pixels": "EMOLLM_MAX_PIXELS",
    "max_bytes": "EMOLLM_MAX_BYTES",
}
"""Field -> the environment variable that overrides its default."""


@dataclass(frozen=True)
class MediaLimits:
    """Largest declared sizes a file may have before anything is decoded.

    Attributes:
        max_duration_s: Longest declared duration (container or any stream), in seconds.
        max_frames: Most declared video frames.
        max_pixels: Most pixels (width x height) in one video frame or image.
        max_bytes: Most bytes one decode may return (all requested RGB frames together, or a float32 wave).
    """

    max_duration_s: float = 3 * 3600.0
    max_frames: int = 1_000_000
    max_pixels: int = 178_956_970
    max_bytes: int = 2 << 30

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"MediaLimits.{f.name} must be a positive number, got {v!r}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> MediaLimits:
        """The defaults, with each field overridden by its environment variable when set (see :data:`ENV_VARS`).

        Raises:
            ValueError: A variable is set to something that is not a positive number; the message names it.
        """
        env = os.environ if environ is None else environ
        kwargs: dict[str, float | int] = {}
        for name, var in ENV_VARS.items():
            raw = env.get(var, "").strip()
            if not raw:
                continue
            try:
                value = float(raw)
                if not math.isfinite(value) or value <= 0:
                    raise ValueError
            except ValueError:
                raise ValueError(f"{var}={raw!r}: expected a positive number (e.g. {var}=1e7)") from None
            kwargs[name] = value if name == "max_duration_s" else int(value)
        return cls(**kwargs)

    def how_to_raise(self, name: str, declared: float) -> str:
        """The fix part of a :class:`~emollm.media.MediaTooLarge` message for field ``name``."""
        want = math.ceil(declared * 1.01) if name == "max_duration_s" else int(declared)
        return f"if the file really is that large, set {ENV_VARS[name]}={want} or pass MediaLimits({name}=...)"


def resolve(limits: MediaLimits | None) -> MediaLimits:
    """``limits``, or the environment's limits when ``None``."""
    return limits if limits is not None else MediaLimits.from_env()
