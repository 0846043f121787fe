"""
``RetryLayer``: ``@retry``'s per-policy constants and its sync and async drivers.

The success path is one ``try`` around the call. Everything else (the attempt count, the
deadline, shared progress, the delay hook, events) lives on the slow path, which starts at
the first failure. The decisions are written once in ``RetryCall`` (``_retry_call``), which
never sleeps and does no I/O of its own; four thin drivers (sync and async here, generator and async
generator in ``_retry_generators``) feed it outcomes and time and do the waiting. For the
common policy (no ``on_result``, ``timeout``, ``progress_timeout`` or ``attempt_timeout``)
the sync and async runners hold the loop inline rather than calling into
``_retry_sync``/``_retry_async``, and per-policy constants are computed once on the layer,
so a failure costs one ``next_delay`` call and a list append.
"""

from __future__ import annotations

import asyncio
import math

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from resilience import _clock
from resilience._decorating import Kind, Layer, Runner
from resilience._errors import AttemptTimeoutError
from resilience._fallback import Fallback
from resilience._policies import RetryPolicy
from resilience._retry import generators as _retry_generators
from resilience._retry.core import Progress, RetryCall
from resilience.telemetry import _retrying
from resilience.telemetry._bus import BUS, emit


if TYPE_CHECKING:
    from resilience.typing import Clock


__all__ = ["RetryLayer"]

_LISTENING = BUS.live  # mutated in place by attach/detach: `if _LISTENING:` is the cheapest test


