"""Tests for ``@rate_limited``: the sliding-log accounting, waiting, refusing, sharing keys."""

from __future__ import annotations

import asyncio
import bisect
import math
import threading
import time

from collections import deque

import pytest

from hypothesis import example, given
from hypothesis import strategies as st

from resilience import (
    RateLimitedError,
    RateLimitPolicy,
    backoff_window,
    rate_limited,
    set_active,
)
from resilience._decorating import layers_of
from resilience._rate.state import MemoryRateBackend, RateState
from resilience._rate.window import MemoryWindowBackend
from resilience.testing import FakeClock, capture_events


def over_limit(starts: list[float], limit: int, width: float) -> int:
    """Count the windows [s, s + width) beginning at a start that hold more than *limit*."""
    ordered = sorted(starts)
    return sum(
        1
        for s in ordered
        if bisect.bisect_left(ordered, s + width) - bisect.bisect_left(ordered, s) > limit
    )


class Http429(Exception):
    def __init__(self, seconds: str) -> None:
        super().__init__("429")
        self.headers = {"Retry-After": seconds}


arrivals = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=2.0),  # time since the previous arrival
        st.one_of(st.just(math.inf), st.floats(min_value=0.0, max_value=5.0)),  # max wait
    ),
    min_size=1,
    max_size=120,
)


