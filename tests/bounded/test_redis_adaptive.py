"""
``AdaptiveLimit`` on Redis: one live limit per key, fed by every process's samples.

The Lua twin is held to the memory machines exactly (the same samples give the same limit),
and the pool's invariants are checked under real threads, tasks and two processes, on the
shared server and on a cluster of our own.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import pathlib
import random
import threading
import time
import uuid

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilience import AdaptiveLimit, StoreUnavailableError, bounded, get_bounded, snapshot
from resilience._bounded.adaptive import ALGORITHMS
from resilience.stores import MemoryStore, RedisStore
from resilience.testing import capture_events

from ..conftest import DefaultClock, redis_store_for
from ..redis_servers import _base, free_port
from ..redis_workers import URL, adaptive_worker, open_store, spec_of


samples = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=1e6) | st.sampled_from([math.nan, math.inf, -1.0]),
        st.integers(min_value=0, max_value=2000),
        st.booleans(),
    ),
    max_size=120,
)


@pytest.fixture(name="shared", params=["single", "cluster"], scope="module")
def _shared(request: pytest.FixtureRequest) -> Iterator[RedisStore]:
    """A RedisStore on the shared server, then on a cluster of our own (one per module)."""
    store: Any = redis_store_for(request.param, request, clock=DefaultClock())
    yield store
    store.clear()
    store.close()


@pytest.fixture(name="either", params=["memory", "single", "cluster"])
def _either(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Memory, then Redis (shared server, cluster): where the rule is the same for both."""
    if request.param == "memory":
        yield MemoryStore()
        return
    store: Any = redis_store_for(request.param, request, clock=DefaultClock())
    yield store
    store.clear()
    store.close()


WARM_UP = (
    "The async tests make one call before their crowd: the first use of a fresh asyncio "
    "cluster client by many tasks at once can stall past the store's timeout (the fixed "
    "pool's own task test fails on a cluster the same way); that is the client's start-up, "
    "not the pool's rule."
)


def _pool(store: Any, adaptive: AdaptiveLimit) -> Any:
    """A fresh key's pool backend in *store* (each call: a key of its own)."""
    key = f"exact-{uuid.uuid4().hex[:10]}"
    bounded(limit=adaptive, key=key, store=store)(lambda: None)
    return store.backend("pool", key, None)


class TestExactTwin:
    """The Lua machines are the memory machines: same samples, same limit, every step."""

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    @settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        feed=samples,
        low=st.integers(1, 20),
        span=st.integers(0, 60),
        timeout=st.none() | st.floats(min_value=1e-6, max_value=1e6),
    )
    def test_same_samples_same_limit(
        self,
        shared: RedisStore,
        algorithm: str,
        feed: list[tuple[float, int, bool]],
        low: int,
        span: int,
        timeout: float | None,
    ) -> None:
        """Whatever the samples (NaN, inf, zero RTTs, drops), Redis answers the memory limit."""
        adaptive = AdaptiveLimit(
            algorithm=algorithm,
            min_limit=low,
            max_limit=low + span,
            initial=low + span // 2,
            backoff_ratio=0.75,
            timeout=timeout if algorithm == "aimd" else None,  # AIMD's slow-call drop
        )
        machine = adaptive.make()
        backend = _pool(shared, adaptive)
        for rtt, in_use, dropped in feed:
            expected = machine.update(rtt, in_use, dropped)
            got = backend.sample(rtt, in_use, dropped)
            assert expected == got
            assert low <= got <= low + span

    @pytest.mark.parametrize("algorithm", ["gradient2", "vegas"])
    def test_a_long_run_through_growth_and_a_latency_climb(
        self, shared: RedisStore, algorithm: str
    ) -> None:
        """Hundreds of windows: the limit grows at a flat RTT and falls when it triples."""
        adaptive = AdaptiveLimit(algorithm=algorithm, initial=10)
        machine = adaptive.make()
        backend = _pool(shared, adaptive)
        rng = random.Random(7)
        path = []
        for n in range(900):
            rtt = (0.1 if n < 450 else 0.3) * (1 + rng.random() / 10)
            in_use = machine.limit
            path.append(machine.update(rtt, in_use, dropped=False))
            assert path[-1] == backend.sample(rtt, in_use, dropped=False)
        assert max(path[:450]) > 10
        assert path[-1] < max(path)

    def test_a_wide_window_closes_after_the_same_timed_calls(self, shared: RedisStore) -> None:
        """Limits in the hundreds (a stride above 1): Redis closes each window where memory does."""
        adaptive = AdaptiveLimit(initial=640, max_limit=2000)
        machine = adaptive.make()
        backend = _pool(shared, adaptive)
        rng = random.Random(11)
        for n in range(600):
            rtt = (0.1 if n < 300 else 0.5) * (1 + rng.random() / 10)
            in_use = machine.limit if n % 3 else machine.limit // 3
            assert machine.update(rtt, in_use, dropped=n == 450) == backend.sample(
                rtt, in_use, dropped=n == 450
            )
        assert machine.limit != 640

    @settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(feed=samples, timeout=st.floats(min_value=1e-6, max_value=1e6))
    def test_aimd_timeout_is_the_memory_rule(
        self, shared: RedisStore, feed: list[tuple[float, int, bool]], timeout: float
    ) -> None:
        """AIMD with a timeout: a slow call is a drop on Redis exactly as in memory."""
        adaptive = AdaptiveLimit(algorithm="aimd", initial=30, max_limit=60, timeout=timeout)
        machine = adaptive.make()
        backend = _pool(shared, adaptive)
        for rtt, in_use, dropped in feed:
            assert machine.update(rtt, in_use, dropped) == backend.sample(rtt, in_use, dropped)

    def test_aimd_timeout_makes_a_slow_success_a_drop(self, shared: RedisStore) -> None:
        """With timeout=1: a 2 s success drops (10 -> 9), as does an endless one; 0.5 s adds."""
        backend = _pool(shared, AdaptiveLimit(algorithm="aimd", initial=10, timeout=1.0))
        assert [9, 8, 9] == [
            backend.sample(2.0, 10, False),
            backend.sample(math.inf, 10, False),
            backend.sample(0.5, 10, False),
        ]

    def test_aimd_worked_numbers_on_redis(self, shared: RedisStore) -> None:
        """10 -> 11 busy, holds when idle, 11 -> 9 on a drop (floor of 9.9)."""
        backend = _pool(shared, AdaptiveLimit(algorithm="aimd", initial=10))
        assert [11, 11, 9] == [
            backend.sample(0.1, 5, False),
            backend.sample(0.1, 5, False),
            backend.sample(0.1, 11, True),
        ]


