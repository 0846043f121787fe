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
from resilience._deadline import _accelerator
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
_speedups = _accelerator()  # the C twins of ``Tally`` and of the layer's runner, if built


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


class Tally:
    """
    The accepts of the current bucket, counted without a lock; the bucket's end; ``calm``.

    ``accept`` is one ``next`` of an ``itertools.count`` (atomic), so the success path needs
    no lock; ``peek`` and ``take`` (under the backend's lock) read it, each read taking one of
    the counter's values. ``calm`` tells the layer whether it may skip the draw: 2, surely
    (no miss in the window and ``k >= 1``); 1, while the bucket is current (``now < until``:
    few enough misses for any accepts of the current bucket); 0, draw under the lock.
    ``_speedups.ThrottleTally`` is its C twin (the same methods and fields).
    """

    __slots__ = ("_count", "_peeks", "_taken", "accept", "calm", "until")

    def __init__(self) -> None:
        self._count = itertools.count()  # every accept ever, and every read: one value each
        self._peeks = 0  # the counter's values taken by reads
        self._taken = 0  # the accepts already taken into a bucket's slot
        #: Count one accept in the current bucket (atomic: no lock).
        self.accept: Callable[[], object] = self._count.__next__
        self.calm = 0
        self.until = -math.inf

    def _accepts(self) -> int:
        """Every accept counted (reading takes one of the counter's values)."""
        seen = next(self._count) - self._peeks
        self._peeks += 1
        return seen

    def peek(self) -> int:
        """Return the accepts counted since the last take."""
        return self._accepts() - self._taken

    def take(self) -> int:
        """Return the accepts counted since the last take, and start again from 0."""
        seen = self._accepts()
        fresh = seen - self._taken
        self._taken = seen
        return fresh


def new_tally() -> Tally:
    """The C tally when the accelerator is in use, else the Python one."""
    if _speedups is not None:
        tally: Tally = _speedups.ThrottleTally()
        return tally
    return Tally()


class ThrottleState:
    """
    Requests and accepts over a sliding window, in fixed buckets: pure, no clock.

    Each bucket keeps its accepts and its misses (requests that were not accepts: failures
    and rejections), so ``requests = accepts + misses``. The current bucket's accepts are
    counted by its ``tally`` without a lock (``Tally.accept``), and join their slot when the
    window rolls. Everything else (misses, rolls, reading the tally) runs under the
    backend's lock. After each roll and each miss ``settle`` tells the tally whether the
    layer may skip the draw (``Tally.calm``).

    Args:
        k: Requests allowed per accept before rejecting.
        window: The window in seconds.
    """

    __slots__ = (
        "accepts",
        "current",
        "k",
        "misses",
        "slot",
        "tally",
        "total_misses",
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
        self.tally = new_tally()  # the current bucket's accepts, its end, and ``calm``
        self.current = -math.inf
        self.slot = 0
        self.settle()

    @property
    def until(self) -> float:
        """The end of the current bucket: before it, nothing to roll."""
        return self.tally.until

    @property
    def total_accepts(self) -> int:
        """The accepts in the window (as of the last roll)."""
        return self.window_accepts + self.tally.peek()

    @property
    def total_requests(self) -> int:
        """The requests in the window (as of the last roll): accepts and misses."""
        return self.total_accepts + self.total_misses

    def settle(self) -> None:
        """Tell the tally whether a draw can be skipped (see ``Tally.calm``)."""
        if self.k < 1.0:  # below 1 even a window of accepts has a probability
            calm = 0
        elif not self.total_misses:
            calm = 2  # (requests - k * accepts) = (1 - k) * accepts <= 0, whatever rolls
        else:  # excess = misses - (k - 1) * accepts; the closed buckets' accepts are a floor
            calm = 1 if self.total_misses <= (self.k - 1.0) * self.window_accepts else 0
        self.tally.calm = calm

    def _roll(self, now: float) -> int:
        """Expire the buckets that slid out of the window; return the current bucket's slot."""
        index = math.floor(now / self.width)
        if index > self.current:
            fresh = self.tally.take()  # the ending bucket's accepts join its slot
            self.accepts[self.slot] += fresh
            self.window_accepts += fresh
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
            self.tally.until = (index + 1) * self.width
            self.settle()
        return self.slot

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
        current = self.tally.peek()  # the current bucket's accepts (not in a slot)
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
            self.tally.accept()
        else:
            self.misses[slot] += 1
            self.total_misses += 1
            self.settle()


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
    tally's ``accept`` is atomic. While the tally is calm the layer skips ``chance``.
    """

    __slots__ = ("_clock", "_lock", "_state", "_window")

    def __init__(self, policy: ThrottlePolicy) -> None:
        window = policy.window
        assert isinstance(window, float)
        self._state = ThrottleState(policy.k, window)
        self._window = window
        self._clock = policy.clock
        self._lock = threading.Lock()

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
        The rejection probability now; no lock while nothing can be refused (``Tally.calm``).

        Reading the counts without the lock can only see a state a moment old, which the
        locked ``probability`` then confirms before anything is refused.
        """
        tally = self._state.tally
        calm = tally.calm
        if calm == 2 or (calm and _clock.resolve(self._clock).monotonic() < tally.until):
            return 0.0
        return self.probability()[0]

    def accept(self, now: float) -> None:
        """Count one accepted request ending at *now*: lock-free while its bucket is current."""
        tally = self._state.tally
        if now < tally.until:
            tally.accept()
        else:
            with self._lock:
                self._state.record(now, True)

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
