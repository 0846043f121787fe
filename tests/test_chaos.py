"""Tests for ``resilience.chaos``: every rule of the contract's Fault injection section."""

from __future__ import annotations

import os
import random
import subprocess
import sys

from collections.abc import AsyncIterator, Iterator

import pytest

from hypothesis import given
from hypothesis import strategies as st

from resilience import Backoff, retry
from resilience.chaos import (
    inject_fault,
    inject_latency,
    inject_result,
    is_enabled,
    set_enabled,
)
from resilience.testing import FakeClock, capture_events


pytestmark = pytest.mark.anyio


def ok() -> str:
    return "real"


async def aok() -> str:
    return "real"


class TestValidation:
    @pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
    def test_rate_range(self, rate: float) -> None:
        """A rate outside [0, 1] is a ValueError naming the field and the range."""
        with pytest.raises(ValueError, match=r"inject_fault.rate must be in \[0, 1\]"):
            inject_fault(ValueError, rate=rate)

    def test_bad_error(self) -> None:
        """An error that is no exception, class or factory is a TypeError."""
        with pytest.raises(TypeError, match="inject_fault.error"):
            inject_fault(42, rate=1.0)  # type: ignore[arg-type]

    def test_bad_enabled(self) -> None:
        """enabled must be a bool or a callable."""
        with pytest.raises(TypeError, match="inject_result.enabled"):
            inject_result(1, rate=1.0, enabled="yes")  # type: ignore[arg-type]

    def test_negative_latency(self) -> None:
        """A negative delay names the field."""
        with pytest.raises(ValueError, match="inject_latency.delay"):
            inject_latency(-1.0, rate=1.0)

    def test_rate_zero_is_free(self) -> None:
        """At rate 0 nothing is ever injected, so the callable comes back unwrapped."""
        assert inject_fault(ValueError, rate=0.0)(ok) is ok
        assert inject_latency(1.0, rate=0)(ok) is ok
        assert inject_result(1, rate=0)(ok) is ok


class TestFault:
    def test_instance_is_the_same_object(self) -> None:
        """Given an instance, that same object is raised each time, instead of calling."""
        error = ConnectionError("injected")
        called: list[int] = []

        @inject_fault(error, rate=1.0)
        def target() -> None:
            called.append(1)

        for _ in range(3):
            with pytest.raises(ConnectionError) as caught:
                target()
            assert caught.value is error
        assert [] == called

    def test_class_and_factory(self) -> None:
        """A class or a factory makes a fresh exception per call."""
        seen = []
        for error in (TimeoutError, lambda: TimeoutError("made")):
            target = inject_fault(error, rate=1.0)(ok)
            for _ in range(2):
                with pytest.raises(TimeoutError) as caught:
                    target()
                seen.append(caught.value)
        assert 4 == len({id(e) for e in seen})

    async def test_async(self) -> None:
        """Async callables raise instead of being awaited."""
        with pytest.raises(KeyError):
            await inject_fault(KeyError, rate=1.0)(aok)()

    def test_generator(self) -> None:
        """A generator function raises when iteration starts."""

        @inject_fault(OSError, rate=1.0)
        def items() -> Iterator[int]:
            yield 1

        gen = items()
        with pytest.raises(OSError):
            next(gen)

    async def test_async_generator(self) -> None:
        """An async generator function raises when iteration starts."""

        @inject_fault(OSError, rate=1.0)
        async def items() -> AsyncIterator[int]:
            yield 1

        with pytest.raises(OSError):
            async for _ in items():
                pass

    def test_event(self) -> None:
        """Each injection emits resilience.chaos.fault with the error."""
        with capture_events("resilience.chaos.") as events:
            with pytest.raises(ValueError):
                inject_fault(ValueError("x"), rate=1.0)(ok)()
        assert ["resilience.chaos.fault"] == [e.name for e in events]
        assert "ValueError" == events[0].metadata["error_type"]


class TestLatency:
    def test_sync_on_virtual_time(self, clock: FakeClock) -> None:
        """The wait goes through the clock: virtual time makes it instant."""
        with capture_events("resilience.chaos.") as events:
            assert "real" == inject_latency(2.5, rate=1.0)(ok)()
        assert 2.5 == clock.monotonic()
        assert [2.5] == [e.measurements["delay"] for e in events]

    async def test_async_on_virtual_time(self, clock: FakeClock) -> None:
        """Async waits use the clock's asleep."""
        assert "real" == await inject_latency(3.0, rate=1.0)(aok)()
        assert 3.0 == clock.monotonic()

    def test_generator(self, clock: FakeClock) -> None:
        """A generator waits before its first item."""

        @inject_latency(1.0, rate=1.0)
        def items() -> Iterator[int]:
            yield 1
            yield 2

        assert [1, 2] == list(items())
        assert 1.0 == clock.monotonic()

    async def test_async_generator(self, clock: FakeClock) -> None:
        """An async generator waits before its first item."""

        @inject_latency(1.0, rate=1.0)
        async def items() -> AsyncIterator[int]:
            yield 1

        assert [1] == [item async for item in items()]
        assert 1.0 == clock.monotonic()


