"""Tests for ``RetryBudget``: the sliding accounting and how ``@retry`` spends it."""

from __future__ import annotations

import pytest

from hypothesis import given
from hypothesis import strategies as st

from resilience import Backoff, RetryBudget, RetryPolicy, retry
from resilience._budget.state import BudgetState
from resilience._decorating import layers_of
from resilience.testing import FakeClock, capture_events


NO_WAIT = Backoff(base=0.0, max=0.0)


class TestBudgetState:
    def test_minimum_allows_retries_without_calls(self) -> None:
        """min_retries_per_second * window retries are allowed with no calls at all."""
        state = BudgetState(0.1, 10.0, 1.0)
        assert [True] * 10 + [False] == [state.try_retry(0.0) for _ in range(11)]

    def test_ratio_of_calls_adds_retries(self) -> None:
        """Each call adds ratio retries on top of the minimum."""
        state = BudgetState(0.2, 10.0, 0.0)
        for _ in range(50):
            state.record_call(0.0)
        assert 10.0 == state.balance(0.0)
        assert [True] * 10 + [False] == [state.try_retry(1.0) for _ in range(11)]

    def test_counts_expire_after_the_window(self) -> None:
        """Calls and retries older than the window stop counting."""
        state = BudgetState(1.0, 10.0, 0.0)
        for _ in range(5):
            state.record_call(0.0)
        assert state.try_retry(0.0)
        assert 4.0 == state.balance(9.9)
        assert 0.0 == state.balance(10.0)

    @given(
        events=st.lists(
            st.tuples(st.floats(min_value=0.0, max_value=3.0), st.booleans()), max_size=300
        )
    )
    def test_retries_never_exceed_the_budget(self, events: list[tuple[float, bool]]) -> None:
        """For any sequence, granted retries in the last window <= ratio * calls + minimum."""
        state = BudgetState(0.25, 10.0, 0.5)
        now = 0.0
        log: list[tuple[float, bool]] = []  # (time, is_call) of calls and granted retries
        for step, is_call in events:
            now += step
            if is_call:
                state.record_call(now)
                log.append((now, True))
            elif state.try_retry(now):
                log.append((now, False))
                # the budget counts at least the last 0.9 window (buckets slide in tenths)
                recent = [c for t, c in log if t > now - 9.0]
                retries = sum(1 for c in recent if not c)
                calls_all = sum(1 for t, c in log if c and t > now - 10.0)
                assert retries <= 0.25 * calls_all + 5.0


class TestRetryBudget:
    def test_validation(self) -> None:
        """Negative ratios, a zero window and wrong types are refused, naming the field."""
        with pytest.raises(ValueError, match="RetryBudget.ratio"):
            RetryBudget(ratio=-0.1)
        with pytest.raises(ValueError, match="RetryBudget.window"):
            RetryBudget(window=0)
        with pytest.raises(ValueError, match="min_retries_per_second"):
            RetryBudget(min_retries_per_second=-1)
        with pytest.raises(TypeError, match="RetryPolicy.budget"):
            RetryPolicy(budget=0.1)  # type: ignore[arg-type]

    def test_from_dict_nested(self) -> None:
        """RetryPolicy.from_dict builds a nested budget from a mapping."""
        policy = RetryPolicy.from_dict({"budget": {"ratio": 0.5, "key": "svc"}})
        assert RetryBudget(ratio=0.5, key="svc") == policy.budget

    def test_keyed_budgets_share_one_count(self, clock: FakeClock) -> None:
        """Two budgets with one key draw on the same count; unkeyed ones are apart."""
        a = RetryBudget(ratio=0.0, min_retries_per_second=0.2, key="k")
        b = RetryBudget(ratio=0.0, min_retries_per_second=0.2, key="k")
        assert a.try_retry()
        assert b.try_retry()
        assert not a.try_retry()
        lone = RetryBudget(ratio=0.0, min_retries_per_second=0.2)
        assert lone.try_retry()