class TestRateState:
    @given(
        rate=st.integers(min_value=1, max_value=8),
        per=st.floats(min_value=0.01, max_value=3.0),
        burst_share=st.floats(min_value=0.0, max_value=1.0),
        seq=arrivals,
    )
    @example(rate=3, per=1.7398345014814045, burst_share=1.0, seq=[(0.0, math.inf)] * 4)
    def test_no_window_ever_exceeds_the_limits(
        self, rate: int, per: float, burst_share: float, seq: list[tuple[float, float]]
    ) -> None:
        """For any arrivals, no window of per holds more than rate starts, nor a burst window more than burst."""
        burst = max(1, round(burst_share * rate))
        state = RateState(rate, per, burst)
        now = 0.0
        starts: list[float] = []
        for step, max_wait in seq:
            now += step
            wait = state.reserve(now, max_wait)
            if wait >= 0.0:
                assert wait <= max_wait
                starts.append(state.log[-1])  # the reserved start itself (now + wait to an ulp)
            else:
                assert -wait > max_wait
        assert starts == sorted(starts)
        assert 0 == over_limit(starts, rate, per)
        if burst < rate:  # burst == rate is the rate rule itself (its gap may be an ulp over per)
            assert 0 == over_limit(starts, burst, state.gap)
        assert len(state.log) <= rate

    @given(rate=st.integers(min_value=1, max_value=8), seq=arrivals)
    def test_refusal_reserves_nothing_and_grants_are_the_earliest(
        self, rate: int, seq: list[tuple[float, float]]
    ) -> None:
        """A refused caller leaves the log as it was; a granted one gets the earliest allowed time."""
        state = RateState(rate, 1.0)
        now = 0.0
        for step, max_wait in seq:
            now += step
            before = list(state.log)
            earliest = state.earliest(now)
            state.log = type(state.log)(before, maxlen=rate)
            wait = state.reserve(now, max_wait)
            if wait < 0.0:
                assert [t for t in before if t + 1.0 > now] == list(state.log)
            else:
                # now + (earliest - now) can round one ulp away from earliest
                assert math.isclose(
                    earliest, now + wait, rel_tol=0.0, abs_tol=4 * math.ulp(now + 1.0)
                )

    def test_saturated_run_achieves_the_full_rate(self) -> None:
        """1000 callers arriving at once start exactly rate per window, with no window over."""
        state = RateState(10, 1.0)
        starts = []
        for _ in range(1000):
            state.reserve(0.0, math.inf)
            starts.append(state.log[-1])
        assert [float(i // 10) for i in range(1000)] == starts
        assert 0 == over_limit(starts, 10, 1.0)
        assert 99.0 == starts[-1]
        assert 1000 / 100.0 == len(starts) / (starts[-1] + 1.0)

    def test_idle_spell_does_not_let_a_double_burst_through(self) -> None:
        """After idling, a crowd gets rate starts in the first window, not the 2x a bucket allows."""
        state = RateState(5, 1.0)
        for _ in range(5):
            state.reserve(0.0, math.inf)
        starts = [100.0 + state.reserve(100.0, math.inf) for _ in range(10)]
        assert [100.0] * 5 + [101.0] * 5 == starts

    def test_burst_one_spaces_starts_evenly(self) -> None:
        """burst=1 spaces starts per/rate apart."""
        state = RateState(4, 1.0, 1)
        assert [0.0, 0.25, 0.5, 0.75, 1.0] == [state.reserve(0.0, math.inf) for _ in range(5)]

    def test_burst_limits_short_windows_and_keeps_the_rate(self) -> None:
        """rate=6, burst=2: two starts per 1/3 s, six per second."""
        state = RateState(6, 1.0, 2)
        starts = [state.reserve(0.0, math.inf) for _ in range(12)]
        assert 0 == over_limit(starts, 2, 1.0 / 3.0)
        assert 0 == over_limit(starts, 6, 1.0)
        assert pytest.approx(5.0 / 3.0) == starts[-1]

    def test_memory_is_bounded_by_the_rule_and_drains_when_idle(self) -> None:
        """The log never holds more than rate entries and empties after a quiet window."""
        state = RateState(3, 1.0)
        for i in range(10_000):
            state.reserve(i * 0.34, math.inf)
        assert 3 == len(state.log)
        state.reserve(10_000.0, math.inf)
        assert 1 == len(state.log)

    def test_pending_counts_future_reservations(self) -> None:
        """pending() is the number of reserved starts still ahead."""
        state = RateState(2, 1.0)
        for _ in range(6):
            state.reserve(0.0, math.inf)
        assert 4 == state.pending(0.0)  # two reserved at 1.0, two at 2.0
        assert 2 == state.pending(1.0)
        assert 0 == state.pending(2.0)

    @given(
        rate=st.integers(1, 5),
        arrivals=st.lists(st.floats(0.0, 0.5, allow_nan=False), min_size=1, max_size=40),
        burst=st.integers(1, 5),
    )
    def test_pending_is_every_caller_holding_a_future_start(
        self, rate: int, arrivals: list[float], burst: int
    ) -> None:
        """pending(now) is how many reservations made so far start after now, however many."""
        state = RateState(rate, 1.0, min(burst, rate))
        starts = []
        now = 0.0
        for step in arrivals:
            now += step
            state.reserve(now, math.inf)
            starts.append(state.log[-1])  # the start reserved (now + wait can be an ulp off)
            assert sum(1 for t in starts if t > now) == state.pending(now)
        for later in (now, now + 0.5, now + 1.0, max(starts)):
            assert sum(1 for t in starts if t > later) == state.pending(later)

    def test_floor_delays_the_start(self) -> None:
        """A backoff window ending at floor pushes the start there."""
        state = RateState(2, 1.0)
        assert 5.0 == state.reserve(0.0, math.inf, floor=5.0)
        assert 5.0 == state.reserve(0.0, math.inf, floor=5.0)
        assert 6.0 == state.reserve(0.0, math.inf, floor=5.0)


class TestRateLimitedSync:
    def test_waits_for_its_turn(self, clock: FakeClock) -> None:
        """The third call of rate=2 per 1 s sleeps 1 s; starts land on the sliding windows."""

        @rate_limited(rate=2, per=1.0)
        def call() -> float:
            return clock.monotonic()

        assert [0.0, 0.0, 1.0, 1.0, 2.0] == [call() for _ in range(5)]
        assert [1.0, 1.0] == clock.sleeps

    def test_refuses_at_once_without_waiting(self, clock: FakeClock) -> None:
        """wait=False raises RateLimitedError naming the key, the limit and when to retry."""

        @rate_limited(rate=2, per=10.0, wait=False, key="api")
        def call() -> None:
            pass

        call()
        clock.advance(4.0)
        call()
        with pytest.raises(RateLimitedError) as info:
            call()
        assert "api" == info.value.key
        assert 6.0 == info.value.retry_after
        assert "2 per 10 s" in str(info.value)
        assert [] == clock.sleeps

    def test_turn_beyond_timeout_fails_at_once_and_keeps_the_slot_free(
        self, clock: FakeClock
    ) -> None:
        """A turn further than timeout raises at once; it reserves nothing for later callers."""

        @rate_limited(rate=1, per=5.0, timeout=2.0, key="t")
        def call() -> float:
            return clock.monotonic()

        call()
        with pytest.raises(RateLimitedError) as info:
            call()
        assert 5.0 == info.value.retry_after
        assert [] == clock.sleeps
        clock.advance(3.5)
        assert 5.0 == call()  # waited 1.5 s: within its timeout

    def test_functions_with_one_key_share_the_budget(self, clock: FakeClock) -> None:
        """Two functions with the same key draw on one budget."""

        @rate_limited(rate=2, per=1.0, key="shared")
        def one() -> float:
            return clock.monotonic()

        @rate_limited(rate=2, per=1.0, key="shared")
        def two() -> float:
            return clock.monotonic()

        assert [0.0, 0.0, 1.0] == [one(), two(), one()]

    def test_same_key_with_another_rate_is_refused(self) -> None:
        """Declaring a key again with a different rate is a ValueError at decoration time."""
        rate_limited(rate=2, key="k")(lambda: None)
        with pytest.raises(ValueError, match="'k' is already limited to 2 per 1 s"):
            rate_limited(rate=3, key="k")(lambda: None)

    def test_impossible_policies_fail_at_decoration(self) -> None:
        """rate < 1, per <= 0 and burst > rate are ValueErrors naming the field."""
        with pytest.raises(ValueError, match="RateLimitPolicy.rate"):
            rate_limited(rate=0)
        with pytest.raises(ValueError, match="RateLimitPolicy.per"):
            rate_limited(rate=1, per=0)
        with pytest.raises(ValueError, match="RateLimitPolicy.burst"):
            rate_limited(rate=2, burst=3)
        with pytest.raises(ValueError, match="retry_after_cap"):
            rate_limited(rate=2, retry_after_cap=-1)

    def test_bare_use_and_generators_are_type_errors(self) -> None:
        """Bare @rate_limited (no rate) and generator functions are refused with a TypeError."""
        with pytest.raises(TypeError, match="needs a rate"):
            rate_limited(lambda: None)

        def gen() -> object:
            yield 1

        with pytest.raises(TypeError, match="generator"):
            rate_limited(rate=1)(gen)

    def test_policy_object_and_methods(self, clock: FakeClock) -> None:
        """A RateLimitPolicy works positionally, on methods, classmethods and staticmethods."""
        policy = RateLimitPolicy(rate=1, per=1.0, key="m")

        class Client:
            @rate_limited(policy)
            def get(self) -> float:
                return clock.monotonic()

            @rate_limited(policy)
            @classmethod
            def cls_get(cls) -> float:
                return clock.monotonic()

            @staticmethod
            @rate_limited(policy)
            def static_get() -> float:
                return clock.monotonic()

        assert [0.0, 1.0, 2.0] == [Client().get(), Client.cls_get(), Client.static_get()]

    def test_switched_off_passes_calls_through(self, clock: FakeClock) -> None:
        """With set_active(False) nothing is limited."""

        @rate_limited(rate=1, per=1.0, wait=False)
        def call() -> int:
            return 1

        set_active(False)
        assert [1, 1, 1] == [call(), call(), call()]

    def test_reset_gives_a_fresh_budget(self, clock: FakeClock) -> None:
        """resilience.testing.reset() clears a limiter decorated before it."""
        from resilience.testing import reset

        @rate_limited(rate=1, per=100.0, wait=False)
        def call() -> int:
            return 1

        call()
        reset()
        assert 1 == call()

    def test_events_for_waits_and_refusals(self, clock: FakeClock) -> None:
        """rate.wait carries the key, the wait and the queue depth; rate.rejected the retry_after."""

        @rate_limited(rate=1, per=1.0, key="ev")
        def call() -> None:
            pass

        @rate_limited(rate=1, per=1.0, key="ev2", wait=False)
        def refused() -> None:
            pass

        with capture_events("resilience.rate") as events:
            call()
            call()
            refused()
            with pytest.raises(RateLimitedError):
                refused()
        waits = [e for e in events if e.name == "resilience.rate.wait"]
        assert 1.0 == waits[0].measurements["wait"]
        assert 1.0 == waits[0].measurements["queue_depth"]
        assert "ev" == waits[0].metadata["key"]
        rejected = [e for e in events if e.name == "resilience.rate.rejected"]
        assert 1 == len(rejected)


class TestBackoffWindowInLimiter:
    def test_a_429_makes_every_caller_of_the_key_wait(self, clock: FakeClock) -> None:
        """A failure with Retry-After opens the window; the next call of the key waits it out."""

        @rate_limited(rate=100, key="svc")
        def failing() -> None:
            raise Http429("7")

        @rate_limited(rate=100, key="svc")
        def other() -> float:
            return clock.monotonic()

        with capture_events("resilience.window") as events, pytest.raises(Http429):
            failing()
        assert 7.0 == backoff_window("svc").remaining()
        assert 7.0 == other()
        assert "failure" == events[0].metadata["reason"]

    def test_window_refuses_when_not_waiting(self, clock: FakeClock) -> None:
        """wait=False during an open window raises with the window's remaining time."""

        @rate_limited(rate=100, key="nw", wait=False)
        def call() -> None:
            pass

        backoff_window("nw").set(3.0)
        with pytest.raises(RateLimitedError, match="backoff window open") as info:
            call()
        assert 3.0 == info.value.retry_after

    def test_server_delay_is_capped(self, clock: FakeClock) -> None:
        """retry_after_cap bounds how long one Retry-After holds the window."""

        @rate_limited(rate=100, key="cap", retry_after_cap=2.0)
        def failing() -> None:
            raise Http429("3600")

        with pytest.raises(Http429):
            failing()
        assert 2.0 == backoff_window("cap").remaining()

    def test_no_hook_no_window(self, clock: FakeClock) -> None:
        """delay_hook=None: failures never open the window."""

        @rate_limited(rate=100, key="nh", delay_hook=None)
        def failing() -> None:
            raise Http429("5")

        with pytest.raises(Http429):
            failing()
        assert 0.0 == backoff_window("nh").remaining()

    @pytest.mark.anyio
    async def test_window_extended_during_the_wait_is_waited_out(self, clock: FakeClock) -> None:
        """A waiter re-checks when it wakes: a window extended meanwhile is waited out too."""

        @rate_limited(rate=100, key="ext")
        async def call() -> float:
            return clock.monotonic()

        window = backoff_window("ext")
        window.set(5.0)

        async def extend() -> None:
            await clock.asleep(1.0)
            window.set(9.0)  # ends at 10.0

        started, _ = await asyncio.gather(call(), extend())
        assert 10.0 == started

    @pytest.mark.anyio
    async def test_a_429_storm_is_absorbed_by_the_window(self, clock: FakeClock) -> None:
        """200 concurrent callers: one 429 holds all of them until the window ends, then they go."""
        calls: list[float] = []
        state = {"first": True}

        @rate_limited(rate=50, per=1.0, key="storm")
        async def call() -> None:
            calls.append(clock.monotonic())
            if state["first"]:
                state["first"] = False
                raise Http429("30")

        results = await asyncio.gather(*(call() for _ in range(200)), return_exceptions=True)
        assert 1 == sum(isinstance(r, Http429) for r in results)
        assert 0.0 == calls[0]
        assert all(t >= 30.0 for t in calls[50:])
        assert 0 == over_limit(calls, 50, 1.0)


class TestRateLimitedAsync:
    @pytest.mark.anyio
    async def test_thousand_tasks_fifo_and_never_over(self, clock: FakeClock) -> None:
        """1000 tasks: starts follow arrival order, no window over the limit, full rate achieved."""
        order: list[int] = []
        starts: list[float] = []

        @rate_limited(rate=50, per=1.0, burst=10)
        async def call(i: int) -> None:
            order.append(i)
            starts.append(clock.monotonic())

        await asyncio.gather(*(call(i) for i in range(1000)))
        assert list(range(1000)) == order
        assert 0 == over_limit(starts, 50, 1.0)
        assert 0 == over_limit(starts, 10, 0.2)
        achieved = len(starts) / (starts[-1] - starts[0] + 0.2)  # 20 bursts of 10 per second
        assert achieved >= 0.98 * 50

    @pytest.mark.anyio
    async def test_cancelled_waiter_never_breaks_the_rule(self, clock: FakeClock) -> None:
        """Cancelling waiters leaves the rule intact and the others proceed."""
        starts: list[float] = []

        @rate_limited(rate=2, per=1.0)
        async def call() -> None:
            starts.append(clock.monotonic())

        tasks = [asyncio.ensure_future(call()) for _ in range(8)]
        await clock.asleep(0.5)
        tasks[3].cancel()
        tasks[5].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert 6 == len(starts)
        assert 0 == over_limit(starts, 2, 1.0)

    @pytest.mark.anyio
    async def test_refuses_async(self, clock: FakeClock) -> None:
        """wait=False on an async function raises RateLimitedError."""

        @rate_limited(rate=1, per=1.0, wait=False)
        async def call() -> None:
            pass

        await call()
        with pytest.raises(RateLimitedError):
            await call()


class TestRealConcurrency:
    def test_32_threads_never_overrun_the_budget(self) -> None:
        """32 real threads on the real clock: every reservation respects the rule, FIFO per thread."""
        reserved: list[float] = []

        class Recording(deque[float]):
            """The reservation log, noting each reservation as it is made (under the lock)."""

            def append(self, start: float) -> None:
                reserved.append(start)
                super().append(start)

        done: list[float] = []

        @rate_limited(rate=40, per=0.05)
        def call() -> None:
            done.append(time.monotonic())

        (layer,) = layers_of(call)
        layer._backend._state.log = Recording(maxlen=40)

        def worker() -> None:
            for _ in range(5):
                call()

        threads = [threading.Thread(target=worker) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert 160 == len(done) == len(reserved)
        assert reserved == sorted(reserved)
        assert 0 == over_limit(reserved, 40, 0.05)
        assert reserved[-1] - reserved[0] >= 3 * 0.05  # 160 starts need four windows


class TestAdmit:
    def test_late_start_delays_the_next_one(self) -> None:
        """A waiter that starts late pushes back a successor reserved from its punctual time."""
        state = RateState(1, 1.0)
        assert 0.0 == state.reserve(0.0, math.inf)
        assert 1.0 == state.reserve(0.0, math.inf)  # reserved for 1.0
        assert 2.0 == state.reserve(0.0, math.inf)  # reserved for 2.0
        assert 0.0 == state.admit(1.3)  # the first waiter woke 0.3 s late
        assert pytest.approx(0.3) == state.admit(2.0)  # the second must not start before 2.3
        assert 0.0 == state.admit(2.3)
        assert [2.3] == list(state.starts)

    @given(
        rate=st.integers(min_value=1, max_value=6),
        lateness=st.lists(st.floats(min_value=0.0, max_value=0.5), min_size=1, max_size=60),
    )
    def test_admitted_starts_never_exceed_the_rule(self, rate: int, lateness: list[float]) -> None:
        """However late each waiter wakes, the admitted starts keep every window within rate."""
        state = RateState(rate, 1.0)
        reserved = []
        for _ in lateness:
            state.reserve(0.0, math.inf)
            reserved.append(state.log[-1])
        now = 0.0
        admitted: list[float] = []
        for slot, late in zip(reserved, lateness, strict=True):
            now = max(now, slot + late)
            while (wait := state.admit(now)) > 0.0:
                now += wait
            admitted.append(now)
        assert 0 == over_limit(admitted, rate, 1.0)


def test_memory_follows_the_window_not_the_rate() -> None:
    """A huge budget used slowly keeps only the last window's starts in memory."""
    state = RateState(10**7, 1.0)
    for i in range(100_000):
        assert 0.0 == state.reserve(i * 0.001, 0.0)
    assert (1000, 1000) == (len(state.log), len(state.starts))


class _Clock:
    """A clock read by hand, with the scheduling slack a real clock declares."""

    def __init__(self, slack: float) -> None:
        self.now = 0.0
        self.slack = slack

    def monotonic(self) -> float:
        return self.now


@given(
    rate=st.sampled_from([1, 2, 3, 7, 130]),
    burst=st.sampled_from([None, 1, 2]),
    slack=st.sampled_from([0.0, 0.0002, 0.01]),
    ops=st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.0, 0.001, 0.01, 0.3, 1.0, 2.5]),  # time since the last one
            st.sampled_from([math.inf, math.inf, 0.0, 0.5]),  # max wait
            st.sampled_from([None, None, None, None, 0.2, 0.0]),  # a window opened (0: closed)
        ),
        max_size=400,
    ),
)
def test_backend_inline_start_answers_as_the_rule(
    rate: int, burst: int | None, slack: float, ops: list[tuple[float, float, float | None]]
) -> None:
    """
    The memory backend's inline start with room (old entries dropped every 128) answers
    every reservation as ``RateState.reserve`` does fed the same times, and keeps the same
    entries inside the window.
    """
    burst = None if burst is None or burst >= rate else burst
    clock = _Clock(slack)
    window = MemoryWindowBackend(clock)
    backend = MemoryRateBackend(rate, 1.0, burst, window, clock)
    rule = RateState(rate, 1.0, burst)
    for step, max_wait, opened in ops:
        clock.now += step
        if opened:
            window.extend(opened)
        elif opened is not None:
            window.clear()  # closed early: reservations made behind it are still ahead
        expected = rule.reserve(clock.now, max_wait, window.end, slack)
        assert expected == backend.reserve(max_wait)
        state, now = backend._state, clock.now
        for mine, theirs, width in (
            (state.log, rule.log, 1.0),
            (state.starts, rule.starts, 1.0 + slack),
        ):
            live = [t for t in mine if t + width > now]
            assert [t for t in theirs if t + width > now] == live
            assert len(mine) - len(live) <= 128


