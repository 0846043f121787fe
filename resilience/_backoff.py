"""
``Backoff``: how long to wait before each retry. Pure math, no clock, no sleeping.

Every delay follows the public contract: a raw value by strategy, capped at ``max``, then
jittered, then clamped to ``[0, max]``. The computation never overflows (retry numbers up to
10**6 and beyond give ``max``), and ``bounds()`` states the exact range a delay can take so
users can property-test schedules without re-deriving the formulas.
"""

from __future__ import annotations

import itertools
import math
import random

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from resilience._dictable import FromDict
from resilience._validate import check_choice, check_number, duration


__all__ = ["JITTERS", "STRATEGIES", "Backoff"]

STRATEGIES = ("exponential", "linear", "constant", "decorrelated")
JITTERS = ("none", "factor", "range", "additive", "full", "equal")


@dataclass(frozen=True, slots=True)
class Backoff(FromDict):
    """
    A retry delay schedule: strategy, cap and jitter.

    The defaults reproduce the Tinker SDK's schedule: 0.5, 1, 2, 4, 8, 10, 10... seconds,
    each times a factor in (0.75, 1].

    Args:
        strategy: ``"exponential"`` (``base * multiplier**retry``), ``"linear"``
            (``base * (retry + 1)``), ``"constant"`` (``base``) or ``"decorrelated"``
            (AWS's decorrelated jitter; only through ``delays()``).
        base: The first delay in seconds (>= 0; 0 means never wait).
        max: The cap in seconds (>= *base*, finite).
        multiplier: The exponential growth factor (>= 1).
        jitter: ``"none"``, ``"factor"`` d(1 - a r), ``"range"`` d(1 - a + 2 a r),
            ``"additive"`` d(1 + a r), ``"full"`` d r, or ``"equal"`` d/2 + d r/2.
        jitter_amount: *a* above: in [0, 1] for factor and range, >= 0 for additive.

    Instances are also tenacity ``wait=`` strategies: ``tenacity.retry(wait=Backoff())``.

    .. versionadded:: 0.1.0
    """

    strategy: str = "exponential"
    base: float = 0.5
    max: float = 10.0
    multiplier: float = 2.0
    jitter: str = "factor"
    jitter_amount: float = 0.25

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        check_choice("Backoff", "strategy", self.strategy, STRATEGIES)
        check_choice("Backoff", "jitter", self.jitter, JITTERS)
        base = duration("Backoff", "base", self.base)
        set_(self, "base", base)
        cap = duration("Backoff", "max", self.max)
        assert base is not None  # narrowing: duration() without allow_none
        assert cap is not None
        if cap < base:
            msg = f"Backoff.max must be >= base ({base:g} s), got {self.max!r}"
            raise ValueError(msg)
        set_(self, "max", cap)
        set_(self, "multiplier", check_number("Backoff", "multiplier", self.multiplier, low=1.0))
        if self.jitter in ("factor", "range"):
            amount = check_number("Backoff", "jitter_amount", self.jitter_amount, low=0.0, high=1.0)
        else:
            amount = check_number("Backoff", "jitter_amount", self.jitter_amount, low=0.0)
        set_(self, "jitter_amount", amount)

    # -- the contract -------------------------------------------------------------------

    def delay(self, retry: int, rand: float | None = None) -> float:
        """
        Return the wait in seconds before retry number *retry* (0 is the first retry).

        Args:
            retry: The retry number, an int >= 0.
            rand: A number in [0, 1) that replaces the random draw (None: draw one).

        Raises:
            ValueError: For ``strategy="decorrelated"``, whose delays depend on the previous
                one: use ``delays()``.
        """
        _check_retry(retry)
        if self.strategy == "decorrelated":
            msg = (
                'Backoff(strategy="decorrelated") depends on the previous delay: '
                "use Backoff.delays() (delay(retry) has no single answer)"
            )
            raise ValueError(msg)
        r = random.random() if rand is None else _check_rand(rand)
        return self._jittered(self._capped(retry), r)

    def bounds(self, retry: int) -> tuple[float, float]:
        """
        Return the tightest ``(low, high)`` with ``low <= delay(retry, r) <= high`` for all r.

        For ``"decorrelated"`` the range covers every path of ``delays()`` at that position.
        """
        _check_retry(retry)
        if self.strategy == "decorrelated":
            return (self.base, self._decorrelated_high(retry))
        d = self._capped(retry)
        first, last = self._jittered(d, 0.0), self._jittered(d, 1.0)
        return (min(first, last), max(first, last))

    def delays(self, rand: Callable[[], float] | None = None) -> Iterator[float]:
        """
        Yield the endless schedule retry by retry, drawing each r from *rand()*.

        Args:
            rand: A zero-argument callable returning numbers in [0, 1) (None: ``random``).
        """
        draw = random.random if rand is None else rand
        if self.strategy == "decorrelated":
            previous = self.base
            while True:
                previous = self._decorrelated(previous, _check_rand(draw()))
                yield previous
        for retry in itertools.count():
            yield self._jittered(self._capped(retry), _check_rand(draw()))

    # -- tenacity interop ---------------------------------------------------------------

    def __call__(self, retry_state: Any) -> float:
        """
        Act as a tenacity ``wait=`` strategy: the delay before tenacity's next attempt.

        For ``"decorrelated"`` the previous delay is tenacity's ``upcoming_sleep``.
        """
        retry = max(0, int(retry_state.attempt_number) - 1)
        if self.strategy == "decorrelated":
            previous = float(getattr(retry_state, "upcoming_sleep", 0.0) or 0.0)
            if retry == 0 or previous <= 0.0:
                previous = self.base
            return self._decorrelated(previous, random.random())
        return self.delay(retry)

    # -- internals shared with the retry loop --------------------------------------------

    def _next(self, retry: int, previous: float, r: float) -> float:
        """One step of the schedule for any strategy; *previous* matters to decorrelated only."""
        if self.strategy == "decorrelated":
            return self._decorrelated(previous, r)
        return self._jittered(self._capped(retry), r)

    def _capped(self, retry: int) -> float:
        """The raw delay for *retry*, capped at ``max``, computed without overflow."""
        base, cap = self.base, self.max
        if self.strategy == "exponential":
            if base == 0.0:
                return 0.0
            try:
                raw = base * self.multiplier**retry
            except OverflowError:  # the power alone overflows; a tiny base may still keep it small
                log_raw = math.log(base) + retry * math.log(self.multiplier)
                return cap if log_raw >= math.log(cap) else math.exp(log_raw)
        elif self.strategy == "linear":
            try:
                raw = base * (retry + 1)
            except OverflowError:
                return cap
        else:
            raw = base
        return cap if raw > cap else raw

    def _jittered(self, d: float, r: float) -> float:
        a = self.jitter_amount
        kind = self.jitter
        if kind == "factor":
            value = d * (1 - a * r)
        elif kind == "none":
            value = d
        elif kind == "range":
            value = d * (1 - a + 2 * a * r)
        elif kind == "additive":
            value = d * (1 + a * r)
        elif kind == "full":
            value = d * r
        else:  # equal
            value = d / 2 + d * r / 2
        if value > self.max:
            return self.max
        return value if value > 0.0 else 0.0

    def _decorrelated(self, previous: float, r: float) -> float:
        base = self.base
        value = base + r * (3 * previous - base)
        if value > self.max:
            return self.max
        return value if value > 0.0 else 0.0

    def _decorrelated_high(self, retry: int) -> float:
        if self.base == 0.0:
            return 0.0
        # log3(max / base) steps reach the cap; beyond that the bound is max itself.
        if retry + 1 > math.log(self.max / self.base, 3) + 1:
            return self.max
        try:
            return min(self.max, self.base * 3.0 ** (retry + 1))
        except OverflowError:
            return self.max


def _check_retry(retry: object) -> None:
    if type(retry) is not int or retry < 0:
        msg = f"retry must be a whole number >= 0, got {retry!r}"
        raise (TypeError if type(retry) is not int else ValueError)(msg)


def _check_rand(r: float) -> float:
    if not 0.0 <= r < 1.0:
        msg = f"rand must be in [0, 1), got {r!r}"
        raise ValueError(msg)
    return r