class TestRetryWithBudget:
    def test_gives_up_when_the_budget_is_spent(self, clock: FakeClock) -> None:
        """A failing function stops retrying once the shared budget is spent; the note says why."""
        budget = RetryBudget(ratio=0.0, window=10.0, min_retries_per_second=0.3)
        calls: list[int] = []

        @retry(attempts=100, backoff=NO_WAIT, budget=budget)
        def failing() -> None:
            calls.append(1)
            raise ValueError

        with (
            capture_events("resilience.retry.give_up") as events,
            pytest.raises(ValueError) as info,
        ):
            failing()
        assert 4 == len(calls)  # one call and the budget's three retries
        assert "retry budget is spent" in "".join(info.value.__notes__)
        assert "retry budget" in events[0].metadata["reason"]
        with pytest.raises(ValueError):
            failing()
        assert 5 == len(calls)  # no retry left for the second call

    def test_calls_earn_retries(self, clock: FakeClock) -> None:
        """Successful calls deposit: ratio=0.5 after 10 calls allows 5 retries."""
        budget = RetryBudget(ratio=0.5, min_retries_per_second=0.0)
        fail = {"on": False}

        @retry(attempts=100, backoff=NO_WAIT, budget=budget)
        def call() -> int:
            if fail["on"]:
                raise ValueError
            return 1

        for _ in range(10):
            call()
        fail["on"] = True
        with pytest.raises(ValueError):
            call()
        assert 0.5 == pytest.approx(budget.balance())  # 11 calls * 0.5 - 5 retries

    @pytest.mark.anyio
    async def test_async_retry_spends_the_budget(self, clock: FakeClock) -> None:
        """Async functions count their calls and spend the same budget."""
        budget = RetryBudget(ratio=0.0, min_retries_per_second=0.1)
        calls: list[int] = []

        @retry(attempts=10, backoff=NO_WAIT, budget=budget)
        async def failing() -> None:
            calls.append(1)
            raise ValueError

        with pytest.raises(ValueError):
            await failing()
        assert 2 == len(calls)

    def test_no_budget_no_extra_wrapper(self) -> None:
        """Without a budget @retry's runner is not wrapped (the success path is unchanged)."""

        def target() -> None:
            pass

        plain = retry(attempts=2)(target)
        budgeted = retry(attempts=2, budget=RetryBudget())(target)
        (layer,) = layers_of(plain)
        runner = layer.build("sync", lambda *a: None)
        assert "counted" != runner.__name__
        (layer,) = layers_of(budgeted)
        assert "counted" == layer.build("sync", lambda *a: None).__name__


class TestBudgetStoreDown:
    def test_unreachable_budget_store_never_replaces_the_error(self, clock):
        """A budget whose store is down lets calls and retries go on, and says so."""
        from resilience import Backoff, RetryBudget, retry
        from resilience.stores import RedisStore
        from resilience.testing import capture_events

        nowhere = RedisStore("redis://127.0.0.1:1/0", timeout=0.2)
        budget = RetryBudget(key="down", store=nowhere)
        calls = []

        @retry(attempts=3, budget=budget, backoff=Backoff(base=0))
        def flaky() -> str:
            calls.append(1)
            if len(calls) < 3:
                raise ConnectionError("upstream")
            return "ok"

        with capture_events("resilience.store.unavailable") as events:
            assert "ok" == flaky()
        assert 3 == len(calls)
        assert events
        assert {("retry_budget", True)} == {
            (e.metadata["decorator"], e.metadata["fail_open"]) for e in events
        }
        nowhere.close()

    @pytest.mark.anyio
    async def test_async_calls_are_counted_through_the_async_twin(self, clock, monkeypatch):
        """Async calls deposit through the backend's async twin when it has one."""
        from resilience import RetryBudget, retry

        class Remote:
            """A backend with async twins, as a Redis one has."""

            def __init__(self) -> None:
                self.sync, self.awaited = 0, 0

            def deposit(self) -> None:
                self.sync += 1

            async def adeposit(self) -> None:
                self.awaited += 1

            def withdraw(self) -> bool:
                return True

            def balance(self) -> float:
                return 1.0

        remote = Remote()
        monkeypatch.setattr(RetryBudget, "backend", lambda self: remote)
        budget = RetryBudget(key="remote")

        @retry(budget=budget)
        async def ok() -> int:
            return 1

        @retry(budget=budget)
        def sync_ok() -> int:
            return 2

        assert 1 == await ok()
        assert 2 == sync_ok()
        assert (1, 1) == (remote.awaited, remote.sync)
