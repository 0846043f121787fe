"""
The only module that touches real time: the ``Clock`` every decorator reads and sleeps with.

A policy may carry its own clock; otherwise decorators use the process-wide default, which
``resilience.testing.virtual_time()`` swaps for a ``FakeClock`` so tests never wait.
"""

from __future__ import annotations

import asyncio
import time as _time

from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from collections.abc import Callable

    from resilience.typing import Clock


__all__ = ["DEFAULT", "SystemClock", "current_clock", "resolve", "set_default_clock"]


class SystemClock:
    """
    Real time: ``time.monotonic`` for intervals, ``time.time`` for wall-clock dates.

    Wall-clock reads go through the ``time`` module at call time, so freezegun sees them.

    .. versionadded:: 0.1.0
    """

    __slots__ = ()

    #: Seconds between a clock reading and the moment the work it admits really starts
    #: (the scheduler's jitter). Rate limits widen their check of actual starts by this much,
    #: so the rule holds where the call begins, not only where it was admitted. A
    #: ``FakeClock`` has none.
    slack = 0.0002

    # The C functions themselves rather than Python methods around them: decorators read the
    # clock on their hot paths, and a Python frame costs more than the read. (``time()``
    # stays a method that looks ``time.time`` up at call time, so freezegun moves it.)
    monotonic = staticmethod(_time.monotonic)
    """Return seconds on a clock that never goes backwards."""

    def time(self) -> float:
        """Return wall-clock seconds since the epoch."""
        return _time.time()

    sleep = staticmethod(_time.sleep)
    """Block the calling thread for *seconds*."""

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for *seconds*."""
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


class _Default:
    """Holds the process-wide default clock (and its ``monotonic``): one read on a hot path."""

    __slots__ = ("clock", "monotonic")

    def __init__(self) -> None:
        self.clock: Clock = SYSTEM_CLOCK
        self.monotonic: Callable[[], float] = SYSTEM_CLOCK.monotonic


_default = _Default()

#: The default's holder, for the one or two hot paths where a call to ``resolve`` costs more
#: than the work around it: they read ``clock or DEFAULT.clock`` inline, the same rule.
DEFAULT = _default


def resolve(clock: Clock | None) -> Clock:
    """
    Return *clock*, or the process-wide default when it is None (a policy without its own).

    Read it at each use rather than once at decoration: ``virtual_time()`` swaps the default
    while decorated functions already exist.
    """
    return clock or _default.clock


def current_clock() -> Clock:
    """Return the process-wide default clock (a ``resilience.typing.Clock``)."""
    return _default.clock


def set_default_clock(clock: Clock) -> Clock:
    """Install *clock* as the process-wide default and return the previous one."""
    previous = _default.clock
    _default.clock = clock
    _default.monotonic = clock.monotonic
    return previous
