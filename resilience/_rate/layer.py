"""
``RateLimitLayer``: how a call goes through a rate limit.

The budget's accounting and its backends live in ``_rate.state``; this layer only asks the
key's backend for a start (``reserve``), sleeps until the reserved time and asks again
(``resume``: admitted now, a little more waiting after a late wake, or a new turn behind a
backoff window extended while it slept). A turn further away than the policy's ``timeout``
(or any wait with ``wait=False``) is refused with ``RateLimitedError``. A call that fails
with a server-given delay (the policy's ``delay_hook``) opens the key's backoff window.

The admitted path is one ``reserve`` call: backends are fetched once per layer and kept
until ``resilience.testing.reset()`` bumps ``EPOCH`` (which ``BoundedLayer`` shares), and a
memory backend's sync methods are called directly even from the async runner, since they
never block.
"""

from __future__ import annotations

import contextlib
import math

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from resilience import _clock, _config, _deadline
from resilience._decorating import KeyedLayer, Runner, terminal
from resilience._errors import RateLimitedError, StoreUnavailableError
from resilience._policies import RateLimitPolicy
from resilience._quota import pause_for
from resilience._rate.state import MemoryRateBackend, RateBackend, weighted_start
from resilience._rate.window import WindowBackend
from resilience._retry_after import safe_delay
from resilience.stores._memory import DEFAULT_STORE
from resilience.stores._registry import store_unavailable
from resilience.telemetry._bus import BUS, emit


if TYPE_CHECKING:
    from resilience.typing import Clock


__all__ = ["EPOCH", "RateLimitLayer"]


