"""
``@retry``'s generator and async-generator drivers, and the pumps that follow them.

A generator is retried only until it yields its first item: a retry after that would repeat
the items the caller already has, so a later failure propagates with a note saying why it was
not retried. Until then each attempt is a fresh generator, and the core (``RetryCall``)
decides whether and when to start the next one, as for plain calls. From the first item on,
``pump``/``apump`` pass every send, throw and close through. ``RetryLayer.build_gen`` and
``build_asyncgen`` (``layer``) call ``build_gen`` and ``build_asyncgen`` here.
"""

from __future__ import annotations

import asyncio

from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, cast

from resilience._errors import AttemptTimeoutError
from resilience._retry.core import WITHDRAW
from resilience.telemetry._bus import BUS


if TYPE_CHECKING:
    from resilience._decorating import Runner
    from resilience._retry.core import RetryCall
    from resilience._retry.layer import RetryLayer


__all__ = ["apump", "build_asyncgen", "build_gen", "pump"]


def build_gen(layer: RetryLayer, call_next: Runner) -> Runner:
    """The generator driver: retry until the first item, then pass everything through."""
    retryable, budget = layer.retryable, layer.rules.budget
    start, failed, tracker = layer._start, layer.tracker.failed, layer.tracker
    last_success = layer.last_success

    def runner(
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Generator[Any, Any, Any]:
        call: RetryCall | None = None
        failure: Exception | None = None
        try:
            while True:
                gen = call_next(wrapped, instance, args, kwargs)
                try:
                    first = next(gen)
                except StopIteration as stop:
                    layer._succeeded(call)
                    return stop.value
                except Exception as exc:
                    if not retryable(exc):
                        raise
                    failure = exc
                else:
                    layer._succeeded(call)
                    break
                if call is None:
                    clock, call, now = start(None, failure)
                else:
                    now = clock.monotonic()
                    failed(failure, now)
                delay = call.next_delay(failure, now)
                if delay is WITHDRAW:
                    assert budget is not None
                    delay = call.granted(budget.try_retry(failure, call.server_delay))
                if delay is None:
                    layer._give_up(call, failure, True, clock.monotonic())  # raises
                    return None  # pragma: no cover - generators take no fallback
                if BUS.subs:
                    layer._announce(call, failure, delay)
                if delay > 0.0:
                    layer._sleep(clock, delay)
        finally:
            if call is not None:
                failure = None  # the queued failures' tracebacks hold this frame: no cycle
                tracker.leave(clock.monotonic())
                if last_success is not None:
                    last_success.leave()
        return (yield from pump(gen, first, retryable, layer.name))

    return runner


def build_asyncgen(layer: RetryLayer, call_next: Runner) -> Runner:
    """``build_gen`` for async generators; ``attempt_timeout`` bounds the first item."""
    retryable, budget = layer.retryable, layer.rules.budget
    start, failed, tracker = layer._start, layer.tracker.failed, layer.tracker
    last_success = layer.last_success
    limit = cast("float | None", layer.policy.attempt_timeout)

    async def first_item(
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[AsyncGenerator[Any, Any], Any] | None:
        """The retry loop: an attempt's generator and its first item, or None if empty."""
        if budget is not None:  # counted here: an async deposit never blocks the loop
            await budget.arecord_call()
        call: RetryCall | None = None
        failure: Exception | None = None
        try:
            while True:
                agen = call_next(wrapped, instance, args, kwargs)
                try:
                    first = await (
                        agen.__anext__() if limit is None else _first(agen, limit, layer)
                    )
                except StopAsyncIteration:
                    layer._succeeded(call)
                    return None
                except Exception as exc:
                    if not retryable(exc):
                        raise
                    failure = exc
                    await agen.aclose()
                else:
                    layer._succeeded(call)
                    return agen, first
                if call is None:
                    clock, call, now = start(None, failure)
                else:
                    now = clock.monotonic()
                    failed(failure, now)
                delay = call.next_delay(failure, now)
                if delay is WITHDRAW:
                    assert budget is not None
                    delay = call.granted(await budget.atry_retry(failure, call.server_delay))
                if delay is None:
                    await layer._agive_up(call, failure, True, clock.monotonic())  # raises
                    return None  # pragma: no cover - generators take no fallback
                if BUS.subs:
                    layer._announce(call, failure, delay)
                if delay > 0.0:
                    await layer._asleep(clock, delay)
        finally:
            if call is not None:
                failure = None  # the queued failures' tracebacks hold this frame: no cycle
                tracker.leave(clock.monotonic())
                if last_success is not None:
                    last_success.leave()

    def runner(
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> AsyncGenerator[Any, Any]:
        return apump(first_item, (wrapped, instance, args, kwargs), retryable, layer.name)

    return runner


def _not_retried_note(name: str) -> str:
    return (
        f"resilience.retry: not retried: {name} had already yielded items, "
        f"and a retry would repeat them"
    )


def pump(
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


async def apump(
    start: Callable[..., Awaitable[tuple[AsyncGenerator[Any, Any], Any] | None]],
    arguments: tuple[Any, ...],
    retryable: Callable[[BaseException], bool],
    name: str,
) -> AsyncGenerator[Any, Any]:
    """
    ``pump`` for async generators, which cannot ``yield from``: forwards by hand.

    ``start(*arguments)`` runs when the first item is asked for and answers the generator
    and its first item (None: it was empty).
    """
    started = await start(*arguments)
    if started is None:
        return
    agen, item = started
    while True:
        try:
            sent = yield item
        except GeneratorExit:
            await agen.aclose()
            raise
        except BaseException as thrown:  # forwarded into the generator
            step: Callable[[Any], Awaitable[Any]] = agen.athrow
            argument: Any = thrown
        else:
            step, argument = agen.asend, sent
        try:
            item = await step(argument)
        except StopAsyncIteration:
            return
        except Exception as exc:
            if retryable(exc):
                exc.add_note(_not_retried_note(name))
            raise


async def _first(agen: Any, limit: float, layer: RetryLayer) -> Any:
    """The first item of *agen* within ``attempt_timeout`` (*limit* seconds)."""
    scope = asyncio.timeout(limit)
    try:
        async with scope:
            return await agen.__anext__()
    except TimeoutError as exc:
        if scope.expired():
            raise AttemptTimeoutError(layer.name, limit) from exc
        raise
