"""
The rate budget: ``RateState``'s accounting, the ``RateBackend`` contract, the memory backend.

The algorithm is a **sliding log of reserved start times**, at most *rate* of them. The
contract's rule is a sliding window ("no window of *per* seconds holds more than *rate*
starts"), and it is exactly this: the start ``t[i + rate]`` may not come before
``t[i] + per``. Likewise *burst* means ``t[i + burst] >= t[i] + per * burst / rate``. Both
need only the last *rate* starts, so the log is a ``deque(maxlen=rate)`` and entries older
than *per* are dropped as time passes (in one go every 128 starts on the backend's inline
path, as the Redis twin trims; by every other decision at once): memory is bounded by the
rule itself (and by the calls of the last *per* seconds, plus at most 128), never by call
volume. A token bucket or GCRA is O(1) but lets up to ``rate + burst - 1`` starts into one
window after an idle spell, which is what the servers our users call punish; GCRA plus a
window cap needs the same log anyway.

Waiting is **reservation**: a caller's start time is decided when it arrives (the earliest
time the rule allows after every start already reserved), so waiters are served in arrival
order and none can starve. A caller whose turn is further away than its ``timeout`` is
refused at once without reserving anything. The accounting (``RateState``) is a pure state
machine fed with ``now``; a backend applies it atomically and reads time itself, and the
decorator layer (``_rate.layer``) only sleeps until the reserved time. A cancelled waiter's
slot stays used (conservative: it can only lower the rate, never break the rule).

A woken waiter is usually late by the timer's granularity, and by different amounts, so
the start it actually makes is also checked against a second log of *actual* starts
(``admit``) before it goes; a late predecessor makes it wait that little bit more. So the
rule holds for the starts a server sees, not only for the reservations.

The key's shared backoff window (``_rate.window``) is one more lower bound on the start time:
callers reserve their turns after it ends, and re-reserve if it was extended while they
slept.

``MemoryStore`` builds ``MemoryRateBackend`` (``memory_rate`` below), ``RedisStore``
``RedisRateBackend`` (in ``_rate.redis``); each store registers its own factory.
"""

from __future__ import annotations

import bisect
import math
import threading

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from resilience import _clock, _deadline
from resilience._rate.window import MemoryWindowBackend
from resilience._snapshot import LimiterSnapshot


if TYPE_CHECKING:
    from collections.abc import Callable

    from resilience._policies import RateLimitPolicy
    from resilience.stores._memory import MemoryStore
    from resilience.typing import Clock


__all__ = ["MemoryRateBackend", "RateBackend", "RateState", "WeightedStart", "weighted_start"]


