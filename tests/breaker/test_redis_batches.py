"""
Failure-rate breakers on Redis send the outcomes of closed calls in batches (``sync_interval``).

A failure goes at once (by the background thread), successes at most ``sync_interval``
apart; a batch is recorded as the same calls one by one would be; failed batches are
reported and kept; ``flush()``, ``close()`` and the interpreter's exit send what is left.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import time
import uuid

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilience import CircuitOpenError, circuit_breaker, get_circuit_breaker
from resilience.stores import MemoryStore, RedisStore
from resilience.testing import capture_events

from ..conftest import redis_store_for
from ..redis_servers import Server, _base, free_port
from ..redis_workers import open_store, spec_of
from .test_redis_local import counting, settled, until


class Boom(Exception):
    """The upstream's failure."""


def declare(store: Any, name: str = "rate", **options: Any) -> Any:
    options.setdefault("failure_rate", 0.5)
    options.setdefault("window_size", 20)
    options.setdefault("minimum_calls", 4)

    @circuit_breaker(name=name, reset_timeout=30.0, on=Boom, store=store, **options)
    def call(fail: bool = False) -> str:
        if fail:
            raise Boom
        return "ok"

    return call


@pytest.fixture(name="batched")
def _batched(request: pytest.FixtureRequest) -> Iterator[Any]:
    store: Any = redis_store_for("single", request)
    yield store
    store.clear()
    store.close()


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (-0.1, ValueError, "sync_interval must be >= 0 seconds"),
        (10.5, ValueError, r"sync_interval must be between 0 and 10 seconds"),
        ("0.1", TypeError, "sync_interval"),
    ],
)
def test_sync_interval_is_checked(value, error, match):
    with pytest.raises(error, match=match):
        RedisStore("redis://127.0.0.1:6379/0", sync_interval=value)


def test_healthy_calls_go_in_batches(batched):
    """10,000 healthy calls: about one script per interval, and Redis counts every call."""
    call = declare(batched, window_size=100)
    call()
    settled(batched, "rate")
    trips = counting(batched)
    started = time.monotonic()
    for _ in range(10_000):
        assert "ok" == call()
    took = time.monotonic() - started
    assert trips[0] <= math.ceil(took / batched.sync_interval) + 2
    stats = get_circuit_breaker("rate", store=batched).stats  # sends the rest first
    assert (100, 0) == (stats.window_calls, stats.window_failures)


def test_a_failure_is_sent_at_once_and_another_process_hears_the_open(batched):
    """The opening failure reaches Redis well within the interval; the other store refuses."""
    other = open_store(spec_of(batched), namespace=batched.namespace)
    try:
        mine = declare(batched, minimum_calls=2)
        theirs = declare(other, minimum_calls=2)
        mine()
        theirs()
        settled(batched, "rate")
        backend = settled(other, "rate")
        started = time.monotonic()
        for _ in range(2):
            with pytest.raises(Boom):
                mine(fail=True)
        took = until(lambda: not backend._closed, 2.0)
        assert took < 0.1
        assert time.monotonic() - started < batched.sync_interval + 0.1
        with pytest.raises(CircuitOpenError):
            theirs()
    finally:
        other.close()


outcomes = st.lists(st.booleans(), min_size=1, max_size=60)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(failed=outcomes, size=st.integers(1, 12), minimum=st.integers(1, 8))
def test_a_batch_is_recorded_as_the_calls_one_by_one(request, failed, size, minimum):
    """Against the memory rule: the same outcomes, in one batch, leave the same breaker."""
    memory = MemoryStore()
    store: Any = redis_store_for("single", request, sync_interval=10.0)
    try:
        options = {"window_size": size, "minimum_calls": minimum}
        calls = declare(memory, **options), declare(store, **options)
        for call in calls:
            for fail in failed:
                try:
                    call(fail=fail)
                except (Boom, CircuitOpenError):
                    pass
        assert store.flush()
        ours, theirs = (get_circuit_breaker("rate", store=s).stats for s in (memory, store))
        assert (
            ours.state,
            ours.window_calls,
            ours.window_failures,
            ours.failures,
            ours.times_opened,
        ) == (
            theirs.state,
            theirs.window_calls,
            theirs.window_failures,
            theirs.failures,
            theirs.times_opened,
        )
    finally:
        store.clear()
        store.close()


