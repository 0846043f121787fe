"""
A Redis-backed retry budget in async code makes no blocking call.

The store's sync client is wrapped so that any command it sends from inside a running event
loop raises (and is recorded): the async drivers must deposit and withdraw through the
store's asyncio client only. The same client serves sync code, where blocking is expected.
"""

from __future__ import annotations

import asyncio
import uuid

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis

from resilience import Backoff, RetryBudget, retry
from resilience.stores import RedisStore
from tests.conftest import DefaultClock, _redis_or_skip


NO_WAIT = Backoff(base=0)


class BlockingCallError(RuntimeError):
    """A sync Redis command was sent from inside a running event loop."""


class LoopGuardedRedis(redis.Redis):
    """A sync client that refuses to run a command while an event loop runs in this thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.blocked: list[str] = []
        self.sent = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop: a sync caller, blocking is what it asked for
            self.sent += 1
            return super().execute_command(*args, **options)
        self.blocked.append(str(args[0]))
        raise BlockingCallError(f"sync Redis command {args[0]!r} from a running event loop")


@pytest.fixture(name="guarded")
def _guarded() -> Iterator[tuple[RedisStore, LoopGuardedRedis]]:
    _redis_or_skip()
    # no retries of its own, so the store uses this very client (not a bounded copy)
    no_retry = redis.retry.Retry(redis.backoff.NoBackoff(), 0)
    client = LoopGuardedRedis(host="127.0.0.1", port=6379, db=0, socket_timeout=1.0, retry=no_retry)
    store = RedisStore(
        client, namespace=f"retry-core-test-{uuid.uuid4().hex[:12]}", clock=DefaultClock()
    )
    assert store.client is client
    yield store, client
    store.clear()
    client.close()


def test_the_guard_catches_a_blocking_call(
    guarded: tuple[RedisStore, LoopGuardedRedis],
) -> None:
    """Without this the other tests would prove nothing: the sync path is refused in a loop."""
    store, client = guarded
    budget = RetryBudget(key="guard", store=store)

    async def blocking() -> None:
        budget.try_retry()

    with pytest.raises(BlockingCallError):
        asyncio.run(blocking())
    assert ["EVALSHA"] == client.blocked[:1]


def test_async_calls_deposit_and_withdraw_without_blocking(
    guarded: tuple[RedisStore, LoopGuardedRedis],
) -> None:
    """Fail, fail, succeed, twice over: 2 calls deposited and 4 retries withdrawn, all awaited."""
    store, client = guarded
    budget = RetryBudget(key="async", store=store, ratio=0.5, min_retries_per_second=1.0)
    script = ["fail", "fail", "ok"] * 2  # what each attempt does, in turn

    @retry(attempts=5, backoff=NO_WAIT, budget=budget)
    async def flaky() -> str:
        await asyncio.sleep(0)
        if script.pop(0) == "fail":
            raise ConnectionError("upstream")
        return "ok"

    async def main() -> list[str]:
        try:
            return [await flaky(), await flaky()]
        finally:
            await store.aclose()

    assert ["ok", "ok"] == asyncio.run(main())
    assert [] == client.blocked
    # ratio 0.5 * 2 calls + 1/s * 10 s window - 4 retries
    assert budget.balance() == pytest.approx(0.5 * 2 + 10.0 - 4)


def test_async_generators_deposit_and_withdraw_without_blocking(
    guarded: tuple[RedisStore, LoopGuardedRedis],
) -> None:
    store, client = guarded
    budget = RetryBudget(key="agen", store=store, ratio=0.5, min_retries_per_second=1.0)
    failures = [ConnectionError("a")]

    @retry(attempts=3, backoff=NO_WAIT, budget=budget)
    async def stream() -> AsyncIterator[int]:
        if failures:
            raise failures.pop()
        yield 1
        yield 2

    async def main() -> list[int]:
        try:
            return [item async for item in stream()]
        finally:
            await store.aclose()

    assert [1, 2] == asyncio.run(main())
    assert [] == client.blocked
    assert budget.balance() == pytest.approx(0.5 * 1 + 10.0 - 1)


def test_a_spent_budget_gives_up_without_blocking(
    guarded: tuple[RedisStore, LoopGuardedRedis],
) -> None:
    """The refusal comes through the async withdrawal too, and the note says so."""
    store, client = guarded
    budget = RetryBudget(key="spent", store=store, ratio=0.0, min_retries_per_second=0.1)
    calls = []

    @retry(attempts=10, backoff=NO_WAIT, budget=budget)
    async def failing() -> None:
        calls.append(1)
        raise ConnectionError("down")

    async def main() -> None:
        try:
            await failing()
        finally:
            await store.aclose()

    with pytest.raises(ConnectionError) as info:
        asyncio.run(main())
    assert 2 == len(calls)  # 0.1/s over 10 s: one retry in the window
    assert "the retry budget is spent" in "".join(info.value.__notes__)
    assert [] == client.blocked


def test_sync_code_uses_the_sync_client(
    guarded: tuple[RedisStore, LoopGuardedRedis],
) -> None:
    """The same budget from sync code goes through the sync client (outside any loop)."""
    store, client = guarded
    budget = RetryBudget(key="sync", store=store, ratio=0.5, min_retries_per_second=1.0)
    failures = [ConnectionError("a")]

    @retry(attempts=3, backoff=NO_WAIT, budget=budget)
    def flaky() -> str:
        if failures:
            raise failures.pop()
        return "ok"

    before = client.sent
    assert "ok" == flaky()
    assert client.sent - before >= 2  # a deposit and a withdrawal, at least
    assert budget.balance() == pytest.approx(0.5 + 10.0 - 1)
