"""
``@rate_limited``: at most *rate* call starts in any window of *per* seconds.

The algorithm is a **sliding log of reserved start times**, at most *rate* of them. The
contract's rule is a sliding window ("no window of *per* seconds holds more than *rate*
starts"), and it is exactly this: the start ``t[i + rate]`` may not come before
``t[i] + per``. Likewise *burst* means ``t[i + burst] >= t[i] + per * burst / rate``. Both
need only the last *rate* starts, so the log is a ``deque(maxlen=rate)`` and entries older
than *per* are dropped as time passes: memory is bounded by the rule itself (and by the
calls of the last *per* seconds), never by call volume. A token bucket or GCRA is O(1) but
lets up to ``rate + burst - 1`` starts into one window after an idle spell, which is
what the servers our users call punish; GCRA plus a window cap needs the same log anyway.

Waiting is **reservation**: a caller's start time is decided when it arrives (the earliest
time the rule allows after every start already reserved), so waiters are served in arrival
order and none can starve. A caller whose turn is further away than its ``timeout`` is
refused at once without reserving anything. The accounting (``RateState``) is a pure state
machine fed with ``now``; a backend applies it atomically and reads time itself, and the
decorator layer only sleeps until the reserved time. A cancelled waiter's slot stays used
(conservative: it can only lower the rate, never break the rule).

A woken waiter is usually late by the timer's granularity, and by different amounts, so
the start it actually makes is also checked against a second log of *actual* starts
(``admit``) before it goes; a late predecessor makes it wait that little bit more. So the
rule holds for the starts a server sees, not only for the reservations.

The key's shared backoff window (``_window``) is one more lower bound on the start time:
callers reserve their turns after it ends, and re-reserve if it was extended while they
slept.
"""

from __future__ import annotations

import bisect
import math
import threading

from collections import deque
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypedDict, TypeVar, Unpack, overload

from resilience import _clock, _config
from resilience._decorating import Decorator, Kind, Layer, Runner, is_target, policy_from
from resilience._errors import RateLimitedError, StoreUnavailableError
from resilience._policies import RateLimitPolicy
from resilience._window import MemoryWindowBackend, WindowBackend
from resilience.stores._memory import DEFAULT_STORE, MemoryStore
from resilience.stores._redis import RedisStore, store_unavailable
from resilience.stores._redis_rate import redis_rate_backend
from resilience.telemetry._bus import BUS, emit


if TYPE_CHECKING:
    from resilience.typing import Clock


