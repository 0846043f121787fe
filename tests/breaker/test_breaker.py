"""Tests for ``@circuit_breaker``: every transition, sync and async, on virtual time."""

from __future__ import annotations

import asyncio
import dataclasses
import math

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from hypothesis import given
from hypothesis import strategies as st

import resilience

from resilience import (
    CircuitBreakerPolicy,
    CircuitOpenError,
    circuit_breaker,
    get_circuit_breaker,
    set_active,
)
from resilience._breaker.contract import FAILURE, IGNORED, SUCCESS
from resilience._breaker.memory import CountWindow, MemoryBreaker, TimeWindow
from resilience.stores import MemoryStore
from resilience.testing import FakeClock, capture_events, reset


class Boom(Exception):
    """The failure our fake upstream raises."""


class Other(Exception):
    """An exception the breaker is not told about."""


@pytest.fixture(name="loop")
def _loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop for running async targets one call at a time."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(name="kind", params=["sync", "async"])
def _kind(request: pytest.FixtureRequest) -> str:
    """Every behaviour is checked for sync and async callables."""
    return str(request.param)


class Upstream:
    """A fake dependency: raises whatever ``error`` holds, else returns ``value``."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.value: Any = "ok"
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.value


@pytest.fixture(name="up")
def _up() -> Upstream:
    """A healthy fake upstream."""
    return Upstream()


@pytest.fixture(name="make")
def _make(
    kind: str, up: Upstream, loop: asyncio.AbstractEventLoop
) -> Callable[..., Callable[[], Any]]:
    """Build a breaker-decorated caller of ``up`` of the parametrised kind; calling it runs once."""

    def make(**fields: Any) -> Callable[[], Any]:
        fields.setdefault("name", "api")
        if kind == "sync":
            return circuit_breaker(**fields)(lambda: up())

        @circuit_breaker(**fields)
        async def call() -> Any:
            await asyncio.sleep(0)
            return up()

        return lambda: loop.run_until_complete(call())

    return make


def fail(call: Callable[[], Any], times: int = 1) -> None:
    """Call *times* times, swallowing the upstream's failures."""
    for _ in range(times):
        with pytest.raises(Boom):
            call()


class TestPolicy:
    def test_defaults(self) -> None:
        """The contract's defaults, and no failure-rate mode."""
        policy = CircuitBreakerPolicy()

        assert (None, 5, 30.0, 1, Exception) == (
            policy.name,
            policy.failure_threshold,
            policy.reset_timeout,
            policy.half_open_max_calls,
            policy.on,
        )
        assert policy.failure_rate is None

    @pytest.mark.parametrize(
        ("fields", "error", "words"),
        [
            ({"failure_rate": 0.0}, ValueError, "failure_rate must be in (0, 1]"),
            ({"failure_rate": 1.5}, ValueError, "failure_rate must be in (0, 1]"),
            ({"failure_rate": "half"}, TypeError, "failure_rate must be a number"),
            (
                {"failure_rate": 0.5, "window_size": 0},
                ValueError,
                "window_size must be in [1, 1000000]",
            ),
            ({"failure_rate": 0.5, "window_duration": 0}, ValueError, "window_duration"),
            ({"failure_rate": 0.5, "minimum_calls": 0}, ValueError, "minimum_calls must be >= 1"),
            (
                {"failure_rate": 0.5, "window_size": 10, "window_duration": 60},
                ValueError,
                "not both",
            ),
            ({"window_size": 10}, ValueError, "need failure_rate"),
            ({"on_result": 3}, TypeError, "on_result must be a callable"),
            ({"fallback": lambda: 1}, TypeError, "fallback must be a value, or a callable"),
            ({"failure_threshold": 0}, ValueError, "failure_threshold must be >= 1"),
            ({"reset_timeout": 0}, ValueError, "reset_timeout must be > 0"),
        ],
    )
    def test_bad_fields(self, fields: dict[str, Any], error: type[Exception], words: str) -> None:
        """A bad field fails when the policy is built, naming the field and the range."""
        with pytest.raises(error, match="CircuitBreakerPolicy") as info:
            CircuitBreakerPolicy(**fields)

        assert words in str(info.value)

    def test_from_dict_and_timedelta(self) -> None:
        """New fields load from a mapping; durations accept timedelta."""
        policy = CircuitBreakerPolicy.from_dict(
            {"failure_rate": 0.25, "window_duration": 60, "minimum_calls": 4}
        )

        assert (
            CircuitBreakerPolicy(
                failure_rate=0.25, window_duration=timedelta(minutes=1), minimum_calls=4
            )
            == policy
        )


