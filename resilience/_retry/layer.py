"""
``RetryLayer``: what ``@retry`` retries, how it gives up, and its drivers for plain calls.

A driver is one loop per kind and flavour: attempt, and on a retryable outcome ask the core
(``RetryCall``, in ``core``) what to do, do it (withdraw from the budget, wait, or give up),
and attempt again. The sync and async drivers here, the generator and async-generator
drivers in ``generators``, differ only in what they await. The success path is the first
pass of the loop: one ``try`` around the call and a few constant tests; everything else
(the clock, the attempt count, shared progress, events) starts at the first failure.
"""

from __future__ import annotations

import asyncio

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from resilience import _clock, _config, _deadline
from resilience._decorating import Kind, Layer, Runner
from resilience._errors import AttemptTimeoutError
from resilience._fallback import Fallback
from resilience._policies import RetryPolicy
from resilience._retry import generators as _retry_generators
from resilience._retry.core import WITHDRAW, RetryCall, Rules
from resilience.telemetry import _retrying
from resilience.telemetry._bus import BUS, emit


if TYPE_CHECKING:
    from resilience.typing import Clock


__all__ = ["RetryLayer"]

_LISTENING = BUS.live  # mutated in place by attach/detach: `if _LISTENING:` is the cheapest test


class RetryLayer(Layer):
    """``@retry``'s layer: the drivers of the retry loop for each kind of callable."""

    decorator = "retry"
    # `catch`/`check`: what is retryable, as an `except` clause plus an optional predicate
    # (None when the clause is the whole test); `rules`: the constants the core reads.
    __slots__ = (
        "catch",
        "check",
        "fallback",
        "last_success",
        "retryable",
        "rules",
        "tracker",
    )
    policy: RetryPolicy

    def __init__(self, policy: RetryPolicy) -> None:
        super().__init__(policy)
        self.rules = Rules(policy)
        self.last_success = self.rules.last_success
        self.tracker = _retrying.RetryProgress(self)
        self.fallback = Fallback(policy.fallback) if policy.fallback is not None else None
        matches = policy._retryable
        on = policy.on
        classes = on if isinstance(on, tuple) else (on,)
        catch: type[Exception] | tuple[type[Exception], ...]
        check: Callable[[BaseException], bool] | None
        if all(isinstance(c, type) and issubclass(c, Exception) for c in classes):
            # `except on` is the whole test: no predicate call per failure
            catch, check = cast("type[Exception] | tuple[type[Exception], ...]", on), None
        else:
            # A predicate, or BaseException classes: `except Exception` keeps control flow
            # (CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit) out of reach.
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
        budget = self.rules.budget
        if budget is None or kind == "asyncgen":  # the async-generator driver counts itself
            return runner
        return budget.counting(runner, kind)  # one call, one deposit

    # -- the steps every driver takes ----------------------------------------------------

    def _clock(self) -> Clock:
        return _clock.resolve(self.policy.clock)

    def _start(self, started: float | None, failure: object) -> tuple[Clock, RetryCall, float]:
        """The first *failure*: the call enters its retry loop (and the tracker counts it)."""
        clock = _clock.resolve(self.policy.clock)
        now = clock.monotonic()
        call = RetryCall(self.rules, now if started is None else started)
        self.tracker.enter(now, failure)
        if self.last_success is not None:
            self.last_success.enter(now)
        return clock, call, now

    def _succeeded(self, call: RetryCall | None) -> None:
        if self.last_success is not None:
            self.last_success.success(self._clock().monotonic())
        if call is not None and BUS.subs:
            emit("resilience.retry.recovered", {"attempts": call.attempt}, {"name": self.name})

    def _announce(self, call: RetryCall, outcome: object, delay: float) -> None:
        """Emit the event that a retry is coming after *delay* seconds."""
        emit(
            "resilience.retry.retry",
            {"attempt": call.attempt - 1, "delay": delay},
            {
                "name": self.name,
                "outcome": outcome,
                "server_delay": call.server_delay,
                "reason": _retrying.describe(outcome),
            },
        )

    def _gave_up(self, call: RetryCall, outcome: Any, is_exc: bool, now: float) -> Fallback | None:
        """Emit the give-up event and note it on the error; the fallback that answers, if any."""
        elapsed = now - call.started
        budget = self.policy.budget
        if budget is not None:  # a quota refunds only the calls that did not give up
            budget.gave_up(outcome)
        if BUS.subs:
            emit(
                "resilience.retry.give_up",
                {"attempts": call.attempt, "elapsed": elapsed},
                {"name": self.name, "reason": call.reason, "outcome": outcome},
            )
        if not is_exc:
            return None
        outcome.add_note(f"resilience.retry: gave up on {self.name} {call.summary(elapsed)}")
        return self.fallback if _config.state.active else None

    def _give_up(self, call: RetryCall, outcome: Any, is_exc: bool, now: float) -> Any:
        """Re-raise the last exception, return the last result, or answer with the fallback."""
        fallback = self._gave_up(call, outcome, is_exc, now)
        if not is_exc:
            return outcome
        if fallback is not None:
            return fallback.sync(outcome)
        raise outcome

    async def _agive_up(self, call: RetryCall, outcome: Any, is_exc: bool, now: float) -> Any:
        """``_give_up`` for async drivers: an async fallback's answer is awaited."""
        fallback = self._gave_up(call, outcome, is_exc, now)
        if not is_exc:
            return outcome
        if fallback is not None:
            return await fallback.asynchronous(outcome)
        raise outcome

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

    # -- plain calls ------------------------------------------------------------------

    def build_sync(self, call_next: Runner, observe: bool = True) -> Runner:
        # While anyone listens (BUS.live is non-empty), calls take the twin that emits events.
        observed = (
            self.build_sync(_retrying.attempt_events(self, call_next), observe=False)
            if observe
            else None
        )
        layer, budget = self, self.rules.budget
        start, failed, tracker = self._start, self.tracker.failed, self.tracker
        catch, check, on_result = self.catch, self.check, self.policy.on_result
        timed, last_success = self.policy.timeout is not None, self.last_success
        plain = on_result is None and last_success is None

        def runner(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if _LISTENING and observed is not None:
                return _retrying.run_observed(observed, wrapped, instance, args, kwargs)
            call: RetryCall | None = None
            outcome: Any
            started = layer._clock().monotonic() if timed else None
            try:
                while True:
                    try:
                        result = call_next(wrapped, instance, args, kwargs)
                    except catch as exc:
                        if check is not None and not check(exc):
                            raise
                        outcome, is_exc = exc, True
                    else:
                        if plain and call is None:  # the success path: nothing to record
                            return result
                        if on_result is None or not on_result(result):
                            if last_success is not None or BUS.subs:
                                layer._succeeded(call)
                            return result
                        outcome, is_exc = result, False
                    if call is None:
                        clock, call, now = start(started, outcome)
                    else:
                        now = clock.monotonic()
                        failed(outcome, now)
                    delay = call.next_delay(outcome, now)
                    if delay is WITHDRAW:
                        assert budget is not None
                        delay = call.granted(budget.try_retry(outcome, call.server_delay))
                    if delay is None:
                        return layer._give_up(call, outcome, is_exc, clock.monotonic())
                    if BUS.subs:
                        layer._announce(call, outcome, delay)
                    if delay > 0.0:
                        layer._sleep(clock, delay)
            finally:
                if call is not None:
                    outcome = None  # the queued failures' tracebacks hold this frame: no cycle
                    tracker.leave(clock.monotonic())
                    if last_success is not None:
                        last_success.leave()

        return runner

    def build_async(self, call_next: Runner, observe: bool = True) -> Runner:
        observed = (
            self.build_async(_retrying.attempt_events_async(self, call_next), observe=False)
            if observe
            else None
        )
        attempt = self._timed(call_next)  # call_next itself without attempt_timeout
        layer, budget = self, self.rules.budget
        start, failed, tracker = self._start, self.tracker.failed, self.tracker
        catch, check, on_result = self.catch, self.check, self.policy.on_result
        timed, last_success = self.policy.timeout is not None, self.last_success
        plain = on_result is None and last_success is None

        async def runner(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if _LISTENING and observed is not None:
                return await _retrying.run_observed_async(observed, wrapped, instance, args, kwargs)
            call: RetryCall | None = None
            outcome: Any
            started = layer._clock().monotonic() if timed else None
            try:
                while True:
                    try:
                        result = await attempt(wrapped, instance, args, kwargs)
                    except catch as exc:
                        if check is not None and not check(exc):
                            raise
                        outcome, is_exc = exc, True
                    else:
                        if plain and call is None:  # the success path: nothing to record
                            return result
                        if on_result is None or not on_result(result):
                            if last_success is not None or BUS.subs:
                                layer._succeeded(call)
                            return result
                        outcome, is_exc = result, False
                    if call is None:
                        clock, call, now = start(started, outcome)
                    else:
                        now = clock.monotonic()
                        failed(outcome, now)
                    delay = call.next_delay(outcome, now)
                    if delay is WITHDRAW:
                        assert budget is not None
                        delay = call.granted(await budget.atry_retry(outcome, call.server_delay))
                    if delay is None:
                        return await layer._agive_up(call, outcome, is_exc, clock.monotonic())
                    if BUS.subs:
                        layer._announce(call, outcome, delay)
                    if delay > 0.0:
                        await layer._asleep(clock, delay)
            finally:
                if call is not None:
                    outcome = None  # the queued failures' tracebacks hold this frame: no cycle
                    tracker.leave(clock.monotonic())
                    if last_success is not None:
                        last_success.leave()

        return runner

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
            left = _deadline.remaining()
            bound = limit if left is None or left >= limit else left  # never past the deadline
            scope = asyncio.timeout(bound)
            try:
                async with scope:
                    return await call_next(wrapped, instance, args, kwargs)
            except TimeoutError as exc:
                if not scope.expired():
                    raise
                deadline = _deadline.current()
                if bound < limit and deadline is not None:
                    raise deadline.error(name) from exc
                raise AttemptTimeoutError(name, limit) from exc

        return timed

    # -- generators -------------------------------------------------------------------

    def build_gen(self, call_next: Runner) -> Runner:
        return _retry_generators.build_gen(self, call_next)

    def build_asyncgen(self, call_next: Runner) -> Runner:
        return _retry_generators.build_asyncgen(self, call_next)
