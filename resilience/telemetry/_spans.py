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
from typing import TYPE_CHECKING, Any, TypeAlias

from resilience import _clock


if TYPE_CHECKING:
    from resilience.typing import Clock


__all__ = [
    "Record",
    "Span",
    "current_span",
    "enter_span",
    "exit_span",
    "new_span",
    "now_ns",
    "open_span",
    "reset_span",
]

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


class Span:
    """
    One traced call's identity.

    Built on every traced call, so it is cheap: the ids are kept as integers and written as
    hex only when read (most calls are never observed).

    Attributes:
        name: What was traced (the ``@traced`` name or the ``measure`` name).
        trace_id: 32 hex digits shared by every span of one tree.
        span_id: 16 hex digits of this span.
        parent_id: The enclosing span's id, or None at the root.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_own", "_parent", "_trace", "name")

    def __init__(self, name: str, trace: int, own: int, parent: int | None) -> None:
        self.name = name
        self._trace = trace
        self._own = own
        self._parent = parent

    @property
    def trace_id(self) -> str:
        """32 hex digits shared by every span of one tree."""
        return f"{self._trace:032x}"

    @property
    def span_id(self) -> str:
        """16 hex digits of this span."""
        return f"{self._own:016x}"

    @property
    def parent_id(self) -> str | None:
        """The enclosing span's id, or None at the root."""
        return None if self._parent is None else f"{self._parent:016x}"

    def ids(self) -> dict[str, Any]:
        """Return the ids as metadata keys (``trace_id``, ``span_id``, ``parent_id``)."""
        return {"trace_id": self.trace_id, "span_id": self.span_id, "parent_id": self.parent_id}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Span):
            return NotImplemented
        return (self.name, self._trace, self._own, self._parent) == (
            other.name,
            other._trace,
            other._own,
            other._parent,
        )

    def __hash__(self) -> int:
        return hash((self.name, self._trace, self._own, self._parent))

    def __repr__(self) -> str:
        return (
            f"Span(name={self.name!r}, trace_id={self.trace_id!r}, span_id={self.span_id!r}, "
            f"parent_id={self.parent_id!r})"
        )


#: A span opened on the quiet path, not yet built: ``(name, n, salts, parent)``, where *n* is
#: the counter's number, *salts* the ``_ids`` entry it was drawn from (a fork's reseed does
#: not change its ids) and *parent* the value that was current (None, a Span or a record).
#: Building a ``Span`` (and freeing it) costs more than the rest of an unobserved traced
#: call, and most are never read: ``current_span()`` and ``new_span`` build one on demand.
Record: TypeAlias = tuple[str, int, tuple[int, int, "itertools.count[int]"], "Span | Record | None"]

#: The current span: a ``Span``, a ``Record`` (built on first read), or None at the root.
_current: ContextVar[Span | Record | None] = ContextVar("resilience_span", default=None)
_new = object.__new__


def _own_and_trace(value: Span | Record) -> tuple[int, int]:
    """Return a span's (own id, trace id), a record's computed as ``Span`` would hold them."""
    if isinstance(value, Span):
        return value._own, value._trace
    own = value[1] ^ value[2][0]
    node = value
    while True:  # up to the first built span or the root record (no recursion: any depth)
        parent = node[3]
        if parent is None:
            return own, ((node[1] ^ node[2][1]) << 64) | (node[1] ^ node[2][0])
        if isinstance(parent, Span):
            return own, parent._trace
        node = parent


def _build(record: Record) -> Span:
    """The ``Span`` a record stands for (its ids as ``new_span`` would have drawn them)."""
    name, _, _, parent = record
    own, trace = _own_and_trace(record)
    span = _new(Span)
    span.name = name
    span._own = own
    span._trace = trace
    span._parent = None if parent is None else _own_and_trace(parent)[0]
    return span


def current_span() -> Span | None:
    """
    Return the span of the innermost traced call running in this context, or None.

    .. versionadded:: 0.1.0
    """
    value = _current.get()
    if value is None or isinstance(value, Span):
        return value
    span = _build(value)
    # Built once per context: later reads in this call get the same object. The traced
    # call's own token still restores what was current before it (``reset`` goes back to
    # the token's old value, whatever was set since).
    _current.set(span)
    return span


def new_span(name: str) -> Span:
    """Return a child of the current span (or a new root) without entering it."""
    parent = _current.get()
    own, trace = _next_ids()
    if parent is None:
        return Span(name, (trace << 64) | own, own, None)
    parent_own, parent_trace = _own_and_trace(parent)
    return Span(name, parent_trace, own, parent_own)


def open_span(name: str) -> Token[Span | Record | None]:
    """
    Make a child of the current span (or a new root) current; return the token.

    The span is a ``Record`` until something reads it (``@traced``'s quiet path inlines
    this: ``salts = _ids[0]``, then ``_current.set((name, next(salts[2]), salts, get()))``).
    """
    salts = _ids[0]
    return _current.set((name, next(salts[2]), salts, _current.get()))


def enter_span(span: Span) -> Token[Span | Record | None]:
    """Make *span* current; pass the token to ``exit_span``."""
    return _current.set(span)


reset_span = _current.reset
"""``exit_span`` without its frame: the context variable's own ``reset``."""


def exit_span(token: Token[Span | Record | None]) -> None:
    """Restore the span that was current before ``enter_span``."""
    _current.reset(token)


def now_ns(clock: Clock | None) -> int:
    """
    Return monotonic nanoseconds: ``perf_counter_ns`` on real time, else the clock's reading.

    *clock* None means the process default, which ``virtual_time()`` may have replaced.
    """
    chosen = _clock.resolve(clock)
    if chosen is _clock.SYSTEM_CLOCK:
        return time.perf_counter_ns()
    seconds: float = chosen.monotonic()
    return round(seconds * 1e9)