class TestLivePool:
    def test_no_grant_takes_in_use_above_the_live_limit(self, shared: RedisStore) -> None:
        """Grants check the live limit in the same script: a shrink stops them at once."""
        adaptive = AdaptiveLimit(algorithm="aimd", initial=4, min_limit=1, max_limit=8)
        backend = _pool(shared, adaptive)
        assert [1, 2, 3, 4, 0] == [backend.try_acquire_used(1) for _ in range(5)]
        assert 3 == backend.sample_release(1, 0.1, 4, True)  # floor(4 * 0.9): 3 still held
        assert 0 == backend.try_acquire_used(1)  # 3 in use, limit 3: full
        assert 2 == backend.sample_release(1, 0.1, 3, True)  # 2 held, limit floor(2.7)
        assert 0 == backend.try_acquire_used(1)
        assert 3 == backend.sample_release(1, 0.1, 1, False)  # busy: 2 * 1 >= 2, so 2 -> 3
        assert (3, 1) == backend.live()
        assert 3 == backend.try_acquire_used(2)
        assert 0 == backend.try_acquire_used(1)
        backend.release(2)
        backend.release(1)
        assert (3, 0) == backend.live()

    def test_every_process_reads_and_moves_one_limit(self, shared: RedisStore) -> None:
        """Another process's samples move the limit this process sees through get_bounded."""
        adaptive = AdaptiveLimit(algorithm="aimd", initial=5, max_limit=50)
        key = f"shared-{uuid.uuid4().hex[:8]}"
        bounded(limit=adaptive, key=key, store=shared)(lambda: None)
        other = open_store(spec_of(shared), namespace=shared.namespace, clock=shared.clock)
        try:
            bounded(limit=adaptive, key=key, store=other)(lambda: None)
            theirs = other.backend("pool", key, None)
            for _ in range(7):
                theirs.sample(0.01, 50, False)
            assert 12 == get_bounded(key, store=shared).limit
            assert 12 == shared.backend("pool", key, None).try_acquire_used(12)
            assert 12 == get_bounded(key, store=other).in_use
            shared.backend("pool", key, None).release(12)
        finally:
            other.close()

    def test_snapshot_shows_the_ceiling_and_the_live_limit(self, either: Any) -> None:
        """Memory and Redis agree: ``limit`` is max_limit, ``live_limit`` where AIMD took it."""
        adaptive = AdaptiveLimit(algorithm="aimd", initial=7, min_limit=2, max_limit=40)
        call = bounded(limit=adaptive, key="svc", store=either)(lambda: "ok")
        assert "ok" == call()  # 1 of 7 in use: idle, holds
        before = snapshot(either).pools
        pool = get_bounded("svc", store=either)
        pool_backend = either.backend("pool", "svc", None)
        pool_backend.sample(0.1, 7, False)
        (after,) = snapshot(either).pools
        assert [("svc", 40, 7, 0)] == [(p.key, p.limit, p.live_limit, p.in_use) for p in before]
        assert ("svc", 40, 8, 0) == (after.key, after.limit, after.live_limit, after.in_use)
        assert (8, 0, 0) == (pool.limit, pool.in_use, pool.waiting)

    def test_a_key_keeps_one_adaptive_limit(self, shared: RedisStore) -> None:
        """Declaring the key with another AdaptiveLimit, or a fixed limit, is a ValueError."""
        key = f"decl-{uuid.uuid4().hex[:8]}"
        bounded(limit=AdaptiveLimit(initial=4), key=key, store=shared)(lambda: None)
        with pytest.raises(ValueError, match="same limit"):
            bounded(limit=AdaptiveLimit(initial=5), key=key, store=shared)(lambda: None)
        with pytest.raises(ValueError, match="same limit"):
            bounded(limit=4, key=key, store=shared)(lambda: None)


