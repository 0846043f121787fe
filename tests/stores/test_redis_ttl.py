"""Every Redis key lives for ``idle_ttl`` after its last touch, or until its horizon if later."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from resilience import RetryBudget, bounded, circuit_breaker, rate_limited

from ..conftest import DefaultClock, redis_store_for


class Boom(Exception):
    """The upstream's failure."""


@pytest.fixture(name="short")
def _short(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A store whose idle keys live 1 s: each key's own horizon shows past that."""
    store: Any = redis_store_for("single", request, idle_ttl=1.0, clock=DefaultClock())
    yield store
    store.clear()
    store.close()


def ttls(store: Any, concern: str, key: str) -> dict[str, int]:
    prefix = store.key(concern, key)
    return {
        name.decode()[len(prefix) :] or "-": store.client.pttl(name)
        for name in store.client.scan_iter(match=f"{prefix}*")
    }


def test_breaker_open_lives_until_reset_timeout_then_idle_ttl(short, clock):
    """Open: its keys outlive idle_ttl until reset_timeout; closed again: idle_ttl only."""

    @circuit_breaker(name="b", failure_threshold=1, reset_timeout=30.0, store=short)
    def fail() -> None:
        raise Boom

    with pytest.raises(Boom):
        fail()
    assert 29_000 < ttls(short, "breaker", "b")["-"] <= 30_000
    clock.advance(20.0)
    from resilience import get_circuit_breaker

    assert "open" == get_circuit_breaker("b", store=short).state
    assert 9_000 < ttls(short, "breaker", "b")["-"] <= 10_000  # the horizon, not a floor
    get_circuit_breaker("b", store=short).reset()
    assert 0 < ttls(short, "breaker", "b")["-"] <= 1_000


def test_breaker_time_window_lives_for_its_span(short, clock):
    """A time window's buckets matter for window_duration: the hash lives that long."""

    @circuit_breaker(name="w", failure_rate=0.5, window_duration=8.0, minimum_calls=10, store=short)
    def ok() -> int:
        return 1

    ok()
    short.flush()  # a failure-rate breaker's outcomes go to Redis in batches (sync_interval)
    assert 7_000 < ttls(short, "breaker", "w")["-"] <= 8_000


def test_pool_leases_live_for_the_lease(request, clock):
    """A held permit's keys live until its lease expires, not twice that."""
    store: Any = redis_store_for("single", request, idle_ttl=1.0, lease=6.0, clock=DefaultClock())
    seen: dict[str, int] = {}

    @bounded(limit=2, key="p", store=store)
    def hold() -> None:
        seen.update(ttls(store, "pool", "p"))

    try:
        hold()
        assert {":leases", ":weights"} == set(seen)
        assert all(5_000 < ms <= 6_000 for ms in seen.values())
    finally:
        store.clear()
        store.close()


def test_budget_lives_for_its_window(short, clock):
    """A retry budget's counts matter for its window: the hash lives that long, not twice."""
    budget = RetryBudget(window=10.0, key="r")
    short.backend("budget", "r", budget).deposit()
    assert 9_000 < ttls(short, "budget", "r")["-"] <= 10_000


def test_rate_lists_live_until_their_last_entry_left_the_window(short, clock):
    """Log and starts expire once their newest entry is out of the window (or idle_ttl).

    Expiries are set per bucket of time (a 16th of the horizon, at most 1 s): at most that late.
    """

    @rate_limited(rate=3, per=5.0, key="k", store=short)
    def call() -> None:
        pass

    call()
    found = ttls(short, "rate", "k")
    assert {":log", ":starts"} == set(found)
    assert all(4_000 < ms <= 5_000 + 5_000 / 16 + 1 for ms in found.values())  # + 1: ms, up


def test_default_idle_ttl_dominates(redis_store, clock):
    """With the default hour, the key of a closed breaker (one failure) lives an hour."""

    @circuit_breaker(name="h", failure_threshold=5, store=redis_store)
    def fail() -> int:
        raise Boom

    with pytest.raises(Boom):
        fail()
    assert 3_500_000 < ttls(redis_store, "breaker", "h")["-"] <= 3_600_000
