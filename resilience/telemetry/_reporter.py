"""
A session reporter: events batched to a backend from a background thread, like the Tinker SDK's.

``log()`` never blocks and never grows memory past ``max_queue``: it appends under a lock or
counts the event as dropped. A daemon thread sends batches of at most ``batch_size`` events
every ``flush_interval`` seconds (sooner when a full batch is waiting, or on ``flush()``); a
failed send is retried with a ``resilience.Backoff`` and then dropped and counted. ``close()``
(and interpreter exit, through ``atexit``) queues the session's end and drains everything;
the async twins hand the waiting to a worker thread so the event loop never blocks.
``RESILIENCE_TELEMETRY=0`` or ``set_enabled(False)`` makes reporters queue nothing.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import dataclasses
import json
import os
import platform
import threading
import traceback
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
from resilience.telemetry._bus import Event, Handle, attach
from resilience.telemetry._redact import redact
from resilience.telemetry._switch import env_enabled, switch
from resilience.typing import Clock


__all__ = [
    "Batch",
    "HttpBackend",
    "Reporter",
    "ReporterStats",
    "find_user_error",
    "is_user_error",
    "jsonable",
]

SEVERITIES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_log = structlog.get_logger("resilience")
_open: weakref.WeakSet[Reporter] = weakref.WeakSet()


def jsonable(value: Any, depth: int = 0) -> Any:
    """Return *value* as JSON-ready data: exceptions as ``"Type: message"``, others by repr."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if depth > 8:
        return repr(value)[:200]
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, depth + 1) for v in value]
    return repr(value)[:200]


def _status_of(exc: BaseException) -> int | None:
    for holder in (exc, getattr(exc, "response", None)):
        code = getattr(holder, "status_code", None)
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    return None


def find_user_error(exc: BaseException) -> BaseException | None:
    """
    Return the exception in *exc*'s chain that is the caller's fault, or None.

    An HTTP status in 400-499 other than 408 (timeout) and 429 (rate limit), read from
    ``exc.status_code`` or ``exc.response.status_code``, is the user's. ``__cause__`` is
    walked before ``__context__``; cycles are guarded against.

    .. versionadded:: 0.1.0
    """
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        code = _status_of(current)
        if code is not None and 400 <= code < 500 and code not in (408, 429):
            return current
        if current.__context__ is not None:
            stack.append(current.__context__)
        if current.__cause__ is not None:
            stack.append(current.__cause__)  # popped first: the cause before the context
    return None


def is_user_error(exc: BaseException) -> bool:
    """
    Whether *exc* (or its cause or context) is the caller's fault, per ``find_user_error``.

    .. versionadded:: 0.1.0
    """
    return find_user_error(exc) is not None


