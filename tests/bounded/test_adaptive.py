"""Tests for ``AdaptiveLimit``: the algorithms' rules, their bounds, and @bounded following them."""

from __future__ import annotations

import asyncio
import math
import threading
import time

from datetime import timedelta

import pytest

from hypothesis import given
from hypothesis import strategies as st

from resilience import (
    AdaptiveLimit,
    BoundedPolicy,
    bounded,
    get_bounded,
)
from resilience._bounded.adaptive import (
    ADAPTIVE_TOKENS_MAX,
    TIMED_PER_WINDOW,
    AdaptivePoolBackend,
    Aimd,
    Gradient2,
    Vegas,
    window_shape,
)
from resilience.stores import MemoryStore
from resilience.testing import FakeClock, capture_events


samples = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=1e6) | st.sampled_from([math.nan, math.inf, -1.0]),
        st.integers(min_value=0, max_value=2000),
        st.booleans(),
    ),
    max_size=200,
)


class TestAdaptiveLimitPolicy:
    @pytest.mark.parametrize(
        ("fields", "names"),
        [
            ({"algorithm": "cubic"}, "algorithm"),
            ({"min_limit": 0}, "min_limit"),
            ({"min_limit": 5, "max_limit": 4, "initial": 5}, "max_limit"),
            ({"initial": 0}, "initial"),
            ({"initial": 2000}, "initial"),
            ({"backoff_ratio": 1.0}, "backoff_ratio"),
            ({"backoff_ratio": 0.49}, "backoff_ratio"),
            ({"algorithm": "aimd", "timeout": 0.0}, "timeout"),
            ({"algorithm": "aimd", "timeout": -1.0}, "timeout"),
            ({"algorithm": "aimd", "timeout": math.nan}, "timeout"),
            ({"algorithm": "aimd", "timeout": math.inf}, "timeout"),
            ({"timeout": 1.0}, "timeout"),  # gradient2 reads latency itself
            ({"algorithm": "vegas", "timeout": 1.0}, "timeout"),
        ],
    )
    def test_out_of_range_fields_name_themselves(
        self, fields: dict[str, object], names: str
    ) -> None:
        """Each rule of the settled details is a ValueError naming the field."""
        with pytest.raises(ValueError, match=f"AdaptiveLimit.{names}"):
            AdaptiveLimit(**fields)  # type: ignore[arg-type]

    def test_defaults_are_the_contracts(self) -> None:
        """gradient2, 20, [1, 1000], 0.9, Exception."""
        limit = AdaptiveLimit()
        assert ("gradient2", 20, 1, 1000, 0.9, Exception) == (
            limit.algorithm,
            limit.initial,
            limit.min_limit,
            limit.max_limit,
            limit.backoff_ratio,
            limit.on_drop,
        )

    def test_timeout_is_seconds_or_a_timedelta_and_none_by_default(self) -> None:
        """None keeps drops to exceptions; a timedelta becomes float seconds; text is refused."""
        assert AdaptiveLimit(algorithm="aimd").timeout is None
        assert 0.25 == AdaptiveLimit(algorithm="aimd", timeout=timedelta(milliseconds=250)).timeout
        with pytest.raises(TypeError, match=r"AdaptiveLimit\.timeout"):
            AdaptiveLimit(algorithm="aimd", timeout="1s")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="algorithm='aimd' only"):
            AdaptiveLimit(algorithm="gradient2", timeout=1.0)

    def test_bounded_policy_from_dict_builds_a_nested_limit(self) -> None:
        """``limit`` may be a mapping in from_dict."""
        policy = BoundedPolicy.from_dict({"limit": {"algorithm": "aimd", "initial": 3}})
        assert AdaptiveLimit(algorithm="aimd", initial=3) == policy.limit

    def test_weight_above_min_limit_is_refused(self) -> None:
        """A weight the limit could shrink below would never run again."""
        with pytest.raises(ValueError, match=r"limit.min_limit \(2\)"):
            BoundedPolicy(limit=AdaptiveLimit(min_limit=2, initial=2), weight=3)


