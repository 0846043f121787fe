"""
Helpers for tests, ours and our users': virtual time, testing mode, events, strategies.

``hypothesis`` is imported only when a strategy function is called, so this module works
without it.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from resilience import _exports
from resilience._clock import SYSTEM_CLOCK, set_default_clock
from resilience._config import is_testing, reset_all, set_testing
from resilience.telemetry._bus import Event, attach, detach_all


if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

    from resilience._backoff import Backoff
    from resilience._policies import RetryPolicy


__all__ = [
    "FakeClock",
    "backoffs",
    "capture_events",
    "is_testing",
    "rands",
    "reset",
    "retry_numbers",
    "retry_policies",
    "set_testing",
    "virtual_time",
]


class FakeClock:
    """
    A clock whose sleeps take no real time: virtual time advances instead.

    - ``sleep(s)`` (threads) advances the clock by *s* at once.
    - ``await asleep(s)`` (asyncio) suspends the task until virtual time reaches its deadline;
      when every task of the loop is waiting, time jumps to the earliest deadline (trio's
      "autojump" idea), so concurrent sleepers wake in deadline order.
    - ``time()`` is wall-clock seconds that move with virtual time. Pass freezegun's
      ``frozen.tick`` as *tick* and freezegun's frozen clock moves along too.

    Args:
        start: The initial ``monotonic()`` reading.
        wall: The initial ``time()`` reading (None: ``time.time()`` now, freezegun-aware).
        tick: Called with a ``timedelta`` each time virtual time advances.

    Attributes:
        sleeps: Every wait asked for, in seconds, in order.

    .. versionadded:: 0.1.0
    """

    __module__ = "resilience.testing"

    def __init__(
        self,
        start: float = 0.0,
        *,
        wall: float | None = None,
        tick: Callable[[timedelta], object] | None = None,
    ) -> None:
        self._start = start
        self._now = start
        self._wall = time.time() if wall is None else wall
        self._tick = tick
        self._lock = threading.Lock()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._jump_pending = False
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        """Return virtual seconds."""
        return self._now

    def time(self) -> float:
        """Return wall-clock epoch seconds that move with virtual time."""
        return self._wall + (self._now - self._start)

    def advance(self, seconds: float) -> None:
        """Move virtual time forward by *seconds*, waking async sleepers that are due."""
        if seconds < 0:
            msg = f"seconds must be >= 0, got {seconds!r}"
            raise ValueError(msg)
        with self._lock:
            self._now += seconds
        if self._tick is not None and seconds:
            self._tick(timedelta(seconds=seconds))
        self._wake_due()

    def sleep(self, seconds: float) -> None:
        """Advance virtual time by *seconds* without blocking."""
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))

    async def asleep(self, seconds: float) -> None:
        """Suspend the task until virtual time has moved *seconds* forward."""
        self.sleeps.append(seconds)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, seconds), next(self._order), future))
        self._schedule_jump(loop)
        await future

    def call_later(self, delay: float, callback: Callable[[], object]) -> asyncio.Future[None]:
        """
        Run *callback* in the running loop once virtual time has moved *delay* forward.

        Returns a future whose ``cancel()`` stops it (timers of deadlines and hedges).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, delay), next(self._order), future))
        future.add_done_callback(lambda done: None if done.cancelled() else callback())
        self._schedule_jump(loop)
        return future

    def _schedule_jump(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._jump_pending:
            self._jump_pending = True
            loop.call_soon(self._jump_when_idle, loop, 0)

    def _jump_when_idle(self, loop: asyncio.AbstractEventLoop, rounds: int) -> None:
        # Let ready callbacks run first; jump only when the loop has nothing else to do.
        ready = getattr(loop, "_ready", None)
        if ready and rounds < 1000:
            loop.call_soon(self._jump_when_idle, loop, rounds + 1)
            return
        self._jump_pending = False
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)  # cancelled sleepers
        if self._sleepers:
            due = self._sleepers[0][0]
            if due > self._now:
                self.advance(due - self._now)
            else:
                self._wake_due()
            if self._sleepers:
                self._schedule_jump(loop)

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def __repr__(self) -> str:
        return f"FakeClock(monotonic={self._now!r})"


def reset() -> None:
    """
    Put the whole library back as a fresh import left it, for isolation between tests.

    Clears every breaker, limiter, window and permit pool, detaches every telemetry handler,
    switches the testing mode off and reinstalls the real clock.

    .. versionadded:: 0.1.0
    """
    reset_all()
    detach_all()
    set_default_clock(SYSTEM_CLOCK)


