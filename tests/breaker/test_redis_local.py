"""``RedisStore(local_breakers=True)``: a healthy call costs no round trip; changes arrive by pub/sub."""

from __future__ import annotations

import time

from collections.abc import Iterator
from typing import Any

import pytest

from resilience import CircuitOpenError, circuit_breaker, get_circuit_breaker

from ..conftest import redis_store_for
from ..redis_workers import open_store, spec_of


class Boom(Exception):
    """The upstream's failure."""


@pytest.fixture(name="pair", params=["single", "cluster"])
def _pair(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any]]:
    """Two stores (two processes' views) keeping breakers locally, on one namespace."""
    one: Any = redis_store_for(request.param, request, local_breakers=True)
    two = open_store(spec_of(one), namespace=one.namespace, local_breakers=True)
    yield one, two
    one.clear()
    one.close()
    two.close()


def declare(store: Any, name: str = "up") -> Any:
    @circuit_breaker(name=name, failure_threshold=2, reset_timeout=30.0, on=Boom, store=store)
    def call(fail: bool = False) -> str:
        if fail:
            raise Boom
        return "ok"

    return call


def counting(store: Any) -> list[int]:
    """Count the store's round trips (its own ``run``, wrapped; the calls still go through)."""
    count = [0]
    run = store.run

    def counted(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return run(*args, **kwargs)

    store.run = counted
    return count


def until(check: Any, seconds: float = 2.0) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds} s")
        time.sleep(0.001)
    return time.monotonic() - started


def test_healthy_calls_cost_no_round_trip(pair):
    """10,000 healthy calls after the first: zero round trips."""
    one, _ = pair
    call = declare(one)
    until(lambda: one.breaker_listener().live)
    call()
    call()
    trips = counting(one)
    for _ in range(10_000):
        assert "ok" == call()
    assert 0 == trips[0]


def test_an_open_elsewhere_is_heard_within_100_ms(pair):
    """Process two opens the breaker; process one refuses within 100 ms, no call needed."""
    one, two = pair
    mine, theirs = declare(one), declare(two)
    until(lambda: one.breaker_listener().live and two.breaker_listener().live)
    assert ("ok", "ok") == (mine(), mine())
    backend = one.peek("breaker", "up")
    until(lambda: backend.closed)
    for _ in range(2):
        with pytest.raises(Boom):
            theirs(fail=True)
    took = until(lambda: not backend.closed, 1.0)
    assert took < 0.1
    with pytest.raises(CircuitOpenError):
        mine()
    get_circuit_breaker("up", store=two).reset()
    assert until(lambda: backend.closed, 1.0) < 0.1
    assert "ok" == mine()


def test_failures_are_recorded_atomically_and_a_success_elsewhere_breaks_the_streak(pair):
    """A failure here and one there open it (one count in Redis); a success between resets."""
    one, two = pair
    mine, theirs = declare(one), declare(two)
    until(lambda: one.breaker_listener().live and two.breaker_listener().live)
    mine()
    theirs()
    other = two.peek("breaker", "up")
    with pytest.raises(Boom):
        mine(fail=True)
    until(lambda: other.dirty, 1.0)  # the streak began: their next success must record
    assert "ok" == theirs()
    with pytest.raises(Boom):
        mine(fail=True)
    assert "closed" == get_circuit_breaker("up", store=one).state  # 1 failure since success
    with pytest.raises(Boom):
        theirs(fail=True)
    assert "open" == get_circuit_breaker("up", store=one).state


def test_a_lost_subscription_sends_calls_to_redis(request):
    """When the listener is down, a locally closed breaker asks Redis again."""
    store: Any = redis_store_for("single", request, local_breakers=True)
    try:
        call = declare(store, "lost")
        listener = store.breaker_listener()
        until(lambda: listener.live)
        call()
        call()
        backend = store.peek("breaker", "lost")
        until(lambda: backend.closed)
        listener._down()  # what a dropped connection does
        assert not backend.closed
        trips = counting(store)
        call()
        assert trips[0] >= 1
    finally:
        store.clear()
        store.close()


def test_failure_rate_breakers_always_ask(request):
    """A failure-rate breaker keeps no local state: every call is a round trip."""
    store: Any = redis_store_for("single", request, local_breakers=True)
    try:

        @circuit_breaker(name="rate", failure_rate=0.5, window_size=10, store=store)
        def call() -> int:
            return 1

        call()
        trips = counting(store)
        for _ in range(5):
            call()
        assert trips[0] >= 5
        assert not store.peek("breaker", "rate").closed
    finally:
        store.clear()
        store.close()
