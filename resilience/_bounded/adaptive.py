"""
Adaptive concurrency for ``@bounded``: a limit that finds its level from latency and drops.

``AdaptiveLimit`` is the policy (``BoundedPolicy(limit=AdaptiveLimit(...))``); the algorithms
are I/O-free machines fed one sample per finished call, ``(rtt, in_use, dropped)``, and
answer with the new limit. They never read a clock or sleep, so every rule is tested
without one:

- ``Aimd``: exact, as the contract says: a drop sets ``max(min, floor(limit * ratio))``; a
  success while at least half the limit was in use adds one. With a ``timeout`` (as
  Netflix's ``AIMDLimit``), a call slower than it is a drop too, so queueing shows.
- ``Gradient2`` (the default, after Netflix's concurrency-limits): an average RTT over a
  long window (the "no load" latency, slowly tracking change) against a short window's;
  ``gradient = clamp(tolerance * long / short, 0.5, 1)``; the new limit is
  ``limit * gradient + queue headroom``, smoothed by 0.2; while fewer than half the permits
  are in use it holds (nothing learnt from an idle pool). Drops shrink it by the ratio.
  Samples are taken in windows of about one round of the pool, so the long average spans
  minutes of traffic rather than seconds.
- ``Vegas``: an estimate of the queue from the lowest RTT seen,
  ``queue = limit * (1 - rtt_min / rtt)``: grow while the queue is short, shrink when it is
  long or on a drop.

``AdaptivePoolBackend`` is the memory pool whose ``limit`` moves: it takes a sample under
its lock after each call; the permit queue then lets waiters in against the new limit.
"""

from __future__ import annotations

import itertools
import math
import threading

from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

from resilience._bounded.pool import MemoryPoolBackend
from resilience._dictable import FromDict
from resilience._snapshot import PoolSnapshot
from resilience._validate import (
    check_choice,
    check_int,
    check_number,
    duration,
    exception_predicate,
)


if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from resilience.typing import ExceptionFilter


__all__ = [
    "ADAPTIVE_TOKENS_MAX",
    "ALGORITHMS",
    "AdaptiveLimit",
    "AdaptivePoolBackend",
    "Aimd",
    "TIMED_PER_WINDOW",
    "Gradient2",
    "LimitAlgorithm",
    "Vegas",
    "window_shape",
]

ALGORITHMS = ("gradient2", "aimd", "vegas")
_WARMUP = 10  # windows averaged plainly before the long RTT becomes an EMA
#: The fewest timed calls in a window: a window of more calls times every ``stride``-th.
TIMED_PER_WINDOW = 32


