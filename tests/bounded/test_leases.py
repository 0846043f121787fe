"""
The memory pool's oldest lease: exact on virtual time, under threads, tasks and cancellation.

A memory pool records lease starts once it is watched (its first snapshot); before that its
hot path reads no clock. So each test takes one snapshot of the store first, then leases.
"""

from __future__ import annotations

import asyncio
import threading

from typing import Any

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from resilience import AdaptiveLimit, BoundedTimeoutError, bounded, snapshot
from resilience.stores import MemoryStore
from resilience.testing import FakeClock, virtual_time


LIMITS = [8, AdaptiveLimit(initial=8, min_limit=8, max_limit=8)]


def _pool(store: MemoryStore, key: str) -> Any:
    (pool,) = [p for p in snapshot(store).pools if p.key == key]
    return pool


class Holder:
    """Tasks that each hold one lease of *key* until told to let go."""

    def __init__(self, store: MemoryStore, key: str, limit: Any, clock: FakeClock) -> None:
        self.clock = clock
        self.go: dict[int, asyncio.Event] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}

        @bounded(limit=limit, key=key, store=store)
        async def hold(n: int) -> None:
            await self.go[n].wait()

        self.hold = hold

    async def start(self, n: int) -> None:
        self.go[n] = asyncio.Event()
        self.tasks[n] = asyncio.create_task(self.hold(n))
        await asyncio.sleep(0)  # it takes its permit now

    async def end(self, n: int) -> None:
        self.go[n].set()
        await self.tasks.pop(n)


@pytest.mark.anyio
@pytest.mark.parametrize("limit", LIMITS, ids=["fixed", "adaptive"])
class TestOnVirtualTime:
    async def test_the_oldest_live_lease_in_any_release_order(
        self, clock: FakeClock, limit: Any
    ) -> None:
        """Leases at t = 0, 1, 2 released oldest first, newest, then the last: 5, 4, 4, None."""
        store = MemoryStore()
        holder = Holder(store, "svc", limit, clock)
        assert _pool(store, "svc").oldest_lease is None  # watched now, nothing held
        for n in range(3):
            await holder.start(n)
            clock.advance(1.0)
        clock.advance(2.0)  # t = 5
        assert 5.0 == _pool(store, "svc").oldest_lease
        await holder.end(0)
        assert (4.0, 2) == (_pool(store, "svc").oldest_lease, _pool(store, "svc").in_use)
        await holder.end(2)
        assert 4.0 == _pool(store, "svc").oldest_lease
        await holder.end(1)
        assert (None, 0) == (_pool(store, "svc").oldest_lease, _pool(store, "svc").in_use)

    async def test_a_waiter_s_lease_starts_at_its_grant(self, clock: FakeClock, limit: Any) -> None:
        """A waiter from t = 1 granted at t = 3: at t = 4 its lease is 1 s old, not 3 s."""
        store = MemoryStore()
        one = 1 if isinstance(limit, int) else AdaptiveLimit(initial=1, max_limit=1)
        holder = Holder(store, "one", one, clock)
        _pool(store, "one")
        await holder.start(0)
        clock.advance(1.0)
        await holder.start(1)  # waits
        assert (1.0, 1, 1) == (
            _pool(store, "one").oldest_lease,
            _pool(store, "one").in_use,
            _pool(store, "one").waiting,
        )
        clock.advance(2.0)
        await holder.end(0)  # t = 3: the waiter is granted
        await asyncio.sleep(0)
        clock.advance(1.0)
        assert 1.0 == _pool(store, "one").oldest_lease
        await holder.end(1)
        assert _pool(store, "one").oldest_lease is None

    async def test_cancelled_holders_and_waiters_leave_no_lease(
        self, clock: FakeClock, limit: Any
    ) -> None:
        """Cancel a holder, then a waiter: what is left is the lease still held, exactly."""
        store = MemoryStore()
        two = 2 if isinstance(limit, int) else AdaptiveLimit(initial=2, max_limit=2)
        holder = Holder(store, "two", two, clock)
        _pool(store, "two")
        await holder.start(0)
        clock.advance(1.0)
        await holder.start(1)
        clock.advance(1.0)
        await holder.start(2)  # waits
        holder.tasks.pop(0).cancel()
        holder.tasks.pop(2).cancel()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        clock.advance(0.5)
        assert (0.5 + 1.0, 1) == (_pool(store, "two").oldest_lease, _pool(store, "two").in_use)
        await holder.end(1)
        assert (None, 0) == (_pool(store, "two").oldest_lease, _pool(store, "two").in_use)
        assert {} == store.peek("pool", "two").leases

    async def test_a_timed_out_waiter_leaves_no_lease(self, clock: FakeClock, limit: Any) -> None:
        """A waiter that gives up after its timeout holds nothing and records nothing."""
        store = MemoryStore()
        one = 1 if isinstance(limit, int) else AdaptiveLimit(initial=1, max_limit=1)
        holder = Holder(store, "t", one, clock)

        @bounded(limit=one, key="t", store=store, timeout=0.5)
        async def impatient() -> None:
            pass

        _pool(store, "t")
        await holder.start(0)
        with pytest.raises(BoundedTimeoutError):
            await impatient()
        assert 1 == len(store.peek("pool", "t").leases)  # the holder's alone
        assert 0.5 == _pool(store, "t").oldest_lease  # since t = 0
        await holder.end(0)
        assert {} == store.peek("pool", "t").leases


