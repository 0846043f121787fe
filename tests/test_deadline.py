"""Tests for ``deadline()`` / ``remaining()``: every rule of the contract's Deadlines section."""

from __future__ import annotations

import asyncio
import contextvars
import pickle
import threading

from datetime import timedelta

import pytest

from hypothesis import given
from hypothesis import strategies as st

from resilience import (
    Backoff,
    BoundedTimeoutError,
    DeadlineExceededError,
    RateLimitedError,
    ResilienceError,
    bounded,
    deadline,
    layers_of,
    rate_limited,
    remaining,
    retry,
)
from resilience.testing import FakeClock, virtual_time


pytestmark = pytest.mark.anyio


class TestRemaining:
    def test_none_outside(self) -> None:
        """Outside any deadline, remaining() is None."""
        assert remaining() is None

    def test_counts_down_on_the_clock(self, clock: FakeClock) -> None:
        """remaining() reads the decorators' clock, so virtual time moves it; never below 0."""
        with deadline(5.0):
            assert 5.0 == remaining()
            clock.advance(2.0)
            assert 3.0 == remaining()
            clock.advance(10.0)
            assert 0.0 == remaining()
        assert remaining() is None

    def test_timedelta(self, clock: FakeClock) -> None:
        """A timedelta is accepted."""
        with deadline(timedelta(milliseconds=1500)):
            assert 1.5 == remaining()

    @pytest.mark.parametrize(("value", "error"), [(-1, ValueError), ("5", TypeError)])
    def test_bad_seconds(self, value: object, error: type[Exception]) -> None:
        """A negative or non-numeric length names the parameter."""
        with pytest.raises(error, match="deadline.seconds"):
            deadline(value)

    def test_inner_earlier_wins(self, clock: FakeClock) -> None:
        """Nested: the earliest end wins; leaving the inner one restores the outer."""
        with deadline(10.0):
            with deadline(2.0):
                assert 2.0 == remaining()
            assert 10.0 == remaining()

    def test_inner_never_extends(self, clock: FakeClock) -> None:
        """An inner deadline longer than the outer one changes nothing."""
        with deadline(2.0) as outer:
            clock.advance(1.0)
            with deadline(10.0) as inner:
                assert 1.0 == remaining()
                assert inner.describe() == outer.describe()

    @given(st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=1, max_size=6))
    def test_nested_property(self, lengths: list[float]) -> None:
        """For any nesting, remaining() is the smallest end left, measured from now."""
        clock = FakeClock()
        with virtual_time(clock):
            ends = []
            scopes = [deadline(length) for length in lengths]
            for scope, length in zip(scopes, lengths, strict=True):
                scope.__enter__()
                ends.append(clock.monotonic() + length)
                clock.advance(0.5)
                assert max(0.0, min(ends) - clock.monotonic()) == remaining()
            for scope in reversed(scopes):
                scope.__exit__(None, None, None)
            assert remaining() is None

    def test_sync_overrun_does_not_raise(self, clock: FakeClock) -> None:
        """Leaving a sync block after an overrun does not raise: its outcome stands."""
        with deadline(1.0):
            clock.sleep(5.0)
            result = "done"
        assert "done" == result

    async def test_follows_into_tasks(self, clock: FakeClock) -> None:
        """The deadline follows the call into asyncio tasks."""
        with deadline(3.0):
            assert 3.0 == await asyncio.create_task(_remaining_async())

    def test_follows_into_copied_threads_only(self, clock: FakeClock) -> None:
        """A thread started with copy_context() sees it; one started without does not."""
        seen: dict[str, float | None] = {}
        with deadline(4.0):
            context = contextvars.copy_context()
            copied = threading.Thread(target=context.run, args=(_store, seen, "copied"))
            bare = threading.Thread(target=_store, args=(seen, "bare"))
            copied.start()
            bare.start()
            copied.join()
            bare.join()
        assert {"copied": 4.0, "bare": None} == seen


async def _remaining_async() -> float | None:
    return remaining()


