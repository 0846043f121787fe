"""Tests for ``@bounded``: limits under threads and tasks, FIFO, timeouts, no leaked permits."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from resilience import BoundedPolicy, BoundedTimeoutError, bounded, set_active
from resilience._bounded.pool import (
    TOKENS_MAX,
    CountedPoolBackend,
    MemoryPoolBackend,
    PermitQueue,
    memory_pool,
)
from resilience.stores._memory import DEFAULT_STORE
from resilience.testing import FakeClock, capture_events


def pool(key: str) -> PermitQueue:
    queue: PermitQueue = DEFAULT_STORE.peek("pool.queue", key)
    return queue


class Gauge:
    """Counts units in use at once, thread-safely, and remembers the peak."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.lock = threading.Lock()

    def enter(self, units: int = 1) -> None:
        with self.lock:
            self.now += units
            self.peak = max(self.peak, self.now)

    def leave(self, units: int = 1) -> None:
        with self.lock:
            self.now -= units


class TestMemoryPoolBackend:
    def test_counts_and_refuses_beyond_the_limit(self) -> None:
        """try_acquire takes units while they fit; release gives them back, never below zero."""
        backend = MemoryPoolBackend(3)
        assert backend.try_acquire(2)
        assert not backend.try_acquire(2)
        assert backend.try_acquire(1)
        backend.release(3)
        backend.release(3)
        assert 3 == backend.available()

    @pytest.mark.parametrize("kind", [MemoryPoolBackend, CountedPoolBackend])
    def test_threads_never_take_more_than_the_limit(self, kind) -> None:
        """Real threads taking one or three units at once never hold more than the limit."""
        backend = kind(7)
        gauge = Gauge()
        taken = [0]

        def worker(weight: int) -> None:
            for _ in range(2000):
                if backend.try_acquire(weight):
                    gauge.enter(weight)
                    with gauge.lock:
                        taken[0] += 1
                    gauge.leave(weight)
                    backend.release(weight)

        threads = [threading.Thread(target=worker, args=(w,)) for w in (1, 1, 3, 3, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert gauge.peak <= 7
        assert taken[0] > 0
        assert (7, 0) == (backend.available(), backend.used)

    def test_large_pools_count_in_constant_memory(self) -> None:
        """Up to TOKENS_MAX units are tokens; a larger pool counts them under a lock."""
        small = memory_pool("k", BoundedPolicy(limit=TOKENS_MAX), DEFAULT_STORE)
        large = memory_pool("k", BoundedPolicy(limit=10**9), DEFAULT_STORE)
        assert (type(small), type(large)) == (MemoryPoolBackend, CountedPoolBackend)
        assert large.try_acquire(10**9 - 1)
        assert not large.try_acquire(2)
        assert (1, 10**9 - 1) == (large.available(), large.used)


class TestBoundedThreads:
    def test_32_threads_never_exceed_the_limit_and_leak_nothing(self) -> None:
        """32 real threads: at most limit run at once, and the pool is full afterwards."""
        gauge = Gauge()

        @bounded(limit=4, key="threads")
        def work() -> None:
            gauge.enter()
            time.sleep(0.0005)
            gauge.leave()

        threads = [threading.Thread(target=lambda: [work() for _ in range(5)]) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert 4 == gauge.peak
        assert 4 == pool("threads").backend.available()
        assert 0 == len(pool("threads").waiters)

    def test_threads_are_served_in_arrival_order(self) -> None:
        """Waiting threads get the permit in the order they queued."""
        order: list[int] = []
        gate = threading.Event()

        @bounded(limit=1, key="fifo")
        def work(i: int) -> None:
            if i < 0:
                gate.wait()
            order.append(i)

        holder = threading.Thread(target=work, args=(-1,))
        holder.start()
        threads = []
        for i in range(8):
            t = threading.Thread(target=work, args=(i,))
            t.start()
            while len(pool("fifo").waiters) < i + 1:  # queued before the next one starts
                time.sleep(0.0002)
            threads.append(t)
        gate.set()
        for t in [holder, *threads]:
            t.join()
        assert [-1, *range(8)] == order

    def test_sync_timeout_raises_and_leaves_the_queue(self) -> None:
        """A thread that waits past timeout raises BoundedTimeoutError naming the key and limit."""
        gate = threading.Event()

        @bounded(limit=1, key="slow", timeout=0.01)
        def work() -> None:
            gate.wait()

        holder = threading.Thread(target=work)
        holder.start()
        while pool("slow").backend.available():
            time.sleep(0.0002)
        with (
            capture_events("resilience.bounded") as events,
            pytest.raises(BoundedTimeoutError) as info,
        ):
            work()
        gate.set()
        holder.join()
        assert ("slow", 1, 1, 0.01) == (
            info.value.key,
            info.value.limit,
            info.value.weight,
            info.value.timeout,
        )
        assert "'slow'" in str(info.value)
        assert isinstance(info.value, TimeoutError)
        assert ["resilience.bounded.timeout"] == [e.name for e in events]
        assert 0 == len(pool("slow").waiters)
        assert 1 == pool("slow").backend.available()

    def test_exception_releases(self) -> None:
        """A call that raises gives its permits back."""

        @bounded(limit=2, weight=2, key="exc")
        def boom() -> None:
            raise RuntimeError

        for _ in range(3):
            with pytest.raises(RuntimeError):
                boom()
        assert 2 == pool("exc").backend.available()

    def test_timeout_zero_refuses_at_once(self) -> None:
        """timeout=0 refuses when no permit is free right now."""

        @bounded(limit=1, key="z", timeout=0)
        def inner() -> None:
            pass

        @bounded(limit=1, key="z")
        def outer() -> None:
            with pytest.raises(BoundedTimeoutError):
                inner()

        outer()
        assert 1 == pool("z").backend.available()


class TestBoundedAsync:
    @pytest.mark.anyio
    async def test_thousand_tasks_fifo_and_never_over(self, clock: FakeClock) -> None:
        """1000 tasks: at most limit run at once, they enter in arrival order, nothing leaks."""
        gauge = Gauge()
        order: list[int] = []

        @bounded(limit=10, key="tasks")
        async def work(i: int) -> None:
            order.append(i)
            gauge.enter()
            await clock.asleep(0.01)
            gauge.leave()

        await asyncio.gather(*(work(i) for i in range(1000)))
        assert 10 == gauge.peak
        assert list(range(1000)) == order
        assert 10 == pool("tasks").backend.available()

    @pytest.mark.anyio
    async def test_weighted_heavy_waiter_is_not_overtaken(self, clock: FakeClock) -> None:
        """A heavy waiter at the head blocks lighter ones behind it until it fits (strict FIFO)."""
        order: list[str] = []

        @bounded(limit=4, weight=3, key="w")
        async def heavy(name: str) -> None:
            order.append(name)
            await clock.asleep(1.0)

        @bounded(limit=4, weight=1, key="w")
        async def light(name: str) -> None:
            order.append(name)
            await clock.asleep(1.0)

        await asyncio.gather(heavy("h1"), heavy("h2"), light("l1"), light("l2"))
        assert ["h1", "l1"] != order[:2]
        assert ["h1", "h2", "l1", "l2"] == order
        assert 4 == pool("w").backend.available()

    @pytest.mark.anyio
    async def test_timeout_in_virtual_time(self, clock: FakeClock) -> None:
        """A task waiting past timeout raises BoundedTimeoutError; the queue moves on."""

        @bounded(limit=1, key="t", timeout=2.0)
        async def work(seconds: float) -> float:
            await clock.asleep(seconds)
            return clock.monotonic()

        results = await asyncio.gather(work(5.0), work(1.0), return_exceptions=True)
        assert 5.0 == results[0]
        assert isinstance(results[1], BoundedTimeoutError)
        assert 2.0 == results[1].timeout
        assert 1 == pool("t").backend.available()
        assert 0 == len(pool("t").waiters)

    @pytest.mark.anyio
    async def test_cancelled_waiter_does_not_block_the_queue(self, clock: FakeClock) -> None:
        """Cancelling the head waiter lets the next one in; no permit leaks."""
        order: list[str] = []

        @bounded(limit=1, key="c")
        async def work(name: str) -> None:
            order.append(name)
            await clock.asleep(1.0)

        holder = asyncio.ensure_future(work("holder"))
        await clock.asleep(0.1)
        head = asyncio.ensure_future(work("head"))
        tail = asyncio.ensure_future(work("tail"))
        await clock.asleep(0.1)
        assert 2 == len(pool("c").waiters)
        head.cancel()
        await asyncio.gather(holder, tail, head, return_exceptions=True)
        assert ["holder", "tail"] == order
        assert 1 == pool("c").backend.available()
        assert 0 == len(pool("c").waiters)

    @pytest.mark.anyio
    async def test_cancelled_holder_releases(self, clock: FakeClock) -> None:
        """A task cancelled while running gives its permits back."""

        @bounded(limit=2, weight=2, key="ch")
        async def work() -> None:
            await clock.asleep(10.0)

        task = asyncio.ensure_future(work())
        await clock.asleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert 2 == pool("ch").backend.available()

    @pytest.mark.anyio
    async def test_many_cancellations_leave_a_full_pool(self, clock: FakeClock) -> None:
        """Cancelling every other of 200 tasks at random moments leaks no permit."""

        @bounded(limit=3, key="many")
        async def work() -> None:
            await clock.asleep(0.5)

        tasks = [asyncio.ensure_future(work()) for _ in range(200)]
        for i, task in enumerate(tasks):
            if i % 2:
                await clock.asleep(0.05)
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert 3 == pool("many").backend.available()
        assert 0 == len(pool("many").waiters)

    @pytest.mark.anyio
    async def test_wait_event_has_queue_depth(self, clock: FakeClock) -> None:
        """bounded.wait reports the key, the seconds waited and the queue depth."""

        @bounded(limit=1, key="ev")
        async def work() -> None:
            await clock.asleep(1.0)

        with capture_events("resilience.bounded") as events:
            await asyncio.gather(work(), work())
        assert ["resilience.bounded.wait"] == [e.name for e in events]
        assert 1.0 == events[0].measurements["waited"]
        assert 0.0 == events[0].measurements["queue_depth"]
        assert "ev" == events[0].metadata["key"]


class TestThreadsAndTasksShareAKey:
    def test_mixed_waiters_share_one_pool(self) -> None:
        """Threads and tasks on one key never exceed the limit together, and nothing leaks."""
        gauge = Gauge()

        @bounded(limit=2, key="mixed")
        def sync_work() -> None:
            gauge.enter()
            time.sleep(0.0005)
            gauge.leave()

        @bounded(limit=2, key="mixed")
        async def async_work() -> None:
            gauge.enter()
            await asyncio.sleep(0.0005)
            gauge.leave()

        async def tasks() -> None:
            await asyncio.gather(*(async_work() for _ in range(50)))

        threads = [
            threading.Thread(target=lambda: [sync_work() for _ in range(10)]) for _ in range(4)
        ]
        runner = threading.Thread(target=asyncio.run, args=(tasks(),))
        for t in [*threads, runner]:
            t.start()
        for t in [*threads, runner]:
            t.join()
        assert gauge.peak <= 2
        assert 2 == pool("mixed").backend.available()


class TestBoundedDecoration:
    def test_bad_policies_fail_at_decoration(self) -> None:
        """limit < 1, weight > limit and a second limit for one key are ValueErrors."""
        with pytest.raises(ValueError, match="BoundedPolicy.limit"):
            bounded(limit=0)
        with pytest.raises(ValueError, match="weight must be <= limit"):
            bounded(limit=2, weight=3)
        bounded(limit=2, key="same")(lambda: None)
        with pytest.raises(ValueError, match="'same' already has a pool of 2"):
            bounded(limit=3, key="same")(lambda: None)

    def test_bare_use_and_generators_are_type_errors(self) -> None:
        """Bare @bounded (no limit) and generator functions are refused with TypeError."""
        with pytest.raises(TypeError, match="needs a limit"):
            bounded(lambda: None)

        async def agen() -> object:
            yield 1

        with pytest.raises(TypeError, match="generator"):
            bounded(limit=1)(agen)

    def test_policy_and_switch_off(self) -> None:
        """A BoundedPolicy works positionally; switched off, calls pass through unbounded."""

        @bounded(BoundedPolicy(limit=1, key="off", timeout=0))
        def outer() -> int:
            return inner()

        @bounded(BoundedPolicy(limit=1, key="off", timeout=0))
        def inner() -> int:
            return 1

        set_active(False)
        assert 1 == outer()


def test_sync_wait_reports_real_seconds(clock):
    """Threads wait on a real lock, so the wait event reports real time, even under virtual time."""
    import threading

    from resilience import bounded
    from resilience.testing import capture_events

    inside = threading.Event()
    release = threading.Event()

    @bounded(limit=1, key="real-wait")
    def hold(block: bool) -> None:
        if block:
            inside.set()
            release.wait(5)

    holder = threading.Thread(target=hold, args=(True,))
    holder.start()
    assert inside.wait(5)
    threading.Timer(0.02, release.set).start()
    with capture_events("resilience.bounded.wait") as events:
        hold(False)
    holder.join(5)
    assert 1 == len(events)
    assert 0.015 <= events[0].measurements["waited"] < 5
    assert 0.0 == clock.monotonic()  # virtual time did not move