def test_sync_threads_on_virtual_time(clock: FakeClock) -> None:
    """Threads holding leases from t = 0 and t = 2 (weight 2): 3.0 at t = 3, then 1.0."""
    store = MemoryStore()
    gates = [threading.Event(), threading.Event()]
    held = threading.Semaphore(0)

    @bounded(limit=4, key="th", store=store, weight=2)
    def hold(n: int) -> None:
        held.release()
        gates[n].wait(10)

    _pool(store, "th")
    threads = []
    for n in range(2):
        threads.append(threading.Thread(target=hold, args=(n,)))
        threads[-1].start()
        assert held.acquire(timeout=10)
        clock.advance(2.0)
    assert (4.0, 4) == (_pool(store, "th").oldest_lease, _pool(store, "th").in_use)
    gates[0].set()
    threads[0].join(10)
    assert (2.0, 2) == (_pool(store, "th").oldest_lease, _pool(store, "th").in_use)
    gates[1].set()
    threads[1].join(10)
    assert (None, 0) == (_pool(store, "th").oldest_lease, _pool(store, "th").in_use)


def test_leases_from_before_the_first_snapshot_are_at_least_since_the_watch(
    clock: FakeClock,
) -> None:
    """A lease older than the watch is not guessed: at least since the watch, then exact."""
    store = MemoryStore()
    gates = [threading.Event(), threading.Event()]
    held = threading.Event()

    def pool() -> tuple[float | None, bool, int]:
        found = _pool(store, "early")
        return found.oldest_lease, found.oldest_lease_at_least, found.in_use

    @bounded(limit=3, key="early", store=store)
    def hold(gate: threading.Event) -> None:
        held.set()
        gate.wait(10)

    early = threading.Thread(target=hold, args=(gates[0],))
    early.start()
    assert held.wait(10)
    clock.advance(1.0)
    assert (0.0, True, 1) == pool()  # watched now: its start is before this, unknown
    held.clear()
    late = threading.Thread(target=hold, args=(gates[1],))
    late.start()  # recorded: the pool is watched now
    assert held.wait(10)
    clock.advance(1.0)
    assert (1.0, True, 2) == pool()  # the early one is still held: at least since the watch
    gates[0].set()
    early.join(10)
    clock.advance(1.0)
    assert (2.0, False, 1) == pool()  # only the recorded one: exact
    gates[1].set()
    late.join(10)
    assert (None, False, 0) == pool()


def test_a_pre_watch_lease_released_is_never_counted_again(clock: FakeClock) -> None:
    """Once the units held beyond the records drop, the at-least mark stays gone."""
    store = MemoryStore()
    gate, held = threading.Event(), threading.Event()

    @bounded(limit=2, key="gone", store=store)
    def hold() -> None:
        held.set()
        gate.wait(10)

    early = threading.Thread(target=hold)
    early.start()
    assert held.wait(10)
    assert _pool(store, "gone").oldest_lease_at_least
    gate.set()
    early.join(10)
    assert (None, False) == (
        _pool(store, "gone").oldest_lease,
        _pool(store, "gone").oldest_lease_at_least,
    )
    gate.clear()
    held.clear()
    again = threading.Thread(target=hold)
    again.start()  # recorded now
    assert held.wait(10)
    clock.advance(0.5)
    found = _pool(store, "gone")
    assert (0.5, False) == (found.oldest_lease, found.oldest_lease_at_least)
    gate.set()
    again.join(10)


