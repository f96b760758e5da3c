"""What ``emollm serve`` runs with (torch-free, so the CLI, the app and tests share one schema)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from emollm.labels import MER2023_LABELS

__all__ = ["API_KEY_ENV", "ServeSettings"]

API_KEY_ENV = "EMOLLM_API_KEY"
"""Environment variable holding the API key (preferred over ``--api-key``, which other users can see in ``ps``)."""


@dataclass
class ServeSettings:
    """Settings of the analysis service; every check names the command-line flag.

    Attributes:
        checkpoint: A trained checkpoint folder; None runs the zero-shot clue mode.
        labels: The label set, in prompt order. Requests may repeat it (any order) but not change it.
        host: Interface to bind; loopback unless asked.
        port: TCP port.
        api_key: Required on ``/v1/*`` and ``/version`` when set (``Authorization: Bearer KEY`` or ``X-API-Key``).
        max_upload_mb: Largest upload, checked while it streams in (413).
        max_duration_s: Longest media duration declared by the file's header (413).
        workers: Worker threads; each owns one analyzer (memory grows with it).
        queue: Requests admitted for analysis beyond the running ones (waiting); more get 503 + ``Retry-After``.
            A request is admitted only once its upload is complete, so slow uploads never hold these slots.
        timeout_s: Seconds from the end of the upload to the answer, else 504; the analysis stops at it too.
        upload_timeout_s: Seconds a request's whole body may take to arrive, else 408 (a slow or stalled client).
        max_uploads: Uploads received at the same time; more get 503 + ``Retry-After``. With ``upload_timeout_s``
            it bounds what slow clients can hold (and the disk: ``max_uploads * max_upload_mb``).
        tmp_dir: Parent of the private (0700) upload folder; None: the system's temporary folder.
        max_streams: Live sessions (``WS /v1/stream``) at once; more are refused.
        analyzer_options: Keyword arguments of :func:`emollm.apps.analyze.load_analyzer`.
    """

    checkpoint: str | None = None
    labels: tuple[str, ...] = tuple(MER2023_LABELS)
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_upload_mb: float = 50.0
    max_duration_s: float = 120.0
    workers: int = 1
    queue: int = 4
    timeout_s: float = 120.0
    upload_timeout_s: float = 60.0
    max_uploads: int = 8
    tmp_dir: str | None = None
    max_streams: int = 4
    analyzer_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = tuple(self.labels)
        if len(self.labels) < 2:
            raise ValueError(f"--labels needs at least two labels, got {list(self.labels)}")
        positive = {"--max-upload-mb": self.max_upload_mb, "--max-duration-s": self.max_duration_s,
                    "--timeout-s": self.timeout_s, "--upload-timeout-s": self.upload_timeout_s}  # fmt: skip
        for flag, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{flag} must be a positive number, got {value!r}")
        if self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.max_uploads < 1:
            raise ValueError(f"--max-uploads must be >= 1, got {self.max_uploads}")
        if self.queue < 0:
            raise ValueError(f"--queue must be >= 0, got {self.queue}")
        if self.max_streams < 0:
            raise ValueError(f"--max-streams must be >= 0, got {self.max_streams}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535, got {self.port}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError(f"--api-key / {API_KEY_ENV} is empty; give a key or leave it unset")

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes (MiB)."""
        return int(self.max_upload_mb * 1024 * 1024)

    @classmethod
    def api_key_from_env(cls, given: str | None) -> str | None:
        """The key from ``--api-key`` if given, else from :data:`API_KEY_ENV` (None when neither is set).

        Raises:
            ValueError: :data:`API_KEY_ENV` is set but empty (or blank): a misconfiguration, never "no key".
        """
        if given is not None:
            return given
        value = os.environ.get(API_KEY_ENV)
        if value is not None and not value.strip():
            raise ValueError(
                f"{API_KEY_ENV} is set but empty, which would turn authentication off: set it to the key, or unset "
                f"it (unset {API_KEY_ENV}) to serve without one"
            )
        return value
