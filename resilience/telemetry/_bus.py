"""
The event bus: ``attach``/``detach`` handlers and ``emit`` events to them.

Emitting with no handler attached is one attribute read and a truth test. With handlers, the
handles that want a name are looked up once and cached per name (the cache is rebuilt when a
handler comes or goes), so an event nobody subscribed to costs a dict lookup, not an
``Event``. Handlers run synchronously in the emitting thread; a handler that raises is
detached and logged through structlog's ``resilience`` logger, and the decorated call goes
on as if nothing happened.
"""

from __future__ import annotations

import threading
import time as _time

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from resilience.telemetry._redact import scrub_exception


__all__ = [
    "BUS",
    "TAPS",
    "TRACE_EVENTS",
    "CallTap",
    "Event",
    "EventHandler",
    "Handle",
    "add_tap",
    "attach",
    "detach",
    "detach_all",
    "drop_tap",
    "emit",
    "remove_tap",
    "run_taps",
]

_log = structlog.get_logger("resilience")

#: Names whose routes are cached at most; past it the cache starts over (names made with
#: f-strings must not grow memory without bound).
_MAX_ROUTES = 1024


@dataclass(frozen=True, slots=True)
class Event:
    """
    One thing that happened: a dotted *name* under ``resilience.``, numbers and context.

    Attributes:
        name: For example ``"resilience.retry.retry"``.
        measurements: Numbers: durations in seconds, delays, counts.
        metadata: Context: the function's name, the attempt number, the exception.
        time: Wall-clock epoch seconds when the event was emitted.
        monotonic_ns: ``time.monotonic_ns()`` when the event was emitted.
        logged: True when the emitting layer wrote this event's log line itself (``@traced``
            with ``log=True``), so ``attach_structlog()`` does not write it a second time.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 ``logged``.
    """

    name: str
    measurements: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=_time.time)
    monotonic_ns: int = field(default_factory=_time.monotonic_ns)
    logged: bool = False


EventHandler = Callable[[Event], object]

#: The events of ``@traced``: a handler wanting any of them makes it build events.
TRACE_EVENTS = ("resilience.trace.start", "resilience.trace.stop", "resilience.trace.exception")

CallTap = Callable[[tuple[str, int, bool, int]], object]
"""
A counter of traced calls: ``tap((name, duration_ns, failed, ended_ns))`` as each ends.

One tuple, so a tap may be a builtin such as a deque's ``append`` (no Python frame on the
call's path). *ended_ns* is when it ended on the process default's
``telemetry._spans.now_ns`` clock, or -1 when the ``@traced`` policy has its own clock.
"""

#: The call taps (``RollingMetrics``): mutated in place, so ``@traced`` holds the list and
#: tests it with no lookup. A tap costs two clock reads, a tuple and an append per traced
#: call, not an event: an application watched by the live page keeps the quiet path.
TAPS: list[CallTap] = []
_TAPS_LOCK = threading.Lock()


def add_tap(tap: CallTap) -> None:
    """Call *tap((name, duration_ns, failed, ended_ns))* at the end of every traced call."""
    with _TAPS_LOCK:
        if tap not in TAPS:
            TAPS.append(tap)


def remove_tap(tap: CallTap) -> None:
    """Stop calling *tap* (twice is harmless)."""
    with _TAPS_LOCK:
        if tap in TAPS:
            TAPS.remove(tap)


def run_taps(name: str, elapsed_ns: int, failed: bool, ended_ns: int = -1) -> None:
    """Give one traced call to every tap; a tap that raises is removed (and logged)."""
    call = (name, elapsed_ns, failed, ended_ns)
    for tap in TAPS:
        try:
            tap(call)
        except Exception as exc:  # isolation: a broken tap never breaks a call
            drop_tap(tap, exc)


def drop_tap(tap: CallTap, exc: Exception) -> None:
    """Remove a tap that raised *exc*, and log it as a detached handler is."""
    remove_tap(tap)
    _log.error(
        "resilience.telemetry.handler_detached",
        handler=repr(tap),
        event_name="resilience.trace.stop",
        error=scrub_exception(exc),
        traceback=scrub_exception(exc, tb=True),
    )


class Handle:
    """
    A subscription returned by ``attach``; ``detach()`` ends it (twice is harmless).

    .. versionadded:: 0.1.0
    """

    __slots__ = ("events", "handler")

    def __init__(self, handler: EventHandler, events: tuple[str, ...] | None) -> None:
        self.handler = handler
        self.events = events

    def matches(self, name: str) -> bool:
        """Whether this subscription wants events named *name*."""
        return self.events is None or name.startswith(self.events)

    @property
    def attached(self) -> bool:
        """Whether the handler still receives events."""
        return self in BUS.subs

    def detach(self) -> None:
        """Stop delivering events to this handler."""
        BUS.remove(self)

    def __repr__(self) -> str:
        return f"Handle(handler={self.handler!r}, events={self.events!r})"