class TestTimedCalls:
    """A wide Gradient2 pool on Redis samples every stride-th call, as in memory."""

    @staticmethod
    def _state(store: RedisStore, key: str) -> Any:
        return store.client.hgetall(store.key("pool", key, "adaptive"))

    def test_untimed_calls_release_without_a_sample(self, shared: RedisStore) -> None:
        """640 permits: 41 calls are 3 samples (calls 1, 21, 41), the rest plain releases."""
        key = f"wide-{uuid.uuid4().hex[:8]}"
        call = bounded(limit=AdaptiveLimit(initial=640), key=key, store=shared)(lambda: None)
        for _ in range(41):
            call()
        state = self._state(shared, key)
        assert (b"3", b"1") == (state[b"count"], state[b"busy"])
        pool = get_bounded(key, store=shared)
        assert (0, 640) == (pool.in_use, pool.limit)

    def test_busy_goes_with_the_next_sample_and_untimed_drops_count(
        self, shared: RedisStore
    ) -> None:
        """Four held at once (three untimed starts) show as busy 4; an untimed drop: 640 -> 576."""
        key = f"wide-{uuid.uuid4().hex[:8]}"
        inside, release = threading.Barrier(5), threading.Event()
        limit = AdaptiveLimit(initial=640, on_drop=ConnectionError)

        @bounded(limit=limit, key=key, store=shared)
        def hold() -> None:
            inside.wait(5)
            release.wait(5)

        @bounded(limit=limit, key=key, store=shared)
        def fail() -> None:
            raise ConnectionError

        threads = [threading.Thread(target=hold) for _ in range(4)]
        for thread in threads:
            thread.start()
        inside.wait(5)  # all four hold a permit: one timed start, three untimed
        release.set()
        for thread in threads:
            thread.join(5)
        state = self._state(shared, key)
        assert (b"1", b"4") == (state[b"count"], state[b"busy"])
        with pytest.raises(ConnectionError):
            fail()  # the fifth call: untimed, but a drop
        pool = get_bounded(key, store=shared)
        assert (0, 576) == (pool.in_use, pool.limit)

    @pytest.mark.anyio
    @pytest.mark.parametrize("kind", ["single", "cluster"])
    async def test_async_untimed_calls_and_drops(
        self, kind: str, request: pytest.FixtureRequest
    ) -> None:
        """The async runner: 41 calls are 3 samples; an untimed drop still cuts 640 -> 576."""
        key = f"wide-{uuid.uuid4().hex[:8]}"
        limit = AdaptiveLimit(initial=640, on_drop=ConnectionError)
        store: Any = redis_store_for(kind, request, clock=DefaultClock())
        try:
            await self._untimed_and_drop(store, key, limit)
        finally:
            store.clear()
            await store.aclose()
            store.close()

    async def _untimed_and_drop(self, shared: Any, key: str, limit: AdaptiveLimit) -> None:
        @bounded(limit=limit, key=key, store=shared)
        async def call(fail: bool = False) -> None:
            if fail:
                raise ConnectionError

        for _ in range(41):
            await call()
        state = self._state(shared, key)
        assert (b"3", b"1") == (state[b"count"], state[b"busy"])
        with pytest.raises(ConnectionError):
            await call(fail=True)  # the 42nd call: untimed, but a drop
        pool = get_bounded(key, store=shared)
        assert (0, 576) == (pool.in_use, pool.limit)


