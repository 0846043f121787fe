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

import math

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

from resilience._bounded.pool import CountedPoolBackend
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
    from collections.abc import Callable

    from resilience.typing import ExceptionFilter


__all__ = [
    "ALGORITHMS",
    "AdaptiveLimit",
    "AdaptivePoolBackend",
    "Aimd",
    "Gradient2",
    "LimitAlgorithm",
    "Vegas",
]

ALGORITHMS = ("gradient2", "aimd", "vegas")
_WARMUP = 10  # windows averaged plainly before the long RTT becomes an EMA


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

    Samples are gathered into windows (as Netflix's ``WindowedLimit`` does): a window closes
    after ``max(short_window, limit)`` samples, about one round of the pool, and its average
    RTT is the short RTT. The long RTT is an exponential average over *long_window* windows
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
        self.total = 0.0
        self.busy = 0
        self.dropped = False

    def update(self, rtt: float, in_use: int, dropped: bool) -> int:
        """Take one call's sample; at the end of a window, return the new limit."""
        if dropped:
            self.dropped = True
        elif 0.0 < rtt < math.inf:
            self.total += rtt
            self.count += 1
        self.busy = max(self.busy, in_use)
        if not dropped and (self.count < self.short_window or self.count < self.limit):
            return self.limit
        self._close()
        return self.limit

    def _close(self) -> None:
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


class AdaptivePoolBackend(CountedPoolBackend):
    """A memory pool whose limit an ``AdaptiveLimit`` machine moves after each call."""

    __slots__ = ("_give", "_take", "adaptive", "algorithm", "fed")

    def __init__(self, adaptive: AdaptiveLimit) -> None:
        super().__init__(adaptive.initial)
        self.adaptive = adaptive
        self.algorithm = adaptive.make()
        self.fed = False
        self._take = self._lock.acquire  # bound once: cheaper than `with` on the hot path
        self._give = self._lock.release

    def sample(self, rtt: float, in_use: int, dropped: bool) -> int:
        """Feed one finished call to the algorithm and set the live limit; return it."""
        with self._lock:
            self.fed = True
            self.limit = limit = self.algorithm.update(rtt, in_use, dropped)
            return limit

    def sample_release(self, weight: int, rtt: float, in_use: int, dropped: bool) -> None:
        """``sample`` and ``release`` under one lock: the call's end, in one step."""
        self._take()
        try:
            self.fed = True
            self.limit = self.algorithm.update(rtt, in_use, dropped)
            used = self._used - weight
            self._used = used if used > 0 else 0
        finally:
            self._give()

    def try_acquire_used(self, weight: int) -> int:
        """Take *weight* units if free now; return the units held just after (0: not taken)."""
        self._take()
        try:
            used = self._used + weight
            if used > self.limit:
                return 0
            self._used = used
            return used
        finally:
            self._give()

    def idle(self) -> bool:
        """Whether a fresh pool would be the same: nothing held and nothing learnt yet."""
        return self._used == 0 and not self.fed

    def snapshot(self, key: str) -> PoolSnapshot:
        """The operator's view: the declared ceiling as ``limit``, the live one beside it."""
        return PoolSnapshot(key, self.adaptive.max_limit, self.limit, self._used, None, None)