@dataclasses.dataclass(frozen=True, slots=True)
class Batch:
    """
    What a backend receives: up to ``batch_size`` events of one session.

    Attributes:
        session_id: The reporter's session.
        process_id: A uuid made once per process (again after a fork).
        events: JSON-ready event dicts (``event``, ``event_id``, ``event_session_index``,
            ``severity``, ``timestamp`` and the type's own fields).
        dropped: Events lost to a full queue since the previous batch (also reported as a
            last ``resilience.telemetry.dropped`` event with ``{"count": dropped}``).
        platform: ``platform.system()``.
        sdk_version: This package's version.

    .. versionadded:: 0.1.0
    """

    __module__ = "resilience.telemetry"

    session_id: str
    process_id: str
    events: tuple[dict[str, Any], ...]
    dropped: int = 0
    platform: str = dataclasses.field(default_factory=platform.system)
    sdk_version: str = "0.1.0"

    def to_dict(self) -> dict[str, Any]:
        """Return the batch as a JSON-ready dict."""
        return {
            "session_id": self.session_id,
            "process_id": self.process_id,
            "events": list(self.events),
            "dropped": self.dropped,
            "platform": self.platform,
            "sdk_version": self.sdk_version,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class ReporterStats:
    """
    A reporter's accounting: ``accepted == sent + failed + queued`` at every moment.

    .. versionadded:: 0.1.0
    """

    __module__ = "resilience.telemetry"

    accepted: int
    queued: int
    sent: int
    failed: int
    overflow: int
    batches: int
    send_errors: int


class HttpBackend:
    """
    POST each batch as JSON to *url*, with httpx if installed, else ``urllib``.

    A non-2xx answer or a connection error raises, so the reporter retries it.

    .. versionadded:: 0.1.0
    """

    __module__ = "resilience.telemetry"
    __slots__ = ("headers", "timeout", "url")

    def __init__(
        self, url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 5.0
    ) -> None:
        target: object = url
        if not isinstance(target, str) or not target.startswith(("http://", "https://")):
            msg = f"url must be an http:// or https:// URL, got {url!r}"
            raise ValueError(msg)
        self.url = url
        self.headers = {"content-type": "application/json", **(headers or {})}
        self.timeout = duration("HttpBackend", "timeout", timeout, strict=True)

    def __call__(self, batch: Batch) -> None:
        """Send *batch*; raise on failure."""
        body = json.dumps(batch.to_dict()).encode()
        try:
            import httpx  # noqa: PLC0415 - optional dependency
        except ImportError:  # pragma: no cover - httpx is installed in our test environment
            self._post_urllib(body)
            return
        httpx.post(
            self.url, content=body, headers=self.headers, timeout=self.timeout
        ).raise_for_status()

    def _post_urllib(self, body: bytes) -> None:
        import urllib.request  # noqa: PLC0415

        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            response.read()

    def __repr__(self) -> str:
        return f"HttpBackend({self.url!r})"


_process: list[tuple[int, str]] = [(os.getpid(), str(uuid.uuid4()))]


def _process_id() -> str:
    pid, ident = _process[0]
    if pid != os.getpid():  # forked: a new process, a new id
        pid, ident = _process[0] = (os.getpid(), str(uuid.uuid4()))
    return ident


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

    __module__ = "resilience.telemetry"

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
        clock: Clock = self.clock or _clock._default.clock  # type: ignore[assignment]
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
        clean = jsonable(redact(data or {}, self.sensitive))
        return self._put(
            [self._event("GENERIC_EVENT", severity, {"event_name": name, "event_data": clean})]
        )

    def _exception_event(self, exc: BaseException, severity: str) -> dict[str, Any]:
        culprit = find_user_error(exc)
        if culprit is not None:
            data: dict[str, Any] = {"error_type": type(exc).__name__}
            if str(exc):
                data["message"] = str(exc)
            code = _status_of(culprit)
            if code is not None:
                data["status_code"] = code
            body = getattr(culprit, "body", None)
            if body:
                data["body"] = body
            clean = jsonable(redact(data, self.sensitive))
            return self._event(
                "GENERIC_EVENT", "WARNING", {"event_name": "user_error", "event_data": clean}
            )
        text = None
        if exc.__traceback__ is not None:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return self._event(
            "UNHANDLED_EXCEPTION",
            severity,
            {"error_type": type(exc).__name__, "error_message": str(exc), "traceback": text},
        )

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
            "metadata": redact(event.metadata, self.sensitive),
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

    def _take(self, everything: bool) -> Batch | None:
        with self._cond:
            dropped = self._dropped_unreported
            if not (self._queue or (everything and dropped)):
                return None
            if not everything and len(self._queue) < self.batch_size:
                return None
            count = min(self.batch_size, len(self._queue))
            events = tuple(self._queue.popleft() for _ in range(count))
            self._dropped_unreported = 0
        if dropped:  # reported in band too, so a backend that only reads events sees it
            notice = self._event(
                "GENERIC_EVENT",
                "WARNING",
                {"event_name": "resilience.telemetry.dropped", "event_data": {"count": dropped}},
            )
            events = (*events, notice)
        return Batch(self.session_id, _process_id(), events, dropped)

    def _send(self, batch: Batch) -> None:
        clock: Clock = self.clock or _clock._default.clock  # type: ignore[assignment]
        for retry in range(self.retries + 1):
            try:
                self.backend(batch)
            except Exception as exc:  # the backend is the user's: anything may go wrong
                with self._cond:
                    self._send_errors += 1
                if retry == self.retries:
                    _log.warning(
                        "resilience.telemetry.batch_dropped",
                        events=len(batch.events),
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    with self._cond:
                        self._failed += len(batch.events)
                        self._cond.notify_all()
                    return
                clock.sleep(self.backoff.delay(retry))
            else:
                with self._cond:
                    self._sent += len(batch.events)
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
            while (batch := self._take(everything)) is not None:
                self._send(batch)
            if closing:
                with self._cond:
                    if not self._queue:
                        return

    # -- flushing and closing ---------------------------------------------------------------

    def _wait_done(self, target: int, timeout: float | None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._sent + self._failed >= target, timeout)

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Send everything queued so far; return whether it was handled within *timeout*."""
        if self._thread is None:
            return True
        with self._cond:
            target = self._accepted
            self._flush_wanted = True
            self._cond.notify_all()
        return self._wait_done(target, timeout)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Queue the session's end, drain the queue and stop the thread; True if all was handled."""
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
        drained = self._wait_done(target, timeout)
        self._thread.join(timeout)
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
                queued=len(self._queue),
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


@atexit.register
def _close_all() -> None:
    for reporter in list(_open):
        reporter.close(timeout=5.0)
