"""
``@bounded`` on a shared store: the same pool in memory and Redis; in Redis, permits are
leases that are never over-granted across processes and come back when a holder dies.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pathlib
import signal
import threading
import time
import uuid

import pytest
import redis

from resilience import BoundedTimeoutError, StoreUnavailableError, bounded
from resilience.stores import RedisStore
from resilience.testing import capture_events

from ..redis_workers import hog_worker, log_client, open_store, pool_worker, spec_of


def other_process(store: RedisStore, **kwargs: object) -> RedisStore:
    """A second store on the same namespace and clock: what another process would see."""
    return open_store(spec_of(store), namespace=store.namespace, clock=store.clock, **kwargs)


class TestPool:
    """The pool's accounting, for both stores."""

    def test_acquire_release_and_weights(self, store):
        """Units are taken while free, refused beyond the limit, and given back."""

        @bounded(limit=3, key="db", store=store)
        def call():
            pass

        backend = store.backend("pool", "db", None)
        assert backend.try_acquire(2)
        assert not backend.try_acquire(2)
        assert backend.try_acquire(1)
        assert 0 == backend.available()
        backend.release(2)
        assert 2 == backend.available()
        backend.release(1)
        assert 3 == backend.available()

    def test_threads_never_exceed_the_limit(self, store):
        """Eight threads through a pool of 2: never more than 2 inside, all served."""
        inside = 0
        peak = 0
        done = []
        lock = threading.Lock()

        @bounded(limit=2, key="db", store=store, timeout=30.0)
        def call():
            nonlocal inside, peak
            with lock:
                inside += 1
                peak = max(peak, inside)
            filled = time.monotonic() + 2  # the pool fills once, however threads are scheduled
            while peak < 2 and time.monotonic() < filled:
                time.sleep(0.001)
            with lock:
                inside -= 1
            done.append(1)

        threads = [threading.Thread(target=lambda: [call() for _ in range(3)]) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert (24, 2) == (len(done), peak)
        assert 2 == store.backend("pool", "db", None).available()

    @pytest.mark.anyio
    async def test_tasks_never_exceed_the_limit(self, store):
        """Twenty tasks through a pool of 3: never more than 3 inside, all served."""
        inside = 0
        peak = 0

        @bounded(limit=3, key="db", store=store, timeout=30.0)
        async def call():
            nonlocal inside, peak
            inside += 1
            peak = max(peak, inside)
            filled = time.monotonic() + 2  # the pool fills once, however tasks are scheduled
            while peak < 3 and time.monotonic() < filled:
                await asyncio.sleep(0.001)
            inside -= 1
            return 1

        assert 20 == sum(await asyncio.gather(*(call() for _ in range(20))))
        assert 3 == peak
        assert 3 == store.backend("pool", "db", None).available()
        if isinstance(store, RedisStore):
            await store.aclose()

    def test_times_out_when_full(self, store):
        """A caller that gets no permit within its timeout gets BoundedTimeoutError."""

        @bounded(limit=1, key="db", store=store, timeout=0.05)
        def call():
            pass

        backend = store.backend("pool", "db", None)
        assert backend.try_acquire(1)
        with pytest.raises(BoundedTimeoutError, match="'db'"):
            call()
        backend.release(1)
        call()


class TestLeases:
    """Redis only: leases expire unless renewed, and waiters see other processes' releases."""

    def test_unrenewed_lease_expires(self, redis_store, clock):
        """A holder that stops renewing (it died) loses its permits after the lease time."""
        other = other_process(redis_store)
        dead = other.backend("pool", "db", _Policy(2))
        alive = redis_store.backend("pool", "db", _Policy(2))
        try:
            assert dead.try_acquire(2)
            assert not alive.try_acquire(1)
            clock.advance(redis_store.lease - 0.001)
            assert not alive.try_acquire(1)  # not before the lease time
            clock.advance(0.002)
            assert alive.try_acquire(2)
            dead.release(2)  # too late: its lease was purged, nothing is given back twice
            assert 0 == alive.available()
            alive.release(2)
        finally:
            other.close()

    def test_renewal_keeps_a_running_call_granted(self, redis_store):
        """While the call runs its lease is renewed: nobody else gets the permit meanwhile."""
        holder = open_store(spec_of(redis_store), namespace=redis_store.namespace, lease=0.15)
        rival = open_store(spec_of(redis_store), namespace=redis_store.namespace, lease=0.15)
        mine = holder.backend("pool", "db", _Policy(1))
        theirs = rival.backend("pool", "db", _Policy(1))
        try:
            assert mine.try_acquire(1)
            deadline = time.monotonic() + 0.5  # more than three lease times
            while time.monotonic() < deadline:
                assert not theirs.try_acquire(1)
                time.sleep(0.02)
            mine.release(1)
            assert theirs.try_acquire(1)
            theirs.release(1)
        finally:
            holder.close()
            rival.close()

    def test_waiter_sees_another_process_release(self, redis_store):
        """A waiting caller is granted when another process releases (it polls)."""
        other = other_process(redis_store)
        rival = other.backend("pool", "db", _Policy(1))

        @bounded(limit=1, key="db", store=redis_store, timeout=2.0)
        def call():
            return time.monotonic()

        assert rival.try_acquire(1)
        timer = threading.Timer(0.1, rival.release, args=(1,))
        released = time.monotonic()
        timer.start()
        try:
            started = call()
        finally:
            timer.join()
            other.close()
        assert 0.09 <= started - released < 0.5


class _Policy:
    """The one policy field a pool factory reads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit


class TestUnavailable:
    """Nothing listening: fail-closed raises at once, fail-open runs without permits."""

    def test_fail_closed_and_open(self):
        """The policy decides; the fail-open call emits resilience.store.unavailable."""
        store = RedisStore("redis://127.0.0.1:1/0", timeout=0.2)

        @bounded(limit=1, key="closed", store=store)
        def closed():
            return "ran"

        @bounded(limit=1, key="open", store=store, fail_open=True)
        def opened():
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
    async def test_async_fail_open(self):
        """The async runner handles an unreachable store the same way."""
        store = RedisStore("redis://127.0.0.1:1/0", timeout=0.2)

        @bounded(limit=1, key="open", store=store, fail_open=True)
        async def opened():
            return "ran"

        @bounded(limit=1, key="closed", store=store)
        async def closed():
            return "ran"

        assert "ran" == await opened()
        with pytest.raises(StoreUnavailableError):
            await closed()
        await store.aclose()
        store.close()


def _spawn(monkeypatch: pytest.MonkeyPatch) -> multiprocessing.context.SpawnContext:
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).resolve().parents[2]))
    return multiprocessing.get_context("spawn")


def _cleanup(log: redis.Redis, namespace: str, procs: list) -> None:
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()
    for name in log.scan_iter(match=f"{namespace}:*"):
        log.delete(name)
    log.close()


def test_permits_never_over_granted_across_processes(redis_store, monkeypatch):
    """Four processes through one pool of 3: at most 3 holders at any time, all served."""
    ctx = _spawn(monkeypatch)
    namespace = f"mp-{uuid.uuid4().hex[:10]}"
    limit, calls, workers = 3, 8, 4
    barrier = ctx.Barrier(workers)
    procs = [
        ctx.Process(
            target=pool_worker,
            args=(namespace, limit, calls, 0.02, barrier, spec_of(redis_store)),
        )
        for _ in range(workers)
    ]
    log = log_client()
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=60)  # spawning and importing takes seconds on a loaded machine
        assert [0] * workers == [proc.exitcode for proc in procs]
        peaks = [int(x) for x in log.lrange(f"{namespace}:log:peaks", 0, -1)]
        done = log.llen(f"{namespace}:log:done")
    finally:
        _cleanup(log, namespace, procs)
    assert (workers * calls, workers) == (len(peaks), done)
    assert limit == max(peaks)  # the pool was full, and never over


def test_killed_holder_gives_permits_back_within_the_lease(redis_store, monkeypatch):
    """SIGKILL a process holding every permit: they come back after at most the lease."""
    ctx = _spawn(monkeypatch)
    namespace = f"mp-{uuid.uuid4().hex[:10]}"
    lease = 2.0  # renewals every lease/3 s: a loaded machine may delay one by a second
    proc = ctx.Process(target=hog_worker, args=(namespace, 2, lease, spec_of(redis_store)))
    log = log_client()
    store = open_store(spec_of(redis_store), namespace=namespace, lease=lease)
    pool = store.backend("pool", "shared", _Policy(2))
    try:
        proc.start()
        assert log.blpop([f"{namespace}:log:holding"], timeout=20) is not None
        time.sleep(lease)  # the hog outlives its first lease: it is renewing
        assert not pool.try_acquire(1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=10)
        # On the server's clock: every lease the dead process held ends within one lease
        # of now (its last renewal came before this reading), whatever the scheduler does.
        seconds, micros = store.client.time()
        dead = seconds * 1_000_000 + micros
        leases = store.client.zrange(store.key("pool", "shared", "leases"), 0, -1, withscores=True)
        assert leases
        assert max(expiry for _, expiry in leases) <= dead + lease * 1_000_000
        killed = time.monotonic()
        while not pool.try_acquire(2) and time.monotonic() - killed < lease + 10:
            time.sleep(0.01)
        back = time.monotonic() - killed
        pool.release(2)
    finally:
        store.close()
        _cleanup(log, namespace, [proc])
    assert -signal.SIGKILL == proc.exitcode
    assert back < lease + 10  # and they did come back (the purge on acquire)
