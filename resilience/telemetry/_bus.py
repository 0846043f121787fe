"""
The event bus: ``attach``/``detach`` handlers and ``emit`` events to them.

Emitting with no handler attached is one attribute read and a truth test. Handlers run
synchronously in the emitting thread; a handler that raises is detached and logged, and the
decorated call goes on as if nothing happened.
"""

from __future__ import annotations

import logging
import threading
import time as _time

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


__all__ = ["BUS", "Event", "Handle", "attach", "detach_all", "emit"]

_log = logging.getLogger("resilience.telemetry")


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

    .. versionadded:: 0.1.0
    """

    name: str
    measurements: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=_time.time)
    monotonic_ns: int = field(default_factory=_time.monotonic_ns)


EventHandler = Callable[[Event], object]


class Handle:
    """
    A subscription returned by ``attach``; ``detach()`` ends it (twice is harmless).

    .. versionadded:: 0.1.0
    """

    __module__ = "resilience.telemetry"
    __slots__ = ("events", "handler")

    def __init__(self, handler: EventHandler, events: tuple[str, ...] | None) -> None:
        self.handler = handler
        self.events = events

    def matches(self, name: str) -> bool:
        """Whether this subscription wants events named *name*."""
        return self.events is None or name.startswith(self.events)

    def detach(self) -> None:
        """Stop delivering events to this handler."""
        BUS.remove(self)

    def __repr__(self) -> str:
        return f"Handle(handler={self.handler!r}, events={self.events!r})"


class _Bus:
    """Subscriptions as an immutable tuple, swapped under a lock: emitters never lock."""

    __slots__ = ("_lock", "subs")

    def __init__(self) -> None:
        self.subs: tuple[Handle, ...] = ()
        self._lock = threading.Lock()

    def add(self, handle: Handle) -> None:
        with self._lock:
            self.subs = (*self.subs, handle)

    def remove(self, handle: Handle) -> None:
        with self._lock:
            self.subs = tuple(h for h in self.subs if h is not handle)

    def clear(self) -> None:
        with self._lock:
            self.subs = ()


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


def detach_all() -> None:
    """Remove every handler (for test isolation)."""
    BUS.clear()


def emit(
    name: str,
    measurements: Mapping[str, float] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """
    Deliver an event named *name* to the handlers that want it.

    Costs one attribute read when nobody listens.

    .. versionadded:: 0.1.0
    """
    subs = BUS.subs
    if not subs:
        return
    event = Event(name, dict(measurements or {}), dict(metadata or {}))
    for handle in subs:
        if handle.matches(name):
            try:
                handle.handler(event)
            except Exception:
                handle.detach()
                _log.exception(
                    "resilience: telemetry handler %r raised on %s and was detached",
                    handle.handler,
                    name,
                )
