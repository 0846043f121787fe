"""
``@retry``: call again on failure, waiting by a ``Backoff`` or by what the server says.

The success path is one ``try`` around the call. Everything else (the attempt count, the
deadline, shared progress, the delay hook, events) lives on the slow path, which starts at
the first failure. The decisions are written once in ``_RetryCall``, which does no I/O and
never sleeps; four thin drivers (sync, async, generator, async generator) feed it outcomes
and time and do the waiting. For the common policy (no ``on_result``, ``timeout``,
``progress_timeout`` or ``attempt_timeout``) the sync and async runners hold the loop inline
rather than calling into ``_retry_sync``/``_retry_async``, and per-policy constants are
computed once on the layer, so a failure costs one ``next_delay`` call and a list append.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import random
import threading

from collections.abc import AsyncGenerator, Callable, Generator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypedDict, TypeVar, Unpack, cast, overload

from resilience import _clock, _config
from resilience._decorating import Decorator, Kind, Layer, Runner, apply, is_target, policy_from
from resilience._errors import AttemptTimeoutError, ResilienceError
from resilience._fallback import Fallback
from resilience._policies import RetryPolicy
from resilience._retry_after import retry_after_from
from resilience.telemetry import _retrying
from resilience.telemetry._bus import BUS, emit


if TYPE_CHECKING:
    from resilience._backoff import Backoff
    from resilience._budget import RetryBudget
    from resilience.typing import Clock, ExceptionFilter


__all__ = ["RetryFields", "retry"]

_LISTENING = BUS.live  # mutated in place by attach/detach: `if _LISTENING:` is the cheapest test
_SWITCHES = _config.state  # likewise never replaced, only its attributes set
_QUEUED_MAX = _retrying.RetryProgress.BOUND

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class RetryFields(TypedDict, total=False):
    """The keyword arguments ``@retry(...)`` accepts: ``RetryPolicy``'s fields."""

    attempts: int | None
    timeout: float | timedelta | None
    progress_timeout: float | timedelta | None
    backoff: Backoff
    on: ExceptionFilter
    on_result: Callable[[Any], bool] | None
    delay_hook: Callable[[Any], float | None] | None
    retry_after_cap: float | timedelta
    attempt_timeout: float | timedelta | None
    name: str | None
    clock: Clock | None
    fallback: Any
    budget: RetryBudget | None


class _Progress:
    """When a call of one decorated function last succeeded, shared by all its calls."""

    __slots__ = ("_lock", "last", "retrying")

    def __init__(self) -> None:
        self.last = -math.inf
        self.retrying = 0
        self._lock = threading.Lock()

    def enter(self, now: float) -> None:
        """A call starts retrying; the first of a busy spell restarts the progress clock."""
        with self._lock:
            if self.retrying == 0:
                self.last = max(self.last, now)
            self.retrying += 1

    def leave(self) -> None:
        with self._lock:
            self.retrying -= 1

    def success(self, now: float) -> None:
        self.last = max(self.last, now)

    def stalled_for(self, now: float) -> float:
        return now - self.last


