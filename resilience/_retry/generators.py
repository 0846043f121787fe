"""
``@retry``'s generator and async-generator drivers.

A generator is retried only until it yields its first item: a retry after that would repeat
the items the caller already has, so a later failure propagates with a note saying why it was
not retried. Until then each attempt is a fresh generator, and ``RetryCall`` (``_retry_call``)
decides whether and when to start the next one. From the first item on, the driver is a
transparent pass-through of send, throw and close. ``RetryLayer.build_gen`` and
``build_asyncgen`` (``_retry_layer``) call ``build_gen`` and ``build_asyncgen`` here.
"""

from __future__ import annotations

import asyncio

from collections.abc import AsyncGenerator, Callable, Generator
from typing import TYPE_CHECKING, Any, cast

from resilience._errors import AttemptTimeoutError
from resilience.telemetry._bus import BUS


if TYPE_CHECKING:
    from resilience._decorating import Runner
    from resilience._retry.core import RetryCall
    from resilience._retry.layer import RetryLayer


__all__ = ["build_asyncgen", "build_gen"]


def build_gen(layer: RetryLayer, call_next: Runner) -> Runner:
    """The generator driver: retry until the first item, then pass everything through."""
    retryable = layer.retryable

    def runner(
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Generator[Any, Any, Any]:
        call: RetryCall | None = None
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
                        layer._sleep(clock, delay)
        finally:
            failure = None  # the queued failures' tracebacks hold this frame: no cycle
            if call is not None:
                layer._leave(clock)
        return (yield from _delegate(gen, first, retryable, layer.name))

    return runner


def build_asyncgen(layer: RetryLayer, call_next: Runner) -> Runner:
    """``build_gen`` for async generators; ``attempt_timeout`` bounds the first item."""
    retryable = layer.retryable
    limit = cast("float | None", layer.policy.attempt_timeout)

    async def runner(
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> AsyncGenerator[Any, Any]:
        call: RetryCall | None = None
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
                        await layer._asleep(clock, delay)
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
    scope = asyncio.timeout(limit)
    try:
        async with scope:
            return await agen.__anext__()
    except TimeoutError as exc:
        if scope.expired():
            raise AttemptTimeoutError(name, limit) from exc
        raise