class RetryLayer(Layer):
    """``@retry``'s layer: the drivers of the retry loop for each kind of callable."""

    decorator = "retry"
    # Besides the state, constants read once per failure instead of policy attributes:
    # `catch`/`check` (what is retryable, as an `except` clause plus an optional predicate),
    # `limit` (attempts, inf if None), `hook`, `zero` (backoff base 0), `base` and `guarded`
    # (a timeout or a budget to check).
    __slots__ = (
        "base",
        "catch",
        "check",
        "fallback",
        "guarded",
        "hook",
        "limit",
        "progress",
        "retryable",
        "tracker",
        "zero",
    )
    policy: RetryPolicy

    def __init__(self, policy: RetryPolicy) -> None:
        super().__init__(policy)
        self.progress = Progress() if policy.progress_timeout is not None else None
        self.tracker = _retrying.RetryProgress(self)
        self.fallback = Fallback(policy.fallback) if policy.fallback is not None else None
        self.limit: float = math.inf if policy.attempts is None else policy.attempts
        self.hook = policy.delay_hook
        self.base = policy.backoff.base
        self.zero = self.base == 0.0
        self.guarded = policy.timeout is not None or policy.budget is not None
        matches = policy._retryable
        on = policy.on
        classes = on if isinstance(on, tuple) else (on,)
        catch: type[Exception] | tuple[type[Exception], ...]
        check: Callable[[BaseException], bool] | None
        if all(isinstance(c, type) and issubclass(c, Exception) for c in classes):
            # `except on` is the whole test: no predicate call per failure
            catch, check = cast("type[Exception] | tuple[type[Exception], ...]", on), None
        else:  # a predicate, or BaseException classes, which `except Exception` never retries
            catch, check = Exception, matches
        if policy.attempt_timeout is None:
            self.retryable = matches
        else:  # a stalled attempt is retryable whatever `on` says
            self.retryable = lambda exc: isinstance(exc, AttemptTimeoutError) or matches(exc)
            if check is None:
                catch = cast("tuple[type[Exception], ...]", (AttemptTimeoutError, *classes))
            else:
                check = self.retryable
        self.catch = catch
        self.check = check

    def bind(self, kind: Kind, qualname: str) -> None:
        self.name = self.policy.name or qualname
        if self.policy.attempt_timeout is not None and kind not in ("async", "asyncgen"):
            msg = (
                f"@retry(attempt_timeout=...) needs an async callable: a running sync call "
                f"cannot be cancelled ({qualname} is a {kind} callable); "
                f"use timeout= for an overall deadline instead"
            )
            raise TypeError(msg)
        if self.policy.on_result is not None and kind in ("gen", "asyncgen"):
            msg = f"@retry(on_result=...) does not apply to generator functions ({qualname})"
            raise TypeError(msg)
        if self.fallback is not None:
            self.fallback.check("retry", kind, qualname)

    def build(self, kind: Kind, call_next: Runner) -> Runner:
        runner = super().build(kind, call_next)
        budget = self.policy.budget
        return runner if budget is None else budget.counting(runner, kind)  # one call, one deposit

    def _clock(self) -> Clock:
        return _clock.resolve(self.policy.clock)

    def _start(self, started: float | None) -> tuple[Clock, RetryCall, float]:
        clock = self._clock()
        now = clock.monotonic()
        call = RetryCall(self, now if started is None else started)
        self.tracker.enter(now)
        if self.progress is not None:
            self.progress.enter(now)
        return clock, call, now

    def _succeeded(self, clock: Clock, call: RetryCall | None) -> None:
        if self.progress is not None:
            self.progress.success(clock.monotonic())
        if call is not None and BUS.subs:
            emit("resilience.retry.recovered", {"attempts": call.attempt}, {"name": self.name})

    def _leave(self, clock: Clock) -> None:
        """The call's loop is over (returned, raised or gave up)."""
        self.tracker.leave(clock.monotonic())
        if self.progress is not None:
            self.progress.leave()

    def _sleep(self, clock: Clock, delay: float) -> None:
        """Wait *delay* seconds, counted as waiting by the progress tracker."""
        tracker = self.tracker
        tracker.sleeping()
        try:
            clock.sleep(delay)
        finally:
            tracker.awake(clock.monotonic())

    async def _asleep(self, clock: Clock, delay: float) -> None:
        """Wait *delay* seconds without blocking the loop, counted as waiting."""
        tracker = self.tracker
        tracker.sleeping()
        try:
            await clock.asleep(delay)
        finally:
            tracker.awake(clock.monotonic())

    # -- sync ------------------------------------------------------------------------

    def build_sync(self, call_next: Runner, observe: bool = True) -> Runner:
        policy = self.policy
        # While anyone listens (BUS.live is non-empty), calls take the twin that emits events.
        observed = (
            self.build_sync(_retrying.attempt_events(self, call_next), observe=False)
            if observe
            else None
        )
        catch, check = self.catch, self.check
        slow = self._retry_sync
        layer, tracker = self, self.tracker
        inflight, done = tracker.inflight, tracker.done
        if policy.on_result is None and policy.progress_timeout is None and policy.timeout is None:

            def fast(
                wrapped: Callable[..., Any],
                instance: Any,
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
            ) -> Any:
                if _LISTENING and observed is not None:
                    return _retrying.run_observed(observed, wrapped, instance, args, kwargs)
                try:
                    return call_next(wrapped, instance, args, kwargs)
                except catch as exc:
                    if check is not None and not check(exc):
                        raise
                    outcome: Any = exc
                # `_retry_sync` without on_result, inline: a call fewer per failing call.
                clock = _clock.resolve(policy.clock)
                now = clock.monotonic()
                call = RetryCall(layer, now)
                if not inflight:  # `tracker.enter(now)`, inline
                    tracker.last_report = now
                    tracker.due_at = now + tracker.interval
                inflight.append(None)
                try:
                    while True:
                        delay = call.next_delay(outcome, now)
                        if delay is None:
                            return call.give_up(outcome, True, clock.monotonic())
                        if BUS.subs:
                            call.announce(outcome, delay)
                        if delay > 0.0:
                            layer._sleep(clock, delay)
                        try:
                            result = call_next(wrapped, instance, args, kwargs)
                        except catch as exc:
                            if check is not None and not check(exc):
                                raise
                            outcome = exc
                        else:
                            if BUS.subs:
                                layer._succeeded(clock, call)
                            return result
                        now = clock.monotonic()
                finally:
                    # The queued failures' tracebacks hold this frame: no cycle back to them.
                    outcome = None
                    inflight.pop()  # `tracker.leave(clock.monotonic())`, inline
                    done.append(None)
                    now = clock.monotonic()
                    if now >= tracker.due_at:
                        tracker.report_if_due(now)

            return fast

        on_result = policy.on_result
        timed = policy.timeout is not None
        progress = self.progress
        clock_of = self._clock

        def general(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if _LISTENING and observed is not None:
                return _retrying.run_observed(observed, wrapped, instance, args, kwargs)
            started = clock_of().monotonic() if timed else None
            try:
                result = call_next(wrapped, instance, args, kwargs)
            except catch as exc:
                if check is not None and not check(exc):
                    raise
                failure = exc
            else:
                if on_result is None or not on_result(result):
                    if progress is not None:
                        progress.success(clock_of().monotonic())
                    return result
                return slow(call_next, wrapped, instance, args, kwargs, result, False, started)
            return slow(call_next, wrapped, instance, args, kwargs, failure, True, started)

        return general

    def _retry_sync(
        self,
        call_next: Runner,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        outcome: object,
        is_exc: bool,
        started: float | None,
    ) -> Any:
        catch, check = self.catch, self.check
        on_result = self.policy.on_result
        progress = self.progress
        clock, call, now = self._start(started)
        try:
            while True:
                delay = call.next_delay(outcome, now)
                if delay is None:
                    return call.give_up(outcome, is_exc, clock.monotonic())
                if BUS.subs:
                    call.announce(outcome, delay)
                if delay > 0.0:
                    self._sleep(clock, delay)
                try:
                    result = call_next(wrapped, instance, args, kwargs)
                except catch as exc:
                    if check is not None and not check(exc):
                        raise
                    outcome, is_exc = exc, True
                else:
                    if on_result is None or not on_result(result):
                        if progress is not None or BUS.subs:
                            self._succeeded(clock, call)
                        return result
                    outcome, is_exc = result, False
                now = clock.monotonic()
        finally:
            outcome = None  # the queued failures' tracebacks hold this frame: no cycle
            self._leave(clock)

    # -- async -----------------------------------------------------------------------

    def build_async(self, call_next: Runner, observe: bool = True) -> Runner:
        policy = self.policy
        observed = (
            self.build_async(_retrying.attempt_events_async(self, call_next), observe=False)
            if observe
            else None
        )
        catch, check = self.catch, self.check
        slow = self._retry_async
        attempt = self._timed(call_next)  # call_next itself without attempt_timeout
        layer, tracker = self, self.tracker
        inflight, done = tracker.inflight, tracker.done
        if (
            policy.on_result is None
            and policy.progress_timeout is None
            and policy.timeout is None
            and policy.attempt_timeout is None
        ):

            async def fast(
                wrapped: Callable[..., Any],
                instance: Any,
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
            ) -> Any:
                if _LISTENING and observed is not None:
                    return await _retrying.run_observed_async(
                        observed, wrapped, instance, args, kwargs
                    )
                try:
                    return await call_next(wrapped, instance, args, kwargs)
                except catch as exc:
                    if check is not None and not check(exc):
                        raise
                    outcome: Any = exc
                # `_retry_async` without on_result and attempt_timeout, inline: a second
                # coroutine per failing call costs more than the rest of its bookkeeping.
                clock = _clock.resolve(policy.clock)
                now = clock.monotonic()
                call = RetryCall(layer, now)
                if not inflight:  # `tracker.enter(now)`, inline
                    tracker.last_report = now
                    tracker.due_at = now + tracker.interval
                inflight.append(None)
                try:
                    while True:
                        delay = call.next_delay(outcome, now)
                        if delay is None:
                            return await call.agive_up(outcome, True, clock.monotonic())
                        if BUS.subs:
                            call.announce(outcome, delay)
                        if delay > 0.0:
                            await layer._asleep(clock, delay)
                        try:
                            result = await call_next(wrapped, instance, args, kwargs)
                        except catch as exc:
                            if check is not None and not check(exc):
                                raise
                            outcome = exc
                        else:
                            if BUS.subs:
                                layer._succeeded(clock, call)
                            return result
                        now = clock.monotonic()
                finally:
                    # The queued failures' tracebacks hold this frame: no cycle back to them.
                    outcome = None
                    inflight.pop()  # `tracker.leave(clock.monotonic())`, inline
                    done.append(None)
                    now = clock.monotonic()
                    if now >= tracker.due_at:
                        tracker.report_if_due(now)

            return fast

        on_result = policy.on_result
        timed = policy.timeout is not None
        progress = self.progress
        clock_of = self._clock

        async def general(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if _LISTENING and observed is not None:
                return await _retrying.run_observed_async(observed, wrapped, instance, args, kwargs)
            started = clock_of().monotonic() if timed else None
            try:
                result = await attempt(wrapped, instance, args, kwargs)
            except catch as exc:
                if check is not None and not check(exc):
                    raise
                failure = exc
            else:
                if on_result is None or not on_result(result):
                    if progress is not None:
                        progress.success(clock_of().monotonic())
                    return result
                return await slow(attempt, wrapped, instance, args, kwargs, result, False, started)
            return await slow(attempt, wrapped, instance, args, kwargs, failure, True, started)

        return general

    def _timed(self, call_next: Runner) -> Runner:
        """*call_next* bounded by ``attempt_timeout`` (itself when there is none)."""
        limit = cast("float | None", self.policy.attempt_timeout)
        if limit is None:
            return call_next
        name = self.name

        async def timed(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            scope = asyncio.timeout(limit)
            try:
                async with scope:
                    return await call_next(wrapped, instance, args, kwargs)
            except TimeoutError as exc:
                if scope.expired():
                    raise AttemptTimeoutError(name, limit) from exc
                raise

        return timed

    async def _retry_async(
        self,
        attempt: Runner,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        outcome: object,
        is_exc: bool,
        started: float | None,
    ) -> Any:
        catch, check = self.catch, self.check
        on_result = self.policy.on_result
        progress = self.progress
        clock, call, now = self._start(started)
        try:
            while True:
                delay = call.next_delay(outcome, now)
                if delay is None:
                    return await call.agive_up(outcome, is_exc, clock.monotonic())
                if BUS.subs:
                    call.announce(outcome, delay)
                if delay > 0.0:
                    await self._asleep(clock, delay)
                try:
                    result = await attempt(wrapped, instance, args, kwargs)
                except catch as exc:
                    if check is not None and not check(exc):
                        raise
                    outcome, is_exc = exc, True
                else:
                    if on_result is None or not on_result(result):
                        if progress is not None or BUS.subs:
                            self._succeeded(clock, call)
                        return result
                    outcome, is_exc = result, False
                now = clock.monotonic()
        finally:
            outcome = None  # the queued failures' tracebacks hold this frame: no cycle
            self._leave(clock)

    # -- generators -------------------------------------------------------------------

    def build_gen(self, call_next: Runner) -> Runner:
        return _retry_generators.build_gen(self, call_next)

    def build_asyncgen(self, call_next: Runner) -> Runner:
        return _retry_generators.build_asyncgen(self, call_next)