class _RetryCall:
    """The decisions of one call's retry loop: pure, fed with outcomes and times."""

    # `attempt - 1` is the retry number: no separate counter to keep in step.
    __slots__ = ("attempt", "layer", "previous", "reason", "server_delay", "started")

    def __init__(self, layer: RetryLayer, started: float) -> None:
        self.layer = layer
        self.started = started
        self.attempt = 1
        self.previous = layer.base
        # `reason` and `server_delay` are set by `next_delay` before anything reads them.

    def next_delay(self, outcome: object, now: float) -> float | None:
        """Return the wait before the next attempt, or None to give up (see ``reason``)."""
        layer = self.layer
        # The tracker's `failed`, inline: one lock-free append; the lock only when due.
        tracker = layer.tracker
        queued = tracker.outcomes
        queued.append(outcome)
        if now >= tracker.due_at or len(queued) >= _QUEUED_MAX:
            tracker.report_if_due(now)
        switches = _SWITCHES
        if not switches.active:
            self.reason = "resilience is switched off (set_active(False))"
            return None
        limit = layer.limit  # math.inf for attempts=None
        testing = switches.testing
        if testing and switches.testing_attempts is not None:
            limit = min(limit, switches.testing_attempts)
        if self.attempt >= limit:
            self.reason = f"the limit of {limit} attempt(s) was reached"
            return None
        if layer.progress is not None and self.progress_expired(now):
            return None
        hook = layer.hook
        if hook is retry_after_from:  # the default hook: skip its call when it has no source
            try:
                hinted = (
                    isinstance(outcome, ResilienceError)
                    or getattr(outcome, "response", None) is not None
                    or getattr(outcome, "headers", None) is not None
                )
            except Exception:  # a raising property: let the hook decide (it never raises)
                hinted = True
        else:
            hinted = hook is not None
        if hinted or not layer.zero:
            delay = self._delay_for(outcome)
        else:  # base 0: every strategy and jitter gives 0, so no draw either
            delay = 0.0
            self.server_delay = False
        if testing:
            delay = 0.0
        if layer.guarded and not self._within_limits(delay, now):
            return None
        self.attempt += 1
        return delay

    def _within_limits(self, delay: float, now: float) -> bool:
        """Whether the timeout and the budget allow a retry after *delay*."""
        policy = self.layer.policy
        timeout = policy.timeout
        if timeout is not None and (now - self.started) + delay > timeout:  # type: ignore[operator]
            self.reason = f"the next wait of {delay:.3f} s would cross the timeout of {timeout:g} s"
            return False
        budget = policy.budget
        if budget is not None and not budget.try_retry():
            self.reason = f"the retry budget is spent ({budget.describe()})"
            return False
        return True

    def progress_expired(self, now: float) -> bool:
        """Whether no call of the function has succeeded for ``progress_timeout``."""
        limit = self.layer.policy.progress_timeout
        progress = self.layer.progress
        if limit is None or progress is None:
            return False
        stalled = progress.stalled_for(now)
        if stalled >= limit:  # type: ignore[operator]
            self.reason = f"no call succeeded for {stalled:.3f} s (progress_timeout {limit:g} s)"
            return True
        return False

    def _delay_for(self, outcome: object) -> float:
        policy = self.layer.policy
        hook = policy.delay_hook
        server = None
        if hook is not None:
            try:
                server = hook(outcome)
            except Exception:  # a broken hook must not replace the caller's error
                server = None
        if server is not None and server > 0 and math.isfinite(server):
            self.server_delay = True
            return min(float(server), cast("float", policy.retry_after_cap))
        self.server_delay = False
        backoff = policy.backoff
        if backoff.base == 0.0:  # every strategy and jitter gives 0: skip the draw
            return 0.0
        delay = backoff._next(self.attempt - 1, self.previous, random.random())
        self.previous = delay
        return delay

    def give_up(self, outcome: object, is_exc: bool, now: float) -> object:
        """Emit the give-up event; re-raise the last exception or return the last result."""
        elapsed = now - self.started
        name = self.layer.name
        if BUS.subs:
            emit(
                "resilience.retry.give_up",
                {"attempts": self.attempt, "elapsed": elapsed},
                {"name": name, "reason": self.reason, "outcome": outcome},
            )
        if is_exc:
            assert isinstance(outcome, BaseException)
            outcome.add_note(
                f"resilience.retry: gave up on {name} after {self.attempt} attempt(s) "
                f"in {elapsed:.3f} s: {self.reason}"
            )
            if self.layer.fallback is not None and _config.state.active:
                return self.layer.fallback.sync(outcome)
            raise outcome
        return outcome

    async def agive_up(self, outcome: object, is_exc: bool, now: float) -> object:
        """``give_up`` for async drivers: an async fallback's answer is awaited."""
        answer = self.give_up(outcome, is_exc, now)
        if is_exc and inspect.isawaitable(answer):  # only a fallback answers for an exception
            return await answer
        return answer

    def announce(self, outcome: object, delay: float) -> None:
        """Emit the event that a retry is coming after *delay* seconds."""
        emit(
            "resilience.retry.retry",
            {"attempt": self.attempt - 1, "delay": delay},
            {
                "name": self.layer.name,
                "outcome": outcome,
                "server_delay": self.server_delay,
                "reason": _retrying.describe(outcome),
            },
        )

    def sleep(self, clock: Clock, delay: float) -> None:
        """Wait *delay* seconds, counted as waiting by the progress tracker."""
        tracker = self.layer.tracker
        tracker.sleeping()
        try:
            clock.sleep(delay)
        finally:
            tracker.awake(clock.monotonic())

    async def asleep(self, clock: Clock, delay: float) -> None:
        """Wait *delay* seconds without blocking the loop, counted as waiting."""
        tracker = self.layer.tracker
        tracker.sleeping()
        try:
            await clock.asleep(delay)
        finally:
            tracker.awake(clock.monotonic())


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
        self.progress = _Progress() if policy.progress_timeout is not None else None
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
        if all(isinstance(c, type) and issubclass(c, Exception) for c in classes):
            # `except on` is the whole test: no predicate call per failure
            self.catch: type[Exception] | tuple[type[Exception], ...] = on  # type: ignore[assignment]
            self.check: Callable[[BaseException], bool] | None = None
        else:  # a predicate, or BaseException classes, which `except Exception` never retries
            self.catch, self.check = Exception, matches
        if policy.attempt_timeout is None:
            self.retryable = matches
        else:  # a stalled attempt is retryable whatever `on` says
            self.retryable = lambda exc: isinstance(exc, AttemptTimeoutError) or matches(exc)
            if self.check is None:
                self.catch = (AttemptTimeoutError, *classes)
            else:
                self.check = self.retryable

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
        return runner if budget is None else budget.counting(runner)  # one call, one deposit

    def _clock(self) -> Clock:
        clock: Clock = self.policy.clock or _clock._default.clock  # type: ignore[assignment]
        return clock

    def _start(self, started: float | None) -> tuple[Clock, _RetryCall, float]:
        clock = self._clock()
        now = clock.monotonic()
        call = _RetryCall(self, now if started is None else started)
        self.tracker.enter(now)
        if self.progress is not None:
            self.progress.enter(now)
        return clock, call, now

    def _succeeded(self, clock: Clock, call: _RetryCall | None) -> None:
        if self.progress is not None:
            self.progress.success(clock.monotonic())
        if call is not None and BUS.subs:
            emit("resilience.retry.recovered", {"attempts": call.attempt}, {"name": self.name})

    def _leave(self, clock: Clock) -> None:
        """The call's loop is over (returned, raised or gave up)."""
        self.tracker.leave(clock.monotonic())
        if self.progress is not None:
            self.progress.leave()

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
                clock: Clock = policy.clock or _clock._default.clock  # type: ignore[assignment]
                now = clock.monotonic()
                call = _RetryCall(layer, now)
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
                            call.sleep(clock, delay)
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
                    call.sleep(clock, delay)
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
                clock: Clock = policy.clock or _clock._default.clock  # type: ignore[assignment]
                now = clock.monotonic()
                call = _RetryCall(layer, now)
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
                            await call.asleep(clock, delay)
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
            try:
                async with asyncio.timeout(limit) as scope:
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
                    await call.asleep(clock, delay)
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
        layer = self
        retryable = self.retryable

        def runner(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Generator[Any, Any, Any]:
            call: _RetryCall | None = None
            failure: Exception | None = None
            clock = layer._clock()
            try:
                while True:
                    gen = call_next(wrapped, instance, args, kwargs)
                    try:
                        first = next(gen)
                    except StopIteration as stop:
                        layer._succeeded(clock, call)
                        return stop.value
                    except Exception as exc:
                        if not retryable(exc):
                            raise
                        failure = exc
                    else:
                        layer._succeeded(clock, call)
                        break
                    if call is None:
                        clock, call, _ = layer._start(None)
                    delay = call.next_delay(failure, clock.monotonic())
                    if delay is None:
                        call.give_up(failure, True, clock.monotonic())
                    else:
                        if BUS.subs:
                            call.announce(failure, delay)
                        if delay > 0.0:
                            call.sleep(clock, delay)
            finally:
                failure = None  # the queued failures' tracebacks hold this frame: no cycle
                if call is not None:
                    layer._leave(clock)
            return (yield from _delegate(gen, first, retryable, layer.name))

        return runner

    def build_asyncgen(self, call_next: Runner) -> Runner:
        layer = self
        retryable = self.retryable
        limit = cast("float | None", self.policy.attempt_timeout)

        async def runner(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> AsyncGenerator[Any, Any]:
            call: _RetryCall | None = None
            failure: Exception | None = None
            clock = layer._clock()
            try:
                while True:
                    agen = call_next(wrapped, instance, args, kwargs)
                    try:
                        if limit is None:
                            first = await agen.__anext__()
                        else:
                            first = await _first_within(agen, limit, layer.name)
                    except StopAsyncIteration:
                        layer._succeeded(clock, call)
                        return
                    except Exception as exc:
                        if not retryable(exc):
                            raise
                        failure = exc
                        await agen.aclose()
                    else:
                        layer._succeeded(clock, call)
                        break
                    if call is None:
                        clock, call, _ = layer._start(None)
                    delay = call.next_delay(failure, clock.monotonic())
                    if delay is None:
                        call.give_up(failure, True, clock.monotonic())
                    else:
                        if BUS.subs:
                            call.announce(failure, delay)
                        if delay > 0.0:
                            await call.asleep(clock, delay)
            finally:
                failure = None  # the queued failures' tracebacks hold this frame: no cycle
                if call is not None:
                    layer._leave(clock)
            # Async generators cannot `yield from`: forward asend/athrow/aclose by hand.
            item = first
            while True:
                try:
                    sent = yield item
                except GeneratorExit:
                    await agen.aclose()
                    raise
                except BaseException as thrown:
                    step = agen.athrow(thrown)
                else:
                    step = agen.asend(sent)
                try:
                    item = await step
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    if retryable(exc):
                        exc.add_note(_not_retried_note(layer.name))
                    raise

        return runner


def _not_retried_note(name: str) -> str:
    return (
        f"resilience.retry: not retried: {name} had already yielded items, "
        f"and a retry would repeat them"
    )


def _delegate(
    gen: Generator[Any, Any, Any],
    first: Any,
    retryable: Callable[[BaseException], bool],
    name: str,
) -> Generator[Any, Any, Any]:
    """Yield *first*, then pass every send, throw and close through to *gen*."""
    item = first
    while True:
        try:
            sent = yield item
        except GeneratorExit:
            gen.close()
            raise
        except BaseException as thrown:  # forwarded into the generator, as `yield from` does
            step: Callable[[Any], Any] = gen.throw
            argument: Any = thrown
        else:
            step, argument = gen.send, sent
        try:
            item = step(argument)
        except StopIteration as stop:
            return stop.value
        except Exception as exc:
            if retryable(exc):
                exc.add_note(_not_retried_note(name))
            raise


async def _first_within(agen: Any, limit: float, name: str) -> Any:
    try:
        async with asyncio.timeout(limit) as scope:
            return await agen.__anext__()
    except TimeoutError as exc:
        if scope.expired():
            raise AttemptTimeoutError(name, limit) from exc
        raise


@overload
def retry(func: classmethod[T, P, R], /) -> classmethod[T, P, R]: ...
@overload
def retry(func: staticmethod[P, R], /) -> staticmethod[P, R]: ...
@overload
def retry(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def retry(
    policy: RetryPolicy | None = None, /, **fields: Unpack[RetryFields]
) -> Decorator[RetryPolicy]: ...
def retry(policy: Any = None, /, **fields: Any) -> Any:
    """
    Retry a callable on failure, waiting between attempts.

    Use bare (``@retry``), with a policy (``@retry(RetryPolicy(attempts=3))``) or with the
    policy's fields (``@retry(attempts=3)``). Works on sync and async functions, generator
    functions, methods, classmethods and staticmethods.

    On giving up, the last exception itself is re-raised (with a note saying how many
    attempts over how long), or, when retrying on results, the last result is returned.

    Args:
        policy: A ``RetryPolicy``; keyword *fields* build one, or amend the one given.

    Raises:
        TypeError: At decoration time, for ``attempt_timeout`` on a sync callable and for
            arguments of the wrong type.
        ValueError: At decoration time, for out-of-range fields.

    .. versionadded:: 0.1.0
    """
    if is_target(policy) and not fields:  # bare @retry
        return apply(RetryLayer(RetryPolicy()), policy)
    return Decorator(policy_from(RetryPolicy, "retry", policy, fields), RetryLayer)