__all__ = [
    "EPOCH",
    "MemoryRateBackend",
    "RateBackend",
    "RateLimitFields",
    "RateState",
    "rate_limited",
]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class _Epoch:
    """Bumped by ``resilience.testing.reset()`` so layers drop backends cached before it."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def bump(self) -> None:
        self.n += 1


EPOCH = _Epoch()
_config.on_reset(EPOCH.bump)


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

    def reserve(self, now: float, max_wait: float, floor: float = -math.inf) -> float:
        """
        Reserve the earliest allowed start if it is at most *max_wait* seconds away.

        Returns:
            The seconds to wait (>= 0) when a start was reserved; ``-retry_after`` (< 0)
            when the turn is further away than *max_wait* and nothing was reserved.
        """
        log, starts, per = self.log, self.starts, self.per
        if floor <= now and not self.spaced:
            # The common case, inline: room now in both logs (no window, nobody ahead).
            while log and log[0] + per <= now:
                log.popleft()
            while starts and starts[0] + per <= now:
                starts.popleft()
            if len(log) < self.rate and len(starts) < self.rate and (not log or log[-1] <= now):
                log.append(now)
                starts.append(now)
                return 0.0
        start = self.earliest(now, floor)
        wait = start - now
        if wait > max_wait:
            return -wait
        log.append(start)
        if wait:
            return wait
        return self.admit(now)  # starting now: check (and record) it against actual starts

    def admit(self, now: float) -> float:
        """
        Record an actual start at *now* if the rule allows it against the actual starts.

        A waiter woken late starts later than its reservation; the reservations after it
        were computed from the punctual time. Checking each actual start against the log
        of actual starts keeps the rule exact for what the server sees.

        Returns:
            0.0 when the start was recorded; otherwise the (small) seconds to wait first.
        """
        starts = self.starts
        per = self.per
        while starts and starts[0] + per <= now:  # memory follows the window, not the rate
            starts.popleft()
        need = now
        count = len(starts)
        if count == self.rate and starts[0] + per > need:
            need = starts[0] + per
        if self.spaced and count >= self.burst:
            edge = starts[-self.burst] + self.gap
            if edge > need:  # noqa: PLR1730 - hot path
                need = edge
        if need > now:
            return need - now
        starts.append(now)
        return 0.0

    def pending(self, now: float) -> int:
        """Return how many reserved starts lie in the future (the waiting queue's depth)."""
        return len(self.log) - bisect.bisect_right(self.log, now)


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

    def admit(self) -> float:
        """
        Record an actual start now, after a wait, if the rule allows it against actual starts.

        Returns:
            0.0 when recorded; otherwise the seconds to wait before asking again.
        """

    def resume(self, max_wait: float) -> float:
        """
        After a wait: ``admit`` now, or ``reserve`` again if the window was extended.

        One decision: a backoff window extended while the caller slept means a new turn
        behind it (within *max_wait* seconds); otherwise the start is admitted.

        Returns:
            0.0 to start now; the seconds to wait (> 0); or ``-retry_after`` (< 0).
        """

    def pending(self) -> int:
        """Return how many reserved starts lie in the future."""

    async def areserve(self, max_wait: float, timeout: float | None = None) -> float:
        """The async twin of ``reserve``; *timeout* (seconds) may bound a remote round trip."""

    async def aresume(self, max_wait: float, timeout: float | None = None) -> float:
        """The async twin of ``resume``."""

    async def apending(self) -> int:
        """The async twin of ``pending``."""


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

    def reserve(self, max_wait: float) -> float:
        """Reserve the earliest allowed start within *max_wait* seconds (see ``RateBackend``)."""
        clock: Clock = self._clock or _clock._default.clock  # type: ignore[assignment]
        self._acquire()
        try:
            return self._state.reserve(clock.monotonic(), max_wait, self._window.end)
        finally:
            self._release()

    def admit(self) -> float:
        """Record an actual start now if the rule allows it (see ``RateBackend``)."""
        clock: Clock = self._clock or _clock._default.clock  # type: ignore[assignment]
        with self._lock:
            return self._state.admit(clock.monotonic())

    def resume(self, max_wait: float) -> float:
        """After a wait: start now, or the next wait (see ``RateBackend``)."""
        if self._window.remaining() <= 0.0:
            return self.admit()
        return self.reserve(max_wait)

    def pending(self) -> int:
        """Return how many reserved starts lie in the future."""
        clock: Clock = self._clock or _clock._default.clock  # type: ignore[assignment]
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


def _memory_rate(key: str, policy: RateLimitPolicy, store: MemoryStore) -> MemoryRateBackend:
    # The layer creates the key's window first (factories run under the store's lock).
    window = store.peek("window", key) or MemoryWindowBackend(policy.clock)
    per = policy.per
    assert isinstance(per, float)
    return MemoryRateBackend(policy.rate, per, policy.burst, window, policy.clock)


MemoryStore.register("rate", _memory_rate)
RedisStore.register("rate", redis_rate_backend)


class RateLimitFields(TypedDict, total=False):
    """The keyword arguments ``@rate_limited(...)`` accepts: ``RateLimitPolicy``'s fields."""

    rate: int
    per: float | timedelta
    burst: int | None
    key: str | None
    wait: bool
    timeout: float | timedelta | None
    store: Any
    clock: Clock | None
    delay_hook: Callable[[Any], float | None] | None
    retry_after_cap: float | timedelta
    fail_open: bool


class RateLimitLayer(Layer):
    """``@rate_limited``'s layer: reserve a start, sleep until it, open the window on 429s."""

    decorator = "rate_limited"
    __slots__ = ("_backend", "_epoch", "_remote", "_window", "key", "limit", "max_wait", "rtt")
    policy: RateLimitPolicy

    def __init__(self, policy: RateLimitPolicy) -> None:
        super().__init__(policy)
        self.key = ""
        if not policy.wait:
            self.max_wait = 0.0
        else:
            self.max_wait = math.inf if policy.timeout is None else float(policy.timeout)  # type: ignore[arg-type]
        burst = "" if policy.burst is None else f", burst {policy.burst}"
        self.limit = f"{policy.rate} per {policy.per:g} s{burst}"
        self._epoch = -1
        self._remote = False
        # A remote store's async round trip is bounded by the policy's timeout too.
        timeout = policy.timeout
        self.rtt: float | None = timeout if policy.wait and timeout else None  # type: ignore[assignment]

    def bind(self, kind: Kind, qualname: str) -> None:
        self.name = qualname
        self.key = self.policy.key or qualname
        if kind in ("gen", "asyncgen"):
            msg = (
                f"@rate_limited does not support generator functions ({qualname}): "
                f"decorate the function that consumes them instead"
            )
            raise TypeError(msg)
        self._refresh()

    def _refresh(self) -> RateBackend:
        """Fetch (and check) the key's backend; again after ``resilience.testing.reset()``."""
        policy = self.policy
        store = policy.store or DEFAULT_STORE
        self._window: WindowBackend = store.backend("window", self.key, policy)
        backend: RateBackend = store.backend("rate", self.key, policy)
        burst = policy.rate if policy.burst is None else policy.burst
        if (backend.rate, backend.per, backend.burst) != (policy.rate, policy.per, burst):
            msg = (
                f"@rate_limited key {self.key!r} is already limited to {backend.rate} per "
                f"{backend.per:g} s, burst {backend.burst}; a limiter sharing the key must use "
                f"the same rate, per and burst (got {self.limit})"
            )
            raise ValueError(msg)
        self._backend = backend
        # Memory backends never block: the async runner calls their sync methods directly.
        self._remote = not isinstance(backend, MemoryRateBackend)
        self._epoch = EPOCH.n
        return backend

    def _clock(self) -> Clock:
        clock: Clock = self.policy.clock or _clock._default.clock  # type: ignore[assignment]
        return clock

    # -- slow paths: waiting, refusing, opening the window ---------------------------------

    def _refuse(self, retry_after: float) -> RateLimitedError:
        open_for = self._window.remaining()
        reason = f"backoff window open for {open_for:.3f} s" if open_for > 0.0 else ""
        if BUS.subs:
            emit(
                "resilience.rate.rejected",
                {"retry_after": retry_after},
                {"key": self.key, "name": self.name, "limit": self.limit, "reason": reason},
            )
        return RateLimitedError(self.key, retry_after, limit=self.limit, reason=reason)

    def _announce(self, wait: float, depth: int) -> None:
        emit(
            "resilience.rate.wait",
            {"wait": wait, "queue_depth": float(depth)},
            {"key": self.key, "name": self.name, "limit": self.limit},
        )

    def _next(self, backend: RateBackend, waited: float) -> float:
        """After a sleep: 0.0 to start, or the next wait (a window extended, a late wake)."""
        wait = backend.resume(max(0.0, self.max_wait - waited))
        if wait < 0.0:
            raise self._refuse(-wait)
        return wait

    async def _anext(self, backend: RateBackend, waited: float) -> float:
        """``_next`` through the backend's async twin (a remote store)."""
        wait = await backend.aresume(max(0.0, self.max_wait - waited), self.rtt)
        if wait < 0.0:
            raise self._refuse(-wait)
        return wait

    def _unavailable(self, error: StoreUnavailableError) -> None:
        """The store is unreachable: raise, or (fail-open) say so and let the call start."""
        store_unavailable(error, decorator="rate_limited", fail_open=self.policy.fail_open)

    def _wait_sync(self, backend: RateBackend, wait: float) -> None:
        if wait < 0.0:
            raise self._refuse(-wait)
        if BUS.subs:
            self._announce(wait, backend.pending())
        clock = self._clock()
        waited = 0.0
        while wait > 0.0:
            clock.sleep(wait)
            waited += wait
            wait = self._next(backend, waited)

    async def _wait_async(self, backend: RateBackend, wait: float) -> None:
        if wait < 0.0:
            raise self._refuse(-wait)
        remote = self._remote
        if BUS.subs:
            self._announce(wait, await backend.apending() if remote else backend.pending())
        clock = self._clock()
        waited = 0.0
        while wait > 0.0:
            await clock.asleep(wait)
            waited += wait
            wait = await self._anext(backend, waited) if remote else self._next(backend, waited)

    def _failed(self, exc: BaseException) -> None:
        """A call failed: if it carries a server delay, open the key's backoff window."""
        hook = self.policy.delay_hook
        assert hook is not None
        try:
            delay = hook(exc)
        except Exception:  # a broken hook must not replace the caller's error
            return
        if delay is None or not delay > 0.0 or not math.isfinite(delay):
            return
        seconds = min(float(delay), float(self.policy.retry_after_cap))  # type: ignore[arg-type]
        left = self._window.extend(seconds)
        if BUS.subs:
            emit(
                "resilience.window.set",
                {"seconds": seconds, "remaining": left},
                {"key": self.key, "name": self.name, "reason": "failure", "exception": exc},
            )

    # -- runners ---------------------------------------------------------------------------

    def build_sync(self, call_next: Runner) -> Runner:
        layer = self
        switches = _config.state
        epoch = EPOCH
        max_wait = self.max_wait
        hooked = self.policy.delay_hook is not None

        def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not switches.active:
                return call_next(wrapped, instance, args, kwargs)
            backend = layer._backend if layer._epoch == epoch.n else layer._refresh()
            try:
                wait = backend.reserve(max_wait)
                if wait:
                    layer._wait_sync(backend, wait)
            except StoreUnavailableError as error:
                layer._unavailable(error)  # fail-open: start without a token
            if not hooked:
                return call_next(wrapped, instance, args, kwargs)
            try:
                return call_next(wrapped, instance, args, kwargs)
            except Exception as exc:
                layer._failed(exc)
                raise

        return run

    def build_async(self, call_next: Runner) -> Runner:
        layer = self
        switches = _config.state
        epoch = EPOCH
        max_wait = self.max_wait
        hooked = self.policy.delay_hook is not None

        async def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not switches.active:
                return await call_next(wrapped, instance, args, kwargs)
            backend = layer._backend if layer._epoch == epoch.n else layer._refresh()
            try:
                if layer._remote:
                    wait = await backend.areserve(max_wait, layer.rtt)
                else:
                    wait = backend.reserve(max_wait)
                if wait:
                    await layer._wait_async(backend, wait)
            except StoreUnavailableError as error:
                layer._unavailable(error)  # fail-open: start without a token
            if not hooked:
                return await call_next(wrapped, instance, args, kwargs)
            try:
                return await call_next(wrapped, instance, args, kwargs)
            except Exception as exc:
                layer._failed(exc)
                raise

        return run


@overload
def rate_limited(func: classmethod[T, P, R], /) -> classmethod[T, P, R]: ...
@overload
def rate_limited(func: staticmethod[P, R], /) -> staticmethod[P, R]: ...
@overload
def rate_limited(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def rate_limited(
    policy: RateLimitPolicy | None = None, /, **fields: Unpack[RateLimitFields]
) -> Decorator[RateLimitPolicy]: ...
def rate_limited(policy: Any = None, /, **fields: Any) -> Any:
    """
    Let at most *rate* calls start in any window of *per* seconds; wait or refuse the rest.

    Use with a policy (``@rate_limited(RateLimitPolicy(rate=10))``) or its fields
    (``@rate_limited(rate=10, per=1.0, key="api")``). Works on sync and async functions,
    methods, classmethods and staticmethods. Limiters with the same *key* share one budget
    and one backoff window; a call that fails with a server-given delay (Retry-After)
    opens the window, and every caller of the key waits until it ends.

    Raises:
        RateLimitedError: When ``wait=False`` and there is no room now, or when the turn
            is further away than ``timeout``; ``.retry_after`` says when to come back.
        TypeError: At decoration time, for generator functions and wrong types.
        ValueError: At decoration time, for out-of-range fields, or a key already
            limited with a different rate, per or burst.

    .. versionadded:: 0.1.0
    """
    if is_target(policy) and not fields:
        msg = "@rate_limited needs a rate: use @rate_limited(rate=..., per=...)"
        raise TypeError(msg)
    return Decorator(policy_from(RateLimitPolicy, "rate_limited", policy, fields), RateLimitLayer)