class TestClosed:
    def test_passes_calls(self, make: Any, up: Upstream) -> None:
        """Closed, calls pass and their results come back."""
        call = make()

        assert "ok" == call()
        assert "closed" == get_circuit_breaker("api").state

    def test_opens_at_threshold(self, make: Any, up: Upstream, clock: FakeClock) -> None:
        """failure_threshold consecutive failures open it, not one fewer."""
        call = make(failure_threshold=3)
        up.error = Boom()

        fail(call, 2)
        assert "closed" == get_circuit_breaker("api").state
        fail(call)

        assert "open" == get_circuit_breaker("api").state

    def test_success_resets_count(self, make: Any, up: Upstream, clock: FakeClock) -> None:
        """A success between failures starts the count again."""
        call = make(failure_threshold=3)

        up.error = Boom()
        fail(call, 2)
        up.error = None
        call()
        up.error = Boom()
        fail(call, 2)

        assert "closed" == get_circuit_breaker("api").state
        assert 2 == get_circuit_breaker("api").stats.consecutive_failures

    def test_other_exceptions_count_as_neither(self, make: Any, up: Upstream) -> None:
        """An exception not matching `on` passes through and neither counts nor resets."""
        call = make(failure_threshold=2, on=Boom)
        up.error = Boom()
        fail(call)
        up.error = Other()

        with pytest.raises(Other):
            call()

        assert 1 == get_circuit_breaker("api").stats.consecutive_failures

    @pytest.mark.parametrize(
        "on",
        [Boom, (Boom, KeyError), lambda exc: isinstance(exc, Boom)],
        ids=["class", "tuple", "predicate"],
    )
    def test_on_spellings(self, make: Any, up: Upstream, on: Any) -> None:
        """`on` takes a class, a tuple of classes or a predicate."""
        call = make(failure_threshold=1, on=on)
        up.error = Boom()

        fail(call)

        assert "open" == get_circuit_breaker("api").state

    def test_on_result_counts_value_as_failure(self, make: Any, up: Upstream) -> None:
        """A value on_result rejects counts as a failure and is still returned."""
        call = make(failure_threshold=2, on_result=lambda r: r == 503)
        up.value = 503

        assert 503 == call()
        assert 503 == call()

        assert "open" == get_circuit_breaker("api").state

    def test_on_result_accepts_value(self, make: Any, up: Upstream) -> None:
        """A value on_result accepts resets the count."""
        call = make(failure_threshold=2, on_result=lambda r: r == 503)
        up.value = 503
        call()
        up.value = 200

        assert 200 == call()
        assert 0 == get_circuit_breaker("api").stats.consecutive_failures

    def test_cancellation_is_not_a_failure(self, loop: asyncio.AbstractEventLoop) -> None:
        """A cancelled call is no evidence against the upstream."""

        @circuit_breaker(name="api", failure_threshold=1)
        async def call() -> None:
            await asyncio.sleep(3600)

        async def main() -> None:
            task = asyncio.ensure_future(call())
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        loop.run_until_complete(main())

        assert "closed" == get_circuit_breaker("api").state


