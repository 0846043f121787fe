"""
A session reporter: events batched to a backend from a background thread, like the Tinker SDK's.

``log()`` never blocks and never grows memory past ``max_queue``: it appends under a lock or
counts the event as dropped. A daemon thread sends batches of at most ``batch_size`` events
every ``flush_interval`` seconds (sooner when a full batch is waiting, or on ``flush()``); a
failed send is retried with a ``resilience.Backoff`` and then dropped and counted. ``close()``
(and interpreter exit, through ``atexit``) queues the session's end and drains everything;
the async twins hand the waiting to a worker thread so the event loop never blocks.
``RESILIENCE_TELEMETRY=0`` or ``set_enabled(False)`` makes reporters queue nothing.

Owns ``Reporter`` (queue, worker thread, flush/close/drain); the data types it sends live in
``_reporter_events``, ``HttpBackend`` in ``_backends`` and the user-error checks in
``_user_errors``.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import threading
import time
import uuid
import weakref

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import structlog

from resilience import _clock
from resilience._backoff import Backoff
from resilience._validate import check_choice, check_int, duration
from resilience.telemetry._backends import HttpBackend
from resilience.telemetry._bus import Event, Handle, attach
from resilience.telemetry._redact import redact, scrub_exception
from resilience.telemetry._reporter_events import (
    SEVERITIES,
    Batch,
    ReporterStats,
    exception_fields,
    jsonable,
    process_id,
)
from resilience.telemetry._switch import env_enabled, switch


__all__ = ["Reporter"]

_log = structlog.get_logger("resilience")
_open: weakref.WeakSet[Reporter] = weakref.WeakSet()


class Reporter:
    """
    Batch a session's events to *backend* from a background thread.

    Args:
        backend: A callable receiving a ``Batch`` (raise to signal failure), or a URL for
            an ``HttpBackend``.
        session_id: The session's id (None: a new uuid4). Session start and end events
            are sent unless *sessionless*.
        batch_size: The most events per batch (1 to 10,000; default 100).
        flush_interval: Seconds between periodic flushes (> 0; default 10).
        max_queue: The most events waiting (default 10,000); more are dropped and counted.
        retries: Sends retried after a failure before the batch is dropped (default 3).
        backoff: The waits between those retries (default 0.5, 1, 2 s with jitter).
        clock: Where retry waits sleep and timestamps are read (default: the process clock).
        forward: Bus event-name prefixes to report as generic events (None: none).
        sensitive: More key names to redact from event data.
        enabled: Force on or off (None: ``RESILIENCE_TELEMETRY``).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        backend: Callable[[Batch], object] | str,
        *,
        session_id: str | None = None,
        sessionless: bool = False,
        batch_size: int = 100,
        flush_interval: float = 10.0,
        max_queue: int = 10_000,
        retries: int = 3,
        backoff: Backoff | None = None,
        clock: Any = None,
        forward: Iterable[str] | str | None = None,
        sensitive: Iterable[str] = (),
        enabled: bool | None = None,
    ) -> None:
        self.backend: Callable[[Batch], object] = (
            HttpBackend(backend) if isinstance(backend, str) else backend
        )
        if not callable(self.backend):
            msg = f"backend must be a callable or a URL, got {type(backend).__name__}"
            raise TypeError(msg)
        check_int("Reporter", "batch_size", batch_size, low=1, high=10_000)
        check_int("Reporter", "max_queue", max_queue, low=1)
        check_int("Reporter", "retries", retries, low=0, high=100)
        interval = duration("Reporter", "flush_interval", flush_interval, strict=True)
        assert interval is not None
        self.batch_size = batch_size
        self.flush_interval = interval
        self.max_queue = max_queue
        self.retries = retries
        self.backoff = backoff or Backoff(base=0.5, max=5.0)
        self.clock = clock
        self.sensitive = tuple(sensitive)
        self.sessionless = sessionless
        self.session_id = session_id or (
            f"sessionless-{uuid.uuid4()}" if sessionless else str(uuid.uuid4())
        )
        self.enabled = env_enabled() if enabled is None else bool(enabled)
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._cond = threading.Condition()
        self._index = 0
        self._accepted = self._sent = self._failed = self._overflow = 0
        self._inflight = 0  # taken from the queue, being sent (or retried)
        self._batches = self._send_errors = 0
        self._dropped_unreported = 0
        self._flush_wanted = False
        self._closing = False
        self._closed = False
        self._started = self._now().timestamp()
        self._handle: Handle | None = None
        self._thread: threading.Thread | None = None
        if not self.enabled:
            return
        if not sessionless:
            self._put([self._event("SESSION_START", "INFO", {})])
        if forward is not None:
            self._handle = attach(self._forward, forward)
        self._thread = threading.Thread(target=self._run, name="resilience-telemetry", daemon=True)
        self._thread.start()
        _open.add(self)

    # -- queueing (any thread, never blocks on I/O) -------------------------------------

    def _now(self) -> datetime:
        clock = _clock.resolve(self.clock)
        return datetime.fromtimestamp(clock.time(), UTC)

    def _event(self, kind: str, severity: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        with self._cond:
            index = self._index
            self._index += 1
        return {
            "event": kind,
            "event_id": str(uuid.uuid4()),
            "event_session_index": index,
            "severity": severity,
            "timestamp": self._now().isoformat(),
            **fields,
        }

    def _put(self, events: list[dict[str, Any]]) -> bool:
        with self._cond:
            if self._closed or not switch.enabled:
                return False
            room = self.max_queue - len(self._queue)
            if len(events) > room:  # all or nothing, as the Tinker SDK does
                first = self._dropped_unreported == 0
                self._overflow += len(events)
                self._dropped_unreported += len(events)
                if first:
                    _log.warning(
                        "resilience.telemetry.dropped",
                        reason="queue full",
                        max_queue=self.max_queue,
                    )
                return False
            self._queue.extend(events)
            self._accepted += len(events)
            if len(self._queue) >= self.batch_size:
                self._cond.notify_all()
            return True

    def log(self, name: str, data: Mapping[str, Any] | None = None, severity: str = "INFO") -> bool:
        """
        Queue a generic event *name* with redacted *data*; return whether it was queued.

        Raises:
            ValueError: If *severity* is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL.
        """
        check_choice("", "severity", severity, SEVERITIES)
        if not self.enabled:
            return False
        clean = jsonable(redact(data or {}, self.sensitive, render=True))
        return self._put(
            [self._event("GENERIC_EVENT", severity, {"event_name": name, "event_data": clean})]
        )

    def _exception_event(self, exc: BaseException, severity: str) -> dict[str, Any]:
        return self._event(*exception_fields(exc, severity, self.sensitive))

    def log_exception(
        self, exc: BaseException, severity: str = "ERROR", *, fatal: bool = False
    ) -> bool:
        """
        Queue *exc*: a user error (4xx but 408/429) as a ``user_error`` warning, else as unhandled.

        With *fatal*, the session's end is queued with it and everything is drained.
        """
        check_choice("", "severity", severity, SEVERITIES)
        if not self.enabled:
            return False
        events = [self._exception_event(exc, severity)]
        if fatal and not self.sessionless:
            events.append(self._session_end())
        queued = self._put(events)
        if fatal:
            self.flush()
        else:
            self._wake()
        return queued

    @contextmanager
    def capture_exceptions(self, *, fatal: bool = False, severity: str = "ERROR") -> Iterator[None]:
        """Report an exception escaping the block (then re-raise it)."""
        try:
            yield
        except Exception as exc:
            self.log_exception(exc, severity, fatal=fatal)
            raise

    def _forward(self, event: Event) -> None:
        data = {
            "measurements": event.measurements,
            "metadata": redact(event.metadata, self.sensitive, render=True),
        }
        self._put(
            [
                self._event(
                    "GENERIC_EVENT",
                    "INFO",
                    {"event_name": event.name, "event_data": jsonable(data)},
                )
            ]
        )

    def _session_end(self) -> dict[str, Any]:
        elapsed = self._now().timestamp() - self._started
        return self._event("SESSION_END", "INFO", {"duration": elapsed})

    # -- the sending thread ---------------------------------------------------------------

    def _wake(self) -> None:
        with self._cond:
            self._flush_wanted = True
            self._cond.notify_all()

    def _take(self, everything: bool) -> tuple[Batch, int] | None:
        """Pop the next batch; its events count as in flight until sent or failed."""
        with self._cond:
            dropped = self._dropped_unreported
            if not (self._queue or (everything and dropped)):
                return None
            if not everything and len(self._queue) < self.batch_size:
                return None
            count = min(self.batch_size, len(self._queue))
            events = tuple(self._queue.popleft() for _ in range(count))
            self._inflight += count
            self._dropped_unreported = 0
        if dropped:  # reported in band too, so a backend that only reads events sees it
            notice = self._event(
                "GENERIC_EVENT",
                "WARNING",
                {"event_name": "resilience.telemetry.dropped", "event_data": {"count": dropped}},
            )
            events = (*events, notice)
        return Batch(self.session_id, process_id(), events, dropped), count

    def _send(self, batch: Batch, count: int) -> None:
        """
        Send *batch* (*count* of its events were accepted; a dropped-notice is not).

        Every outcome moves exactly *count* events from in flight to sent or failed, under
        the lock, so ``accepted == sent + failed + queued`` holds at every moment.
        """
        clock = _clock.resolve(self.clock)
        for retry in range(self.retries + 1):
            try:
                self.backend(batch)
            except BaseException as exc:  # the backend is the user's: anything may go wrong
                with self._cond:
                    self._send_errors += 1
                if retry == self.retries:
                    _log.warning(
                        "resilience.telemetry.batch_dropped",
                        events=len(batch.events),
                        error=scrub_exception(exc, sensitive=self.sensitive),
                    )
                    with self._cond:
                        self._failed += count
                        self._inflight -= count
                        self._cond.notify_all()
                    return
                clock.sleep(self.backoff.delay(retry))
            else:
                with self._cond:
                    self._sent += count
                    self._inflight -= count
                    self._batches += 1
                    self._cond.notify_all()
                return

    def _due(self) -> bool:
        """Whether the thread has work without waiting (call under the lock)."""
        return self._flush_wanted or self._closing or len(self._queue) >= self.batch_size

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._due():
                    self._cond.wait(self.flush_interval)
                    if not self._due():
                        self._flush_wanted = True  # the interval passed
                everything = self._flush_wanted or self._closing
                self._flush_wanted = False
                closing = self._closing
            while (taken := self._take(everything)) is not None:
                self._send(*taken)
            if closing:
                with self._cond:
                    if not self._queue:
                        return

    # -- flushing and closing ---------------------------------------------------------------

    def _wait_done(self, target: int, timeout: float | None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._sent + self._failed >= target, timeout)

    def flush(self, timeout: float | None = 30.0) -> bool:
        """
        Send everything queued so far; return whether it was handled within *timeout*.

        Returns within *timeout* seconds whatever the backend does (hangs, raises, is slow):
        False then, and the events stay queued or in flight.
        """
        if self._thread is None:
            return True
        with self._cond:
            target = self._accepted
            self._flush_wanted = True
            self._cond.notify_all()
        return self._wait_done(target, timeout)

    def close(self, timeout: float | None = 30.0) -> bool:
        """
        Queue the session's end, drain the queue and stop the thread; True if all was handled.

        The whole of it (draining and stopping the thread) takes at most *timeout* seconds,
        whatever the backend does: a backend that hangs is left to its daemon thread.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._thread is None or self._closed:
            return True
        if not self.sessionless:
            self._put([self._session_end()])
        if self._handle is not None:
            self._handle.detach()
        with self._cond:
            self._closed = True
            self._closing = True
            target = self._accepted
            self._cond.notify_all()
        drained = self._wait_done(target, _left(deadline))
        self._thread.join(_left(deadline))
        _open.discard(self)
        if not drained:
            _log.warning("resilience.telemetry.drain_timeout", queued=len(self._queue))
        return drained

    async def aflush(self, timeout: float | None = 30.0) -> bool:
        """``flush()`` for async code: the waiting happens in a worker thread."""
        return await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float | None = 30.0) -> bool:
        """``close()`` for async code: the waiting happens in a worker thread."""
        return await asyncio.to_thread(self.close, timeout)

    @property
    def stats(self) -> ReporterStats:
        """The accounting so far."""
        with self._cond:
            return ReporterStats(
                accepted=self._accepted,
                queued=len(self._queue) + self._inflight,
                sent=self._sent,
                failed=self._failed,
                overflow=self._overflow,
                batches=self._batches,
                send_errors=self._send_errors,
            )

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Reporter session={self.session_id!r} backend={self.backend!r}>"


def _left(deadline: float | None) -> float | None:
    """Seconds until *deadline* (never below 0), or None for no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


@atexit.register
def _close_all(timeout: float = 5.0) -> None:
    """At exit: drain every open reporter, all of them within *timeout* seconds in total."""
    deadline = time.monotonic() + timeout
    for reporter in list(_open):
        reporter.close(timeout=_left(deadline))