class RateState:
    """
    The sliding-log accounting of one budget: pure, no lock, no clock, no sleeping.

    Args:
        rate: Starts allowed in any window of *per* seconds.
        per: The window in seconds.
        burst: Starts allowed in any window of ``per * burst / rate`` seconds.
    """

    __slots__ = ("burst", "gap", "log", "per", "rate", "spaced", "starts")

    def __init__(self, rate: int, per: float, burst: int | None = None) -> None:
        self.rate = rate
        self.per = per
        self.burst = rate if burst is None else burst
        self.gap = per * self.burst / rate
        self.spaced = self.burst < rate
        self.log: deque[float] = deque(maxlen=rate)
        self.starts: deque[float] = deque(maxlen=rate)

    def earliest(self, now: float, floor: float = -math.inf) -> float:
        """Return the earliest start at or after *now* and *floor* that the rule allows."""
        log = self.log
        per = self.per
        while log and log[0] + per <= now:  # no longer inside any window that matters
            log.popleft()
        start = now if now > floor else floor
        count = len(log)
        if count:
            if log[-1] > start:  # noqa: PLR1730 - hot path; reservations go in arrival order
                start = log[-1]
            if count == self.rate and log[0] + per > start:
                start = log[0] + per
            if self.spaced and count >= self.burst:
                edge = log[-self.burst] + self.gap
                if edge > start:  # noqa: PLR1730 - hot path
                    start = edge
        return start

    def reserve(
        self, now: float, max_wait: float, floor: float = -math.inf, slack: float = 0.0
    ) -> float:
        """
        Reserve the earliest allowed start if it is at most *max_wait* seconds away.

        *slack* widens the check of actual starts (see ``admit``).

        Returns:
            The seconds to wait (>= 0) when a start was reserved; ``-retry_after`` (< 0)
            when the turn is further away than *max_wait* and nothing was reserved.
        """
        start = self.earliest(now, floor)
        wait = start - now
        if wait > max_wait:
            return -wait
        self.log.append(start)
        if wait:
            return wait
        return self.admit(now, slack)  # starting now: check (and record) it against actual starts

    def trim(self, now: float, slack: float = 0.0) -> None:
        """
        Drop the entries that left the window (of the actual starts: widened by *slack*).

        ``earliest`` and ``admit`` drop them as they decide; ``MemoryRateBackend.reserve``'s
        inline start with room leaves them for a while and calls this every 128 entries.
        """
        log, starts, per = self.log, self.starts, self.per
        while log and log[0] + per <= now:
            log.popleft()
        while starts and starts[0] + per + slack <= now:
            starts.popleft()

    def admit(self, now: float, slack: float = 0.0) -> float:
        """
        Record an actual start at *now* if the rule allows it against the actual starts.

        A waiter woken late starts later than its reservation; the reservations after it
        were computed from the punctual time. Checking each actual start against the log
        of actual starts keeps the rule exact for what the server sees. *slack* (the clock's
        scheduling jitter: 0 on virtual time) widens that check by the few microseconds
        between this reading and the call's first line, which vary from call to call.

        Returns:
            0.0 when the start was recorded; otherwise the (small) seconds to wait first.
        """
        starts = self.starts
        per = self.per + slack
        while starts and starts[0] + per <= now:  # memory follows the window, not the rate
            starts.popleft()
        need = now
        count = len(starts)
        if count == self.rate and starts[0] + per > need:
            need = starts[0] + per
        if self.spaced and count >= self.burst:
            edge = starts[-self.burst] + self.gap + slack
            if edge > need:  # noqa: PLR1730 - hot path
                need = edge
        if need > now:
            return need - now
        starts.append(now)
        return 0.0

    # -- weighted calls: a call of cost c takes c units (c copies of its start) ------------
    # The rule per unit: the start s of c units needs the window (s - per, s] to hold at
    # most rate - c other units, so the (rate - c + 1)-th newest unit must have left it.

    def _bound(self, log: deque[float], start: float, cost: int, per: float, gap: float) -> float:
        count = len(log)
        back = self.rate - cost + 1
        if count >= back and log[-back] + per > start:
            start = log[-back] + per
        if self.spaced:
            bback = self.burst - min(cost, self.burst) + 1
            if count >= bback and log[-bback] + gap > start:
                start = log[-bback] + gap
        return start

    def reserve_units(
        self, now: float, max_wait: float, cost: int, floor: float = -math.inf, slack: float = 0.0
    ) -> tuple[float, float, float]:
        """
        ``reserve`` for a call of *cost* units.

        Returns:
            ``(wait, reserved, started)``: *wait* as ``reserve`` answers it; *reserved* the
            reservation's time; *started* the actual start when admitted now, else NaN.
        """
        log, starts, per = self.log, self.starts, self.per
        while log and log[0] + per <= now:
            log.popleft()
        if floor <= now and not self.spaced:
            # The common case, inline: room now in both logs (no window, nobody ahead).
            while starts and starts[0] + per + slack <= now:
                starts.popleft()
            room = self.rate - cost
            if len(log) <= room and len(starts) <= room and (not log or log[-1] <= now):
                if cost == 1:
                    log.append(now)
                    starts.append(now)
                else:
                    log.extend([now] * cost)
                    starts.extend([now] * cost)
                return 0.0, now, now
        start = now if now > floor else floor
        if log and log[-1] > start:
            start = log[-1]
        start = self._bound(log, start, cost, per, self.gap)
        wait = start - now
        if wait > max_wait:
            return -wait, start, math.nan
        log.extend([start] * cost)
        if wait:
            return wait, start, math.nan
        need = self.admit_units(now, cost, slack)
        return need, start, (now if need == 0.0 else math.nan)

    def admit_units(self, now: float, cost: int, slack: float = 0.0) -> float:
        """``admit`` for a call of *cost* units: 0.0 when recorded, else the seconds to wait."""
        starts = self.starts
        per = self.per + slack
        while starts and starts[0] + per <= now:
            starts.popleft()
        need = self._bound(starts, now, cost, per, self.gap + slack)
        if need > now:
            return need - now
        starts.extend([now] * cost)
        return 0.0

    def settle_units(self, reserved: float, started: float, delta: int) -> None:
        """
        Give back (*delta* < 0) or charge (*delta* > 0) units as of the call's start.

        The units sit at the call's reservation and actual start; a charge that overfills
        the log drops its oldest units, which can only make later starts wait longer.
        """
        for log, stamp in ((self.log, reserved), (self.starts, started)):
            if math.isnan(stamp):
                continue
            items = list(log)
            if delta < 0:
                low = bisect.bisect_left(items, stamp)
                high = bisect.bisect_right(items, stamp)
                del items[low : low + min(-delta, high - low)]
            else:
                at = bisect.bisect_right(items, stamp)
                items[at:at] = [stamp] * delta
            log.clear()
            log.extend(items)

    def pending(self, now: float) -> int:
        """Return how many reserved starts lie in the future (the waiting queue's depth)."""
        return len(self.log) - bisect.bisect_right(self.log, now)

    def view(self, now: float) -> tuple[int, int, bool]:
        """
        Return (starts in the last *per* seconds, reservations ahead, a newcomer waits).

        Reads only: nothing is dropped from the logs.
        """
        starts = sum(1 for t in self.starts if now - self.per < t <= now)
        ahead = self.pending(now)
        log = [t for t in self.log if t + self.per > now]
        waits = bool(log) and log[-1] > now
        if len(log) >= self.rate and log[-self.rate] + self.per > now:
            waits = True
        if self.spaced and len(log) >= self.burst and log[-self.burst] + self.gap > now:
            waits = True
        return starts, ahead, waits