class TestConcurrency:
    def test_threads_never_hold_more_than_the_live_limit(self, either: Any) -> None:
        """12 threads through AIMD without drops: holders at entry <= the live limit."""
        key = "threads"
        adaptive = AdaptiveLimit(algorithm="aimd", initial=2, max_limit=6)
        lock = threading.Lock()
        inside = 0
        seen: list[tuple[int, int]] = []

        @bounded(limit=adaptive, key=key, store=either, timeout=20.0)
        def call() -> None:
            nonlocal inside
            with lock:
                inside += 1
                holders = inside
            # Without drops AIMD never shrinks: the limit read now is at least the limit
            # when these holders were granted.
            seen.append((holders, get_bounded(key, store=either).limit))
            time.sleep(0.001)
            with lock:
                inside -= 1

        threads = [threading.Thread(target=lambda: [call() for _ in range(15)]) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        pool = get_bounded(key, store=either)
        assert 12 * 15 == len(seen)
        assert [] == [(holders, limit) for holders, limit in seen if holders > limit]
        assert 6 >= max(holders for holders, _ in seen)
        assert (6, 0, 0) == (pool.limit, pool.in_use, pool.waiting)

    @pytest.mark.anyio
    async def test_tasks_never_hold_more_than_the_live_limit(self, either: Any) -> None:
        """12 tasks through AIMD without drops: holders at entry <= the live limit then."""
        key = "task-holders"
        inside = 0
        seen: list[tuple[int, int]] = []
        backend: Any = None

        async def live_limit() -> int:
            if isinstance(either, RedisStore):
                limit, _ = await backend.alive()
                return int(limit)
            return int(backend.limit)

        @bounded(
            limit=AdaptiveLimit(algorithm="aimd", initial=2, max_limit=6), key=key, store=either
        )
        async def call() -> None:
            nonlocal inside
            inside += 1
            holders = inside
            # Without drops AIMD never shrinks: the limit read now is at least the limit
            # when these holders were granted.
            seen.append((holders, await live_limit()))
            await asyncio.sleep(0.001)
            inside -= 1

        async def client() -> None:
            for _ in range(8):
                await call()

        backend = either.backend("pool", key, None)
        try:
            await call()  # a first call alone: see WARM_UP
            await asyncio.gather(*(client() for _ in range(12)))
        finally:
            if isinstance(either, RedisStore):
                await either.aclose()
        pool = get_bounded(key, store=either)
        assert [] == [(holders, limit) for holders, limit in seen if holders > limit]
        assert 6 == max(holders for holders, _ in seen)
        assert (6, 0, 0) == (pool.limit, pool.in_use, pool.waiting)

    @pytest.mark.anyio
    async def test_tasks_with_drops_stay_in_bounds_and_leak_nothing(self, either: Any) -> None:
        """12 tasks, every fifth call a drop: holders never above max_limit, nothing held after."""
        key = "tasks"
        adaptive = AdaptiveLimit(algorithm="aimd", initial=3, min_limit=2, max_limit=8)
        inside = 0
        peak = 0
        limits: list[int] = []

        @bounded(limit=adaptive, key=key, store=either, timeout=20.0)
        async def call(n: int) -> None:
            nonlocal inside, peak
            if n < 0:
                return
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.002)
            inside -= 1
            if n % 5 == 0:
                raise ConnectionError(n)

        async def client(first: int) -> None:
            for n in range(first, first + 6):
                try:
                    await call(n)
                except ConnectionError:
                    pass
                limits.append(either.backend("pool", key, None).limit)  # as of its reply

        try:
            await call(-1)  # a first call alone: see WARM_UP
            await asyncio.gather(*(client(10 * c + 1) for c in range(12)))
        finally:
            if isinstance(either, RedisStore):
                await either.aclose()
        pool = get_bounded(key, store=either)
        assert 8 >= peak
        assert all(2 <= limit <= 8 for limit in limits)
        assert (0, 0) == (pool.in_use, pool.waiting)

    @pytest.mark.anyio
    async def test_cancelled_callers_leak_nothing(self, either: Any) -> None:
        """Running and waiting tasks cancelled at random moments leave the pool empty."""
        key = "cancel"

        @bounded(limit=AdaptiveLimit(initial=3, max_limit=10), key=key, store=either)
        async def call() -> None:
            await asyncio.sleep(0.05)

        await call()  # a first call alone: see WARM_UP
        tasks = [asyncio.create_task(call()) for _ in range(20)]
        rng = random.Random(3)
        try:
            for task in rng.sample(tasks, 12):
                await asyncio.sleep(rng.random() * 0.02)
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            backend = either.backend("pool", key, None)
            for _ in range(300):  # a give-back of a cancelled acquire may still be in flight
                if not getattr(backend, "_pending", None):
                    break
                await asyncio.sleep(0.01)
        finally:
            if isinstance(either, RedisStore):
                await either.aclose()
        pool = get_bounded(key, store=either)
        assert (0, 0) == (pool.in_use, pool.waiting)
        assert 1 <= pool.limit <= 10