@pytest.fixture(name="server")
def _server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    server = Server(tmp_path, "batches", _base(port), port=port).start()
    yield server
    server.kill()


def test_a_failed_batch_is_reported_kept_and_sent_later(server):
    """Redis down at flush time: the batch is reported, counted and sent once it is back."""
    url = f"redis://127.0.0.1:{server.port}/0"
    store = RedisStore(url, timeout=0.3, sync_interval=10.0)
    try:
        call = declare(store)
        call()
        settled(store, "rate")
        for _ in range(5):
            call()
        server.kill()
        with capture_events("resilience.store") as events:
            assert not store.flush()
        assert ["rate"] == [event.metadata["key"] for event in events]
        assert 1 == store.breaker_flusher().failures
        server.start()
        assert store.flush()
        assert 6 == get_circuit_breaker("rate", store=store).stats.window_calls  # 1 + 5
    finally:
        store.close()


def test_close_sends_the_last_batch(batched):
    """Outcomes still waiting when the store closes reach Redis."""
    other = open_store(spec_of(batched), namespace=batched.namespace, sync_interval=10.0)
    call = declare(other)
    call()
    settled(other, "rate")
    for _ in range(7):
        call()
    other.close()
    declare(batched)
    assert 8 == get_circuit_breaker("rate", store=batched).stats.window_calls


def _calls_then_exits(spec: dict[str, Any], namespace: str) -> None:
    """Another program: 9 calls, then exit without closing its store."""
    store = open_store(spec, namespace=namespace, sync_interval=10.0)
    call = declare(store)
    for _ in range(9):
        call()


def test_the_last_batch_is_sent_at_exit(batched):
    """A process that exits without closing its store still sends its outcomes."""
    context = multiprocessing.get_context("spawn")
    worker = context.Process(target=_calls_then_exits, args=(spec_of(batched), batched.namespace))
    worker.start()
    worker.join(60)
    assert 0 == worker.exitcode
    declare(batched)
    assert 9 == get_circuit_breaker("rate", store=batched).stats.window_calls


@pytest.mark.anyio
async def test_async_tasks_never_wait_on_redis_for_outcomes(request):
    """Real asyncio tasks: closed calls run no script on the loop; the thread sends them."""
    store: Any = redis_store_for("single", request, namespace=f"t-{uuid.uuid4().hex[:8]}")
    try:

        @circuit_breaker(name="aio", failure_rate=0.5, window_size=1000, store=store)
        async def call() -> str:
            await asyncio.sleep(0)
            return "ok"

        await call()
        await asyncio.to_thread(settled, store, "aio")
        scripts = [0]
        arun = store.arun

        async def counted(*args: Any, **kwargs: Any) -> Any:
            scripts[0] += 1
            return await arun(*args, **kwargs)

        store.arun = counted
        late = store.breaker_listener().late

        async def many() -> None:
            for _ in range(100):
                assert "ok" == await call()

        await asyncio.gather(*(many() for _ in range(8)))
        assert scripts[0] == 0 or store.breaker_listener().late > late
        stats = await asyncio.to_thread(lambda: get_circuit_breaker("aio", store=store).stats)
        assert 801 == stats.window_calls
    finally:
        await store.aclose()
        store.clear()
        store.close()


def test_sync_interval_zero_records_each_call(request):
    """``sync_interval=0``: one round trip per call, as before batching."""
    store: Any = redis_store_for("single", request, sync_interval=0.0)
    try:
        call = declare(store)
        call()
        trips = counting(store)
        for _ in range(5):
            call()
        assert trips[0] >= 5
        assert not store.peek("breaker", "rate").closed
    finally:
        store.clear()
        store.close()
