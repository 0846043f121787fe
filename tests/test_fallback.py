"""Tests for ``fallback=`` on ``@circuit_breaker`` and ``@retry``."""

from __future__ import annotations

import asyncio

from collections.abc import Iterator
from typing import Any

import pytest

from resilience import CircuitOpenError, RetryPolicy, circuit_breaker, get_circuit_breaker, retry
from resilience._fallback import Fallback, check_fallback
from resilience.testing import FakeClock


class Boom(Exception):
    """The upstream's failure."""


class Other(Exception):
    """An exception no policy is told about."""


def boom() -> None:
    raise Boom("down")


class TestBreakerFallback:
    def test_value_on_failure_and_when_open(self, clock: FakeClock) -> None:
        """A plain value answers for a failed call and for a refused one."""
        call = circuit_breaker(name="fb", failure_threshold=1, fallback="cached")(boom)

        assert "cached" == call()
        assert "cached" == call()
        assert "open" == get_circuit_breaker("fb").state

    def test_callable_receives_the_exception(self, clock: FakeClock) -> None:
        """A callable gets the failure first, then the CircuitOpenError."""
        seen: list[BaseException] = []

        def answer(exc: BaseException) -> str:
            seen.append(exc)
            return type(exc).__name__

        call = circuit_breaker(name="fb", failure_threshold=1, fallback=answer)(boom)

        assert ["Boom", "CircuitOpenError"] == [call(), call()]
        assert isinstance(seen[1], CircuitOpenError)
        assert "fb" == seen[1].name

    def test_not_for_exceptions_outside_on(self) -> None:
        """An exception that is not a failure propagates; the fallback stays out of it."""

        @circuit_breaker(name="fb", on=Boom, fallback="cached")
        def call() -> None:
            raise Other

        with pytest.raises(Other):
            call()

    def test_async_fallback(self) -> None:
        """An async function may have an async fallback, awaited for it."""

        async def answer(exc: BaseException) -> str:
            await asyncio.sleep(0)
            return f"async {type(exc).__name__}"

        @circuit_breaker(name="fb", failure_threshold=1, fallback=answer)
        async def call() -> None:
            raise Boom

        async def main() -> list[str]:
            return [await call(), await call()]

        assert ["async Boom", "async CircuitOpenError"] == asyncio.run(main())

    def test_sync_fallback_on_async_function(self) -> None:
        """A sync fallback answers for an async function too."""

        @circuit_breaker(name="fb", failure_threshold=1, fallback=lambda exc: 7)
        async def call() -> int:
            raise Boom

        assert 7 == asyncio.run(call())

    def test_async_fallback_on_sync_function_is_refused(self) -> None:
        """An async fallback cannot answer for a sync function: refused at decoration."""

        async def answer(exc: BaseException) -> None:
            return None

        with pytest.raises(TypeError, match="async callable .* for the sync function"):
            circuit_breaker(fallback=answer)(boom)

    def test_generators_are_refused(self) -> None:
        """A generator's items cannot be replaced by one value: refused at decoration."""

        def items() -> Iterator[int]:
            yield 1

        with pytest.raises(TypeError, match="does not apply to generator functions"):
            circuit_breaker(fallback=0)(items)


class TestRetryFallback:
    def test_answers_when_giving_up(self, clock: FakeClock) -> None:
        """After the last attempt fails, the fallback answers with the last exception."""
        calls: list[int] = []

        @retry(attempts=3, fallback=lambda exc: f"gave up on {exc}")
        def call() -> None:
            calls.append(1)
            raise Boom("down")

        assert "gave up on down" == call()
        assert 3 == len(calls)

    def test_not_for_unretried_exceptions(self) -> None:
        """An exception outside `on` propagates at once, without the fallback."""

        @retry(on=Boom, fallback="x")
        def call() -> None:
            raise Other

        with pytest.raises(Other):
            call()

    def test_async_fallback(self, clock: FakeClock) -> None:
        """An async retried function's async fallback is awaited."""

        async def answer(exc: BaseException) -> str:
            return f"async {exc}"

        @retry(attempts=2, fallback=answer)
        async def call() -> None:
            raise Boom("down")

        async def main() -> str:
            with_time = await call()
            return str(with_time)

        assert "async down" == asyncio.run(main())

    def test_result_retries_return_the_last_result(self, clock: FakeClock) -> None:
        """Giving up on a result still returns the last result, not the fallback."""

        @retry(attempts=2, on_result=lambda r: r == 503, fallback="x")
        def call() -> int:
            return 503

        assert 503 == call()

    def test_field_on_policy(self) -> None:
        """RetryPolicy has a fallback field, None by default, checked when built."""
        assert RetryPolicy().fallback is None
        with pytest.raises(TypeError, match=r"RetryPolicy\.fallback"):
            RetryPolicy(fallback=lambda a, b: None)

    def test_generators_are_refused(self) -> None:
        """@retry(fallback=...) on a generator function fails at decoration."""

        def items() -> Iterator[int]:
            yield 1

        with pytest.raises(TypeError, match="does not apply to generator functions"):
            retry(fallback=0)(items)


class TestHelper:
    @pytest.mark.parametrize(
        "value",
        [None, 0, "text", lambda exc: exc, lambda *args: None, dict, print, Boom],
        ids=["none", "zero", "text", "one-arg", "var-args", "dict", "print", "class"],
    )
    def test_accepted(self, value: Any) -> None:
        """Values, one-argument callables and signature-less builtins are accepted."""
        check_fallback("P", value)

    @pytest.mark.parametrize("value", [lambda: 1, lambda a, b: 1], ids=["none", "two"])
    def test_refused(self, value: Any) -> None:
        """A callable that cannot take the exception alone is refused, naming the field."""
        with pytest.raises(TypeError, match=r"P\.fallback must be a value, or a callable"):
            check_fallback("P", value)

    def test_async_callable_object(self) -> None:
        """An object whose __call__ is async counts as an async fallback."""

        class Answer:
            async def __call__(self, exc: BaseException) -> int:
                return 1

        assert Fallback(Answer()).is_async
        assert not Fallback(len).is_async