class TestAimd:
    @given(samples, st.integers(min_value=1, max_value=50), st.integers(min_value=0, max_value=50))
    def test_is_exact(self, feed: list[tuple[float, int, bool]], low: int, span: int) -> None:
        """A drop: max(min, floor(limit * ratio)); a busy success: min(max, limit + 1)."""
        policy = AdaptiveLimit(
            algorithm="aimd", min_limit=low, max_limit=low + span, initial=low, backoff_ratio=0.75
        )
        machine = Aimd(policy)
        expected = low
        for rtt, in_use, dropped in feed:
            if dropped:
                expected = max(low, math.floor(expected * 0.75))
            elif in_use >= expected / 2:
                expected = min(low + span, expected + 1)
            assert expected == machine.update(rtt, in_use, dropped)

    @given(
        samples,
        st.integers(min_value=1, max_value=50),
        st.integers(min_value=0, max_value=50),
        st.floats(min_value=1e-6, max_value=1e6),
    )
    def test_a_call_slower_than_the_timeout_is_a_drop(
        self, feed: list[tuple[float, int, bool]], low: int, span: int, timeout: float
    ) -> None:
        """With ``timeout``, a drop is an exception or an RTT above it; the arithmetic is kept."""
        policy = AdaptiveLimit(
            algorithm="aimd",
            min_limit=low,
            max_limit=low + span,
            initial=low + span,
            backoff_ratio=0.5,
            timeout=timeout,
        )
        machine = Aimd(policy)
        expected = low + span
        for rtt, in_use, dropped in feed:
            if dropped or rtt > timeout:  # NaN is not slower than anything
                expected = max(low, math.floor(expected * 0.5))
            elif in_use >= expected / 2:
                expected = min(low + span, expected + 1)
            assert expected == machine.update(rtt, in_use, dropped)
            assert low <= machine.limit <= low + span

    def test_timeout_worked_numbers(self) -> None:
        """At a 0.2 s timeout: 0.2 s is in time (10 -> 11), 0.21 s is a drop (11 -> 9)."""
        machine = Aimd(AdaptiveLimit(algorithm="aimd", initial=10, timeout=0.2))
        assert 11 == machine.update(0.2, 10, dropped=False)
        assert 9 == machine.update(0.21, 10, dropped=False)
        assert 8 == machine.update(0.01, 10, dropped=True)

    def test_worked_numbers(self) -> None:
        """10 -> 11 busy, holds when idle, 11 -> 9 on a drop (floor of 9.9)."""
        machine = Aimd(AdaptiveLimit(algorithm="aimd", initial=10))
        assert 11 == machine.update(0.1, 5, dropped=False)
        assert 11 == machine.update(0.1, 5, dropped=False)  # 5 < 11 / 2: idle, holds
        assert 9 == machine.update(0.1, 11, dropped=True)


class TestGradientAndVegas:
    @pytest.mark.parametrize("kind", [Gradient2, Vegas])
    @given(feed=samples)
    def test_limit_stays_in_bounds(
        self, kind: type[Gradient2 | Vegas], feed: list[tuple[float, int, bool]]
    ) -> None:
        """Whatever the samples (NaN, inf, zero RTTs), the limit stays in [min, max]."""
        machine = kind(AdaptiveLimit(initial=5, min_limit=3, max_limit=40))
        for rtt, in_use, dropped in feed:
            limit = machine.update(rtt, in_use, dropped)
            assert 3 <= limit <= 40
            assert limit == machine.limit

    @pytest.mark.parametrize("kind", [Gradient2, Vegas])
    @given(feed=samples)
    def test_sustained_drops_never_raise_it(
        self, kind: type[Gradient2 | Vegas], feed: list[tuple[float, int, bool]]
    ) -> None:
        """A drop never makes the limit higher than before it."""
        machine = kind(AdaptiveLimit(initial=50, max_limit=100))
        for rtt, in_use, _ in feed:
            before = machine.limit
            assert machine.update(rtt, in_use, dropped=True) <= before

    @pytest.mark.parametrize("kind", [Gradient2, Vegas])
    def test_grows_while_latency_holds_and_shrinks_when_it_climbs(
        self, kind: type[Gradient2 | Vegas]
    ) -> None:
        """Busy at a flat RTT it grows; when the RTT triples it comes back down."""
        machine = kind(AdaptiveLimit(initial=10))
        for _ in range(3000):
            machine.update(0.1, machine.limit, dropped=False)
        grown = machine.limit
        assert grown > 30
        for _ in range(3000):
            machine.update(0.3, machine.limit, dropped=False)
        assert machine.limit < grown / 2

    def test_gradient2_holds_while_less_than_half_is_in_use(self) -> None:
        """An application-limited pool learns nothing: the limit does not move."""
        machine = Gradient2(AdaptiveLimit(initial=20))
        for _ in range(100):
            assert 20 == machine.update(0.1, 9, dropped=False)


