"""
``HedgeLayer``: the race of one hedged call, and its async driver.

The primary attempt runs inline, in the caller's own task, under a timer (as
``asyncio.timeout`` runs its block): when it answers before the delay, the call costs one
timer armed and cancelled, no task. Hedges run as tasks. The decisions are written once, in
``_Race``: ``fire`` (the delay passed), ``ended`` (an attempt produced an outcome) and
``decide`` (the first unhandled outcome, or, when every attempt ended handled, the
primary's). When a hedge wins while the primary is still running, the race cancels the
caller's task and the driver takes that cancellation back (``uncancel``), exactly as
``asyncio.timeout`` does, so a cancellation from outside is never mistaken for ours.

Every loser is cancelled and awaited before the call returns or raises, and cancelling the
caller cancels and awaits every attempt before the ``CancelledError`` propagates: no task
outlives the call. Control flow (``CancelledError``, ``KeyboardInterrupt``, ``SystemExit``,
``GeneratorExit``) is never handed to ``on``: it wins (or, for the caller's cancellation,
ends the race) at once.
"""

from __future__ import annotations

import asyncio
import contextlib

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from resilience import _clock, _config
from resilience._deadline import call_later, remaining
from resilience._decorating import Kind, Layer, Runner
from resilience._errors import CONTROL_FLOW
from resilience._hedge.policy import HedgingPolicy
from resilience.telemetry._bus import BUS, emit
from resilience.telemetry._spans import Span, _next_ids, current_span, enter_span, exit_span, now_ns
from resilience.telemetry._spans import _current as _current_span


if TYPE_CHECKING:
    from resilience.typing import Clock


__all__ = ["HedgeLayer"]

_CONTROL = CONTROL_FLOW
_ASYNC_BUDGET = "atry_retry"  # a budget's async withdrawal, when it has one


