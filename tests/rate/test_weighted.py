"""Tests for weighted rate limits (``cost``, ``settle``) and ``pace_from_headers``."""

from __future__ import annotations

import asyncio

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilience import RateLimitedError, RateLimitPolicy, rate_limited, testing
from resilience._rate.state import RateState
from resilience.testing import FakeClock


class Reply:
    """A result carrying response headers, as an SDK's raw response would."""

    def __init__(self, headers: dict[str, str], used: int | None = None) -> None:
        self.headers = headers
        self.used = used


class TestPolicy:
    def test_a_cost_above_the_rate_names_both(self) -> None:
        """cost > rate could never start: a ValueError at decoration."""
        with pytest.raises(ValueError, match=r"cost \(11\) must be <= rate \(10\)"):
            RateLimitPolicy(rate=10, cost=11)

    @pytest.mark.parametrize("cost", [0, -1, 1.5, True])
    def test_bad_int_costs(self, cost: object) -> None:
        """A cost is a whole number >= 1 (or a callable)."""
        with pytest.raises((ValueError, TypeError), match="RateLimitPolicy.cost"):
            RateLimitPolicy(rate=10, cost=cost)  # type: ignore[arg-type]

    def test_settle_must_be_callable_and_pace_a_bool(self) -> None:
        """The new fields are validated too; pace_from_headers defaults to False."""
        with pytest.raises(TypeError, match="RateLimitPolicy.settle"):
            RateLimitPolicy(rate=10, settle=3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="RateLimitPolicy.pace_from_headers"):
            RateLimitPolicy(rate=10, pace_from_headers=1)  # type: ignore[arg-type]
        assert RateLimitPolicy(rate=1).pace_from_headers is False


class TestWeighted:
    def test_a_call_takes_its_cost(self, store: object, clock: FakeClock) -> None:
        """10 per minute at cost 3: three calls at once, the fourth refused until 60 s."""

        @rate_limited(rate=10, per=60.0, cost=3, wait=False, key="cost", store=store)
        def call() -> None: ...

        for _ in range(3):
            call()
        with pytest.raises(RateLimitedError) as info:
            call()
        assert 60.0 == pytest.approx(info.value.retry_after)

    def test_callable_cost_sees_the_arguments_and_is_checked_before_calling(
        self, store: object, clock: FakeClock
    ) -> None:
        """The callable gets the call's arguments; above rate it is a ValueError first."""
        ran = []

        @rate_limited(rate=100, per=60.0, key="tokens", cost=lambda text: len(text), store=store)
        def call(text: str) -> None:
            ran.append(text)

        call("a" * 60)
        call("b" * 40)
        assert [] == clock.sleeps
        call("c" * 10)
        assert [60.0] == clock.sleeps
        with pytest.raises(ValueError, match="101 units, above the rate of 100"):
            call("d" * 101)
        assert 3 == len(ran)

    @pytest.mark.parametrize("answer", [True, 1.0, 0, "1"])
    def test_a_callable_answering_a_non_count_is_refused(
        self, answer: object, clock: FakeClock
    ) -> None:
        """Only a whole number passes: True and 1.0 are not the cost 1."""

        @rate_limited(rate=10, key=f"bad-answer-{answer!r}", cost=lambda: answer)
        def call() -> None: ...

        with pytest.raises(ValueError, match="must return a whole number >= 1"):
            call()

    def test_answers_of_one_and_more_share_one_budget(
        self, store: object, clock: FakeClock
    ) -> None:
        """A callable answering 1 takes the plain start, its other answers units: one log."""
        costs = [1, 3, 1, 1]

        @rate_limited(rate=4, per=1.0, key="mixed", cost=lambda: costs.pop(0), store=store)
        def call() -> None: ...

        for _ in range(4):
            call()
        assert [1.0] == clock.sleeps  # 1 + 3 fill the second; the third waits for it to pass

    def test_settle_refunds_as_of_the_start(self, store: object, clock: FakeClock) -> None:
        """Estimate 8, used 2: the refund lets the next 8 start at once."""

        @rate_limited(rate=10, per=60.0, cost=8, settle=lambda r: r.used, key="refund", store=store)
        def call(used: int) -> Reply:
            return Reply({}, used)

        call(2)
        call(2)
        assert [] == clock.sleeps
        call(8)
        assert [60.0] == clock.sleeps

    def test_settle_charges_the_difference(self, store: object, clock: FakeClock) -> None:
        """Estimate 2, used 9: the next call of 2 waits for the window to pass."""

        @rate_limited(rate=10, per=60.0, cost=2, settle=lambda r: r.used, key="charge", store=store)
        def call(used: int) -> Reply:
            return Reply({}, used)

        call(9)
        call(1)
        assert [60.0] == clock.sleeps

    def test_settle_none_keeps_the_estimate(self, store: object, clock: FakeClock) -> None:
        """None from settle: the estimate stands."""

        @rate_limited(
            rate=4, per=10.0, cost=2, settle=lambda r: None, key="keep", wait=False, store=store
        )
        def call() -> None: ...

        call()
        call()
        with pytest.raises(RateLimitedError):
            call()

    @settings(max_examples=50)
    @given(
        st.lists(
            st.tuples(st.integers(1, 10), st.integers(0, 10), st.floats(0.0, 3.0)),
            min_size=1,
            max_size=40,
        )
    )
    def test_every_start_fits_its_cost_beside_the_settled_units(
        self, calls: list[tuple[int, int, float]]
    ) -> None:
        """Any estimates, usages and gaps: at each start, settled units + cost <= rate."""
        testing.reset()
        with testing.virtual_time() as clock:
            seen: list[tuple[float, int, int]] = []

            @rate_limited(rate=10, per=5.0, cost=lambda c, u: c, settle=lambda u: u, key="p")
            def call(cost: int, used: int) -> int:
                seen.append((clock.monotonic(), cost, used))
                return used

            for cost, used, gap in calls:
                clock.advance(gap)
                call(cost, used)
            for i, (start, cost, _) in enumerate(seen):
                earlier = sum(u for t, _, u in seen[:i] if start - 5.0 + 1e-9 < t <= start)
                assert earlier + cost <= 10

    def test_stacked_rpm_and_tpm_both_hold(self, store: object, clock: FakeClock) -> None:
        """Requests per minute and tokens per minute stacked: both limits hold."""
        starts: list[tuple[float, int]] = []

        @rate_limited(rate=3, per=60.0, key="rpm", store=store)
        @rate_limited(
            rate=1000, per=60.0, key="tpm", cost=lambda n: n, settle=lambda r: r, store=store
        )
        def complete(tokens: int) -> int:
            starts.append((clock.monotonic(), tokens))
            return tokens

        for tokens in (400, 400, 100, 300, 900, 50):
            complete(tokens)
        for start, _ in starts:
            inside = [(t, n) for t, n in starts if start - 60.0 < t <= start]
            assert len(inside) <= 3
            assert sum(n for _, n in inside) <= 1000
        assert [0.0, 0.0, 0.0] == [t for t, _ in starts[:3]]

    @pytest.mark.anyio
    async def test_async_weighted_calls(self, clock: FakeClock) -> None:
        """Tasks share the weighted budget the same way (memory: virtual time jumps while a
        task awaits real I/O, so Redis's exact start times are checked by the sync tests)."""
        starts: list[float] = []

        @rate_limited(rate=10, per=1.0, key="async-w", cost=5)
        async def call() -> None:
            starts.append(clock.monotonic())
            await asyncio.sleep(0)

        await asyncio.gather(*(call() for _ in range(6)))
        assert [0.0, 0.0, 1.0, 1.0, 2.0, 2.0] == sorted(starts)

    @settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        st.lists(
            st.tuples(st.integers(1, 10), st.integers(0, 10), st.floats(0.0, 3.0)),
            min_size=1,
            max_size=15,
        )
    )
    def test_memory_and_redis_agree(
        self, redis_store: object, calls: list[tuple[int, int, float]]
    ) -> None:
        """The same costs, usages and gaps give the same start times on both stores."""
        from resilience.stores import MemoryStore

        runs = []
        for store in (MemoryStore(), redis_store):
            testing.reset()
            with testing.virtual_time() as clock:
                seen: list[float] = []

                @rate_limited(
                    rate=10,
                    per=5.0,
                    cost=lambda c, u: c,
                    settle=lambda u: u,
                    key="agree",
                    store=store,
                )
                def call(cost: int, used: int) -> int:
                    seen.append(round(clock.monotonic(), 6))
                    return used

                for cost, used, gap in calls:
                    clock.advance(gap)
                    call(cost, used)
                runs.append(seen)
                clear = getattr(store, "clear", None)
                if clear is not None:
                    clear()
        # Redis keeps whole microseconds, and a start can build on earlier rounded ones
        assert runs[0] == pytest.approx(runs[1], abs=1e-6 * (len(calls) + 1))


