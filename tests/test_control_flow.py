"""
Control flow is never retried (contract v2), across every decorator.

``CancelledError``, ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` raised by a
decorated callable pass through untouched: the same object, after exactly one call, never
shown to an ``on=`` predicate, a fallback or a delay hook, never counted by a breaker, even
with ``on=BaseException`` or a predicate that says yes to everything.
"""

from __future__ import annotations

import asyncio

from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import httpx
import pytest

from resilience import (
    Backoff,
    BoundedPolicy,
    CircuitBreakerPolicy,
    RateLimitPolicy,
    RetryPolicy,
    Stack,
    bounded,
    circuit_breaker,
    get_circuit_breaker,
    rate_limited,
    retry,
    traced,
)
from resilience._errors import CONTROL_FLOW, is_control_flow
from resilience.testing import FakeClock
from resilience.transport import AsyncResilientTransport, ResilientTransport


FLOW: list[type[BaseException]] = list(CONTROL_FLOW)


class Witness:
    """Records every exception a predicate, a fallback or a hook was shown."""

    def __init__(self) -> None:
        self.seen: list[BaseException] = []

    def yes(self, exc: BaseException) -> bool:
        self.seen.append(exc)
        return True

    def hook(self, outcome: object) -> float:
        self.seen.append(outcome)  # type: ignore[arg-type]
        return 5.0

    def fallback(self, exc: BaseException) -> str:
        self.seen.append(exc)
        return "answered"


def _decorators(witness: Witness, clock: FakeClock) -> dict[str, Callable[[Any], Any]]:
    """Every decorator, configured to catch everything it can be told to catch."""
    fast = Backoff(base=0.0, max=0.0)
    return {
        "retry-base": retry(RetryPolicy(attempts=5, on=BaseException, backoff=fast, clock=clock)),
        "retry-yes": retry(
            RetryPolicy(
                attempts=5,
                on=witness.yes,
                backoff=fast,
                delay_hook=witness.hook,
                fallback=witness.fallback,
                clock=clock,
            )
        ),
        "breaker-base": circuit_breaker(
            CircuitBreakerPolicy(
                name="flow-base", failure_threshold=1, on=BaseException, clock=clock
            )
        ),
        "breaker-yes": circuit_breaker(
            CircuitBreakerPolicy(
                name="flow-yes",
                failure_threshold=1,
                on=witness.yes,
                fallback=witness.fallback,
                clock=clock,
            )
        ),
        "rate": rate_limited(
            RateLimitPolicy(rate=100, key="flow-rate", delay_hook=witness.hook, clock=clock)
        ),
        "bounded": bounded(BoundedPolicy(limit=1, key="flow-bounded", clock=clock)),
        "traced": traced(name="flow-traced"),
        "stack": Stack(
            retry=RetryPolicy(attempts=5, on=BaseException, backoff=fast, clock=clock),
            circuit_breaker=CircuitBreakerPolicy(
                name="flow-stack", failure_threshold=1, on=BaseException, clock=clock
            ),
            rate_limited=RateLimitPolicy(rate=100, key="flow-stack", clock=clock),
            bounded=BoundedPolicy(limit=1, key="flow-stack", clock=clock),
        ),
    }


NAMES = ["retry-base", "retry-yes", "breaker-base", "breaker-yes", "rate", "bounded", "traced"]
NAMES.append("stack")


def _check_untouched(name: str, calls: int, witness: Witness) -> None:
    assert 1 == calls
    assert [] == witness.seen
    breaker = {"breaker-base": "flow-base", "breaker-yes": "flow-yes", "stack": "flow-stack"}
    if name in breaker:
        stats = get_circuit_breaker(breaker[name]).stats
        assert "closed" == stats.state
        assert 0 == stats.failures


def _drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run *coro* to its end without an event loop (none of these calls suspends)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    pytest.fail("the coroutine suspended")


@pytest.fixture(name="witness")
def _witness() -> Witness:
    return Witness()


@pytest.mark.parametrize("flow", FLOW)
@pytest.mark.parametrize("name", NAMES)
class TestEveryDecorator:
    def test_sync(self, name: str, flow: type[BaseException], witness: Witness) -> None:
        """A sync call's control-flow exception passes through after one call."""
        error = flow()
        calls = 0

        def work() -> None:
            nonlocal calls
            calls += 1
            raise error

        decorated = _decorators(witness, FakeClock())[name](work)
        with pytest.raises(flow) as info:
            decorated()
        assert error is info.value
        _check_untouched(name, calls, witness)

    def test_async(self, name: str, flow: type[BaseException], witness: Witness) -> None:
        """An async call's control-flow exception passes through after one call."""
        error = flow()
        calls = 0

        async def work() -> None:
            nonlocal calls
            calls += 1
            raise error

        decorated = _decorators(witness, FakeClock())[name](work)
        with pytest.raises(flow) as info:
            _drive(decorated())
        assert error is info.value
        _check_untouched(name, calls, witness)

    def test_async_in_a_loop(self, name: str, flow: type[BaseException], witness: Witness) -> None:
        """Inside a real event loop, too, one call and the exception's own type."""
        calls = 0

        async def work() -> None:
            nonlocal calls
            calls += 1
            raise flow

        decorated = _decorators(witness, FakeClock())[name](work)
        loop = asyncio.new_event_loop()
        try:
            with pytest.raises(flow):
                loop.run_until_complete(decorated())
        finally:
            loop.close()
        _check_untouched(name, calls, witness)