class TestResult:
    def test_sync_and_event(self) -> None:
        """The result is returned instead of calling; resilience.chaos.result is emitted."""
        with capture_events("resilience.chaos.") as events:
            assert "fake" == inject_result("fake", rate=1.0)(ok)()
        assert ["resilience.chaos.result"] == [e.name for e in events]

    async def test_async(self) -> None:
        """Async callables answer the result."""
        assert "fake" == await inject_result("fake", rate=1.0)(aok)()

    def test_generators_yield_from_result(self) -> None:
        """A generator function yields from the result instead."""

        @inject_result([7, 8], rate=1.0)
        def items() -> Iterator[int]:
            yield 1

        assert [7, 8] == list(items())

    async def test_async_generator(self) -> None:
        """An async generator function yields from the result instead."""

        @inject_result([7], rate=1.0)
        async def items() -> AsyncIterator[int]:
            yield 1

        assert [7] == [item async for item in items()]


class TestSwitches:
    def test_enabled_callable_asked_each_call(self) -> None:
        """enabled may be a callable asked on every call."""
        flags = iter([True, False, True])
        target = inject_result("fake", rate=1.0, enabled=lambda: next(flags))(ok)
        assert ["fake", "real", "fake"] == [target(), target(), target()]

    def test_enabled_false(self) -> None:
        """enabled=False never injects."""
        assert "real" == inject_result("fake", rate=1.0, enabled=False)(ok)()

    def test_set_enabled_restores(self) -> None:
        """set_enabled(False) turns all injection off; as a context manager it restores."""
        target = inject_result("fake", rate=1.0)(ok)
        with set_enabled(False):
            assert not is_enabled()
            assert "real" == target()
        assert is_enabled()
        assert "fake" == target()

    def test_set_enabled_type(self) -> None:
        """set_enabled takes a bool."""
        with pytest.raises(TypeError, match="True or False"):
            set_enabled("off")  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", ["0", "false", "No", "OFF", "1", ""])
    def test_environment_read_at_import(self, value: str) -> None:
        """RESILIENCE_CHAOS=0/false/no/off (any case) switches injection off at import."""
        env = {**os.environ, "RESILIENCE_CHAOS": value}
        code = "import resilience.chaos as c; print(c.is_enabled())"
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        expected = value.lower() not in {"0", "false", "no", "off"}
        assert str(expected) == out.stdout.strip()


class TestSeeds:
    @given(st.integers(), st.floats(min_value=0.0, max_value=1.0, exclude_min=True))
    def test_seed_reproducible(self, seed: int, rate: float) -> None:
        """With a seed, call i is affected exactly when the seeded draw i is below rate."""
        target = inject_result("fake", rate=rate, seed=seed)(ok)
        draws = random.Random(seed)
        expected = ["fake" if rate >= 1.0 or draws.random() < rate else "real" for _ in range(30)]
        assert expected == [target() for _ in range(30)]

    def test_share_of_calls(self) -> None:
        """About *rate* of the calls are affected."""
        target = inject_result("fake", rate=0.2, seed=1)(ok)
        hits = sum(target() == "fake" for _ in range(5000))
        assert 900 < hits < 1100


class TestStacked:
    def test_retry_survives_injected_faults(self, clock: FakeClock) -> None:
        """Innermost in a stack: @retry rides out a 50% injected outage."""

        @retry(attempts=10, on=ConnectionError, backoff=Backoff(base=0.1))
        @inject_fault(ConnectionError("injected"), rate=0.5, seed=3)
        def fetch() -> str:
            return "real"

        assert all(fetch() == "real" for _ in range(50))


@pytest.mark.parametrize("flow", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_control_flow_passes_through(clock: FakeClock, flow: type) -> None:
    """Control flow from the real call passes through every chaos layer untouched."""
    error = flow()

    @inject_latency(1.0, rate=1.0)
    @inject_result("fake", rate=0.5, seed=1)
    def target() -> None:
        raise error

    with pytest.raises(flow) as caught:
        for _ in range(10):
            target()
    assert caught.value is error