def window_shape(short_window: int, limit: int) -> tuple[int, int]:
    """
    Return ``(stride, due)`` for a window of ``max(short_window, limit)`` calls.

    Every ``stride``-th call is timed, and the window closes after ``due`` timed calls, so
    it spans about as many calls as before and averages at least ``TIMED_PER_WINDOW`` RTTs
    (a window of fewer than twice that times every call: ``stride`` 1).
    """
    calls = max(short_window, limit)
    stride = max(1, calls // TIMED_PER_WINDOW)
    return stride, -(-calls // stride)


@dataclass(frozen=True, slots=True)
class AdaptiveLimit(FromDict):
    """
    A concurrency limit that moves between *min_limit* and *max_limit* on its own.

    Pass it as ``@bounded(limit=AdaptiveLimit())``: each call's latency and outcome feed the
    algorithm, which raises the limit while latency holds and lowers it when latency grows
    (queueing upstream) or calls fail with an exception matching *on_drop*.

    Args:
        algorithm: ``"gradient2"`` (the default), ``"aimd"`` or ``"vegas"``.
        initial: The limit to start from, in ``[min_limit, max_limit]``.
        min_limit: The lowest limit (>= 1).
        max_limit: The highest limit (>= *min_limit*).
        backoff_ratio: What a drop multiplies the limit by, in ``[0.5, 1)``.
        on_drop: The exceptions that count as drops: a class, a tuple, or a predicate.
        timeout: ``"aimd"`` only: a call that takes longer (seconds or a ``timedelta``)
            counts as a drop even when it succeeds, so queueing upstream lowers the limit
            before the upstream starts failing. None (the default): only exceptions drop.

    .. versionadded:: 0.2.0
    """

    algorithm: str = "gradient2"
    initial: int = 20
    min_limit: int = 1
    max_limit: int = 1000
    backoff_ratio: float = 0.9
    on_drop: ExceptionFilter = Exception
    timeout: float | timedelta | None = None
    _is_drop: Callable[[BaseException], bool] = field(
        init=False,
        repr=False,
        compare=False,
        default=None,  # type: ignore[assignment]
    )

    def __post_init__(self) -> None:
        owner = "AdaptiveLimit"
        check_choice(owner, "algorithm", self.algorithm, ALGORITHMS)
        check_int(owner, "min_limit", self.min_limit, low=1)
        check_int(owner, "max_limit", self.max_limit, low=self.min_limit)
        check_int(owner, "initial", self.initial, low=self.min_limit, high=self.max_limit)
        ratio = check_number(
            owner, "backoff_ratio", self.backoff_ratio, low=0.5, high=1.0, high_open=True
        )
        object.__setattr__(self, "backoff_ratio", ratio)
        object.__setattr__(self, "_is_drop", exception_predicate(owner, "on_drop", self.on_drop))
        timeout = duration(owner, "timeout", self.timeout, strict=True, allow_none=True)
        if timeout is not None and self.algorithm != "aimd":
            msg = (
                f"AdaptiveLimit.timeout applies to algorithm='aimd' only (the latency-based "
                f"{self.algorithm!r} reads latency itself), got timeout={self.timeout!r}"
            )
            raise ValueError(msg)
        object.__setattr__(self, "timeout", timeout)

    def make(self) -> LimitAlgorithm:
        """Return a fresh machine of this limit's algorithm, at *initial*."""
        if self.algorithm == "aimd":
            return Aimd(self)
        if self.algorithm == "vegas":
            return Vegas(self)
        return Gradient2(self)

    def is_drop(self, exc: BaseException) -> bool:
        """Whether *exc* counts as a drop (an exception matching *on_drop*)."""
        return self._is_drop(exc)


class LimitAlgorithm(Protocol):
    """An I/O-free limit: fed one sample per finished call, it answers with the new limit."""

    limit: int

    def update(self, rtt: float, in_use: int, dropped: bool) -> int:
        """Take one call's sample and return the new limit (an int in the bounds)."""
        ...


class Aimd:
    """Additive increase, multiplicative decrease: the contract's exact rule."""

    __slots__ = ("high", "limit", "low", "ratio", "timeout")

    def __init__(self, policy: AdaptiveLimit) -> None:
        self.limit = policy.initial
        self.low = policy.min_limit
        self.high = policy.max_limit
        self.ratio = policy.backoff_ratio
        timeout = policy.timeout
        self.timeout = math.inf if timeout is None else float(timeout)  # type: ignore[arg-type]

    def update(self, rtt: float, in_use: int, dropped: bool) -> int:
        """
        A drop: ``max(min, floor(limit * ratio))``; a busy success: ``min(max, limit + 1)``.

        A call slower than the policy's ``timeout`` is a drop whatever its outcome.
        """
        limit = self.limit
        if dropped or rtt > self.timeout:
            limit = max(self.low, math.floor(limit * self.ratio))
        elif 2 * in_use >= limit:
            limit = min(self.high, limit + 1)
        self.limit = limit
        return limit


class Gradient2:
    """
    Netflix's Gradient2: the long-window RTT against the short window's, with headroom.

    Samples are gathered into windows (as Netflix's ``WindowedLimit`` does): a window spans
    ``max(short_window, limit)`` calls, about one round of the pool, and its average RTT is
    the short RTT. A window of many calls is timed on every ``stride``-th call only
    (``window_shape``: at least ``TIMED_PER_WINDOW`` timed calls per window), so a wide
    pool does not read the clock twice per call; one ``update`` is one timed call, and the
    window closes after ``due`` of them. ``busy`` (the most units in use) is kept over
    every call, timed or not: the layer updates it inline. The long RTT is an exponential average over *long_window* windows
    (not samples, so it drifts slowly under sustained load); when it exceeds twice the short
    one it decays fast (latency fell for good). A drop ends its window at once and
    multiplies the limit by the backoff ratio; a window where fewer than half the permits
    were in use holds it.

    Args:
        policy: The bounds, the start and the drop ratio.
        tolerance: How much the short RTT may exceed the long one before the limit shrinks.
        smoothing: The weight of each new estimate against the current limit.
        long_window: Windows in the long RTT's exponential average.
        short_window: The fewest samples in a window.
        queue_size: Headroom added on top of ``limit * gradient``, so the limit can grow.
    """

    __slots__ = (
        "busy",
        "count",
        "dropped",
        "due",
        "estimate",
        "high",
        "limit",
        "long_a",
        "long_n",
        "long_rtt",
        "low",
        "queue_size",
        "ratio",
        "short_window",
        "smoothing",
        "stride",
        "tolerance",
        "total",
    )

    def __init__(
        self,
        policy: AdaptiveLimit,
        *,
        tolerance: float = 1.5,
        smoothing: float = 0.2,
        long_window: int = 600,
        short_window: int = 10,
        queue_size: float = 4.0,
    ) -> None:
        self.limit = policy.initial
        self.estimate = float(policy.initial)
        self.low = policy.min_limit
        self.high = policy.max_limit
        self.ratio = policy.backoff_ratio
        self.tolerance = tolerance
        self.smoothing = smoothing
        self.long_a = 2.0 / (long_window + 1)
        self.short_window = short_window
        self.long_n = 0
        self.long_rtt = 0.0
        self.queue_size = queue_size
        self.count = 0
        #: calls per timed call, and the timed calls that fill a window
        self.stride, self.due = window_shape(short_window, self.limit)
        self.total = 0.0
        self.busy = 0
        self.dropped = False

    def update(self, rtt: float, in_use: int, dropped: bool) -> int:
        """Take one call's sample; at the end of a window, return the new limit."""
        if dropped:
            self.dropped = True
            self.busy = max(self.busy, in_use)
            self.close()
        elif self.add(rtt, in_use):
            self.close()
        return self.limit

    def add(self, rtt: float, in_use: int) -> bool:
        """
        Count one call that did not drop into the window; return whether the window is full.

        Only the window's sums move (no limit, no call, no allocation): ``BoundedLayer``
        runs these steps inline without the pool's lock, as Netflix's ``WindowedLimit`` adds
        to its window without one, and takes the lock for ``close`` alone. Were a sample
        lost to a race between threads, its window would close one sample later; the
        bounds and the permits never depend on it.
        """
        if 0.0 < rtt < math.inf:
            self.total += rtt
            self.count += 1
        if in_use > self.busy:  # noqa: PLR1730 - hot path: no call
            self.busy = in_use
        return self.count >= self.due

    def close(self) -> None:
        """A window ends: move the limit from its average RTT (or its drop)."""
        count, total, busy, dropped = self.count, self.total, self.busy, self.dropped
        self.count, self.total, self.busy, self.dropped = 0, 0.0, 0, False
        if dropped:
            self.estimate = max(float(self.low), self.estimate * self.ratio)
        elif count:
            short = total / count
            if self.long_n == 0:
                self.long_rtt = short
            else:  # a plain mean over the first ten windows, then an EMA (Netflix's warm-up)
                alpha = 1.0 / (self.long_n + 1) if self.long_n < _WARMUP else self.long_a
                self.long_rtt += alpha * (short - self.long_rtt)
            self.long_n += 1
            long_rtt = self.long_rtt
            if long_rtt / short > 2.0:  # latency fell for good: let the long window follow
                self.long_rtt = long_rtt = long_rtt * 0.95
            if 2 * busy >= self.estimate:  # below half in use: application-limited, hold
                gradient = min(1.0, max(0.5, self.tolerance * long_rtt / short))
                target = self.estimate * gradient + self.queue_size
                estimate = self.estimate * (1.0 - self.smoothing) + target * self.smoothing
                self.estimate = min(float(self.high), max(float(self.low), estimate))
        self.limit = max(self.low, min(self.high, math.floor(self.estimate)))
        self.stride, self.due = window_shape(self.short_window, self.limit)


class Vegas:
    """TCP Vegas for concurrency: the queue estimated from the lowest RTT seen."""

    __slots__ = ("estimate", "high", "limit", "low", "ratio", "rtt_min")

    def __init__(self, policy: AdaptiveLimit) -> None:
        self.limit = policy.initial
        self.estimate = float(policy.initial)
        self.low = policy.min_limit
        self.high = policy.max_limit
        self.ratio = policy.backoff_ratio
        self.rtt_min = math.inf

    def update(self, rtt: float, in_use: int, dropped: bool) -> int:
        """Take one call's sample and return the new limit."""
        estimate = self.estimate
        if dropped:
            estimate *= self.ratio
        else:
            if not rtt > 0.0 or not math.isfinite(rtt):
                return self.limit
            if rtt < self.rtt_min:
                self.rtt_min = rtt
                return self.limit
            if 2 * in_use < estimate:
                return self.limit
            log = max(1.0, math.log10(estimate))
            queue = estimate * (1.0 - self.rtt_min / rtt)
            if queue <= log:
                estimate += 3.0 * log
            elif queue < 3.0 * log:
                estimate += log
            elif queue > 6.0 * log:
                estimate -= log
        self.estimate = min(float(self.high), max(float(self.low), estimate))
        self.limit = max(self.low, min(self.high, math.floor(self.estimate)))
        return self.limit


#: The largest ``max_limit`` kept as tokens (8 bytes each: 512 KiB); above it the free units
#: are a count under a lock (``_Units``).
ADAPTIVE_TOKENS_MAX = 1 << 16


class _Units:
    """A pool too large for tokens: its free units as a count, with the deque calls it uses."""

    __slots__ = ("_lock", "free", "most")

    def __init__(self, free: int, most: int) -> None:
        self.free = free
        self.most = most
        self._lock = threading.Lock()

    def pop(self) -> None:
        """Take one unit; ``IndexError`` when none is free (as an empty deque)."""
        with self._lock:
            if not self.free:
                msg = "no free unit"
                raise IndexError(msg)
            self.free -= 1

    def append(self, unit: None) -> None:
        """Give one unit back (never more free than *most*, as a deque's ``maxlen``)."""
        with self._lock:
            if self.free < self.most:
                self.free += 1

    def extend(self, units: Iterable[None]) -> None:
        """Give several units back."""
        count = sum(1 for _ in units)
        with self._lock:
            self.free = min(self.most, self.free + count)

    def __len__(self) -> int:
        return self.free


class AdaptivePoolBackend(MemoryPoolBackend):
    """
    A memory pool whose limit an ``AdaptiveLimit`` machine moves after each call.

    Free units are tokens in a deque, as in ``MemoryPoolBackend``: one unit is taken and
    given back without a lock (an atomic ``pop``/``append``). A new limit is applied under
    the lock: a rise adds tokens; a fall takes free ones away and, for units still held,
    leaves a *debt* that their releases pay instead of adding a token (a unit taken while
    the pool is in debt pays it and is refused). So a call starts only while fewer than
    the live limit are held. Gradient2's samples only add to its window until it is full
    (``Gradient2.add``, run by the layer without the lock); the window's end, every drop,
    and every sample of the other algorithms (whose each sample may move the limit) are
    applied under the lock (``sample_release``, ``close_release``).
    """

    __slots__ = ("adaptive", "algorithm", "debt", "every", "fed", "skip", "window")

    def __init__(self, adaptive: AdaptiveLimit) -> None:
        limit = adaptive.initial
        self.limit = limit
        most = adaptive.max_limit
        if most <= ADAPTIVE_TOKENS_MAX:
            self._free = deque([None] * limit, maxlen=most)
        else:  # constant memory for a huge ceiling: the same calls on a counter
            self._free = _Units(limit, most)  # type: ignore[assignment]
        self._pop = self._free.pop
        self._push = self._free.append
        self._lock = threading.Lock()
        self.debt = 0  # units held above the live limit, paid back by their releases
        self.adaptive = adaptive
        self.algorithm = adaptive.make()
        #: The Gradient2 machine, whose samples the layer adds lock-free (None: another one).
        self.window = self.algorithm if isinstance(self.algorithm, Gradient2) else None
        self.fed = False
        # Gradient2's stride, counted down by the layer: ``skip`` untimed calls before the
        # next timed one, ``every`` = stride - 1 (0: every call timed, or another algorithm)
        self.skip = 0
        self.every = 0 if self.window is None else self.window.stride - 1
        self.leases = None

    @property
    def used(self) -> int:
        """The units taken now."""
        return self.limit + self.debt - len(self._free)

    def available(self) -> int:
        """Return the free units now (below 0 while units above the limit are held)."""
        return len(self._free) - self.debt

    def try_acquire(self, weight: int) -> bool:
        """Take *weight* units if they are free now; return whether they were taken."""
        return self.try_acquire_used(weight) > 0

    def try_acquire_used(self, weight: int) -> int:
        """Take *weight* units if free now; return the units held just after (0: not taken)."""
        if weight == 1:
            try:
                self._pop()
            except IndexError:
                return 0
            if self.debt:
                return self.repay()
            return self.limit - len(self._free)
        with self._lock:
            if self.debt or len(self._free) < weight:
                return 0
            taken = 0
            try:
                while taken < weight:
                    self._pop()
                    taken += 1
            except IndexError:  # a one-unit caller took one meanwhile: all or none
                self._free.extend(itertools.repeat(None, taken))
                return 0
            return self.limit - len(self._free)

    def repay(self) -> int:
        """A unit was taken while the pool is in debt: it pays the debt (0: refused)."""
        with self._lock:
            if self.debt:
                self.debt -= 1
                return 0
            return self.limit - len(self._free)  # paid meanwhile: the unit is the caller's

    def release(self, weight: int) -> None:
        """Give back *weight* units; while in debt, they pay it instead."""
        if self.debt:
            with self._lock:
                paid = min(self.debt, weight)
                self.debt -= paid
                weight -= paid
        if weight == 1:
            self._push(None)
        elif weight:
            self._free.extend(itertools.repeat(None, weight))

    def _apply(self, limit: int) -> None:
        """Move the live limit to *limit* (the lock is held): add tokens, or take them back."""
        change = limit - self.limit
        self.limit = limit
        if change > 0:
            paid = min(self.debt, change)
            self.debt -= paid
            self._free.extend(itertools.repeat(None, change - paid))
        elif change < 0:
            owed = -change
            pop = self._pop
            while owed:
                try:
                    pop()
                except IndexError:
                    break
                owed -= 1
            self.debt += owed

    def sample(self, rtt: float, in_use: int, dropped: bool) -> int:
        """Feed one finished call to the algorithm and set the live limit; return it."""
        with self._lock:
            self.fed = True
            limit = self.algorithm.update(rtt, in_use, dropped)
            if limit != self.limit:
                self._apply(limit)
            if self.window is not None:  # a window may have closed: its new stride
                self.every = self.window.stride - 1
            return limit

    def sample_release(self, weight: int, rtt: float, in_use: int, dropped: bool) -> None:
        """``release``, then ``sample``: the call's end, its limit applied under the lock."""
        self.release(weight)
        self.sample(rtt, in_use, dropped)

    def close_release(self, weight: int) -> None:
        """``release``, then end Gradient2's full window (its samples already added)."""
        self.release(weight)
        window = self.window
        assert window is not None
        with self._lock:
            self.fed = True
            window.close()
            if window.limit != self.limit:
                self._apply(window.limit)
            self.every = window.stride - 1

    def idle(self) -> bool:
        """Whether a fresh pool would be the same: nothing held and nothing learnt yet."""
        window = self.window
        return self.used == 0 and not self.fed and (window is None or window.count == 0)

    def snapshot(self, key: str) -> PoolSnapshot:
        """The operator's view: the declared ceiling as ``limit``, the live one beside it."""
        self.watch()
        oldest, at_least = self.oldest_lease()
        return PoolSnapshot(
            key, self.adaptive.max_limit, self.limit, self.used, None, oldest, None, at_least
        )