class RateBackend(Protocol):
    """
    The shared state of one rate budget and its backoff window; one atomic decision a call.

    A backend reads time itself (a Redis one uses server time), so every process agrees.

    .. versionadded:: 0.1.0
    """

    rate: int
    per: float
    burst: int

    def reserve(self, max_wait: float) -> float:
        """
        Reserve the earliest start allowed by the budget and the backoff window.

        Returns:
            Seconds to wait (>= 0) when reserved; ``-retry_after`` (< 0) when the turn is
            further than *max_wait* seconds away (then nothing is reserved).
        """
        ...

    def admit(self) -> float:
        """
        Record an actual start now, after a wait, if the rule allows it against actual starts.

        Returns:
            0.0 when recorded; otherwise the seconds to wait before asking again.
        """
        ...

    def resume(self, max_wait: float) -> float:
        """
        After a wait: ``admit`` now, or ``reserve`` again if the window was extended.

        One decision: a backoff window extended while the caller slept means a new turn
        behind it (within *max_wait* seconds); otherwise the start is admitted.

        Returns:
            0.0 to start now; the seconds to wait (> 0); or ``-retry_after`` (< 0).
        """
        ...

    def pending(self) -> int:
        """Return how many reserved starts lie in the future."""
        ...

    async def areserve(self, max_wait: float, timeout: float | None = None) -> float:
        """The async twin of ``reserve``; *timeout* (seconds) may bound a remote round trip."""
        ...

    async def aresume(self, max_wait: float, timeout: float | None = None) -> float:
        """The async twin of ``resume``."""
        ...

    async def apending(self) -> int:
        """The async twin of ``pending``."""
        ...

    def snapshot(self, key: str) -> LimiterSnapshot:
        """Return the operator's view of the budget of *key*, changing nothing."""
        ...


#: The optional C accelerator (None: not built, or ``RESILIENCE_NO_EXTENSIONS`` set).
_speedups = _deadline._speedups


def _trimmer(state: RateState, clock: Clock | None) -> Callable[[float], None]:
    """``RateStart``'s trim every 128 starts (under the lock it holds), as ``reserve`` trims."""

    def trim(now: float) -> None:  # no reference to the backend: no cycle to collect
        state.trim(now, getattr(_clock.resolve(clock), "slack", 0.0))

    return trim


