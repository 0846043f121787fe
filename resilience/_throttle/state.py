"""
The counts of ``@throttled``: requests and accepts over a sliding window, and the policy.

Google SRE's adaptive throttling (*Site Reliability Engineering*, "Handling Overload"): each
client remembers, over the last *window* seconds, how many requests it made and how many
the backend accepted, and refuses a new request itself with probability
``max(0, (requests - k * accepts) / (requests + 1))``. While the backend accepts everything
the probability is 0; when it refuses most, the client stops sending about ``k`` times what
it accepts, so a struggling backend sees at most ``k`` times its capacity.

``ThrottleState`` is the pure machine: counts in ten buckets of ``window / 10`` seconds each
with running totals, fed with ``now``. ``MemoryThrottleBackend`` applies it under a lock;
``_throttle.redis`` keeps the same buckets in Redis.
"""

from __future__ import annotations

import math
import threading

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from resilience import _clock
from resilience._dictable import FromDict
from resilience._snapshot import ThrottleSnapshot
from resilience._validate import (
    check_clock,
    check_number,
    check_store,
    duration,
    exception_predicate,
    optional_callable,
)


if TYPE_CHECKING:
    from resilience.stores._memory import MemoryStore
    from resilience.typing import Clock, ExceptionFilter


__all__ = [
    "MemoryThrottleBackend",
    "ThrottleBackend",
    "ThrottlePolicy",
    "throttle_snapshot",
    "ThrottleState",
    "memory_throttle",
]

BUCKETS = 10


@dataclass(frozen=True, slots=True)
class ThrottlePolicy(FromDict):
    """
    How ``@throttled`` refuses calls locally while the upstream refuses many of them.

    Args:
        k: How many requests per accept the client may send before it throttles (> 0; 2
            lets through twice what the upstream accepts; lower is more aggressive).
        window: The seconds over which requests and accepts are counted (> 0).
        on: The exceptions that count as refusals: a class, a tuple, or a predicate.
        key: Throttles with the same key (on the same store) share their counts; without
            one, each decorated callable counts on its own.
        store: Where keyed counts live (default: this process's memory).
        rand: A zero-argument callable giving a float in [0, 1) that replaces the random
            draw: a call is refused when ``rand() < probability``.
        clock: Where time is read (default: the process's clock).

    .. versionadded:: 0.2.0
    """

    k: float = 2.0
    window: float | timedelta = 120.0
    on: ExceptionFilter = Exception
    key: str | None = None
    store: Any = None
    rand: Callable[[], float] | None = None
    clock: Clock | None = None
    _is_failure: Callable[[BaseException], bool] = field(
        init=False,
        repr=False,
        compare=False,
        default=None,  # type: ignore[assignment]
    )

    def __post_init__(self) -> None:
        owner = "ThrottlePolicy"
        object.__setattr__(self, "k", check_number(owner, "k", self.k, low=0.0, low_open=True))
        object.__setattr__(self, "window", duration(owner, "window", self.window, strict=True))
        object.__setattr__(self, "_is_failure", exception_predicate(owner, "on", self.on))
        if self.key is not None and not isinstance(self.key, str):
            msg = f"{owner}.key must be a string or None, got {type(self.key).__name__}"
            raise TypeError(msg)
        optional_callable(owner, "rand", self.rand)
        check_store(owner, self.store)
        check_clock(owner, self.clock)


