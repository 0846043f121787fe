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

import itertools
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
    Requests and accepts over a sliding window, in fixed buckets: pure, no clock.

    Each bucket keeps its accepts and its misses (requests that were not accepts: failures
    and rejections), so ``requests = accepts + misses``. Accepts are counted by one
    ``itertools.count``, ``tally``, whose ``next`` is atomic: the success path counts an
    accept in the current bucket without a lock (``accept_now``), and the accepts since the
    bucket began (``tally`` past ``mark``) join its slot when the window rolls. Everything
    else (misses, rolls, reading the tally) runs under the backend's lock. While no miss is
    in the window the probability is 0 for any ``k >= 1``, without reading the clock.

    Args:
        k: Requests allowed per accept before rejecting.
        window: The window in seconds.
    """

    __slots__ = (
        "accepts",
        "current",
        "k",
        "mark",
        "misses",
        "peeks",
        "slot",
        "tally",
        "total_misses",
        "until",
        "width",
        "window_accepts",
    )

    def __init__(self, k: float, window: float) -> None:
        self.k = k
        self.width = window / BUCKETS
        self.accepts = [0] * BUCKETS
        self.misses = [0] * BUCKETS
        self.window_accepts = 0  # the accepts of the window's closed buckets
        self.total_misses = 0
        self.tally = itertools.count()  # every accept ever: one ``next`` each
        self.peeks = 0  # the tally's values taken by reading it
        self.mark = 0  # the accepts counted when the current bucket began
        self.current = -math.inf
        self.slot = 0
        self.until = -math.inf  # the end of the current bucket: before it, nothing to roll

    def _accepted(self) -> int:
        """All accepts ever counted (reading the tally takes one of its values)."""
        seen = next(self.tally) - self.peeks
        self.peeks += 1
        return seen

    @property
    def total_accepts(self) -> int:
        """The accepts in the window (as of the last roll)."""
        return self.window_accepts + self._accepted() - self.mark

    @property
    def total_requests(self) -> int:
        """The requests in the window (as of the last roll): accepts and misses."""
        return self.total_accepts + self.total_misses

    def _roll(self, now: float) -> int:
        """Expire the buckets that slid out of the window; return the current bucket's slot."""
        index = math.floor(now / self.width)
        if index > self.current:
            seen = self._accepted()
            fresh = seen - self.mark  # the ending bucket's accepts join its slot
            self.accepts[self.slot] += fresh
            self.window_accepts += fresh
            self.mark = seen
            stale = (
                BUCKETS if self.current == -math.inf else min(BUCKETS, index - int(self.current))
            )
            for step in range(stale):
                slot = (index - step) % BUCKETS
                self.window_accepts -= self.accepts[slot]
                self.total_misses -= self.misses[slot]
                self.accepts[slot] = 0
                self.misses[slot] = 0
            self.current = index
            self.slot = index % BUCKETS
            self.until = (index + 1) * self.width
        return self.slot

    def quiet(self) -> bool:
        """Whether the probability is surely 0 before any roll (misses none, or few enough)."""
        # excess = misses - (k - 1) * accepts, and the closed buckets' accepts are a floor
        return self.total_misses <= (self.k - 1.0) * self.window_accepts

    def probability(self, now: float) -> float:
        """Return the rejection probability for a call starting at *now*."""
        self._roll(now)
        accepts = self.total_accepts
        requests = accepts + self.total_misses
        excess = requests - self.k * accepts
        return excess / (requests + 1) if excess > 0 else 0.0

    def view(self, now: float) -> tuple[int, int]:
        """Return (requests, accepts) in the window as of *now*, changing no count."""
        index = math.floor(now / self.width)
        current = self._accepted() - self.mark  # the current bucket's accepts (not in a slot)
        accepts, misses = self.window_accepts + current, self.total_misses
        if index > self.current:
            stale = (
                BUCKETS if self.current == -math.inf else min(BUCKETS, index - int(self.current))
            )
            for step in range(stale):
                slot = (index - step) % BUCKETS
                accepts -= self.accepts[slot] + (current if slot == self.slot else 0)
                misses -= self.misses[slot]
        return accepts + misses, accepts

    def record(self, now: float, accepted: bool) -> None:
        """Count one request at *now*, and one accept if *accepted*."""
        slot = self._roll(now)
        if accepted:
            next(self.tally)
        else:
            self.misses[slot] += 1
            self.total_misses += 1


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
    """
    A throttle's counts in this process: ``ThrottleState`` under a lock.

    The success path's accept takes no lock while its bucket is current (``accept``): the
    tally's ``next`` is atomic. With ``k >= 1`` and no miss in the window the layer skips
    ``chance`` altogether (``quiet``).
    """

    __slots__ = ("_clock", "_lock", "_state", "_window", "quiet")

    def __init__(self, policy: ThrottlePolicy) -> None:
        window = policy.window
        assert isinstance(window, float)
        self._state = ThrottleState(policy.k, window)
        self._window = window
        self._clock = policy.clock
        self._lock = threading.Lock()
        #: With ``k >= 1`` a window without misses has probability 0: no clock, no lock.
        self.quiet = policy.k >= 1.0

    def probability(self) -> tuple[float, int, int]:
        """Return ``(probability, requests, accepts)`` now."""
        state = self._state
        now = _clock.resolve(self._clock).monotonic()
        with self._lock:
            probability = state.probability(now)
            accepts = state.total_accepts
            return probability, accepts + state.total_misses, accepts

    def chance(self) -> float:
        """
        The rejection probability now; no lock while nothing can be refused.

        Reading the counts without the lock can only see a state a moment old, which the
        locked ``probability`` then confirms before anything is refused.
        """
        state = self._state
        if _clock.resolve(self._clock).monotonic() < state.until and state.quiet():
            return 0.0
        return self.probability()[0]

    def accept(self, now: float) -> None:
        """Count one accepted request ending at *now*: lock-free while its bucket is current."""
        state = self._state
        if now < state.until:
            next(state.tally)
        else:
            with self._lock:
                state.record(now, True)

    def snapshot(self, key: str) -> ThrottleSnapshot:
        """Return the operator's view of the throttle of *key*, changing nothing."""
        state = self._state
        now = _clock.resolve(self._clock).monotonic()
        with self._lock:
            requests, accepts = state.view(now)
        return throttle_snapshot(key, state.k, self._window, requests, accepts)

    def record(self, accepted: bool) -> None:
        """Count one request, and one accept if *accepted*."""
        now = _clock.resolve(self._clock).monotonic()
        if accepted:
            self.accept(now)
            return
        with self._lock:
            self._state.record(now, False)


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