@pytest.mark.parametrize("limit", LIMITS, ids=["fixed", "adaptive"])
def test_real_threads_churning_keep_the_record_exact(limit: Any) -> None:
    """8 threads through a watched pool while snapshots read: a sane age, nothing left over."""
    store = MemoryStore()

    @bounded(limit=limit, key="churn", store=store)
    def call(n: int) -> int:
        if n % 97 == 0:
            raise ConnectionError
        return n

    _pool(store, "churn")
    done = threading.Event()

    def worker() -> None:
        for n in range(3000):
            try:
                call(n)
            except ConnectionError:
                pass

    ages: list[float] = []

    def reader() -> None:
        while not done.is_set():
            age = _pool(store, "churn").oldest_lease
            if age is not None:
                ages.append(age)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    watcher.join()
    assert all(0.0 <= age < 60.0 for age in ages)
    assert {} == store.peek("pool", "churn").leases
    assert (None, 0) == (_pool(store, "churn").oldest_lease, _pool(store, "churn").in_use)


steps = st.lists(st.tuples(st.booleans(), st.integers(0, 7), st.integers(0, 3)), max_size=40)


@settings(max_examples=40, deadline=None)
@given(steps=steps, adaptive=st.booleans())
def test_any_order_of_starts_and_ends_gives_the_oldest_live_start(
    steps: list[tuple[bool, int, int]], adaptive: bool
) -> None:
    """Random starts, ends and clock steps: the snapshot says now - the oldest live start."""
    limit: Any = AdaptiveLimit(initial=8, min_limit=8, max_limit=8) if adaptive else 8

    async def scenario(clock: FakeClock) -> None:
        store = MemoryStore()
        holder = Holder(store, "any", limit, clock)
        _pool(store, "any")
        started: dict[int, float] = {}
        n = 0
        for start, pick, seconds in steps:
            if start and len(started) < 8:
                await holder.start(n)
                started[n] = clock.monotonic()
                n += 1
            elif started:
                victim = sorted(started)[pick % len(started)]
                await holder.end(victim)
                del started[victim]
            clock.advance(float(seconds))
            pool = _pool(store, "any")
            expected = clock.monotonic() - min(started.values()) if started else None
            assert (expected, len(started)) == (pool.oldest_lease, pool.in_use)
        for victim in list(started):
            await holder.end(victim)

    with virtual_time() as clock:
        asyncio.run(scenario(clock))


class TestLeaseBeginTwins:
    """``lease_begin`` in C (when built) and its pure-Python twin record the same leases."""

    @staticmethod
    def _twins() -> list[Any]:
        from resilience._bounded import pool

        twins = [pool._lease_begin]
        if pool.lease_begin is not pool._lease_begin:
            twins.append(pool.lease_begin)
        return twins

    def test_the_accelerator_is_used_when_built(self) -> None:
        """Built and not switched off: a watched pool's lease start is one C call."""
        import importlib.util
        import os

        from resilience._bounded import pool

        built = importlib.util.find_spec("resilience._speedups") is not None
        off = bool(os.environ.get("RESILIENCE_NO_EXTENSIONS"))
        assert (pool.lease_begin is not pool._lease_begin) == (built and not off)

    @given(steps=st.lists(st.floats(min_value=0.0, max_value=1e6), max_size=30))
    def test_same_ids_in_order_and_same_starts(self, steps: list[float]) -> None:
        """On virtual time, turn by turn: fresh increasing ids, the clock's reading as start."""
        with virtual_time() as clock:
            for begin in self._twins():
                leases: dict[int, float] = {}
                ids = []
                for seconds in steps:
                    clock.advance(seconds)
                    ids.append(begin(leases))
                    assert clock.monotonic() == leases[ids[-1]]
                assert ids == sorted(set(ids))
                assert len(steps) == len(leases)

    def test_the_real_clock_and_errors(self) -> None:
        """On the real clock the start lies between two reads; a non-dict is refused."""
        import time

        for begin in self._twins():
            leases: dict[int, float] = {}
            before = time.monotonic()
            lease = begin(leases)
            assert before <= leases[lease] <= time.monotonic()
        if len(self._twins()) == 2:
            with pytest.raises(TypeError, match="leases must be a dict"):
                self._twins()[1]([])