class MemoryRateBackend:
    """A rate budget in this process: ``RateState`` under a lock, time from the policy's clock."""

    __slots__ = (
        "_acquire",
        "_clock",
        "_lock",
        "_release",
        "_state",
        "_window",
        "burst",
        "per",
        "rate",
        "start_now",
    )

    def __init__(
        self,
        rate: int,
        per: float,
        burst: int | None,
        window: MemoryWindowBackend,
        clock: Clock | None = None,
    ) -> None:
        self._state = RateState(rate, per, burst)
        self.rate = rate
        self.per = per
        self.burst = self._state.burst
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()
        # bound once: acquire/release calls cost about half of a `with` block on the hot path
        self._acquire = self._lock.acquire
        self._release = self._lock.release
        #: ``reserve``'s inline start with room, in C when built (the same steps under the
        #: same lock; ``tests/test_speedups.py`` holds the two together), else None. Called
        #: with no arguments it answers 0.0 (started now) or None (that case does not
        #: apply; nothing was done), so a layer may try it before ``reserve``.
        self.start_now: Callable[[], float | None] | None = (
            None
            if _speedups is None or self._state.spaced
            else _speedups.RateStart(
                self._state,
                window,
                clock,
                _clock.DEFAULT,
                _clock.SYSTEM_CLOCK,
                self._acquire,
                self._release,
                _trimmer(self._state, clock),
            )
        )

    def idle(self) -> bool:
        """Whether every start is older than *per*: a fresh budget would decide the same."""
        clock = _clock.resolve(self._clock)
        horizon = clock.monotonic() - self.per - getattr(clock, "slack", 0.0)
        state = self._state
        return (not state.log or state.log[-1] <= horizon) and (
            not state.starts or state.starts[-1] <= horizon
        )

    def reserve(self, max_wait: float) -> float:
        """Reserve the earliest allowed start within *max_wait* seconds (see ``RateBackend``)."""
        start = self.start_now
        if start is not None:
            started = start()  # the inline start below, in C: None when it does not apply
            if started is not None:
                return started
        clock = self._clock or _clock.DEFAULT.clock  # _clock.resolve, inline: every call
        state = self._state
        self._acquire()
        try:
            now = clock.monotonic()
            floor = self._window.end
            if floor <= now and not state.spaced:
                # The common case, inline (``state.reserve``'s answer, a frame cheaper): room
                # now in both logs, no window, nobody ahead. The entries that left the window
                # stay until the log's length is a multiple of 128 (dropping them costs more
                # than the rest of the start): they are all at or before now, and a log below
                # *rate* entries has room with or without them; a full one goes to
                # ``state.reserve``, which drops them first. So this answers as if they were gone.
                log = state.log
                starts = state.starts
                count = len(log)
                if count < state.rate and len(starts) < state.rate and (not log or log[-1] <= now):
                    log.append(now)
                    starts.append(now)
                    if not count & 127:
                        state.trim(now, getattr(clock, "slack", 0.0))
                    return 0.0
            return state.reserve(now, max_wait, floor, getattr(clock, "slack", 0.0))
        finally:
            self._release()

    def admit(self) -> float:
        """Record an actual start now if the rule allows it (see ``RateBackend``)."""
        clock = _clock.resolve(self._clock)
        with self._lock:
            return self._state.admit(clock.monotonic(), getattr(clock, "slack", 0.0))

    def resume(self, max_wait: float) -> float:
        """After a wait: start now, or the next wait (see ``RateBackend``)."""
        if self._window.remaining() <= 0.0:
            return self.admit()
        return self.reserve(max_wait)

    def reserve_units(self, max_wait: float, cost: int) -> tuple[float, float, float]:
        """``reserve`` for *cost* units: ``(wait, reserved, started)`` (see ``RateState``)."""
        clock = _clock.resolve(self._clock)
        with self._lock:
            return self._state.reserve_units(
                clock.monotonic(), max_wait, cost, self._window.end, getattr(clock, "slack", 0.0)
            )

    def resume_units(self, max_wait: float, cost: int) -> tuple[float, float, float]:
        """``resume`` for *cost* units: ``(wait, reserved, started)``; reserved NaN if kept."""
        if self._window.remaining() > 0.0:
            return self.reserve_units(max_wait, cost)
        clock = _clock.resolve(self._clock)
        with self._lock:
            now = clock.monotonic()
            need = self._state.admit_units(now, cost, getattr(clock, "slack", 0.0))
        return need, math.nan, (now if need == 0.0 else math.nan)

    def settle_units(self, reserved: float, started: float, delta: int) -> None:
        """Give back or charge *delta* units as of the call's start (see ``RateState``)."""
        with self._lock:
            self._state.settle_units(reserved, started, delta)

    def pending(self) -> int:
        """Return how many reserved starts lie in the future."""
        clock = _clock.resolve(self._clock)
        with self._lock:
            return self._state.pending(clock.monotonic())

    # Async twins for the protocol; the layer calls the sync methods of a memory backend
    # directly (they never block), so these cost nothing on its hot path.
    async def areserve(self, max_wait: float, timeout: float | None = None) -> float:
        """The async twin of ``reserve`` (no I/O: the same call)."""
        return self.reserve(max_wait)

    async def aresume(self, max_wait: float, timeout: float | None = None) -> float:
        """The async twin of ``resume`` (no I/O: the same call)."""
        return self.resume(max_wait)

    async def apending(self) -> int:
        """The async twin of ``pending`` (no I/O: the same call)."""
        return self.pending()

    def snapshot(self, key: str) -> LimiterSnapshot:
        """Return the operator's view of the budget of *key*, changing nothing."""
        clock = _clock.resolve(self._clock)
        with self._lock:
            starts, waiting, waits = self._state.view(clock.monotonic())
        left, ends_at = self._window.view()
        return LimiterSnapshot(
            key=key,
            rate=self.rate,
            per=self.per,
            burst=self.burst,
            starts=starts,
            waiting=waiting,
            saturated=waits or left > 0.0,
            window_remaining=left,
            window_ends_at=ends_at,
        )