class TestDeadline:
    def test_a_weighted_turn_past_the_deadline_is_refused_at_once(self, clock: FakeClock) -> None:
        """A turn 60 s away under a 5 s deadline: RateLimitedError without waiting."""
        from resilience import deadline

        @rate_limited(rate=10, per=60.0, cost=6, key="w-deadline")
        def call() -> None: ...

        call()
        with deadline(5.0), pytest.raises(RateLimitedError):
            call()
        assert [] == clock.sleeps


class TestState:
    def test_units_rule_is_the_unit_rule_for_cost_one(self) -> None:
        """reserve_units with cost 1 grants exactly what reserve grants."""
        one, units = RateState(3, 1.0), RateState(3, 1.0)
        for now in (0.0, 0.1, 0.2, 0.3, 0.5, 1.05, 1.1):
            assert one.reserve(now, 10.0) == units.reserve_units(now, 10.0, 1)[0]


class TestPace:
    def test_an_exhausted_quota_opens_the_window(self, clock: FakeClock) -> None:
        """remaining 0 with a reset of 2 s: the next caller waits 2 s instead of a 429."""
        replies = [
            Reply({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}),
            Reply({"x-ratelimit-remaining-requests": "5"}),
        ]

        @rate_limited(rate=100, key="paced", pace_from_headers=True)
        def call() -> Reply:
            return replies.pop(0)

        call()
        call()
        assert [2.0] == clock.sleeps

    def test_exceptions_are_read_too_and_off_by_default(self, clock: FakeClock) -> None:
        """An error's response headers pace the key; without the flag nothing happens."""

        class Limited(Exception):
            headers = {"ratelimit": '"default";r=0;t=5'}

        @rate_limited(rate=100, key="paced-exc", pace_from_headers=True, delay_hook=None)
        def paced() -> None:
            raise Limited

        @rate_limited(rate=100, key="unpaced", delay_hook=None)
        def unpaced() -> None:
            raise Limited

        for func in (unpaced, unpaced):
            with pytest.raises(Limited):
                func()
        assert [] == clock.sleeps
        for _ in range(2):
            with pytest.raises(Limited):
                paced()
        assert [5.0] == clock.sleeps
