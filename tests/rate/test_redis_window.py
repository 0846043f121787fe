"""Backoff windows and retry budgets over each store: memory and Redis must agree."""

from __future__ import annotations

import pytest

from resilience import RetryBudget, backoff_window
from resilience.stores import RedisStore


class TestWindow:
    def test_max_merge(self, store, clock):
        """Setting never shortens an open window; a later end wins."""
        window = backoff_window("api", store=store)
        assert 0.0 == window.remaining()
        assert 10.0 == pytest.approx(window.set(10))
        assert 10.0 == pytest.approx(window.set(3))  # shorter: ignored
        clock.advance(4)
        assert 6.0 == pytest.approx(window.remaining())
        assert 8.0 == pytest.approx(window.set(8))  # later end: wins
        assert window.is_open

    def test_ends_and_clears(self, store, clock):
        """A window closes when its time is up, or at once on clear()."""
        window = backoff_window("api", store=store)
        window.set(2)
        clock.advance(2)
        assert not window.is_open
        window.set(5)
        window.clear()
        assert 0.0 == window.remaining()

    def test_shared_by_key(self, store, clock):
        """Two handles on one key see one window."""
        backoff_window("api", store=store).set(5)
        assert 5.0 == pytest.approx(backoff_window("api", store=store).remaining())
        assert 0.0 == backoff_window("other", store=store).remaining()

    @pytest.mark.anyio
    async def test_async_twins(self, redis_store, clock):
        """The Redis window's async twins make the same decisions."""
        backend = redis_store.backend("window", "api", None)
        try:
            assert 4.0 == pytest.approx(await backend.aextend(4))
            assert 4.0 == pytest.approx(await backend.aremaining())
            await backend.aclear()
            assert 0.0 == await backend.aremaining()
        finally:
            await redis_store.aclose()


class TestBudget:
    def test_ratio_and_floor(self, store, clock):
        """Retries allowed: ratio * calls + floor - retries, shared by key."""
        budget = RetryBudget(ratio=0.5, window=10, min_retries_per_second=0.1, key="k", store=store)
        assert 1.0 == pytest.approx(budget.balance())
        for _ in range(4):
            budget.record_call()
        assert 3.0 == pytest.approx(budget.balance())
        assert [True, True, True, False] == [budget.try_retry() for _ in range(4)]
        twin = RetryBudget(ratio=0.5, window=10, min_retries_per_second=0.1, key="k", store=store)
        assert not twin.try_retry()

    def test_window_slides(self, store, clock):
        """Calls and retries older than the window stop counting, bucket by bucket."""
        budget = RetryBudget(ratio=1.0, window=10, min_retries_per_second=0.0, key="k", store=store)
        budget.record_call()
        clock.advance(5)
        budget.record_call()
        assert 2.0 == pytest.approx(budget.balance())
        clock.advance(5)
        assert 1.0 == pytest.approx(budget.balance())
        clock.advance(5)
        assert 0.0 == pytest.approx(budget.balance())
        assert not budget.try_retry()

    def test_redis_budget_expires_when_idle(self, redis_store, clock):
        """The budget's hash carries an expiry."""
        RetryBudget(key="k", store=redis_store).record_call()
        assert 0 < redis_store.client.pttl(redis_store.key("budget", "k"))
        assert isinstance(redis_store, RedisStore)