class TestOpen:
    def test_refuses_without_calling(self, make: Any, up: Upstream, clock: FakeClock) -> None:
        """Open, calls raise CircuitOpenError at once and never reach the upstream."""
        call = make(failure_threshold=1, reset_timeout=30)
        up.error = Boom()
        fail(call)
        clock.advance(12)

        with pytest.raises(CircuitOpenError) as info:
            call()

        assert 1 == up.calls
        assert "api" == info.value.name
        assert math.isclose(18.0, info.value.retry_after)
        assert math.isclose(clock.time() - 12, info.value.opened_at)  # type: ignore[arg-type]

    def test_error_message_explains(self, make: Any, up: Upstream, clock: FakeClock) -> None:
        """The message names the breaker, since when, why, and how long until a probe."""
        call = make(failure_threshold=2, reset_timeout=30)
        up.error = Boom()
        fail(call, 2)
        clock.advance(5)

        with pytest.raises(CircuitOpenError) as info:
            call()

        message = str(info.value)
        assert "'api' is open since " in message
        assert "UTC" in message
        assert "2 consecutive failure(s)" in message
        assert "a probe call is allowed in 25.000 s" in message

    def test_half_open_reported_without_a_call(
        self, make: Any, up: Upstream, clock: FakeClock
    ) -> None:
        """`.state` turns half_open the moment reset_timeout has passed, no call needed."""
        call = make(failure_threshold=1, reset_timeout=10)
        up.error = Boom()
        fail(call)
        breaker = get_circuit_breaker("api")

        clock.advance(9.999)
        assert "open" == breaker.state
        clock.advance(0.001)

        assert "half_open" == breaker.state
        assert 1 == up.calls

    def test_stats_while_open(self, make: Any, up: Upstream, clock: FakeClock) -> None:
        """Stats count failures, openings and refusals."""
        call = make(failure_threshold=2, reset_timeout=10)
        up.error = Boom()
        fail(call, 2)
        for _ in range(3):
            with pytest.raises(CircuitOpenError):
                call()
        clock.advance(4)

        stats = get_circuit_breaker("api").stats

        assert ("open", 2, 1, 3) == (
            stats.state,
            stats.failures,
            stats.times_opened,
            stats.rejected,
        )
        assert math.isclose(6.0, stats.retry_after)


class TestHalfOpen:
    def open_it(self, make: Any, up: Upstream, clock: FakeClock, **fields: Any) -> Any:
        call = make(failure_threshold=1, reset_timeout=10, **fields)
        up.error = Boom()
        fail(call)
        clock.advance(10)
        return call

    def test_probe_success_closes(self, make: Any, up: Upstream, clock: FakeClock) -> None:
        """One successful probe closes the breaker and clears the count."""
        call = self.open_it(make, up, clock)
        up.error = None

        assert "ok" == call()

        stats = get_circuit_breaker("api").stats
        assert ("closed", 0) == (stats.state, stats.consecutive_failures)

    def test_probe_failure_reopens_for_reset_timeout(
        self, make: Any, up: Upstream, clock: FakeClock
    ) -> None:
        """A failed probe opens it again for a full reset_timeout from the failure."""
        call = self.open_it(make, up, clock)

        fail(call)

        breaker = get_circuit_breaker("api")
        assert "open" == breaker.state
        clock.advance(9.5)
        assert "open" == breaker.state
        clock.advance(0.5)
        assert "half_open" == breaker.state

    def test_probe_ignored_exception_frees_slot(
        self, make: Any, up: Upstream, clock: FakeClock
    ) -> None:
        """A probe ending in an exception outside `on` gives its slot back, state unchanged."""
        call = self.open_it(make, up, clock, on=Boom)
        up.error = Other()

        with pytest.raises(Other):
            call()

        assert "half_open" == get_circuit_breaker("api").state
        up.error = None
        assert "ok" == call()
        assert "closed" == get_circuit_breaker("api").state

    def test_probe_result_failure_reopens(self, make: Any, up: Upstream, clock: FakeClock) -> None:
        """A probe whose value on_result rejects opens it again (the value is returned)."""
        call = self.open_it(make, up, clock, on_result=lambda r: r == 503)
        up.error = None
        up.value = 503

        assert 503 == call()
        assert "open" == get_circuit_breaker("api").state

    def test_only_max_calls_probes_run(self, loop: asyncio.AbstractEventLoop) -> None:
        """While probes run, further callers are refused as half-open, naming the slots."""
        clock = FakeClock()
        gate = asyncio.Event()
        state = {"fail": True, "running": 0, "most": 0}

        @circuit_breaker(
            name="api", failure_threshold=1, reset_timeout=5, half_open_max_calls=2, clock=clock
        )
        async def call() -> str:
            if state["fail"]:
                raise Boom
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
            await gate.wait()
            state["running"] -= 1
            return "ok"

        async def main() -> list[Any]:
            with pytest.raises(Boom):
                await call()
            clock.advance(5)
            state["fail"] = False
            tasks = [asyncio.ensure_future(call()) for _ in range(5)]
            for _ in range(3):
                await asyncio.sleep(0)
            gate.set()
            return await asyncio.gather(*tasks, return_exceptions=True)

        results = loop.run_until_complete(main())

        refused = [r for r in results if isinstance(r, CircuitOpenError)]
        assert ["ok", "ok"] == [r for r in results if r == "ok"]
        assert 3 == len(refused)
        assert 2 == state["most"]
        assert "half-open" in str(refused[0])
        assert "2 probe slot(s) are taken" in str(refused[0])
        assert 0.0 == refused[0].retry_after
        assert "closed" == get_circuit_breaker("api").state