def _spawn(monkeypatch: pytest.MonkeyPatch) -> multiprocessing.context.SpawnContext:
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).resolve().parents[2]))
    return multiprocessing.get_context("spawn")


def _run_workers(procs: list[Any]) -> list[int | None]:
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
    return [proc.exitcode for proc in procs]


def _cleanup(log: redis.Redis, namespace: str, procs: list[Any]) -> None:
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()
    for name in log.scan_iter(match=f"{namespace}:*"):
        log.delete(name)
    log.close()


def test_two_processes_feed_one_limit_and_never_over_hold(redis_store, monkeypatch) -> None:
    """
    Two processes: four threads each through one AIMD pool (holders at entry never above
    the live limit), then 60 busy successes each on another key (exactly +120 in all).
    """
    ctx = _spawn(monkeypatch)
    namespace = f"mp-{uuid.uuid4().hex[:10]}"
    barrier = ctx.Barrier(2)
    spec = spec_of(redis_store)
    procs = [
        ctx.Process(target=adaptive_worker, args=(namespace, 10, 60, barrier, spec))
        for _ in range(2)
    ]
    log = redis.Redis.from_url(URL)
    here = open_store(spec, namespace=namespace)
    try:
        assert [0, 0] == _run_workers(procs)
        pairs = [tuple(map(int, p.split(b","))) for p in log.lrange(f"{namespace}:log", 0, -1)]
        adaptive = AdaptiveLimit(algorithm="aimd", initial=5, max_limit=1000)
        bounded(limit=adaptive, key="exact", store=here)(lambda: None)
        exact = get_bounded("exact", store=here).limit
    finally:
        here.clear()
        here.close()
        _cleanup(log, namespace, procs)
    assert 125 == exact
    assert 2 * 4 * 10 == len(pairs)
    assert [] == [(holders, limit) for holders, limit in pairs if holders > limit]
    assert max(limit for _, limit in pairs) <= 8


class TestStoreFailure:
    def test_unreachable_store_fails_closed_or_open(self) -> None:
        """No server: fail-closed raises StoreUnavailableError, fail-open runs (an event)."""
        store = RedisStore("redis://127.0.0.1:1/0", timeout=0.2)
        adaptive = AdaptiveLimit(algorithm="aimd")

        @bounded(limit=adaptive, key="closed", store=store)
        def closed() -> str:
            return "ran"

        @bounded(limit=adaptive, key="open", store=store, fail_open=True)
        def opened() -> str:
            return "ran"

        with pytest.raises(StoreUnavailableError, match="'closed'"):
            closed()
        with capture_events("resilience.store") as events:
            assert "ran" == opened()
        assert [("bounded", True)] == [
            (e.metadata["decorator"], e.metadata["fail_open"]) for e in events
        ]
        store.close()

    @pytest.mark.anyio
    async def test_async_unreachable_store(self) -> None:
        """The async runner: the same two outcomes."""
        store = RedisStore("redis://127.0.0.1:1/0", timeout=0.2)
        adaptive = AdaptiveLimit(algorithm="vegas")

        @bounded(limit=adaptive, key="open", store=store, fail_open=True)
        async def opened() -> str:
            return "ran"

        @bounded(limit=adaptive, key="closed", store=store)
        async def closed() -> str:
            return "ran"

        assert "ran" == await opened()
        with pytest.raises(StoreUnavailableError):
            await closed()
        await store.aclose()
        store.close()

    def test_an_outage_mid_call_keeps_the_calls_outcome(self, redis_servers: Any) -> None:
        """The server dies during the call: its result stands, the next call fails closed."""
        port = free_port()
        server = redis_servers._server(f"adaptive-outage-{port}", _base(port), port)
        store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout=0.3)

        @bounded(limit=AdaptiveLimit(algorithm="aimd"), key="dying", store=store)
        def call(kill: bool) -> str:
            if kill:
                server.kill()
            return "done"

        try:
            assert "done" == call(False)
            assert "done" == call(True)  # the sample and release are lost: the lease expires
            with pytest.raises(StoreUnavailableError, match="'dying'"):
                call(False)
        finally:
            store.close()
            server.kill()