GEN_NAMES = ["retry-base", "breaker-base", "traced"]


@pytest.mark.parametrize("flow", [f for f in FLOW if f is not GeneratorExit])
@pytest.mark.parametrize("name", GEN_NAMES)
class TestGenerators:
    def test_sync_generator(self, name: str, flow: type[BaseException], witness: Witness) -> None:
        """A generator raising control flow mid-stream is not restarted."""
        error = flow()
        calls = 0

        def work() -> Iterator[int]:
            nonlocal calls
            calls += 1
            yield 1
            raise error

        decorated = _decorators(witness, FakeClock())[name](work)
        items = []
        with pytest.raises(flow) as info:
            items.extend(decorated())
        assert error is info.value
        assert [1] == items
        _check_untouched(name, calls, witness)

    def test_async_generator(self, name: str, flow: type[BaseException], witness: Witness) -> None:
        """An async generator raising control flow mid-stream is not restarted."""
        error = flow()
        calls = 0

        async def work() -> Any:
            nonlocal calls
            calls += 1
            yield 1
            raise error

        decorated = _decorators(witness, FakeClock())[name](work)

        async def consume() -> list[int]:
            return [item async for item in decorated()]

        with pytest.raises(flow) as info:
            _drive(consume())
        assert error is info.value
        _check_untouched(name, calls, witness)


class TestConsumerClose:
    @pytest.mark.parametrize("name", GEN_NAMES)
    def test_closing_a_generator_is_not_a_failure(self, name: str, witness: Witness) -> None:
        """A consumer closing a generator early (GeneratorExit) restarts nothing."""
        calls = 0

        def work() -> Iterator[int]:
            nonlocal calls
            calls += 1
            yield from range(10)

        gen = _decorators(witness, FakeClock())[name](work)()
        assert 0 == next(gen)
        gen.close()
        _check_untouched(name, calls, witness)


class TestCancellationOfARealTask:
    @pytest.mark.parametrize("name", NAMES)
    def test_cancelled_task(self, name: str, witness: Witness) -> None:
        """Cancelling a task blocked inside the decorated call ends it after one call."""
        calls = 0
        entered = asyncio.Event()

        async def work() -> None:
            nonlocal calls
            calls += 1
            entered.set()
            await asyncio.Event().wait()

        async def main() -> None:
            decorated = _decorators(witness, FakeClock())[name](work)
            task = asyncio.create_task(decorated())
            await entered.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        _check_untouched(name, calls, witness)


class _Raising(httpx.BaseTransport):
    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        raise self.error


class _AsyncRaising(httpx.AsyncBaseTransport):
    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        raise self.error


@pytest.mark.parametrize("flow", FLOW)
class TestTransports:
    def _stack(self) -> Stack:
        return Stack(
            retry=RetryPolicy(attempts=5, on=BaseException, backoff=Backoff(base=0.0, max=0.0)),
            circuit_breaker=CircuitBreakerPolicy(failure_threshold=1, on=BaseException),
        )

    def test_sync_transport(self, flow: type[BaseException]) -> None:
        """The sync transport sends once and lets control flow out."""
        error = flow()
        inner = _Raising(error)
        transport = ResilientTransport(self._stack(), transport=inner)
        with pytest.raises(flow) as info:
            transport.handle_request(httpx.Request("GET", "http://flow.test/"))
        assert error is info.value
        assert 1 == inner.calls

    def test_async_transport(self, flow: type[BaseException]) -> None:
        """The async transport sends once and lets control flow out."""
        error = flow()
        inner = _AsyncRaising(error)
        transport = AsyncResilientTransport(self._stack(), transport=inner)
        with pytest.raises(flow) as info:
            _drive(transport.handle_async_request(httpx.Request("GET", "http://flow.test/")))
        assert error is info.value
        assert 1 == inner.calls


class TestIsControlFlow:
    @pytest.mark.parametrize("flow", FLOW)
    def test_control_flow(self, flow: type[BaseException]) -> None:
        """The four control-flow exceptions are recognised."""
        assert is_control_flow(flow())

    @pytest.mark.parametrize("other", [Exception(), ValueError(), TimeoutError(), "text", None])
    def test_other(self, other: object) -> None:
        """Failures, and things that are not exceptions, are not control flow."""
        assert not is_control_flow(other)
