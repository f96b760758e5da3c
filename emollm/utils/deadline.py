"""A cooperative deadline for one unit of work (one analysis), so a time limit stops the work, not only the answer.

Python threads cannot be interrupted from outside, so the work checks: :func:`check_deadline` between stages, and
:func:`stopping_criteria` inside ``generate()`` after every token. Outside a :func:`deadline` scope both are no-ops,
so library code may call them unconditionally (the CLI runs without a deadline; the service sets one per request).

The scope lives in a :class:`contextvars.ContextVar`: it belongs to the thread (or task) that opened it, and code
running there sees it without passing it down through every signature.

Example:
    >>> with deadline(30.0) as d:          # doctest: +SKIP
    ...     check_deadline("reasoning")    # raises DeadlineExceeded once 30 s have passed or d.cancel() was called
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Deadline", "DeadlineExceeded", "check_deadline", "current_deadline", "deadline", "stopping_criteria"]


class DeadlineExceeded(TimeoutError):
    """The work passed its deadline or was cancelled; the message says at which stage."""


@dataclass
class Deadline:
    """When the work must stop (``time.monotonic()`` seconds; None: no time limit) and a cancel flag.

    Attributes:
        at: Monotonic time after which the work stops, or None.
        cancelled: Set by :meth:`cancel` (from any thread): the work stops at its next check.
        reason: The time limit in words, for the message (e.g. "the server's limit of 120 s (--timeout-s)").
        cancel_reason: Why :meth:`cancel` was called (the first caller's words).
    """

    at: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    reason: str = "its time limit"
    cancel_reason: str = "cancelled"

    def cancel(self, reason: str | None = None) -> None:
        """Ask the work to stop at its next check (thread-safe; the first reason given is kept)."""
        if reason and not self.cancelled.is_set():
            self.cancel_reason = reason
        self.cancelled.set()

    def remaining(self) -> float | None:
        """Seconds left (0 when passed or cancelled), or None without a time limit."""
        if self.cancelled.is_set():
            return 0.0
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        """Whether the work must stop now."""
        return self.cancelled.is_set() or (self.at is not None and time.monotonic() >= self.at)

    def check(self, stage: str) -> None:
        """Raise :class:`DeadlineExceeded` naming ``stage`` when the work must stop."""
        if self.cancelled.is_set():
            raise DeadlineExceeded(f"stopped at {stage}: {self.cancel_reason}")
        if self.expired():
            raise DeadlineExceeded(f"stopped at {stage}: {self.reason} passed")


_CURRENT: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("emollm_deadline", default=None)


@contextmanager
def deadline(
    seconds: float | None = None, *, at: float | None = None, scope: Deadline | None = None, reason: str | None = None
) -> Iterator[Deadline]:
    """Run the body under a deadline: ``seconds`` from now, an absolute monotonic ``at``, or a prepared ``scope``.

    Raises:
        ValueError: More than one of ``seconds``, ``at`` and ``scope``.
    """
    if sum(x is not None for x in (seconds, at, scope)) > 1:
        raise ValueError("deadline: give one of seconds, at or scope")
    if scope is None:
        scope = Deadline(at if seconds is None else time.monotonic() + seconds)
    if reason:
        scope.reason = reason
    token = _CURRENT.set(scope)
    try:
        yield scope
    finally:
        _CURRENT.reset(token)


def current_deadline() -> Deadline | None:
    """The deadline of the running work, or None."""
    return _CURRENT.get()


def check_deadline(stage: str) -> None:
    """Raise :class:`DeadlineExceeded` when the running work passed its deadline (a no-op without one)."""
    scope = _CURRENT.get()
    if scope is not None:
        scope.check(stage)


def stopping_criteria() -> Any:
    """A ``transformers.StoppingCriteriaList`` that ends ``generate()`` at the current deadline, or None without one.

    Pass it as ``stopping_criteria=`` and call :func:`check_deadline` after ``generate()`` returns: the criterion only
    stops generating early, the check turns that into :class:`DeadlineExceeded`.
    """
    scope = _CURRENT.get()
    if scope is None:
        return None
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _DeadlineCriteria(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            return torch.full((input_ids.shape[0],), scope.expired(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_DeadlineCriteria()])