class HedgeLayer(Layer):
    """``@hedged``'s layer: the drivers of the race, one per mode."""

    decorator = "hedged"
    __slots__ = ("asks_async", "total")
    policy: HedgingPolicy

    def __init__(self, policy: HedgingPolicy) -> None:
        super().__init__(policy)
        self.total = policy.max_hedged_attempts + 1
        # A budget with an async withdrawal is asked from the hedge's own task.
        self.asks_async = callable(getattr(policy.budget, _ASYNC_BUDGET, None))

    def bind(self, kind: Kind, qualname: str) -> None:
        self.name = self.policy.name or qualname
        if kind != "async":
            what = {"sync": "a plain", "gen": "a generator", "asyncgen": "an async generator"}
            msg = (
                f"@hedged needs an async callable, and {qualname} is {what[kind]} function: "
                f"a losing attempt must be cancelled, which only a coroutine allows; "
                f"use @retry for sync code"
            )
            raise TypeError(msg)

    def clock(self) -> Clock:
        """The policy's clock, or the process default (virtual under ``virtual_time()``)."""
        return _clock.resolve(self.policy.clock)

    def handles(self, is_exc: bool, value: Any) -> bool:
        """Whether an outcome is handled: an exception matching ``on``, or a result for ``on_result``."""
        policy = self.policy
        if is_exc:
            return not isinstance(value, _CONTROL) and policy._handled(value)
        return policy.on_result is not None and bool(policy.on_result(value))

    def build_async(self, call_next: Runner) -> Runner:
        if self.policy.delay is None:
            return self._sequential(call_next)
        return self._racing(call_next)

    # -- fallback mode: one attempt at a time, in the caller's task -----------------------

    def _sequential(self, call_next: Runner) -> Runner:
        layer = self
        switches = _config.state
        total = self.total
        budget = self.policy.budget

        async def sequential(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not switches.active:
                return await call_next(wrapped, instance, args, kwargs)
            if budget is not None:
                await _deposit(budget)
            primary: tuple[bool, Any] | None = None
            for number in range(total):
                if number:
                    if budget is not None and not await _withdraw(budget):
                        layer._refused(number)
                        break
                    if remaining() == 0.0:
                        break
                    if BUS.subs:
                        layer._event("started", number, {"in_flight": 0.0})
                try:
                    result = await call_next(wrapped, instance, args, kwargs)
                except BaseException as exc:
                    try:
                        handled = layer.handles(True, exc)
                    except Exception as broken:  # a raising predicate: its error stands
                        raise broken from exc
                    if not handled:
                        if number and BUS.subs:
                            layer._event("won", number, {})
                        raise
                    outcome: tuple[bool, Any] = (True, exc)
                else:
                    if not layer.handles(False, result):
                        if number and BUS.subs:
                            layer._event("won", number, {})
                        return result
                    outcome = (False, result)
                if primary is None:
                    primary = outcome
                del outcome
            assert primary is not None
            is_exc, value = primary
            primary = None
            if is_exc:
                raise value
            return value

        return sequential

    # -- latency and parallel modes: a race ------------------------------------------------

    def _racing(self, call_next: Runner) -> Runner:
        layer = self
        switches = _config.state
        budget = self.policy.budget
        parallel = self.policy.delay == 0.0
        delay: float = self.policy.delay  # type: ignore[assignment]
        system = _clock.SYSTEM_CLOCK
        on_result = self.policy.on_result
        handled_exc = self.policy._handled
        get_loop = asyncio.get_running_loop

        async def racing(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not switches.active:
                return await call_next(wrapped, instance, args, kwargs)
            if budget is not None:
                await _deposit(budget)
            race = _Race(layer, call_next, wrapped, instance, args, kwargs)
            clock = layer.clock()
            if parallel:
                race.start_all()
            elif clock is system:  # the timer, inline: the loop's own (its time is monotonic)
                race.timer = get_loop().call_later(delay, race.fire)
            else:
                race.timer = call_later(clock, delay, race.fire)
            span = race.enter_primary() if BUS.subs and _current_span.get() is not None else None
            try:
                result = await call_next(wrapped, instance, args, kwargs)
            except BaseException as exc:
                race.inline = False
                if span is not None:
                    race.leave_primary(span, exc)
                if race.interrupted or isinstance(exc, asyncio.CancelledError):
                    await race.primary_cancelled(exc)
                elif isinstance(exc, _CONTROL):
                    race.ended(0, True, exc, False)
                else:
                    try:
                        handled = handled_exc(exc)
                    except Exception as broken:  # a raising predicate: its error wins
                        race.ended(0, True, broken, False)
                    else:
                        race.ended(0, True, exc, handled)
            else:
                race.inline = False
                if span is not None:
                    race.leave_primary(span, None)
                if race.interrupted:
                    await race.primary_cancelled(None)
                elif on_result is None and race.winner is None:
                    # The common case: the primary answered; nothing else to decide.
                    timer = race.timer
                    if timer is not None:
                        timer.cancel()
                    if race.tasks:
                        race.decide((0, False, result))
                        await race.finish()
                        return race.answer()
                    return result
                else:
                    try:
                        handled = on_result is not None and bool(on_result(result))
                    except Exception as broken:  # a raising predicate: its error wins
                        race.ended(0, True, broken, False)
                    else:
                        race.ended(0, False, result, handled)
            await race.settle()
            return race.answer()

        return racing

    # -- events ------------------------------------------------------------------------------

    def _event(self, what: str, attempt: int, measurements: dict[str, float]) -> None:
        emit(
            f"resilience.hedge.{what}",
            {"attempt": float(attempt), **measurements},
            {"name": self.name, "attempt": attempt, "mode": self.policy.mode},
        )

    def _refused(self, attempt: int) -> None:
        if BUS.subs:
            budget = self.policy.budget
            describe = getattr(budget, "describe", None)
            reason = describe() if callable(describe) else repr(budget)
            emit(
                "resilience.hedge.refused",
                {"attempt": float(attempt)},
                {
                    "name": self.name,
                    "attempt": attempt,
                    "reason": f"the budget is spent ({reason})",
                },
            )


async def _withdraw(budget: Any) -> bool:
    """Take one hedge from the budget, through its async twin when it has one."""
    atry = getattr(budget, _ASYNC_BUDGET, None)
    allowed: bool = await atry() if atry is not None else budget.try_retry()
    return allowed


async def _deposit(budget: Any) -> None:
    """Count the call in the budget, through its async twin when it has one."""
    arecord = getattr(budget, "arecord_call", None)
    if arecord is not None:
        await arecord()
    else:
        budget.record_call()


class _Race:
    """
    One hedged call: the attempts started, the first unhandled outcome, the waiting caller.

    Attempt 0 is the primary (the caller's task); attempts 1.. are tasks. ``winner`` is
    ``(attempt, is_exc, value)`` once decided.
    """

    __slots__ = (
        "args",
        "call_next",
        "cancelling",
        "inline",
        "instance",
        "interrupted",
        "kwargs",
        "launched",
        "layer",
        "parent",
        "primary",
        "refused",
        "running",
        "started",
        "started_at",
        "task",
        "tasks",
        "timer",
        "waiter",
        "winner",
        "wrapped",
    )

    def __init__(
        self,
        layer: HedgeLayer,
        call_next: Runner,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.layer = layer
        self.call_next = call_next
        self.wrapped = wrapped
        self.instance = instance
        self.args = args
        self.kwargs = kwargs
        self.started = 1  # the primary
        self.launched = 0  # hedges that really started (the budget allowed them)
        self.running = 1
        self.inline = True  # the caller's task is inside the primary's await
        self.interrupted = False  # we cancelled the caller's task for a hedge that won
        self.refused = False
        self.tasks: list[asyncio.Task[None]] = []
        self.timer: Any = None
        self.waiter: asyncio.Future[None] | None = None
        self.winner: tuple[int, bool, Any] | None = None
        self.primary: tuple[bool, Any] | None = None
        self.task: asyncio.Task[Any] | None = asyncio.current_task()  # the caller's
        self.cancelling = 0
        self.parent: Span | None = None
        self.started_at = 0.0

    # -- decisions -------------------------------------------------------------------------

    def can_start(self) -> bool:
        """Whether another attempt may start: attempts left, budget not refused, time left."""
        return self.started < self.layer.total and not self.refused and remaining() != 0.0

    def fire(self) -> None:
        """The delay passed with no outcome since the last start: start the next attempt."""
        self.timer = None
        if self.winner is None and self.can_start():
            self.start_next()

    def ended(self, attempt: int, is_exc: bool, value: Any, handled: bool) -> None:
        """Attempt *attempt* produced an outcome."""
        self.running -= 1
        if attempt == 0:
            self.primary = (is_exc, value)
        if self.winner is not None:
            return  # a loser's late outcome
        if not handled:
            self.decide((attempt, is_exc, value))
            return
        if self.can_start() and self.start_next():  # a handled outcome: the next at once
            return
        if self.running == 0:  # every attempt ended handled: the primary's outcome stands
            primary = self.primary
            assert primary is not None
            self.decide((0, *primary))

    def decide(self, winner: tuple[int, bool, Any]) -> None:
        """The race is over: stop the timer and wake the caller (cancelling the primary)."""
        self.winner = winner
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()
        if winner[0] != 0 and self.inline:
            task = self.task
            assert task is not None
            self.interrupted = True
            self.cancelling = task.cancelling()
            task.cancel()
        elif self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        layer = self.layer
        if BUS.subs and self.launched:
            layer._event("won", winner[0], {"attempts": float(self.launched + 1)})

    # -- the driver's side ---------------------------------------------------------------

    def start_all(self) -> None:
        """Parallel mode: start every hedge now (the caller's task runs the primary)."""
        while self.can_start() and self.start_next():
            pass

    def start_next(self) -> bool:
        """
        Start the next attempt as a task (False when the budget refuses it).

        A budget with an async twin (``atry_retry``, as a Redis-backed one has) is asked
        inside the new task, so its round trip never blocks the loop; a refused hedge then
        ends without calling, like a handled outcome that cannot be followed.
        """
        layer = self.layer
        budget = layer.policy.budget
        number = self.started
        if budget is not None and not layer.asks_async and not budget.try_retry():
            self.refused = True
            layer._refused(number)
            return False
        self.started += 1
        self.running += 1
        loop = asyncio.get_running_loop()
        self.tasks.append(loop.create_task(self._attempt(number)))
        timer = self.timer
        if timer is not None:
            timer.cancel()
            self.timer = None
        delay: float | None = layer.policy.delay  # type: ignore[assignment]
        if delay and self.started < layer.total:  # the next one waits a delay from this start
            self.timer = call_later(layer.clock(), delay, self.fire)
        return True

    async def _attempt(self, number: int) -> None:
        """One hedge, in its own task: run it and report its outcome (never raise)."""
        layer = self.layer
        budget = layer.policy.budget
        if budget is not None and layer.asks_async:
            try:
                allowed = await budget.atry_retry()
            except asyncio.CancelledError:
                self.running -= 1
                return
            if not allowed:
                self.refused = True
                layer._refused(number)
                self.ended(number, True, None, True)  # gone without an outcome
                return
        self.launched += 1
        if BUS.subs:
            layer._event("started", number, {"in_flight": float(self.running)})
        span = self._enter(number) if self.parent is not None else None
        try:
            result = await self.call_next(self.wrapped, self.instance, self.args, self.kwargs)
        except asyncio.CancelledError as exc:
            if span is not None:
                self._leave(span, number, exc)
            if self.winner is None and not self._aborting():
                self.ended(number, True, exc, True)  # cancelled on its own: gone, not a win
            else:
                self.running -= 1
            return
        except BaseException as exc:
            if span is not None:
                self._leave(span, number, exc)
            try:
                handled = layer.handles(True, exc)
            except Exception as broken:
                self.ended(number, True, broken, False)
            else:
                self.ended(number, True, exc, handled)
            return
        if span is not None:
            self._leave(span, number, None)
        try:
            handled = layer.handles(False, result)
        except Exception as broken:
            self.ended(number, True, broken, False)
        else:
            self.ended(number, False, result, handled)

    def _aborting(self) -> bool:
        return self.waiter is not None and self.waiter.cancelled()

    async def primary_cancelled(self, exc: BaseException | None) -> None:
        """The primary ended while we had cancelled it for a winner, or it was cancelled."""
        task = self.task
        assert task is not None
        if self.interrupted:
            self.interrupted = False
            if task.uncancel() <= self.cancelling:  # ours alone: the winner stands
                self.running -= 1
                if BUS.subs:
                    self.layer._event("cancelled", 0, {})
                return
        # The caller itself was cancelled: cancel and await every attempt, then propagate.
        self.running -= 1
        await self.abort()
        if isinstance(exc, asyncio.CancelledError):
            raise exc
        raise asyncio.CancelledError

    async def settle(self) -> None:
        """Wait until the race is decided, then cancel and await the losers."""
        if self.winner is None:
            waiter = self.waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            except asyncio.CancelledError:
                await self.abort()
                raise
        await self.finish()

    async def finish(self) -> None:
        """Cancel the attempts still running and wait until every one has finished."""
        losers = [task for task in self.tasks if not task.done()]
        if not losers:
            return
        layer = self.layer
        for index, task in enumerate(self.tasks, 1):
            if not task.done():
                task.cancel()
                if BUS.subs:
                    layer._event("cancelled", index, {})
        await _wait_all(losers)

    async def abort(self) -> None:
        """The caller was cancelled: cancel every attempt and wait for all of them."""
        if self.waiter is None:
            self.waiter = asyncio.get_running_loop().create_future()
        if not self.waiter.done():
            self.waiter.cancel()
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()
        layer = self.layer
        pending = []
        for index, task in enumerate(self.tasks, 1):
            if not task.done():
                task.cancel()
                pending.append(task)
                if BUS.subs:
                    layer._event("cancelled", index, {})
        await _wait_all(pending, swallow=True)

    def answer(self) -> Any:
        """Return the winner's result or raise its exception (and drop the references)."""
        winner = self.winner
        assert winner is not None
        self.winner = self.primary = None
        self.args = self.kwargs = ()  # type: ignore[assignment]
        _, is_exc, value = winner
        if is_exc:
            raise value
        return value

    # -- spans: one per attempt, children of the traced call -------------------------------

    def enter_primary(self) -> tuple[Span, Any, int]:
        """Open attempt 0's span in the caller's context (only when a traced call listens)."""
        self.parent = current_span()  # built from the quiet path's record if need be
        return self._enter(0)

    def leave_primary(self, span: tuple[Span, Any, int], exc: BaseException | None) -> None:
        self._leave(span, 0, exc)

    def _enter(self, number: int) -> tuple[Span, Any, int]:
        parent = self.parent
        assert parent is not None
        own, _ = _next_ids()  # a child of the traced call, whichever context starts it
        span = Span(f"{parent.name} attempt", parent._trace, own, parent._own)
        token = enter_span(span)
        started = now_ns(self.layer.policy.clock)
        emit(
            "resilience.hedge.attempt.start",
            None,
            {"name": self.layer.name, "attempt": number, **span.ids()},
        )
        return span, token, started

    def _leave(self, opened: tuple[Span, Any, int], number: int, exc: BaseException | None) -> None:
        span, token, started = opened
        elapsed = now_ns(self.layer.policy.clock) - started
        measurements = {"duration": elapsed / 1e9, "duration_ns": float(elapsed)}
        metadata: dict[str, Any] = {"name": self.layer.name, "attempt": number, **span.ids()}
        if exc is None:
            emit("resilience.hedge.attempt.stop", measurements, metadata)
        elif isinstance(exc, asyncio.CancelledError):
            emit(
                "resilience.hedge.attempt.stop", measurements, {**metadata, "outcome": "cancelled"}
            )
        else:
            metadata.update(exception=exc, error_type=type(exc).__name__, error=str(exc))
            emit("resilience.hedge.attempt.exception", measurements, metadata)
        with contextlib.suppress(ValueError):  # left in another context: nothing to restore
            exit_span(token)


async def _wait_all(tasks: list[asyncio.Task[None]], *, swallow: bool = False) -> None:
    """
    Wait until every task has finished, even if the caller is cancelled meanwhile.

    A cancellation that arrives while waiting is re-raised once all are done (unless
    *swallow*: the caller is already propagating its own).
    """
    pending = set(tasks)
    cancelled: asyncio.CancelledError | None = None
    while pending:
        try:
            _, pending = await asyncio.wait(pending)
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is not None and not swallow:
        raise cancelled