class CountingClock(FakeClock):
    """Virtual time that counts its ``monotonic`` reads (the calls that were timed)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def monotonic(self) -> float:
        self.reads += 1
        return super().monotonic()


def _window(store: MemoryStore, key: str) -> Gradient2:
    window = store.peek("pool", key).window
    assert window is not None
    return window


class TestTimedCalls:
    """A wide Gradient2 window times every stride-th call; drops and ``busy`` count them all."""

    @given(short=st.integers(1, 100), limit=st.integers(1, 10**6))
    def test_window_shape_spans_the_window_with_enough_timed_calls(
        self, short: int, limit: int
    ) -> None:
        """``due`` timed calls, every ``stride``-th, cover the window; 32 at least, 64 at most."""
        calls = max(short, limit)
        stride, due = window_shape(short, limit)
        assert (stride == 1) == (calls < 2 * TIMED_PER_WINDOW)
        assert (due - 1) * stride < calls <= due * stride
        if stride > 1:
            assert TIMED_PER_WINDOW <= due <= 2 * TIMED_PER_WINDOW

    def test_a_narrow_pool_times_every_call(self) -> None:
        """At the default initial of 20 every call reads the clock twice, as before."""
        clock = CountingClock()
        call = bounded(limit=AdaptiveLimit(), key="narrow", clock=clock)(lambda: None)
        for _ in range(50):
            call()
        assert 100 == clock.reads

    def test_a_wide_pool_times_every_stride_th_call_and_closes_after_due(self) -> None:
        """640 permits: every 20th call is timed; the window closes on its 32nd timed call."""
        clock = CountingClock()
        store = MemoryStore()
        call = bounded(
            limit=AdaptiveLimit(initial=640, max_limit=1000), key="wide", store=store, clock=clock
        )(lambda: clock.advance(0.01))
        assert (20, 32) == window_shape(10, 640)
        closes = []
        for n in range(1, 1262):
            call()
            if _window(store, "wide").long_n > len(closes):
                closes.append(n)
        assert [621, 1261] == closes  # call 1 is timed, then every 20th: one per 640 calls
        assert 2 * 64 == clock.reads
        assert 640 == store.peek("pool", "wide").limit  # one unit in use: it holds

    @pytest.mark.anyio
    async def test_busy_counts_the_untimed_calls_too(self, clock: FakeClock) -> None:
        """320 tasks at once: the most in use is 320 though the last timed start saw 301."""
        store = MemoryStore()

        @bounded(limit=AdaptiveLimit(initial=640, max_limit=1000), key="busy", store=store)
        async def call() -> None:
            await clock.asleep(1.0)

        tasks = [asyncio.create_task(call()) for _ in range(320)]
        await clock.asleep(0.5)
        window = _window(store, "busy")
        assert (320, 0) == (window.busy, window.count)  # 16 timed starts, none ended
        await asyncio.gather(*tasks)
        assert (16, 0) == (window.count, store.peek("pool", "busy").used)

    def test_an_untimed_drop_still_cuts_the_limit(self) -> None:
        """Drops are never sampled: the second call (untimed) drops 640 -> floor(576.0)."""
        calls = iter([None, ConnectionError, ValueError])
        limit = AdaptiveLimit(initial=640, max_limit=1000, on_drop=ConnectionError)

        @bounded(limit=limit, key="untimed-drop")
        def call() -> None:
            error = next(calls)
            if error is not None:
                raise error

        call()
        with pytest.raises(ConnectionError):
            call()
        pool = get_bounded("untimed-drop")
        assert (576, 0) == (pool.limit, pool.in_use)
        with pytest.raises(ValueError):  # not a drop: no sample, the permit back
            call()
        assert (576, 0) == (pool.limit, pool.in_use)

    @pytest.mark.anyio
    async def test_cancelled_untimed_callers_leak_nothing(self, clock: FakeClock) -> None:
        """Tasks of a wide pool (mostly untimed) cancelled mid-call leave it empty."""

        @bounded(limit=AdaptiveLimit(initial=640, max_limit=1000), key="wide-cancel")
        async def call() -> None:
            await clock.asleep(1.0)

        tasks = [asyncio.create_task(call()) for _ in range(100)]
        await clock.asleep(0.5)
        for task in tasks[::3]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        pool = get_bounded("wide-cancel")
        assert (0, 0, 640) == (pool.in_use, pool.waiting, pool.limit)

    def test_real_threads_through_a_wide_pool_keep_every_unit(self) -> None:
        """8 threads, timed and untimed calls racing: nothing held after, bounds kept."""
        limit = AdaptiveLimit(initial=200, min_limit=100, max_limit=400)

        @bounded(limit=limit, key="wide-threads")
        def call(n: int) -> None:
            if n % 50 == 0:
                raise ConnectionError

        def worker() -> None:
            for n in range(2000):
                try:
                    call(n)
                except ConnectionError:
                    pass

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        pool = get_bounded("wide-threads")
        assert (0, 0) == (pool.in_use, pool.waiting)
        assert 100 <= pool.limit <= 400


class TestAdaptivePool:
    def test_a_fall_below_the_held_units_is_a_debt_their_releases_pay(self) -> None:
        """Shrunk below what is held: nobody starts until the held units are under the limit."""
        pool = AdaptivePoolBackend(AdaptiveLimit(algorithm="aimd", initial=4, max_limit=8))
        assert [1, 2, 3, 4, 0] == [pool.try_acquire_used(1) for _ in range(5)]
        pool.sample(0.1, 4, dropped=True)  # floor(4 * 0.9) = 3 with 4 held
        assert (3, 4, 1) == (pool.limit, pool.used, pool.debt)
        assert 0 == pool.try_acquire_used(1)
        pool.release(1)  # pays the debt: no token comes back
        assert (3, 0, 0) == (pool.used, pool.available(), pool.debt)
        pool.release(1)
        assert 3 == pool.try_acquire_used(1)

    def test_a_huge_ceiling_counts_instead_of_keeping_tokens(self) -> None:
        """max_limit above the token cap: the same rules on a counter, in constant memory."""
        pool = AdaptivePoolBackend(
            AdaptiveLimit(algorithm="aimd", initial=2, max_limit=ADAPTIVE_TOKENS_MAX + 1)
        )
        assert [1, 2, 0] == [pool.try_acquire_used(1) for _ in range(3)]
        pool.sample(0.1, 2, dropped=True)  # floor(2 * 0.9) = 1: a debt of one
        pool.release(1)
        assert (1, 1, 0) == (pool.limit, pool.used, pool.debt)
        pool.release(1)
        pool.sample(0.1, 1, dropped=False)  # busy: 1 -> 2
        assert [1, 2, 0] == [pool.try_acquire_used(1) for _ in range(3)]

    def test_a_token_taken_while_in_debt_pays_it(self) -> None:
        """A release racing a fall can leave a token free in debt: taking it pays instead."""
        pool = AdaptivePoolBackend(AdaptiveLimit(algorithm="aimd", initial=2))
        pool.try_acquire_used(1)
        pool.try_acquire_used(1)
        pool.sample(0.1, 2, dropped=True)  # floor(2 * 0.9) = 1: a debt of one
        pool._push(None)  # as if a release had read no debt just before the fall
        assert 0 == pool.try_acquire_used(1)
        assert (0, 1) == (pool.debt, pool.limit)

    @given(
        st.lists(
            st.tuples(st.sampled_from(["take", "take2", "give", "sample"]), st.booleans()),
            max_size=120,
        ),
        st.sampled_from(["aimd", "vegas", "gradient2"]),
    )
    def test_no_start_above_the_live_limit_and_every_unit_counted(
        self, steps: list[tuple[str, bool]], algorithm: str
    ) -> None:
        """Any order of takes, releases and samples: the units held are counted exactly."""
        pool = AdaptivePoolBackend(
            AdaptiveLimit(algorithm=algorithm, initial=3, min_limit=2, max_limit=6)
        )
        held = 0
        for step, dropped in steps:
            if step in ("take", "take2"):
                weight = 1 if step == "take" else 2
                before, limit = pool.used, pool.limit
                got = pool.try_acquire_used(weight)
                if got:
                    held += weight
                    assert got == held <= limit
                else:
                    assert before + weight > limit
            elif step == "give" and held:
                pool.release(1)
                held -= 1
            elif step == "sample":
                pool.sample(0.05 if dropped else 0.01, held, dropped)
            assert held == pool.used
            assert 2 <= pool.limit <= 6
            assert pool.debt == max(0, held - pool.limit)


@pytest.mark.anyio
class TestBoundedAdaptiveAsync:
    async def test_the_live_limit_follows_and_in_use_never_exceeds_it(
        self, clock: FakeClock
    ) -> None:
        """Tasks on virtual time: AIMD climbs while calls are fast, then drops on errors."""
        seen: list[tuple[int, int]] = []
        failing = False

        @bounded(limit=AdaptiveLimit(algorithm="aimd", initial=2, max_limit=8), key="aimd")
        async def call() -> None:
            pool = get_bounded("aimd")
            seen.append((pool.in_use, pool.limit))
            await clock.asleep(0.01)
            if failing:
                raise ConnectionError

        async def client() -> None:
            for _ in range(30):
                try:
                    await call()
                except ConnectionError:
                    pass

        await asyncio.gather(*(client() for _ in range(10)))
        pool = get_bounded("aimd")
        assert 8 == pool.limit
        failing = True
        await asyncio.gather(*(client() for _ in range(2)))
        assert 1 == pool.limit
        assert all(in_use <= limit for in_use, limit in seen)
        assert (0, 0) == (pool.in_use, pool.waiting)

    async def test_slow_calls_bring_an_aimd_timeout_limit_down_within_bounds(
        self, clock: FakeClock
    ) -> None:
        """Latency that grows with in_use: a timeout holds the limit near where it crosses."""
        seen: list[tuple[int, int]] = []
        limit = AdaptiveLimit(algorithm="aimd", initial=2, min_limit=2, max_limit=50, timeout=0.1)

        @bounded(limit=limit, key="aimd-timeout")
        async def call() -> None:
            pool = get_bounded("aimd-timeout")
            seen.append((pool.in_use, pool.limit))
            await clock.asleep(0.01 * pool.in_use)  # a queueing upstream: 10 ms per call held

        async def client() -> None:
            for _ in range(40):
                await call()

        await asyncio.gather(*(client() for _ in range(30)))
        limits = [limit for _, limit in seen]
        assert all(2 <= value <= 50 for value in limits)
        assert max(limits) < 20  # 10 in flight is 0.1 s: above it calls are drops
        assert max(limits[len(limits) // 2 :]) >= 8  # and it climbs back to the crossing
        assert all(in_use <= value for in_use, value in seen)
        assert (0, 0) == (get_bounded("aimd-timeout").in_use, get_bounded("aimd-timeout").waiting)

    async def test_cancelled_callers_leak_nothing(self, clock: FakeClock) -> None:
        """Running and waiting tasks cancelled at random moments leave the pool empty."""

        @bounded(limit=AdaptiveLimit(initial=3, min_limit=1, max_limit=10), key="cancel")
        async def call() -> None:
            await clock.asleep(1.0)

        tasks = [asyncio.create_task(call()) for _ in range(20)]
        await clock.asleep(0.5)
        for task in tasks[::2]:
            task.cancel()
        await clock.asleep(1.2)
        for task in tasks[1::4]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        pool = get_bounded("cancel")
        assert (0, 0) == (pool.in_use, pool.waiting)
        assert 1 <= pool.limit <= 10


class TestLimitEvents:
    def test_each_move_of_the_limit_is_an_event(self, clock: FakeClock) -> None:
        """resilience.bounded.limit carries the new and the previous limit."""

        @bounded(limit=AdaptiveLimit(algorithm="aimd", initial=2, max_limit=3), key="moves")
        def call(fail: bool) -> None:
            if fail:
                raise ConnectionError

        with capture_events("resilience.bounded.limit") as events:
            call(False)  # 1 of 2 in use: busy, 2 -> 3
            call(False)  # 1 of 3 in use: idle, holds
            with pytest.raises(ConnectionError):
                call(True)  # a drop: floor(3 * 0.9) = 2
        assert [(3.0, 2.0, False), (2.0, 3.0, True)] == [
            (e.measurements["limit"], e.measurements["previous"], e.metadata["dropped"])
            for e in events
        ]


class TestBoundedAdaptiveThreads:
    def test_real_threads_keep_the_invariants(self) -> None:
        """16 threads through an AIMD pool: in_use <= limit at every start, nothing left held."""
        broken: list[tuple[int, int]] = []
        lock = threading.Lock()

        @bounded(limit=AdaptiveLimit(algorithm="aimd", initial=2, max_limit=6), key="threads")
        def call(n: int) -> None:
            pool = get_bounded("threads")
            in_use, limit = pool.in_use, pool.limit
            if in_use > limit + 1:  # another thread may release and shrink between two reads
                with lock:
                    broken.append((in_use, limit))
            time.sleep(0.0002)
            if n % 7 == 0:
                raise ValueError(n)

        def worker() -> None:
            for n in range(40):
                try:
                    call(n)
                except ValueError:
                    pass

        threads = [threading.Thread(target=worker) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        pool = get_bounded("threads")
        assert [] == broken
        assert (0, 0) == (pool.in_use, pool.waiting)
        assert 1 <= pool.limit <= 6

    def test_real_threads_with_a_timeout_keep_the_bounds(self) -> None:
        """Threads whose calls are sometimes slower than the timeout: the limit stays in bounds."""
        limits: list[int] = []
        policy = AdaptiveLimit(algorithm="aimd", initial=3, min_limit=2, max_limit=9, timeout=0.001)

        @bounded(limit=policy, key="threads-timeout")
        def call(n: int) -> None:
            limits.append(get_bounded("threads-timeout").limit)
            time.sleep(0.002 if n % 3 == 0 else 0.0)

        def worker() -> None:
            for n in range(30):
                call(n)

        threads = [threading.Thread(target=worker) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        pool = get_bounded("threads-timeout")
        assert all(2 <= value <= 9 for value in limits)
        assert min(limits) < max(limits)  # it moved both ways, not pinned at a bound
        assert (0, 0) == (pool.in_use, pool.waiting)
        assert 2 <= pool.limit <= 9


class TestSharing:
    def test_same_key_needs_the_same_limit(self) -> None:
        """An equal AdaptiveLimit shares the pool; another one, or a fixed limit, is refused."""
        limit = AdaptiveLimit(initial=4)

        @bounded(limit=limit, key="shared")
        def one() -> None: ...

        @bounded(limit=AdaptiveLimit(initial=4), key="shared")
        def two() -> None: ...

        with pytest.raises(ValueError, match="same limit"):

            @bounded(limit=AdaptiveLimit(initial=5), key="shared")
            def three() -> None: ...

        with pytest.raises(ValueError, match="same limit"):

            @bounded(limit=4, key="shared")
            def four() -> None: ...

        one()
        two()
        assert 4 <= get_bounded("shared").limit

    def test_a_fixed_pool_refuses_an_adaptive_declaration(self) -> None:
        """A key that holds a fixed pool cannot be declared adaptive."""

        @bounded(limit=4, key="fixed")
        def one() -> None: ...

        with pytest.raises(ValueError, match="same limit"):

            @bounded(limit=AdaptiveLimit(initial=4), key="fixed")
            def two() -> None: ...

    def test_get_bounded_views_fixed_pools_and_refuses_unknown_keys(self) -> None:
        """A fixed pool's view reports its limit; an unknown key is a KeyError naming it."""

        @bounded(limit=3, key="plain")
        def one() -> None: ...

        pool = get_bounded("plain")
        assert (3, 0, 0) == (pool.limit, pool.in_use, pool.waiting)
        assert "plain" in repr(pool)
        with pytest.raises(KeyError, match="'nope'"):
            get_bounded("nope")
