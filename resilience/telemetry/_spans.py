"""
Trace context: the current span, carried by ``contextvars`` across awaits and nested calls.

A span has a trace id (shared by a whole tree of nested calls), its own id and its
parent's. ``@traced`` and ``measure`` open one per call; everything they emit carries the
ids, so a handler or a log processor can stitch a tree back together. Ids are random hex
strings of the sizes OpenTelemetry uses (32 digits for a trace, 16 for a span).
"""

from __future__ import annotations

import itertools
import os
import random
import time

from contextvars import ContextVar, Token
from typing import Any, NamedTuple

from resilience import _clock


__all__ = ["Span", "current_span", "enter_span", "exit_span", "new_span", "now_ns"]

_random = random.Random()  # ids, not secrets: a private generator that users' seeds leave alone
# Ids are a random per-process salt XOR a counter: unique within the process, random-looking
# across processes, and about ten times cheaper than drawing 192 random bits per call.
_ids = [(_random.getrandbits(64), _random.getrandbits(64), itertools.count(1))]


def _reseed() -> None:
    """After a fork: fresh salts, so parent and child never make the same ids."""
    _random.seed()
    _ids[0] = (_random.getrandbits(64), _random.getrandbits(64), _ids[0][2])


os.register_at_fork(after_in_child=_reseed)


def _next_ids() -> tuple[int, int]:
    salt, trace_salt, counter = _ids[0]
    n = next(counter)
    return n ^ salt, n ^ trace_salt


class Span(NamedTuple):
    """
    One traced call's identity (a named tuple: built on every traced call, it must be cheap).

    Attributes:
        name: What was traced (the ``@traced`` name or the ``measure`` name).
        trace_id: 32 hex digits shared by every span of one tree.
        span_id: 16 hex digits of this span.
        parent_id: The enclosing span's id, or None at the root.

    .. versionadded:: 0.1.0
    """

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None

    def ids(self) -> dict[str, Any]:
        """Return the ids as metadata keys (``trace_id``, ``span_id``, ``parent_id``)."""
        return {"trace_id": self.trace_id, "span_id": self.span_id, "parent_id": self.parent_id}


_current: ContextVar[Span | None] = ContextVar("resilience_span", default=None)


def current_span() -> Span | None:
    """
    Return the span of the innermost traced call running in this context, or None.

    .. versionadded:: 0.1.0
    """
    return _current.get()


def new_span(name: str) -> Span:
    """Return a child of the current span (or a new root) without entering it."""
    parent = _current.get()
    own, trace = _next_ids()
    span_id = f"{own:016x}"
    if parent is None:
        return Span(name, f"{trace:016x}{own:016x}", span_id, None)
    return Span(name, parent.trace_id, span_id, parent.span_id)


def enter_span(span: Span) -> Token[Span | None]:
    """Make *span* current; pass the token to ``exit_span``."""
    return _current.set(span)


def exit_span(token: Token[Span | None]) -> None:
    """Restore the span that was current before ``enter_span``."""
    _current.reset(token)


def now_ns(clock: object | None) -> int:
    """
    Return monotonic nanoseconds: ``perf_counter_ns`` on real time, else the clock's reading.

    *clock* None means the process default, which ``virtual_time()`` may have replaced.
    """
    chosen = _clock._default.clock if clock is None else clock
    if chosen is _clock.SYSTEM_CLOCK:
        return time.perf_counter_ns()
    seconds: float = chosen.monotonic()  # type: ignore[attr-defined]
    return round(seconds * 1e9)