class TestLateOutcomes:
    def backend(self, **fields: Any) -> MemoryBreaker:
        fields.setdefault("clock", FakeClock())
        return MemoryBreaker("late", CircuitBreakerPolicy(**fields), MemoryStore())

    def test_closed_call_failing_while_open_is_not_counted(self) -> None:
        """A call admitted while closed that fails after the breaker opened changes nothing."""
        backend = self.backend(failure_threshold=1)
        slow = backend.admit().ticket
        backend.record(backend.admit().ticket, FAILURE)

        assert backend.record(slow, FAILURE) is None
        assert 1 == backend.stats().failures

    def test_probe_of_an_old_spell_frees_no_slot(self) -> None:
        """After a reset, an old probe's end must not open a second slot in a new spell."""
        clock = FakeClock()
        backend = self.backend(failure_threshold=1, reset_timeout=1, clock=clock)
        backend.record(0, FAILURE)
        clock.advance(1)
        old = backend.admit().ticket
        backend.reset()
        backend.record(0, FAILURE)
        clock.advance(1)
        new = backend.admit()

        backend.record(old, IGNORED)

        assert new.ticket > old
        assert backend.admit().ticket == -1
        assert 1 == backend.stats().probes

    def test_success_with_zero_count_writes_nothing(self) -> None:
        """The fast path's promise: with no failures counted, a success needs no record."""
        backend = self.backend()

        assert not backend.dirty
        backend.record(0, FAILURE)
        assert backend.dirty
        backend.record(0, SUCCESS)
        assert not backend.dirty