def _store(seen: dict[str, float | None], key: str) -> None:
    seen[key] = remaining()


class TestAsyncCancellation:
    async def test_async_with_cancels_at_deadline(self, clock: FakeClock) -> None:
        """async with cancels its block at the deadline and raises DeadlineExceededError."""
        cleaned: list[float] = []
        with pytest.raises(DeadlineExceededError) as caught:
            async with deadline(2.0):
                try:
                    await clock.asleep(100.0)
                finally:
                    cleaned.append(clock.monotonic())
        assert [2.0] == cleaned
        assert isinstance(caught.value, ResilienceError)
        assert isinstance(caught.value, TimeoutError)
        assert "test_deadline.py" in str(caught.value)
        assert "2.000 s" in str(caught.value)
        assert isinstance(caught.value.__cause__, asyncio.CancelledError)

    async def test_async_with_in_time(self, clock: FakeClock) -> None:
        """A block that ends in time is left alone."""
        async with deadline(2.0):
            await clock.asleep(1.0)
        assert 1.0 == clock.monotonic()

    async def test_outer_cancellation_is_not_ours(self, clock: FakeClock) -> None:
        """A cancellation from outside passes through as CancelledError."""

        async def body() -> None:
            async with deadline(100.0):
                await clock.asleep(1000.0)

        task = asyncio.ensure_future(body())
        await clock.asleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def test_nested_outer_earlier_names_the_outer(self, clock: FakeClock) -> None:
        """With an earlier outer deadline, the error names the outer one."""
        with pytest.raises(DeadlineExceededError) as caught:
            async with deadline(1.0):
                async with deadline(50.0):
                    await clock.asleep(100.0)
        assert 1.0 == caught.value.seconds

    async def test_decorator_async(self, clock: FakeClock) -> None:
        """@deadline on a coroutine function cancels it at the deadline."""

        @deadline(1.5)
        async def slow() -> None:
            await clock.asleep(10.0)

        with pytest.raises(DeadlineExceededError):
            await slow()
        assert 1.5 == clock.monotonic()
        assert ["deadline"] == [layer.decorator for layer in layers_of(slow)]

    def test_decorator_sync(self, clock: FakeClock) -> None:
        """@deadline on a sync function sets remaining() for each call, fresh every time."""

        @deadline(3.0)
        def probe() -> float | None:
            clock.advance(1.0)
            return remaining()

        assert [2.0, 2.0] == [probe(), probe()]

    def test_error_pickles(self) -> None:
        """DeadlineExceededError survives pickling with its attributes."""
        error = DeadlineExceededError(2.0, where="f.py:3")
        copy = pickle.loads(pickle.dumps(error))
        assert (2.0, "f.py:3", str(error)) == (copy.seconds, copy.where, str(copy))


class TestRetry:
    def test_no_wait_past_deadline(self, clock: FakeClock) -> None:
        """@retry gives up when the next wait would cross the deadline; the note names it."""
        calls: list[float] = []

        @retry(attempts=10, backoff=Backoff(base=1.0, multiplier=2.0, jitter="none"))
        def flaky() -> None:
            calls.append(clock.monotonic())
            raise ConnectionError

        with deadline(4.0), pytest.raises(ConnectionError) as caught:
            flaky()
        assert [0.0, 1.0, 3.0] == calls  # the next wait (4 s) would end at 7 > 4
        note = caught.value.__notes__[-1]
        assert "the deadline of 4 s set at" in note
        assert "test_deadline.py" in note

    def test_sync_overrun_not_retried(self, clock: FakeClock) -> None:
        """A sync call that overruns the deadline is not retried; its own error stands."""
        calls: list[int] = []

        @retry(attempts=5, backoff=Backoff(base=0.0, max=0.0))
        def slow() -> None:
            calls.append(1)
            clock.sleep(3.0)
            raise ConnectionError

        with deadline(2.0), pytest.raises(ConnectionError):
            slow()
        assert [1] == calls

    async def test_async_attempt_cancelled(self, clock: FakeClock) -> None:
        """An async attempt still running at the deadline is cancelled: DeadlineExceededError."""
        calls: list[int] = []

        @retry(attempts=5)
        async def hang() -> None:
            calls.append(1)
            await clock.asleep(100.0)

        with pytest.raises(DeadlineExceededError):
            async with deadline(2.0):
                await hang()
        assert [1] == calls
        assert 2.0 == clock.monotonic()

    async def test_attempt_timeout_clipped(self) -> None:
        """attempt_timeout is never longer than the time left; at the deadline it raises ours."""
        never = asyncio.Event()

        @retry(attempts=3, attempt_timeout=30.0)
        async def hang() -> None:
            await never.wait()

        with deadline(0.0), pytest.raises(DeadlineExceededError) as caught:
            await hang()
        assert "the deadline of 0 s" in caught.value.__notes__[-1]


