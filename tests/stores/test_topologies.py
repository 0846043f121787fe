"""
One round of every shared-state concern on every topology, in the default run.

(The whole shared-state suite runs on each with ``RESILIENCE_REDIS_TOPOLOGIES=all``.) Two
stores on the same servers stand for two processes: what one decides, the other sees.
"""

from __future__ import annotations

import asyncio

from typing import Any

import pytest

from resilience import (
    BoundedTimeoutError,
    CircuitOpenError,
    RetryBudget,
    bounded,
    circuit_breaker,
    get_circuit_breaker,
    rate_limited,
)
from resilience._rate.window import backoff_window
from resilience.stores import RedisStore

from ..conftest import TOPOLOGIES, DefaultClock, redis_store_for
from ..redis_workers import open_store, spec_of


class Boom(Exception):
    """The upstream's failure."""


@pytest.fixture(name="pair", params=TOPOLOGIES)
def _pair(request: pytest.FixtureRequest) -> Any:
    """Two stores on one topology and one namespace: two processes' views."""
    first: Any = redis_store_for(request.param, request, clock=DefaultClock())
    second = open_store(
        spec_of(first), namespace=first.namespace, clock=first.clock, timeout=first.timeout
    )
    yield first, second
    first.clear()
    first.close()
    second.close()


def test_every_concern_is_shared(pair, clock):
    """Breaker, rate limit with its window, permits and budget: one state for both stores."""
    one, two = pair

    def breaker(store: RedisStore) -> Any:
        @circuit_breaker(name="up", failure_threshold=2, reset_timeout=5.0, store=store)
        def call() -> None:
            raise Boom

        return call

    for _ in range(2):
        with pytest.raises(Boom):
            breaker(one)()
    with pytest.raises(CircuitOpenError):
        breaker(two)()
    assert "open" == get_circuit_breaker("up", store=two).state
    assert ["up"] == two.keys("breaker")

    starts = []

    def limited(store: RedisStore) -> Any:
        @rate_limited(rate=2, per=1.0, key="api", store=store, timeout=0)
        def call() -> None:
            starts.append(clock.monotonic())

        return call

    limited(one)()
    limited(two)()
    with pytest.raises(Exception, match="rate"):
        limited(one)()
    backoff_window("api", store=two).set(3.0)
    assert 2.9 < backoff_window("api", store=one).remaining() <= 3.0

    @bounded(limit=1, key="db", store=one, timeout=0)
    def hold(inner: Any) -> Any:
        return inner()

    @bounded(limit=1, key="db", store=two, timeout=0)
    def rival() -> None:
        pass

    with pytest.raises(BoundedTimeoutError):
        hold(rival)
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.1, window=10.0, key="b")
    mine = one.backend("budget", "b", budget)
    theirs = two.backend("budget", "b", budget)
    assert mine.withdraw()
    assert not theirs.withdraw()  # the floor (1 retry per 10 s) is spent, for both


@pytest.mark.anyio
async def test_async_clients_share_it_too(pair):
    """The asyncio twins the stores build talk to the same servers, the same way."""
    one, two = pair

    @circuit_breaker(name="a", failure_threshold=1, reset_timeout=60.0, store=one)
    async def fail() -> None:
        raise Boom

    @circuit_breaker(name="a", failure_threshold=1, reset_timeout=60.0, store=two)
    async def other() -> None:
        pass

    @bounded(limit=2, key="p", store=two, timeout=5.0)
    async def held() -> int:
        await asyncio.sleep(0.001)
        return 1

    try:
        with pytest.raises(Boom):
            await fail()
        with pytest.raises(CircuitOpenError):
            await other()
        assert 6 == sum(await asyncio.gather(*(held() for _ in range(6))))
    finally:
        await one.aclose()
        await two.aclose()


def test_every_key_of_one_state_shares_a_slot_and_keys_spread(pair):
    """Hash tags: a limiter's log, starts and window share one slot; other keys spread."""
    one, _ = pair
    from resilience.stores._redis_clients import library

    slot = library(one.client).cluster.key_slot  # the client's own CRC16, no server needed
    parts = [
        one.key("rate", "api", "log"),
        one.key("rate", "api", "starts"),
        one.key("window", "api"),
        one.key("breaker", "api"),
        one.key("breaker", "api", "ring"),
        one.key("pool", "api", "leases"),
        one.key("pool", "api", "weights"),
        one.key("budget", "api"),
    ]
    assert 1 == len({slot(name.encode()) for name in parts})
    spread = {slot(one.key("rate", f"k{i}", "log").encode()) for i in range(64)}
    assert len(spread) > 50
    odd = one.key("rate", "a}b{c%", "log")
    assert slot(odd.encode()) == slot(one.key("window", "a}b{c%").encode())