class WeightedStart:
    """
    A weighted call's cost and its start with room on a memory backend: one call per start.

    The pure-Python twin of ``_speedups.RateWeightedStart`` (``tests/test_speedups.py``
    holds the two together, answer for answer and entry for entry). Called with a call's
    arguments, it works out the cost (*fixed*, else *estimate* of the arguments; an answer
    that is no whole number in [1, rate] goes to *check*, which raises), then, under the
    backend's lock, starts the call's units as ``MemoryRateBackend.reserve`` starts one:
    no window open, room for them in both logs (at most ``rate - cost`` entries each, the
    entries that left the window included: they only make it say no), nobody reserved
    ahead. The call's units are *cost* copies of now in both logs, as ``RateState`` counts
    them; when the logs' length crosses a multiple of 128 they are trimmed (under the lock).

    Returns:
        None when the call started (``(now, cost)`` when *stamp*); otherwise the checked cost,
        for the general path (``reserve`` or ``reserve_units``) to decide.
    """

    __slots__ = ("_backend", "_check", "_estimate", "_fixed", "_stamp")

    def __init__(
        self,
        backend: MemoryRateBackend,
        estimate: Callable[..., object],
        fixed: int,
        check: Callable[[object], int],
        *,
        stamp: bool,
    ) -> None:
        self._backend = backend
        self._estimate = estimate
        self._fixed = fixed
        self._check = check
        self._stamp = stamp

    def __call__(
        self, args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> tuple[float, int] | int | None:
        backend = self._backend
        state = backend._state
        rate = state.rate
        fixed = self._fixed
        if fixed:
            cost: object = fixed
        elif kwargs:
            cost = self._estimate(*args, **kwargs)
        else:
            cost = self._estimate(*args)
        if type(cost) is not int or not 0 < cost <= rate:
            cost = self._check(cost)
            if type(cost) is not int or not 0 < cost <= rate:
                msg = f"a cost check answered {cost!r}, not a whole number in [1, {rate}]"
                raise ValueError(msg)
        clock = backend._clock or _clock.DEFAULT.clock
        backend._acquire()
        try:
            now = clock.monotonic()
            if type(now) is not float:
                return cost
            end = backend._window.end
            if type(end) is not float or not end <= now:
                return cost
            log = state.log
            starts = state.starts
            count = len(log)
            room = rate - cost
            if count > room or len(starts) > room:
                return cost
            if count:
                last = log[-1]
                if type(last) is not float or not last <= now:
                    return cost
            if cost == 1:
                log.append(now)
                starts.append(now)
            else:
                log.extend([now] * cost)
                starts.extend([now] * cost)
            if ((count + cost - 1) & ~127) >= count:  # a multiple of 128 crossed: trim
                state.trim(now, getattr(clock, "slack", 0.0))
        finally:
            backend._release()
        return (now, cost) if self._stamp else None


def weighted_start(
    backend: object,
    estimate: Callable[..., object],
    fixed: int,
    check: Callable[[object], int],
    *,
    stamp: bool,
) -> Callable[[tuple[Any, ...], dict[str, Any] | None], tuple[float, int] | int | None] | None:
    """
    The weighted start with room for *backend*: in C when built, else ``WeightedStart``.

    None when there is none: a remote backend, or a limit with a burst (every start of a
    spaced limit goes through ``RateState``).
    """
    if not isinstance(backend, MemoryRateBackend) or backend._state.spaced:
        return None
    start = backend.start_now
    if start is not None and _speedups is not None:
        made: Callable[[tuple[Any, ...], dict[str, Any] | None], tuple[float, int] | int | None] = (
            _speedups.RateWeightedStart(start, estimate, fixed, check, stamp)
        )
        return made
    return WeightedStart(backend, estimate, fixed, check, stamp=stamp)


def memory_rate(key: str, policy: RateLimitPolicy, store: MemoryStore) -> MemoryRateBackend:
    """``MemoryStore``'s ``"rate"`` factory."""
    # The layer creates the key's window first (factories run under the store's lock).
    window = store.peek("window", key) or MemoryWindowBackend(policy.clock)
    per = policy.per
    assert isinstance(per, float)
    return MemoryRateBackend(policy.rate, per, policy.burst, window, policy.clock)
