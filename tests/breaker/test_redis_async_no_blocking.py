"""
An async breaker on Redis records through the asyncio client: no blocking call in the loop.

The store's sync client refuses any command sent while an event loop runs in its thread
(``LoopGuardedRedis``), so a failure or a streak-breaking success recorded with the sync
client from the async fast path (closed state, local breaker state) fails this test.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis

from resilience import circuit_breaker, get_circuit_breaker
from resilience.stores import RedisStore
from tests.conftest import DefaultClock, _redis_or_skip
from tests.retry.test_redis_budget_async import LoopGuardedRedis


class Boom(Exception):
    pass


@pytest.mark.parametrize("local_breakers", [True, False])
def test_failures_and_a_reset_are_awaited(local_breakers: bool) -> None:
    """Fail twice (counted in Redis), succeed (the streak resets): no sync command in the loop."""
    _redis_or_skip()
    client = LoopGuardedRedis(
        host="127.0.0.1",
        port=6379,
        socket_timeout=2.0,
        retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
    )
    store = RedisStore(
        client,
        namespace=f"breaker-async-{uuid.uuid4().hex[:12]}",
        clock=DefaultClock(),
        timeout=2.0,
        local_breakers=local_breakers,
    )
    assert store.client is client
    name = "guarded"

    @circuit_breaker(name=name, failure_threshold=3, store=store)
    async def call(fail: bool) -> str:
        if fail:
            raise Boom
        return "ok"

    async def main() -> None:
        try:
            assert "ok" == await call(False)
            for _ in range(2):
                with pytest.raises(Boom):
                    await call(True)
            assert "ok" == await call(False)  # resets the streak of two
        finally:
            await store.aclose()

    try:
        asyncio.run(main())
        assert [] == client.blocked
        stats = get_circuit_breaker(name, store=store).stats
        assert ("closed", 0, 2) == (stats.state, stats.consecutive_failures, stats.failures)
    finally:
        store.clear()
        store.close()
        client.close()