class TestRegistry:
    def test_sync_and_async_share_one_state(
        self, up: Upstream, loop: asyncio.AbstractEventLoop, clock: FakeClock
    ) -> None:
        """A sync and an async function with one name feed one breaker."""
        sync_call = circuit_breaker(name="shared", failure_threshold=2)(lambda: up())

        @circuit_breaker(name="shared", failure_threshold=2)
        async def async_call() -> Any:
            return up()

        up.error = Boom()
        fail(sync_call)
        with pytest.raises(Boom):
            loop.run_until_complete(async_call())

        assert "open" == get_circuit_breaker("shared").state
        with pytest.raises(CircuitOpenError):
            sync_call()

    def test_conflicting_declaration_is_refused(self) -> None:
        """A second breaker of the same name with other numbers fails at decoration time."""
        circuit_breaker(name="api", failure_threshold=3)(lambda: None)

        with pytest.raises(ValueError, match="'api' is already declared"):
            circuit_breaker(name="api", failure_threshold=4)(lambda: None)

    def test_default_name_is_qualname(self) -> None:
        """Without a name, each decorated function has its own breaker."""

        @circuit_breaker
        def lonely() -> int:
            return 1

        name = f"{__name__}.TestRegistry.test_default_name_is_qualname.<locals>.lonely"
        assert "closed" == get_circuit_breaker(name).state

    def test_unknown_name(self) -> None:
        """get_circuit_breaker of an undeclared name raises KeyError listing the known ones."""
        circuit_breaker(name="known")(lambda: None)

        with pytest.raises(KeyError, match="no circuit breaker named 'nope'.*known: .*known"):
            get_circuit_breaker("nope")

    def test_reset_closes_for_everyone(self, make: Any, up: Upstream, clock: FakeClock) -> None:
        """`.reset()` closes the shared breaker and emits the change."""
        call = make(failure_threshold=1)
        up.error = Boom()
        fail(call)
        up.error = None

        with capture_events("resilience.breaker") as events:
            get_circuit_breaker("api").reset()

        assert "ok" == call()
        assert [("open", "closed")] == [(e.metadata["from"], e.metadata["to"]) for e in events]

    def test_testing_reset_keeps_declared_breakers(self, up: Upstream) -> None:
        """After testing.reset(), a declared breaker is closed, known, and still shared."""
        call = circuit_breaker(name="kept", failure_threshold=1)(lambda: up())
        up.error = Boom()
        fail(call)

        reset()

        assert "closed" == get_circuit_breaker("kept").state
        fail(call)
        assert "open" == get_circuit_breaker("kept").state

    def test_own_store_is_separate(self) -> None:
        """Breakers on another store do not share state with the default store's."""
        store = MemoryStore()
        call = circuit_breaker(name="api", failure_threshold=1, store=store)(self.boom)
        circuit_breaker(name="api", failure_threshold=1)(lambda: None)

        fail(call)

        assert "open" == get_circuit_breaker("api", store=store).state
        assert "closed" == get_circuit_breaker("api").state

    @staticmethod
    def boom() -> None:
        raise Boom

    def test_methods_share_per_qualname(self) -> None:
        """Methods, classmethods and staticmethods work; instances share the method's breaker."""

        class Client:
            @circuit_breaker(name="m", failure_threshold=2)
            def get(self) -> None:
                raise Boom

            @circuit_breaker(name="c")
            @classmethod
            def make(cls) -> str:
                return cls.__name__

            @circuit_breaker(name="s")
            @staticmethod
            def ping() -> str:
                return "pong"

        fail(Client().get)
        fail(Client().get)

        assert "open" == get_circuit_breaker("m").state
        assert "Client" == Client.make()
        assert "pong" == Client.ping()


class TestEvents:
    def test_full_cycle_events(self, make: Any, up: Upstream, clock: FakeClock) -> None:
        """Each change emits resilience.breaker.state_change with name, from, to and counts."""
        call = make(failure_threshold=2, reset_timeout=1)
        with capture_events("resilience.breaker.state_change") as events:
            up.error = Boom()
            fail(call, 2)
            clock.advance(1)
            fail(call)
            clock.advance(1)
            up.error = None
            call()

        assert [
            ("closed", "open", 2),
            ("open", "half_open", 2),
            ("half_open", "open", 3),
            ("open", "half_open", 3),
            ("half_open", "closed", 3),
        ] == [
            (e.metadata["from"], e.metadata["to"], e.measurements["consecutive_failures"])
            for e in events
        ]
        assert {"api"} == {e.metadata["name"] for e in events}

    def test_rejection_event(self, make: Any, up: Upstream, clock: FakeClock) -> None:
        """A refused call emits resilience.breaker.rejected with retry_after."""
        call = make(failure_threshold=1, reset_timeout=3)
        up.error = Boom()
        fail(call)

        with (
            capture_events("resilience.breaker.rejected") as events,
            pytest.raises(CircuitOpenError),
        ):
            call()

        assert [3.0] == [e.measurements["retry_after"] for e in events]


class TestSwitchedOff:
    def test_open_breaker_passes_calls_when_inactive(
        self, make: Any, up: Upstream, clock: FakeClock
    ) -> None:
        """With set_active(False), calls run as if undecorated and nothing is counted."""
        call = make(failure_threshold=1)
        up.error = Boom()
        fail(call)
        set_active(False)
        up.error = None

        assert "ok" == call()
        assert "open" == get_circuit_breaker("api").state

    def test_failures_not_counted_when_inactive(self, make: Any, up: Upstream) -> None:
        """Switched off, failures do not open the breaker."""
        call = make(failure_threshold=1)
        set_active(False)
        up.error = Boom()

        fail(call, 3)

        assert "closed" == get_circuit_breaker("api").state


