"""
Benchmark scenarios: what hedging, deadlines and fault injection cost when they do nothing.

- ``@hedged`` whose primary answers before the delay, against ``asyncio.wait_for`` on the
  same coroutine (both arm a timer and cancel it);
- ``with deadline(s)`` entered and left, against a bare ``ContextVar`` set and reset;
- a chaos decorator at rate 0, against a wrapt pass-through (and, for the record, one at a
  positive rate switched off, which keeps its wrapper).
"""

from __future__ import annotations

import asyncio
import contextvars

import wrapt

from benchmarks._harness import Scenario, Target
from resilience import deadline, hedged
from resilience._clock import resolve
from resilience.chaos import inject_fault


HEDGED = "hedging, primary answers before the delay"
DEADLINE = "deadline, entered and left"
CHAOS = "fault injection at rate 0"


async def _answer() -> int:
    return 1


_hedged = hedged(delay=10.0)(_answer)


async def _abare() -> int:
    return await _answer()


async def _await_wait_for() -> int:
    return await asyncio.wait_for(_answer(), 10.0)


async def _await_hedged() -> int:
    return await _hedged()


_var: contextvars.ContextVar[object] = contextvars.ContextVar("bench", default=None)
_value = object()


def _set_reset() -> None:
    _var.reset(_var.set(_value))


def _with_deadline() -> None:
    with deadline(5.0):
        pass


class _Floor:
    """The least a deadline must do in Python: a context manager, a clock read, set/reset."""

    __slots__ = ("_token", "at", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> _Floor:
        self.at = resolve(None).monotonic() + self.seconds
        self._token = _var.set(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _var.reset(self._token)


def _floor() -> None:
    with _Floor(5.0):
        pass


def _target(x: int = 1) -> int:
    return x


@wrapt.decorator
def _passthrough(wrapped, instance, args, kwargs):  # type: ignore[no-untyped-def]
    return wrapped(*args, **kwargs)


_wrapt = _passthrough(_target)
_chaos_zero = inject_fault(ConnectionError, rate=0.0)(_target)
_chaos_off = inject_fault(ConnectionError, rate=0.5, enabled=False)(_target)


def _bare() -> int:
    return _target()


def _wrapt_call() -> int:
    return _wrapt()


def _chaos_zero_call() -> int:
    return _chaos_zero()


def _chaos_off_call() -> int:
    return _chaos_off()


def scenarios() -> list[Scenario]:
    return [
        Scenario(
            title=HEDGED,
            kind="async",
            contenders={
                "bare call": _abare,
                "asyncio.wait_for": _await_wait_for,
                "resilience": _await_hedged,
            },
            note=(
                "a coroutine that answers at once; @hedged(delay=10) arms the loop's timer "
                "and cancels it, running the primary in the caller's task (no task made)"
            ),
        ),
        Scenario(
            title=DEADLINE,
            kind="sync",
            contenders={
                "bare call": _bare,
                "contextvars set/reset": _set_reset,
                "floor: minimal context manager, clock read + set/reset": _floor,
                "resilience": _with_deadline,
            },
            note=(
                "`with deadline(5.0): pass` (made, entered, left) against a bare ContextVar "
                "set/reset, and against the least any deadline must do in Python (a context "
                "manager that reads the clock and sets/resets the variable)"
            ),
        ),
        Scenario(
            title=CHAOS,
            kind="sync",
            contenders={
                "bare call": _bare,
                "wrapt pass-through": _wrapt_call,
                "resilience": _chaos_zero_call,
                "resilience, rate 0.5 enabled=False": _chaos_off_call,
            },
            note=(
                "inject_fault at rate 0 never injects and returns the function itself; "
                "at a positive rate switched off it keeps one wrapper and asks the switches"
            ),
        ),
    ]


def targets() -> list[Target]:
    """Issue 15's overhead claims."""
    return [
        Target(HEDGED, "resilience", "asyncio.wait_for", 1.5, "<= 1.5x asyncio.wait_for"),
        Target(DEADLINE, "resilience", "contextvars set/reset", 2.0, "<= 2x contextvars"),
        Target(CHAOS, "resilience", "wrapt pass-through", 1.0, "<= 1x wrapt pass-through"),
    ]