class _Epoch:
    """Bumped by ``resilience.testing.reset()`` so layers drop backends cached before it."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def bump(self) -> None:
        self.n += 1


EPOCH = _Epoch()
_config.on_reset(EPOCH.bump)
_deadline_now = _deadline._current.get
#: The usual cost, compared by identity first (CPython shares small ints, so a cost callable
#: answering 1 answers this object): no type check for it; any other answer is checked.
_ONE = 1


def _until_deadline(max_wait: float) -> float:
    """*max_wait*, shortened to the time left before the current deadline (if any)."""
    left = _deadline.remaining()
    return max_wait if left is None or left >= max_wait else left


class RateLimitLayer(KeyedLayer):
    """``@rate_limited``'s layer: reserve a start, sleep until it, open the window on 429s."""

    decorator = "rate_limited"
    __slots__ = (
        "_backend",
        "_epoch",
        "_remote",
        "_start_now",
        "_window",
        "_wstart",
        "limit",
        "max_wait",
        "rtt",
        "weighted",
    )
    policy: RateLimitPolicy

    def __init__(self, policy: RateLimitPolicy) -> None:
        super().__init__(policy)
        if not policy.wait:
            self.max_wait = 0.0
        else:
            self.max_wait = math.inf if policy.timeout is None else float(policy.timeout)  # type: ignore[arg-type]
        burst = "" if policy.burst is None else f", burst {policy.burst}"
        self.limit = f"{policy.rate} per {policy.per:g} s{burst}"
        self._epoch = -1
        self._remote = False
        self._start_now: Callable[[], float | None] | None = None
        self._wstart: Callable[[tuple[Any, ...], dict[str, Any]], Any] | None = None
        self.weighted = policy.cost != 1 or policy.settle is not None
        # A remote store's async round trip is bounded by the policy's timeout too.
        timeout = policy.timeout
        self.rtt: float | None = timeout if policy.wait and timeout else None  # type: ignore[assignment]

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
        # A memory backend's start with room in C (None without it): tried before reserve.
        self._start_now = backend.start_now if isinstance(backend, MemoryRateBackend) else None
        if self.weighted and not hasattr(backend, "reserve_units"):
            msg = (
                f"@rate_limited key {self.key!r}: cost= and settle= need a store whose rate "
                f"backend counts units ({type(backend).__name__} does not yet); use a "
                f"MemoryStore"
            )
            raise ValueError(msg)
        if self.weighted:
            # A weighted call's cost and its start with room in one call (C when built).
            cost = policy.cost
            self._wstart = weighted_start(
                backend,
                cost if callable(cost) else int,
                0 if callable(cost) else cost,
                self._cost,
                stamp=policy.settle is not None,
            )
        self._epoch = EPOCH.n
        return backend

    def _clock(self) -> Clock:
        return _clock.resolve(self.policy.clock)

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
        wait = backend.resume(max(0.0, _until_deadline(self.max_wait - waited)))
        if wait < 0.0:
            raise self._refuse(-wait)
        return wait

    async def _anext(self, backend: RateBackend, waited: float) -> float:
        """``_next`` through the backend's async twin (a remote store)."""
        wait = await backend.aresume(max(0.0, _until_deadline(self.max_wait - waited)), self.rtt)
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
        if self.policy.pace_from_headers:
            self._pace(exc)
        delay = safe_delay(self.policy.delay_hook, exc, decorator="rate_limited", name=self.name)
        if not delay:  # None or 0: no window
            return
        seconds = min(delay, float(self.policy.retry_after_cap))  # type: ignore[arg-type]
        left = self._window.extend(seconds)
        if BUS.subs:
            emit(
                "resilience.window.set",
                {"seconds": seconds, "remaining": left},
                {"key": self.key, "name": self.name, "reason": "failure", "exception": exc},
            )

    # -- advertised quotas (pace_from_headers) ----------------------------------------------

    def _pace(self, outcome: object) -> None:
        """An exhausted advertised quota opens the key's backoff window until it resets."""
        pause = pause_for(outcome)
        if pause is None:
            return
        seconds = min(pause, float(self.policy.retry_after_cap))  # type: ignore[arg-type]
        try:
            left = self._window.extend(seconds)
        except StoreUnavailableError as error:
            self._unavailable(error)
            return
        if BUS.subs:
            emit(
                "resilience.window.set",
                {"seconds": seconds, "remaining": left},
                {"key": self.key, "name": self.name, "reason": "quota"},
            )

    # -- weighted calls (cost, settle) ------------------------------------------------------

    def _cost(self, units: object) -> int:
        """A callable cost's answer that is not a whole number in [1, rate]: say why."""
        if not isinstance(units, int) or isinstance(units, bool) or units < 1:
            msg = (
                f"@rate_limited cost for {self.name} must return a whole number >= 1, got {units!r}"
            )
            raise ValueError(msg)
        if units > self.policy.rate:
            msg = (
                f"@rate_limited cost for {self.name} is {units} units, above the rate of "
                f"{self.policy.rate} per {self.policy.per:g} s: it could never start"
            )
            raise ValueError(msg)
        return units

    def _settled(self, result: object, cost: int) -> int:
        """The units to give back (< 0) or charge (> 0) once *result* shows the real usage."""
        settle = self.policy.settle
        assert settle is not None
        used: object = settle(result)
        if used is None:
            return 0
        if not isinstance(used, int) or isinstance(used, bool) or used < 0:
            msg = f"@rate_limited settle for {self.name} must return a whole number >= 0 or None"
            raise ValueError(msg)
        return min(used, self.policy.rate) - cost

    def _release_failed(self, error: StoreUnavailableError) -> None:
        """A settle did not reach the store: the estimate stands; never mask the result."""
        with contextlib.suppress(StoreUnavailableError):
            self._unavailable(error)

    def _wait_units_sync(
        self, backend: Any, wait: float, cost: int, reserved: float
    ) -> tuple[float, float]:
        """Wait for a reserved turn of *cost* units; return ``(reserved, started)``."""
        if wait < 0.0:
            raise self._refuse(-wait)
        if BUS.subs:
            self._announce(wait, backend.pending())
        clock = self._clock()
        waited, started = 0.0, math.nan
        while wait > 0.0:
            clock.sleep(wait)
            waited += wait
            left = max(0.0, _until_deadline(self.max_wait - waited))
            wait, again, started = backend.resume_units(left, cost)
            if wait < 0.0:
                raise self._refuse(-wait)
            if not math.isnan(again):
                reserved = again
        return reserved, started

    async def _wait_units_async(
        self, backend: Any, wait: float, cost: int, reserved: float
    ) -> tuple[float, float]:
        """The async twin of ``_wait_units_sync``."""
        if wait < 0.0:
            raise self._refuse(-wait)
        if BUS.subs:
            self._announce(wait, await backend.apending() if self._remote else backend.pending())
        clock = self._clock()
        waited, started = 0.0, math.nan
        while wait > 0.0:
            await clock.asleep(wait)
            waited += wait
            left = max(0.0, _until_deadline(self.max_wait - waited))
            if self._remote:
                wait, again, started = await backend.aresume_units(left, cost)
            else:
                wait, again, started = backend.resume_units(left, cost)
            if wait < 0.0:
                raise self._refuse(-wait)
            if not math.isnan(again):
                reserved = again
        return reserved, started

    def _estimate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        """The checked cost of a call, without a weighted start (a remote store, a burst)."""
        cost = self.policy.cost
        if not callable(cost):
            return cost
        # (without keywords: the cost callable is called without copying the empty dict)
        units = cost(*args, **kwargs) if kwargs else cost(*args)
        if units is not _ONE and (type(units) is not int or not 0 < units <= self.policy.rate):
            units = self._cost(units)
        return units

    def _start_costed(self, cost: int) -> None:
        """A call of *cost* units that did not start with room at once: the general path."""
        backend: Any = self._backend
        max_wait = self.max_wait
        bound = max_wait if _deadline_now() is None else _until_deadline(max_wait)
        try:
            if cost == 1:
                wait = backend.reserve(bound)
                if wait:
                    self._wait_sync(backend, wait)
            else:
                wait, reserved, _ = backend.reserve_units(bound, cost)
                if wait:
                    self._wait_units_sync(backend, wait, cost, reserved)
        except StoreUnavailableError as error:
            self._unavailable(error)  # fail-open: start without units

    async def _astart_costed(self, cost: int) -> None:
        """The async twin of ``_start_costed``."""
        backend: Any = self._backend
        max_wait = self.max_wait
        bound = max_wait if _deadline_now() is None else _until_deadline(max_wait)
        try:
            if self._remote:
                if cost == 1:
                    wait = await backend.areserve(bound, self.rtt)
                    if wait:
                        await self._wait_async(backend, wait)
                else:
                    wait, reserved, _ = await backend.areserve_units(bound, cost)
                    if wait:
                        await self._wait_units_async(backend, wait, cost, reserved)
            elif cost == 1:
                wait = backend.reserve(bound)
                if wait:
                    await self._wait_async(backend, wait)
            else:
                wait, reserved, _ = backend.reserve_units(bound, cost)
                if wait:
                    await self._wait_units_async(backend, wait, cost, reserved)
        except StoreUnavailableError as error:
            self._unavailable(error)  # fail-open: start without units

    def _build_costed_sync(self, call_next: Runner) -> Runner:
        """A ``cost`` without ``settle``: no stamps to keep; a cost of 1 is an unweighted start."""
        layer = self
        switches = _config.state
        epoch = EPOCH
        pace = self.policy.pace_from_headers
        hooked = self.policy.delay_hook is not None or pace
        direct = call_next is terminal

        def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not switches.active:
                return call_next(wrapped, instance, args, kwargs)
            if layer._epoch != epoch.n:
                layer._refresh()
            start = layer._wstart  # the cost and a start with room in one call: None if started
            cost = layer._estimate(args, kwargs) if start is None else start(args, kwargs)
            if cost is not None:
                layer._start_costed(cost)
            try:
                if direct:  # innermost: call the function itself, one frame less
                    result = wrapped(*args, **kwargs)
                else:
                    result = call_next(wrapped, instance, args, kwargs)
            except Exception as exc:
                if hooked:
                    layer._failed(exc)
                raise
            if pace:
                layer._pace(result)
            return result

        return run

    def _build_costed_async(self, call_next: Runner) -> Runner:
        """The async twin of ``_build_costed_sync``."""
        layer = self
        switches = _config.state
        epoch = EPOCH
        pace = self.policy.pace_from_headers
        hooked = self.policy.delay_hook is not None or pace
        direct = call_next is terminal

        async def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not switches.active:
                return await call_next(wrapped, instance, args, kwargs)
            if layer._epoch != epoch.n:
                layer._refresh()
            start = layer._wstart  # the cost and a start with room in one call: None if started
            cost = layer._estimate(args, kwargs) if start is None else start(args, kwargs)
            if cost is not None:
                await layer._astart_costed(cost)
            try:
                if direct:  # innermost: await the function itself, one frame less
                    result = await wrapped(*args, **kwargs)
                else:
                    result = await call_next(wrapped, instance, args, kwargs)
            except Exception as exc:
                if hooked:
                    layer._failed(exc)
                raise
            if pace:
                layer._pace(result)
            return result

        return run

    def _weighted_settings(
        self,
    ) -> tuple[bool, bool, bool, Callable[..., int], int, float, int]:
        """What both weighted drivers read once: hooks, pacing, settling, the cost, the bounds."""
        policy = self.policy
        cost = policy.cost
        return (
            policy.delay_hook is not None or policy.pace_from_headers,
            policy.pace_from_headers,
            policy.settle is not None,
            cost if callable(cost) else int,  # a callable's estimate; ``fixed`` wins otherwise
            0 if callable(cost) else cost,
            self.max_wait,
            policy.rate,
        )

    def _build_weighted_sync(self, call_next: Runner) -> Runner:
        layer = self
        switches = _config.state
        epoch = EPOCH
        hooked, pace, settles, estimate, fixed, max_wait, rate = self._weighted_settings()

        def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not switches.active:
                return call_next(wrapped, instance, args, kwargs)
            backend: Any = layer._backend if layer._epoch == epoch.n else layer._refresh()
            start = layer._wstart
            stamps: tuple[float, float] | None = None
            if start is not None:  # the cost and a start with room: (now, cost) if started
                cost = start(args, kwargs)
                if type(cost) is tuple:
                    stamps = (cost[0], cost[0])
                    cost = cost[1]
            else:
                cost = fixed or estimate(*args, **kwargs)
                if type(cost) is not int or not 0 < cost <= rate:
                    cost = layer._cost(cost)
            if stamps is None:
                bound = max_wait if _deadline_now() is None else _until_deadline(max_wait)
                try:
                    wait, reserved, started = backend.reserve_units(bound, cost)
                    stamps = (
                        layer._wait_units_sync(backend, wait, cost, reserved)
                        if wait
                        else (reserved, started)
                    )
                except StoreUnavailableError as error:
                    layer._unavailable(error)  # fail-open: start without units
            try:
                result = call_next(wrapped, instance, args, kwargs)
            except Exception as exc:
                if hooked:
                    layer._failed(exc)
                raise
            if pace:
                layer._pace(result)
            if settles and stamps is not None:
                delta = layer._settled(result, cost)
                if delta:
                    try:
                        backend.settle_units(stamps[0], stamps[1], delta)
                    except StoreUnavailableError as error:
                        layer._release_failed(error)
            return result

        return run

    def _build_weighted_async(self, call_next: Runner) -> Runner:
        layer = self
        switches = _config.state
        epoch = EPOCH
        hooked, pace, settles, estimate, fixed, max_wait, rate = self._weighted_settings()

        async def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not switches.active:
                return await call_next(wrapped, instance, args, kwargs)
            backend: Any = layer._backend if layer._epoch == epoch.n else layer._refresh()
            start = layer._wstart
            stamps: tuple[float, float] | None = None
            if start is not None:  # the cost and a start with room: (now, cost) if started
                cost = start(args, kwargs)
                if type(cost) is tuple:
                    stamps = (cost[0], cost[0])
                    cost = cost[1]
            else:
                cost = fixed or estimate(*args, **kwargs)
                if type(cost) is not int or not 0 < cost <= rate:
                    cost = layer._cost(cost)
            if stamps is None:
                bound = max_wait if _deadline_now() is None else _until_deadline(max_wait)
                try:
                    if layer._remote:
                        wait, reserved, started = await backend.areserve_units(bound, cost)
                    else:
                        wait, reserved, started = backend.reserve_units(bound, cost)
                    stamps = (
                        await layer._wait_units_async(backend, wait, cost, reserved)
                        if wait
                        else (reserved, started)
                    )
                except StoreUnavailableError as error:
                    layer._unavailable(error)  # fail-open: start without units
            try:
                result = await call_next(wrapped, instance, args, kwargs)
            except Exception as exc:
                if hooked:
                    layer._failed(exc)
                raise
            if pace:
                layer._pace(result)
            if settles and stamps is not None:
                delta = layer._settled(result, cost)
                if delta:
                    try:
                        if layer._remote:
                            await backend.asettle_units(stamps[0], stamps[1], delta)
                        else:
                            backend.settle_units(stamps[0], stamps[1], delta)
                    except StoreUnavailableError as error:
                        layer._release_failed(error)
            return result

        return run

    # -- runners ---------------------------------------------------------------------------

    def build_sync(self, call_next: Runner) -> Runner:
        if self.weighted:
            if self.policy.settle is None:
                return self._build_costed_sync(call_next)
            return self._build_weighted_sync(call_next)
        layer = self
        switches = _config.state
        epoch = EPOCH
        max_wait = self.max_wait
        pace = self.policy.pace_from_headers
        hooked = self.policy.delay_hook is not None or pace
        direct = call_next is terminal

        def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not switches.active:
                return call_next(wrapped, instance, args, kwargs)
            backend = layer._backend if layer._epoch == epoch.n else layer._refresh()
            start_now = layer._start_now
            if start_now is None or start_now() is None:  # not started at once, in C
                bound = max_wait if _deadline_now() is None else _until_deadline(max_wait)
                try:
                    wait = backend.reserve(bound)
                    if wait:
                        layer._wait_sync(backend, wait)
                except StoreUnavailableError as error:
                    layer._unavailable(error)  # fail-open: start without a token
            try:
                if direct:  # innermost: call the function itself, one frame less
                    result = wrapped(*args, **kwargs)
                else:
                    result = call_next(wrapped, instance, args, kwargs)
            except Exception as exc:
                if hooked:
                    layer._failed(exc)
                raise
            if pace:
                layer._pace(result)
            return result

        return run

    def build_async(self, call_next: Runner) -> Runner:
        if self.weighted:
            if self.policy.settle is None:
                return self._build_costed_async(call_next)
            return self._build_weighted_async(call_next)
        layer = self
        switches = _config.state
        epoch = EPOCH
        max_wait = self.max_wait
        pace = self.policy.pace_from_headers
        hooked = self.policy.delay_hook is not None or pace
        direct = call_next is terminal

        async def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not switches.active:
                return await call_next(wrapped, instance, args, kwargs)
            backend = layer._backend if layer._epoch == epoch.n else layer._refresh()
            start_now = layer._start_now
            if start_now is None or start_now() is None:  # not started at once, in C
                bound = max_wait if _deadline_now() is None else _until_deadline(max_wait)
                try:
                    if layer._remote:
                        wait = await backend.areserve(bound, layer.rtt)
                    else:
                        wait = backend.reserve(bound)
                    if wait:
                        await layer._wait_async(backend, wait)
                except StoreUnavailableError as error:
                    layer._unavailable(error)  # fail-open: start without a token
            try:
                if direct:  # innermost: await the function itself, one frame less
                    result = await wrapped(*args, **kwargs)
                else:
                    result = await call_next(wrapped, instance, args, kwargs)
            except Exception as exc:
                if hooked:
                    layer._failed(exc)
                raise
            if pace:
                layer._pace(result)
            return result

        return run