class TestGenerators:
    def test_generator_failure_counts_and_open_refuses(self, clock: FakeClock) -> None:
        """A generator that raises counts as a failure; open, the first next() raises."""
        state = {"fail": True}

        @circuit_breaker(name="gen", failure_threshold=1, on=Boom)
        def items() -> Iterator[int]:
            yield 1
            if state["fail"]:
                raise Boom

        with pytest.raises(Boom):
            list(items())
        with pytest.raises(CircuitOpenError):
            next(items())

        clock.advance(30)
        state["fail"] = False
        assert [1] == list(items())
        assert "closed" == get_circuit_breaker("gen").state

    def test_early_close_of_a_probe_closes(self, clock: FakeClock) -> None:
        """A consumer stopping a probe early is no failure: the probe succeeded so far."""

        @circuit_breaker(name="gen", failure_threshold=1, reset_timeout=1)
        def items() -> Iterator[int]:
            yield 1
            yield 2

        @circuit_breaker(name="gen", failure_threshold=1, reset_timeout=1)
        def broken() -> Iterator[int]:
            raise Boom
            yield  # a generator function

        with pytest.raises(Boom):
            next(broken())
        clock.advance(1)
        gen = items()

        assert 1 == next(gen)
        gen.close()
        assert "closed" == get_circuit_breaker("gen").state

    def test_async_generator(self, loop: asyncio.AbstractEventLoop, clock: FakeClock) -> None:
        """Async generators are guarded the same way, with asend/athrow passed through."""
        state = {"fail": True}

        @circuit_breaker(name="agen", failure_threshold=1, reset_timeout=1)
        async def items() -> Any:
            received = yield 1
            if state["fail"]:
                raise Boom
            yield received

        async def consume() -> list[Any]:
            agen = items()
            first = await agen.__anext__()
            second = await agen.asend("echo")
            await agen.aclose()
            return [first, second]

        with pytest.raises(Boom):
            loop.run_until_complete(consume())
        with pytest.raises(CircuitOpenError):
            loop.run_until_complete(consume())
        clock.advance(1)
        state["fail"] = False

        assert [1, "echo"] == loop.run_until_complete(consume())
        assert "closed" == get_circuit_breaker("agen").state

    def test_on_result_refused_on_generators(self) -> None:
        """on_result has no meaning for a generator: refused at decoration time."""

        def items() -> Iterator[int]:
            yield 1

        with pytest.raises(TypeError, match="does not apply to generator functions"):
            circuit_breaker(on_result=bool)(items)


class TestFailureRate:
    def test_rate_opens_not_a_streak(self, make: Any, up: Upstream, clock: FakeClock) -> None:
        """In rate mode five failures in a row among many successes do not open it."""
        call = make(failure_rate=0.5, window_size=20, minimum_calls=10)
        for _ in range(15):
            call()
        up.error = Boom()
        fail(call, 5)

        stats = get_circuit_breaker("api").stats
        assert ("closed", 20, 5) == (stats.state, stats.window_calls, stats.window_failures)

        fail(call, 5)  # 10 of the last 20 failed: 50%
        assert "open" == get_circuit_breaker("api").state

    def test_minimum_calls(self, make: Any, up: Upstream) -> None:
        """Below minimum_calls the rate is not judged, even at 100% failures."""
        call = make(failure_rate=0.5, window_size=100, minimum_calls=5)
        up.error = Boom()

        fail(call, 4)
        assert "closed" == get_circuit_breaker("api").state
        fail(call)
        assert "open" == get_circuit_breaker("api").state

    def test_time_window_forgets_old_calls(self, make: Any, up: Upstream, clock: FakeClock) -> None:
        """Calls older than window_duration no longer count."""
        call = make(failure_rate=0.5, window_duration=10, minimum_calls=4)
        up.error = Boom()
        fail(call, 3)
        clock.advance(11)

        fail(call)

        stats = get_circuit_breaker("api").stats
        assert ("closed", 1, 1) == (stats.state, stats.window_calls, stats.window_failures)

    def test_default_window(self) -> None:
        """failure_rate alone means the last 100 calls, judged from 10 calls on."""
        circuit_breaker(name="r", failure_rate=0.5)(lambda: None)
        config = get_circuit_breaker("r").store.peek("breaker", "r").config

        assert (100, None, 10) == (config.window_size, config.window_duration, config.minimum_calls)

    def test_probe_success_clears_window(self, make: Any, up: Upstream, clock: FakeClock) -> None:
        """Closing after a probe starts with an empty window."""
        call = make(failure_rate=1.0, window_size=4, minimum_calls=2, reset_timeout=1)
        up.error = Boom()
        fail(call, 2)
        clock.advance(1)
        up.error = None
        call()

        stats = get_circuit_breaker("api").stats
        assert ("closed", 0, 0) == (stats.state, stats.window_calls, stats.window_failures)