class _Bus:
    """
    Subscriptions as an immutable tuple, swapped under a lock: emitters never lock.

    ``routes`` maps an event name to the handles that want it; it is replaced (never
    mutated in place by writers) whenever the subscriptions change, so a reader holding
    the old dict sees a consistent, if stale, view.
    """

    __slots__ = ("_lock", "live", "routes", "subs", "traced")

    def __init__(self) -> None:
        self.subs: tuple[Handle, ...] = ()
        #: The same handles in a list that is only ever mutated in place, so hot paths can
        #: hold it in a closure and test it with no attribute lookup: ``if live:``.
        self.live: list[Handle] = []
        self.routes: dict[str, tuple[Handle, ...]] = {}
        #: Whether a handler wants ``@traced``'s events (else it keeps its quiet path).
        self.traced = False
        self._lock = threading.Lock()

    def _set(self, subs: tuple[Handle, ...]) -> None:
        self.subs = subs
        self.live[:] = subs
        self.routes = {}
        self.traced = any(h.matches(name) for h in subs for name in TRACE_EVENTS)

    def add(self, handle: Handle) -> None:
        with self._lock:
            self._set((*self.subs, handle))

    def remove(self, handle: Handle) -> None:
        with self._lock:
            if handle in self.subs:
                self._set(tuple(h for h in self.subs if h is not handle))

    def clear(self) -> None:
        with self._lock:
            self._set(())

    def route(self, name: str) -> tuple[Handle, ...]:
        """Return (and cache) the handles that want *name*."""
        subs = self.subs
        routes = self.routes
        handles = tuple(h for h in subs if h.matches(name))
        if len(routes) >= _MAX_ROUTES:
            routes = self.routes = {}
        if subs is self.subs:  # not changed meanwhile: the cache may keep it
            routes[name] = handles
        return handles


BUS = _Bus()


def attach(handler: EventHandler, events: Iterable[str] | str | None = None) -> Handle:
    """
    Subscribe *handler(event)* to every event, or to those whose name starts with *events*.

    Args:
        handler: Called synchronously with each ``Event``, before the decorated call
            returns or raises. If it raises, it is detached and the error is logged.
        events: A name prefix or an iterable of them, such as ``"resilience.retry"``.

    Returns:
        A ``Handle`` whose ``detach()`` unsubscribes.

    Raises:
        TypeError: If *handler* is not callable or *events* holds something else than
            strings.

    .. versionadded:: 0.1.0
    """
    if not callable(handler):
        msg = f"handler must be callable, got {type(handler).__name__}"
        raise TypeError(msg)
    prefixes: tuple[str, ...] | None
    if events is None:
        prefixes = None
    elif isinstance(events, str):
        prefixes = (events,)
    else:
        prefixes = tuple(events)
        if not all(isinstance(p, str) for p in prefixes):
            msg = f"events must be a string or an iterable of strings, got {events!r}"
            raise TypeError(msg)
    handle = Handle(handler, prefixes)
    BUS.add(handle)
    return handle


def detach(handle: Handle) -> None:
    """
    Unsubscribe the handler behind *handle* (the same as ``handle.detach()``).

    .. versionadded:: 0.1.0
    """
    if not isinstance(handle, Handle):
        msg = f"handle must be a Handle returned by attach(), got {type(handle).__name__}"
        raise TypeError(msg)
    BUS.remove(handle)


def detach_all() -> None:
    """Remove every handler (for test isolation)."""
    BUS.clear()


def emit(
    name: str,
    measurements: Mapping[str, float] | None = None,
    metadata: Mapping[str, Any] | None = None,
    *,
    logged: bool = False,
) -> None:
    """
    Deliver an event named *name* to the handlers that want it.

    Costs one attribute read when nobody listens, and a dict lookup when nobody listens to
    *name*. The mappings are copied, so handlers may keep the event. *logged* says the
    caller writes the event's log line itself (see `Event.logged`).

    .. versionadded:: 0.1.0
    """
    if not BUS.subs:
        return
    handles = BUS.routes.get(name)
    if handles is None:
        handles = BUS.route(name)
    if not handles:
        return
    event = Event(
        name,
        dict(measurements) if measurements else {},
        dict(metadata) if metadata else {},
        logged=logged,
    )
    for handle in handles:
        try:
            handle.handler(event)
        except Exception as exc:  # isolation: a broken handler never breaks the caller
            handle.detach()
            _log.error(
                "resilience.telemetry.handler_detached",
                handler=repr(handle.handler),
                event_name=name,
                error=scrub_exception(exc),
                traceback=scrub_exception(exc, tb=True),  # not exc_info: it would go out raw
            )