class TestLimits:
    def test_rate_turn_past_deadline_refused_at_once(self, clock: FakeClock) -> None:
        """@rate_limited raises RateLimitedError at once when the turn is past the deadline."""

        @rate_limited(rate=1, per=10.0)
        def call() -> str:
            return "ok"

        call()
        with deadline(5.0), pytest.raises(RateLimitedError):
            call()
        assert 0.0 == clock.monotonic()  # no waiting at all
        with deadline(20.0):
            assert "ok" == call()
        assert 10.0 == clock.monotonic()

    async def test_rate_async(self, clock: FakeClock) -> None:
        """The async runner refuses a turn past the deadline too."""

        @rate_limited(rate=1, per=10.0)
        async def call() -> str:
            return "ok"

        await call()
        with deadline(5.0), pytest.raises(RateLimitedError):
            await call()
        assert 0.0 == clock.monotonic()

    async def test_bounded_waits_until_deadline(self, clock: FakeClock) -> None:
        """@bounded waits at most until the deadline, then raises BoundedTimeoutError."""
        release = asyncio.Event()

        @bounded(limit=1)
        async def hold() -> None:
            await release.wait()

        holder = asyncio.ensure_future(hold())
        await asyncio.sleep(0)
        with deadline(2.0), pytest.raises(BoundedTimeoutError) as caught:
            await hold()
        assert 2.0 == clock.monotonic()
        assert "the deadline of 2 s" in caught.value.__notes__[-1]
        release.set()
        await holder


def test_decorator_refuses_generators() -> None:
    """@deadline decorates sync and async callables; a generator function is a TypeError."""
    with pytest.raises(TypeError, match="@deadline does not support generator functions"):

        @deadline(1.0)
        def items():  # type: ignore[no-untyped-def]
            yield 1


def test_sync_bounded_deadline_passed(clock: FakeClock) -> None:
    """A sync @bounded caller whose deadline has passed gets BoundedTimeoutError at once."""
    import threading

    entered, release = threading.Event(), threading.Event()

    @bounded(limit=1)
    def hold() -> None:
        entered.set()
        release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(5)
    try:
        with deadline(0.0), pytest.raises(BoundedTimeoutError):
            hold()
    finally:
        release.set()
        holder.join()


@pytest.mark.parametrize("flow", [KeyboardInterrupt, SystemExit, GeneratorExit])
async def test_control_flow_passes_through_deadline(clock: FakeClock, flow: type) -> None:
    """Control flow raised under @deadline (and async with) passes through, the same object."""
    error = flow()

    @deadline(5.0)
    async def target() -> None:
        raise error

    with pytest.raises(flow) as caught:
        await target()
    assert caught.value is error


def test_infinite_deadline_sets_no_limit(clock: FakeClock) -> None:
    """deadline(math.inf) limits nothing: remaining() is None, retries and pools carry on."""
    import math

    calls: list[int] = []

    @retry(attempts=3, backoff=Backoff(base=1.0, jitter="none"))
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError
        return "ok"

    with deadline(math.inf):
        assert remaining() is None
        assert "ok" == flaky()
        with deadline(2.0):
            assert 2.0 == remaining()
