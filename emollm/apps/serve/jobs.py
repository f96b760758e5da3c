"""A bounded pool of worker threads, each owning one analyzer, with admission control.

Memory stays bounded under any load: at most ``workers + queue`` requests are *admitted* at a time (waiting or
running; the service admits a request only once its upload is complete), and a request that cannot be admitted is
refused at once (the caller answers 503 with ``Retry-After``) instead of waiting. An admitted request holds its slot
until its job has left the pool. Each job runs under its ticket's :class:`~emollm.utils.deadline.Deadline`: past its
time, or once :meth:`Ticket.cancel` is called (a timeout, a client that went away), the job stops at its next stage
check or generated token (a thread cannot be interrupted from outside), so the worker is free again within about a
token's time. Analyzers are not thread-safe: each worker thread calls only its own.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from emollm.utils.deadline import Deadline, DeadlineExceeded, deadline

__all__ = ["JobPool", "Ticket"]

_STOP = object()


class Ticket:
    """One admitted request: submit at most one job, and release the slot (idempotent) if none was submitted.

    Attributes:
        scope: The job's deadline and cancel flag (the job runs inside it).
        future: The job's result, once submitted.
    """

    def __init__(self, pool: JobPool) -> None:
        self._pool = pool
        self._released = False
        self._lock = threading.Lock()
        self.future: Future[Any] | None = None
        self.scope = Deadline()

    def submit(self, fn: Callable[[Any], Any], *, at: float | None = None, reason: str | None = None) -> Future[Any]:
        """Queue ``fn(analyzer)`` to run under a deadline at monotonic time ``at`` (``reason`` words it); the slot
        is released when the job has run, stopped or been skipped."""
        if self.future is not None:
            raise RuntimeError("a ticket runs one job")
        self.scope.at = at
        if reason:
            self.scope.reason = reason
        self.future = Future()
        self._pool._jobs.put((fn, self.future, self))
        return self.future

    def cancel(self, reason: str | None = None) -> None:
        """Skip the job if it has not started, or stop it at its next check if it runs (a no-op once it is done)."""
        if self.future is not None and not self.future.done():
            self.scope.cancel(reason)
            self.future.cancel()

    def release(self) -> None:
        """Give the slot back (once); after :meth:`submit` the pool does this itself."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self._pool._release()


class JobPool:
    """``workers`` threads, one analyzer each, and room for ``workers + queue`` admitted requests.

    Args:
        analyzers: One analyzer per worker thread (called only from its thread).
        queue: Admitted requests beyond the running ones.
    """

    def __init__(self, analyzers: list[Any], queue_size: int) -> None:
        if not analyzers:
            raise ValueError("JobPool needs at least one analyzer")
        self.analyzers = list(analyzers)
        self.capacity = len(self.analyzers) + queue_size
        self._jobs: queue.Queue[Any] = queue.Queue()  # bounded by admission, not by maxsize
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self._stopped = 0  # jobs stopped by their deadline or a cancel
        self._mean_s = 5.0  # running mean of job seconds, for Retry-After
        self._threads: list[threading.Thread] = []
        self.start()

    def start(self) -> None:
        """Start the worker threads (again after :meth:`close`: an app served twice, as tests do; idempotent)."""
        if self._threads and all(t.is_alive() for t in self._threads):
            return
        self._threads = [
            threading.Thread(target=self._work, args=(a,), name=f"emollm-serve-worker-{i}", daemon=True)
            for i, a in enumerate(self.analyzers)
        ]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------------------------------------ admission
    def admit(self) -> Ticket | None:
        """A ticket, or None when ``workers + queue`` requests are already admitted."""
        with self._lock:
            if self._admitted >= self.capacity:
                return None
            self._admitted += 1
        return Ticket(self)

    def _release(self) -> None:
        with self._lock:
            self._admitted -= 1

    def retry_after_s(self) -> int:
        """Seconds until a slot is likely free: the mean job time times the jobs ahead per worker (at least 1)."""
        with self._lock:
            ahead = max(1, self._admitted - len(self.analyzers) + 1)
            return max(1, math.ceil(self._mean_s * ahead / len(self.analyzers)))

    def full(self) -> bool:
        """Whether :meth:`admit` would refuse now."""
        with self._lock:
            return self._admitted >= self.capacity

    def stats(self) -> dict[str, int]:
        """Workers, capacity, admitted, running and waiting counts, and jobs stopped at their deadline."""
        with self._lock:
            return {
                "workers": len(self.analyzers),
                "capacity": self.capacity,
                "admitted": self._admitted,
                "running": self._running,
                "waiting": self._admitted - self._running,
                "stopped": self._stopped,
            }

    # ------------------------------------------------------------------------------------------------ workers
    def _work(self, analyzer: Any) -> None:
        while True:
            item = self._jobs.get()
            if item is _STOP:
                return
            fn, future, ticket = item
            try:
                if ticket.scope.expired() or not future.set_running_or_notify_cancel():
                    future.cancel()
                    continue  # timed out or abandoned while waiting: never runs
                with self._lock:
                    self._running += 1
                start = time.perf_counter()
                stopped = False
                try:
                    with deadline(scope=ticket.scope):
                        future.set_result(fn(analyzer))
                except DeadlineExceeded as e:
                    stopped = True
                    future.set_exception(e)
                except BaseException as e:  # noqa: B036 - handed to the waiting request
                    future.set_exception(e)
                finally:
                    with self._lock:
                        self._running -= 1
                        self._stopped += stopped
                        if not stopped:  # a stopped job says nothing about how long a job takes
                            self._mean_s = 0.8 * self._mean_s + 0.2 * (time.perf_counter() - start)
            finally:
                ticket.release()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the workers after their current job (waits at most ``timeout_s``) and close the analyzers."""
        for _ in self._threads:
            self._jobs.put(_STOP)
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for t, a in zip(self._threads, self.analyzers, strict=True):
            if not t.is_alive():  # never close an analyzer under a running job
                a.close()