@contextmanager
def virtual_time(clock: FakeClock | None = None) -> Iterator[FakeClock]:
    """
    Make every decorator without its own clock use *clock* (a new ``FakeClock`` if None).

    Keyed state in the default (memory) store (breakers, rate budgets, backoff windows,
    permit pools, retry budgets) is reset when the block ends, since state touched in
    virtual time carries virtual timestamps: a backoff window opened by a scripted 429
    cannot stall the next test. Enter the block before making the state a test relies on
    (as the ``clock`` fixture of a conftest does). Telemetry handlers, the testing mode and
    any ``RedisStore`` are left alone (give each test its own Redis namespace).

    Example::

        with virtual_time() as clock:
            fetch()              # ten minutes of backoff in microseconds
        assert clock.sleeps == [...]

    .. versionadded:: 0.1.0
    """
    from resilience._breaker.registry import retire_orphans  # noqa: PLC0415 - import cycle
    from resilience._rate.layer import EPOCH  # noqa: PLC0415 - import cycle
    from resilience.stores._memory import DEFAULT_STORE  # noqa: PLC0415 - import cycle

    fake = FakeClock() if clock is None else clock
    previous = set_default_clock(fake)
    try:
        yield fake
    finally:
        set_default_clock(previous)
        DEFAULT_STORE.clear()
        EPOCH.bump()  # layers fetch their backends again
        retire_orphans()  # breakers holding a forgotten state let it go


@contextmanager
def capture_events(*prefixes: str) -> Iterator[list[Event]]:
    """
    Collect the events emitted while the block runs (those starting with *prefixes*, if any).

    .. versionadded:: 0.1.0
    """
    events: list[Event] = []
    handle = attach(events.append, prefixes or None)
    try:
        yield events
    finally:
        handle.detach()


# -- hypothesis strategies (hypothesis is imported on first use) ---------------------------


def rands() -> SearchStrategy[float]:
    """Numbers in [0, 1), the ``rand`` argument of ``Backoff.delay``."""
    from hypothesis import strategies as st  # noqa: PLC0415 - optional dependency

    return st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


def retry_numbers(max_value: int = 10**6) -> SearchStrategy[int]:
    """Retry numbers from 0 to *max_value*."""
    from hypothesis import strategies as st  # noqa: PLC0415

    return st.integers(min_value=0, max_value=max_value)


def backoffs(*, decorrelated: bool = False) -> SearchStrategy[Backoff]:
    """Every valid ``Backoff`` (``strategy="decorrelated"`` only if asked for)."""
    from hypothesis import strategies as st  # noqa: PLC0415

    from resilience._backoff import JITTERS, STRATEGIES, Backoff  # noqa: PLC0415

    strategies = STRATEGIES if decorrelated else tuple(s for s in STRATEGIES if s != "decorrelated")
    seconds = st.floats(min_value=0.0, max_value=3600.0, allow_nan=False)

    @st.composite
    def build(draw: Any) -> Backoff:
        base = draw(seconds)
        cap = draw(st.floats(min_value=base, max_value=max(base, 1.0) * 100, allow_nan=False))
        jitter = draw(st.sampled_from(JITTERS))
        amount_max = 1.0 if jitter in ("factor", "range") else 10.0
        return Backoff(
            strategy=draw(st.sampled_from(strategies)),
            base=base,
            max=cap,
            multiplier=draw(st.floats(min_value=1.0, max_value=10.0)),
            jitter=jitter,
            jitter_amount=draw(st.floats(min_value=0.0, max_value=amount_max)),
        )

    return build()


def retry_policies() -> SearchStrategy[RetryPolicy]:
    """Valid ``RetryPolicy`` objects with arbitrary limits and backoffs."""
    from hypothesis import strategies as st  # noqa: PLC0415

    from resilience._policies import RetryPolicy  # noqa: PLC0415

    positive = st.floats(min_value=0.001, max_value=3600.0)
    return st.builds(
        RetryPolicy,
        attempts=st.none() | st.integers(min_value=1, max_value=100),
        timeout=st.none() | positive,
        progress_timeout=st.none() | positive,
        backoff=backoffs(decorrelated=True),
        retry_after_cap=st.floats(min_value=0.001, max_value=3600.0),
    )


_exports.publish(__name__, globals())