def test_backend_memory_follows_the_window() -> None:
    """Through the backend too, a huge budget used slowly keeps about one window of starts."""
    clock = FakeClock()
    backend = MemoryRateBackend(10**7, 1.0, None, MemoryWindowBackend(clock), clock)
    for _ in range(100_000):
        assert 0.0 == backend.reserve(0.0)
        clock.advance(0.001)
    state = backend._state
    assert 1000 <= len(state.log) <= 1000 + 128
    assert 1000 <= len(state.starts) <= 1000 + 128


class TestSlack:
    def test_slack_widens_the_check_of_actual_starts(self) -> None:
        """With slack, a start right at the window's edge waits that much longer."""
        state = RateState(1, 1.0)
        assert 0.0 == state.reserve(0.0, math.inf, slack=0.001)
        assert 1.0 == state.reserve(0.0, math.inf, slack=0.001)  # reserved for 1.0
        assert 0.001 == pytest.approx(state.admit(1.0, 0.001))  # woke on time: a hair more
        assert 0.0 == state.admit(1.001, 0.001)

    def test_real_clock_has_slack_fake_has_none(self) -> None:
        """The system clock declares its scheduling jitter; virtual time has none."""
        from resilience import SystemClock
        from resilience.testing import FakeClock

        assert 0.0 < SystemClock.slack < 0.001
        assert 0.0 == getattr(FakeClock(), "slack", 0.0)