outcomes = st.lists(st.booleans(), max_size=300)


class TestWindows:
    @given(size=st.integers(1, 50), calls=outcomes)
    def test_count_window_is_last_n(self, size: int, calls: list[bool]) -> None:
        """The count window holds exactly the last *size* outcomes."""
        window = CountWindow(size)
        for failed in calls:
            window.add(failed, 0.0)

        last = calls[-size:]
        assert (len(last), sum(last)) == window.counts(0.0)

    @given(
        duration=st.floats(0.01, 1000.0),
        steps=st.lists(
            st.tuples(st.floats(0.0, 200.0, allow_nan=False), st.booleans()), max_size=200
        ),
        later=st.floats(0.0, 200.0),
    )
    def test_time_window_matches_buckets(
        self, duration: float, steps: list[tuple[float, bool]], later: float
    ) -> None:
        """The time window holds exactly the calls of the last ten buckets of duration/10."""
        window = TimeWindow(duration)
        now = 0.0
        seen: list[tuple[float, bool]] = []
        for gap, failed in steps:
            now += gap
            window.add(failed, now)
            seen.append((now, failed))
        now += later

        width = duration / 10
        newest = math.floor(now / width)
        kept = [f for t, f in seen if math.floor(t / width) > newest - 10]
        assert (len(kept), sum(kept)) == window.counts(now)
        # a kept call is at most `duration` old (bucket edges are floats: allow their rounding)
        assert all(
            now - t <= duration * (1 + 1e-9) for t, f in seen if math.floor(t / width) > newest - 10
        )

    @given(
        rate=st.floats(0.01, 1.0),
        size=st.integers(1, 30),
        calls=outcomes,
    )
    def test_rate_mode_opens_exactly_when_rate_reached(
        self, rate: float, size: int, calls: list[bool]
    ) -> None:
        """It opens at the first failure after which the last N calls' rate reaches the limit."""
        policy = CircuitBreakerPolicy(
            failure_rate=rate, window_size=size, minimum_calls=size, clock=FakeClock()
        )
        backend = MemoryBreaker("p", policy, MemoryStore())
        expected = None
        for index, failed in enumerate(calls):
            last = calls[max(0, index + 1 - size) : index + 1]
            if failed and len(last) >= size and sum(last) / len(last) >= rate:
                expected = index
                break

        opened = None
        for index, failed in enumerate(calls):
            if backend.record(0, FAILURE if failed else SUCCESS) is not None:
                opened = index
                break

        assert expected == opened


def test_exports() -> None:
    """The breaker's public names are exported from the package."""
    assert {
        "circuit_breaker",
        "get_circuit_breaker",
        "CircuitBreaker",
        "CircuitBreakerStats",
    } <= set(resilience.__all__)


def test_policy_replace_keeps_validation() -> None:
    """dataclasses.replace re-validates, so a bad variant fails."""
    policy = CircuitBreakerPolicy(failure_rate=0.5, window_size=10)

    with pytest.raises(ValueError, match="not both"):
        dataclasses.replace(policy, window_duration=5)