class ThrottleState:
    """
    Requests and accepts over a sliding window, in fixed buckets: pure, no lock, no clock.

    Args:
        k: Requests allowed per accept before rejecting.
        window: The window in seconds.
    """

    __slots__ = (
        "accepts",
        "current",
        "k",
        "requests",
        "total_accepts",
        "total_requests",
        "until",
        "width",
    )

    def __init__(self, k: float, window: float) -> None:
        self.k = k
        self.width = window / BUCKETS
        self.requests = [0] * BUCKETS
        self.accepts = [0] * BUCKETS
        self.total_requests = 0
        self.total_accepts = 0
        self.current = -math.inf
        self.until = -math.inf  # the end of the current bucket: before it, nothing to roll

    def _roll(self, now: float) -> int:
        """Expire the buckets that slid out of the window; return the current bucket's slot."""
        index = math.floor(now / self.width)
        if index > self.current:
            stale = (
                BUCKETS if self.current == -math.inf else min(BUCKETS, index - int(self.current))
            )
            for step in range(stale):
                slot = (index - step) % BUCKETS
                self.total_requests -= self.requests[slot]
                self.total_accepts -= self.accepts[slot]
                self.requests[slot] = 0
                self.accepts[slot] = 0
            self.current = index
            self.until = (index + 1) * self.width
        return int(self.current) % BUCKETS

    def probability(self, now: float) -> float:
        """Return the rejection probability for a call starting at *now*."""
        self._roll(now)
        requests = self.total_requests
        excess = requests - self.k * self.total_accepts
        return excess / (requests + 1) if excess > 0 else 0.0

    def view(self, now: float) -> tuple[int, int]:
        """Return (requests, accepts) in the window as of *now*, changing nothing."""
        index = math.floor(now / self.width)
        requests, accepts = self.total_requests, self.total_accepts
        if index > self.current:
            stale = (
                BUCKETS if self.current == -math.inf else min(BUCKETS, index - int(self.current))
            )
            for step in range(stale):
                slot = (index - step) % BUCKETS
                requests -= self.requests[slot]
                accepts -= self.accepts[slot]
        return requests, accepts

    def record(self, now: float, accepted: bool) -> None:
        """Count one request at *now*, and one accept if *accepted*."""
        slot = self._roll(now)
        self.requests[slot] += 1
        self.total_requests += 1
        if accepted:
            self.accepts[slot] += 1
            self.total_accepts += 1


class ThrottleBackend(Protocol):
    """
    The shared counts of one throttle; each method is one atomic decision.

    .. versionadded:: 0.2.0
    """

    def probability(self) -> tuple[float, int, int]:
        """Return ``(probability, requests, accepts)`` now."""
        ...

    def chance(self) -> float:
        """Return the rejection probability now (only its being above 0 is relied on)."""
        ...

    def record(self, accepted: bool) -> None:
        """Count one request, and one accept if *accepted*."""
        ...


class MemoryThrottleBackend:
    """A throttle's counts in this process: ``ThrottleState`` under a lock."""

    __slots__ = ("_acquire", "_clock", "_lock", "_release", "_state", "_window")

    def __init__(self, policy: ThrottlePolicy) -> None:
        window = policy.window
        assert isinstance(window, float)
        self._state = ThrottleState(policy.k, window)
        self._window = window
        self._clock = policy.clock
        self._lock = threading.Lock()
        self._acquire = self._lock.acquire  # bound once: cheaper than `with` on the hot path
        self._release = self._lock.release

    def probability(self) -> tuple[float, int, int]:
        """Return ``(probability, requests, accepts)`` now."""
        state = self._state
        now = _clock.resolve(self._clock).monotonic()
        with self._lock:
            return state.probability(now), state.total_requests, state.total_accepts

    def chance(self) -> float:
        """
        The rejection probability now; no lock while nothing is to be refused (the hot path).

        Reading two counts without the lock can only see a state a moment old, which the
        locked ``probability`` then confirms before anything is refused.
        """
        state = self._state
        if (
            _clock.resolve(self._clock).monotonic() < state.until
            and state.total_requests <= state.k * state.total_accepts
        ):
            return 0.0
        return self.probability()[0]

    def snapshot(self, key: str) -> ThrottleSnapshot:
        """Return the operator's view of the throttle of *key*, changing nothing."""
        state = self._state
        now = _clock.resolve(self._clock).monotonic()
        with self._lock:
            requests, accepts = state.view(now)
        return throttle_snapshot(key, state.k, self._window, requests, accepts)

    def record(self, accepted: bool) -> None:
        """Count one request, and one accept if *accepted*."""
        state = self._state
        now = _clock.resolve(self._clock).monotonic()
        self._acquire()
        try:
            if now < state.until:  # the current bucket: no roll (the common case, inline)
                slot = int(state.current) % BUCKETS
                state.requests[slot] += 1
                state.total_requests += 1
                if accepted:
                    state.accepts[slot] += 1
                    state.total_accepts += 1
            else:
                state.record(now, accepted)
        finally:
            self._release()


def throttle_snapshot(
    key: str, k: float | None, window: float | None, requests: int, accepts: int
) -> ThrottleSnapshot:
    """The record of a throttle's counts, with its refusal probability (``probability``)."""
    excess = requests - (k or 0.0) * accepts
    chance = excess / (requests + 1) if k is not None and excess > 0 else 0.0
    return ThrottleSnapshot(key, k, window, requests, accepts, chance)


def memory_throttle(key: str, policy: ThrottlePolicy, store: MemoryStore) -> MemoryThrottleBackend:
    """``MemoryStore``'s ``"throttle"`` factory."""
    return MemoryThrottleBackend(policy)
