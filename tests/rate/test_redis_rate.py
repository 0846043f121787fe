"""
``@rate_limited`` on a shared store: the same accounting in memory and Redis, and one budget
shared by several processes that is never exceeded in any window.
"""

from __future__ import annotations

import bisect
import multiprocessing
import pathlib
import time
import uuid

import pytest

from resilience import (
    RateLimitedError,
    StoreUnavailableError,
    backoff_window,
    rate_limited,
)
from resilience.stores import RedisStore
from resilience.testing import capture_events

from ..redis_workers import SLACK, log_client, open_store, rate_worker, spec_of


def over_limit(starts: list[float], limit: int, width: float) -> int:
    """Count the windows [s, s + width) beginning at a start that hold more than *limit*."""
    ordered = sorted(starts)
    return sum(
        1
        for s in ordered
        if bisect.bisect_left(ordered, s + width) - bisect.bisect_left(ordered, s) > limit
    )


def other_process(store: RedisStore) -> RedisStore:
    """A second store on the same namespace and clock: what another process would see."""
    return open_store(spec_of(store), namespace=store.namespace, clock=store.clock)


class TestAccounting:
    """Virtual time: memory and Redis agree to the microsecond (Redis keeps whole us)."""

    def test_starts_follow_the_sliding_rule(self, store, clock):
        """rate=3 per 1 s: three at once, the next three a window later, and so on."""
        starts = []

        @rate_limited(rate=3, per=1.0, key="api", store=store)
        def call():
            starts.append(clock.monotonic())

        for _ in range(7):
            call()
        assert [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0] == pytest.approx(starts, abs=1e-5)

    def test_burst_spaces_starts(self, store, clock):
        """burst=1 of 4 per 1 s: one start every 0.25 s."""
        starts = []

        @rate_limited(rate=4, per=1.0, burst=1, key="api", store=store)
        def call():
            starts.append(clock.monotonic())

        for _ in range(5):
            call()
        assert [0.0, 0.25, 0.5, 0.75, 1.0] == pytest.approx(starts, abs=1e-5)

    def test_refuses_without_waiting(self, store, clock):
        """wait=False: no room now is a RateLimitedError that says when to come back."""

        @rate_limited(rate=2, per=1.0, key="api", store=store, wait=False)
        def call():
            return "ok"

        assert ["ok", "ok"] == [call(), call()]
        with pytest.raises(RateLimitedError) as info:
            call()
        assert 1.0 == pytest.approx(info.value.retry_after, abs=1e-5)
        clock.advance(1.0)
        assert "ok" == call()

    def test_turn_beyond_timeout_reserves_nothing(self, store, clock):
        """A refused caller reserves nothing: the next one still gets the first free turn."""
        starts = []

        @rate_limited(rate=1, per=1.0, key="api", store=store, timeout=0.5)
        def call():
            starts.append(clock.monotonic())

        call()
        with pytest.raises(RateLimitedError):
            call()
        clock.advance(0.6)
        call()  # waits 0.4 s for the turn at 1.0, not a turn behind the refused caller
        assert [0.0, 1.0] == pytest.approx(starts, abs=1e-5)

    def test_backoff_window_is_a_lower_bound(self, store, clock):
        """An open backoff window holds every caller of the key until it ends."""
        starts = []

        @rate_limited(rate=10, per=1.0, key="api", store=store)
        def call():
            starts.append(clock.monotonic())

        backoff_window("api", store=store).set(5.0)
        call()
        call()
        assert [5.0, 5.0] == pytest.approx(starts, abs=1e-5)

    def test_backoff_window_extended_while_waiting(self, store, clock):
        """A window extended during a wait makes the waiter reserve a turn behind it."""
        starts = []

        @rate_limited(rate=1, per=1.0, key="api", store=store)
        def call():
            starts.append(clock.monotonic())

        call()
        window = backoff_window("api", store=store)
        original = clock.sleep

        def sleep(seconds):
            original(seconds)
            if 1 == len(clock.sleeps):
                window.set(2.0)  # opened while the first wait slept

        clock.sleep = sleep
        call()
        assert [0.0, 3.0] == pytest.approx(starts, abs=1e-5)

    def test_pending_counts_reservations(self, store, clock):
        """``pending`` counts the reserved turns that lie ahead (the queue depth)."""

        @rate_limited(rate=3, per=1.0, key="api", store=store, wait=False)
        def call():
            pass

        backend = store.backend("rate", "api", None)
        assert 0 == backend.pending()
        for _ in range(3):
            call()
        for _ in range(2):
            assert 1.0 == pytest.approx(backend.reserve(10.0), abs=1e-5)
        assert 2 == backend.pending()

    def test_pending_is_every_queued_caller(self, store, clock):
        """Memory and Redis count every reservation ahead, beyond *rate* (and the snapshot)."""

        @rate_limited(rate=2, per=1.0, key="queue", store=store, wait=False)
        def call():
            pass

        backend = store.backend("rate", "queue", None)
        waits = [backend.reserve(1000.0) for _ in range(2 + 4 + 2 * 130)]  # two a second
        assert 264 == sum(1 for w in waits if w > 1e-9)  # all but the first two wait
        assert 264 == backend.pending()
        assert 264 == backend.snapshot("queue").waiting  # what the status CLI shows
        clock.advance(1.0)  # the two reserved at 1.0 have started
        assert 262 == backend.pending()
        clock.advance(65.0)  # those at 0 .. 66 have: 134 of 266
        assert 132 == backend.pending()
        assert 132 == backend.snapshot("queue").waiting
        clock.advance(100.0)
        assert 0 == backend.pending()

    def test_weighted_pending_counts_every_queued_unit(self, store, clock):
        """Weighted reservations ahead count their units, every one, in memory and Redis."""

        @rate_limited(rate=4, per=1.0, key="units", store=store, wait=False)
        def call():
            pass

        backend = store.backend("rate", "units", None)
        waits = [backend.reserve_units(1000.0, 2)[0] for _ in range(2 + 2 * 70)]  # two a second
        assert 140 == sum(1 for w in waits if w > 1e-9)
        assert 280 == backend.pending()  # 140 calls of 2 units
        clock.advance(1.0)
        assert 276 == backend.pending()

    def test_processes_share_one_budget(self, redis_store, clock):
        """Two stores on one namespace (two processes) draw on one budget, in arrival order."""
        starts = []

        def limited(store):
            @rate_limited(rate=2, per=1.0, key="api", store=store)
            def call():
                starts.append(clock.monotonic())

            return call

        other = other_process(redis_store)
        first, second = limited(redis_store), limited(other)
        for call in (first, second, first, second):
            call()
        other.close()
        assert [0.0, 0.0, 1.0, 1.0] == pytest.approx(starts, abs=1e-5)

    def test_keys_expire_when_idle(self, redis_store, clock):
        """Every key the budget writes has an expiry: idle state leaves Redis by itself.

        At most a bucket (a 16th) past idle_ttl: expiries are set per bucket of time.
        """

        @rate_limited(rate=2, per=1.0, key="api", store=redis_store)
        def call():
            pass

        call()
        names = list(redis_store.client.scan_iter(match=f"{redis_store.namespace}:rate:*"))
        assert 2 == len(names)
        assert all(
            0 < redis_store.client.pttl(name) <= redis_store.ttl_ms * 17 / 16 for name in names
        )

    def test_lists_trimmed_by_time(self, redis_store, clock):
        """Entries that left the window are dropped (every 128th push), far below 2 x rate."""

        @rate_limited(rate=1000, per=1.0, key="api", store=redis_store)
        def call():
            pass

        for _ in range(100):
            call()
        clock.advance(2.0)
        for _ in range(28):  # the 128th entry of each list: a trim, and all 100 left the window
            call()
        client = redis_store.client
        for part in ("log", "starts"):
            entries = [int(x) for x in client.lrange(redis_store.key("rate", "api", part), 0, -1)]
            assert 28 == len(entries)
            assert all(t > (clock.monotonic() - 1.0) * 1_000_000 for t in entries)

    def test_weighted_lists_trimmed_by_time(self, redis_store, clock):
        """The same for weighted calls: a cost of 7 crosses 128 without landing on it."""

        @rate_limited(rate=1000, per=1.0, key="api", store=redis_store, cost=lambda: 7)
        def call():
            pass

        for _ in range(15):
            call()
        clock.advance(2.0)
        for _ in range(4):  # 105 -> 133 units: a trim at the crossing of 128
            call()
        client = redis_store.client
        for part in ("log", "starts"):
            entries = client.lrange(redis_store.key("rate", "api", part), 0, -1)
            assert 28 == len(entries)


class TestRealTime:
    """Server time (TIME) and the asyncio client, briefly."""

    @pytest.mark.anyio
    async def test_async_tasks_keep_the_rule(self, redis_store):
        """Async callers use the asyncio client and never exceed the budget."""
        import asyncio

        store = open_store(  # server time
            spec_of(redis_store), namespace=redis_store.namespace, slack=SLACK
        )
        starts = []

        @rate_limited(rate=5, per=0.2, key="api", store=store)
        async def call():
            starts.append(time.monotonic())

        await asyncio.gather(*(call() for _ in range(12)))
        await store.aclose()
        store.close()
        assert 12 == len(starts)
        assert 0 == over_limit(starts, 5, 0.2)
        assert 2 * (0.2 + SLACK) - SLACK <= max(starts) - min(starts) < 10.0

    def test_sync_uses_server_time(self, redis_store):
        """Without a test clock the scripts read TIME, and the wait is real."""
        store = open_store(spec_of(redis_store), namespace=redis_store.namespace)
        starts = []

        @rate_limited(rate=1, per=0.1, key="api", store=store)
        def call():
            starts.append(time.monotonic())

        for _ in range(3):
            call()
        store.close()
        assert 0.19 <= starts[-1] - starts[0] < 1.0


class TestUnavailable:
    """Nothing listening: fail-closed raises at once, fail-open runs and says so."""

    def test_fail_closed_raises(self):
        """The default is StoreUnavailableError naming the key, within the store timeout."""
        store = RedisStore("redis://127.0.0.1:1/0", timeout=0.2)

        @rate_limited(rate=5, key="api", store=store)
        def call():
            return "ran"

        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="'api'"):
            call()
        assert time.monotonic() - started < 0.5
        store.close()

    def test_fail_open_runs_and_emits(self):
        """fail_open=True: the call starts without a token; an event says why."""
        store = RedisStore("redis://127.0.0.1:1/0", timeout=0.2)

        @rate_limited(rate=5, key="api", store=store, fail_open=True)
        def call():
            return "ran"

        with capture_events("resilience.store") as events:
            assert "ran" == call()
        assert ["resilience.store.unavailable"] == [e.name for e in events]
        assert "rate_limited" == events[0].metadata["decorator"]
        store.close()

    @pytest.mark.anyio
    async def test_async_fail_open(self):
        """The async runner handles an unreachable store the same way."""
        store = RedisStore("redis://127.0.0.1:1/0", timeout=0.2)

        @rate_limited(rate=5, key="api", store=store, fail_open=True)
        async def call():
            return "ran"

        @rate_limited(rate=5, key="api2", store=store)
        async def closed():
            return "ran"

        assert "ran" == await call()
        with pytest.raises(StoreUnavailableError):
            await closed()
        await store.aclose()
        store.close()


def test_processes_never_exceed_the_budget(redis_store, monkeypatch):
    """
    Four processes sharing one budget: no window of *per* seconds holds more than *rate*
    starts, counted from the log every process appends to.
    """
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).resolve().parents[2]))
    namespace = f"mp-{uuid.uuid4().hex[:10]}"
    rate, per, calls, workers = 10, 0.25, 12, 4
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    procs = [
        ctx.Process(
            target=rate_worker,
            args=(namespace, rate, per, calls, barrier, spec_of(redis_store)),
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
        starts = [float(x) for x in log.lrange(f"{namespace}:log:starts", 0, -1)]
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
        for name in log.scan_iter(match=f"{namespace}:*"):
            log.delete(name)
        log.close()
    assert workers * calls == len(starts)
    # Admission is exact on the server; a start logged by the process is later by a
    # variable delay (scheduling), which the store's slack allows for.
    assert 0 == over_limit(starts, rate, per)
    # 48 starts at 10 per 0.25 s: at least 4 full windows must pass, however they fall.
    assert max(starts) - min(starts) >= 4 * per


def test_slack_widens_actual_starts_in_redis(redis_store):
    """The Redis script widens its check of actual starts by the clock's slack, as memory does."""
    from resilience._rate.redis import RedisRateBackend
    from resilience.testing import FakeClock

    class Jittery(FakeClock):
        slack = 0.001

    clock = Jittery()
    store = type(redis_store)(
        redis_store.client, namespace=redis_store.namespace + "-slack", clock=clock
    )
    backend = RedisRateBackend(store, "slack", 1, 1.0, None)
    try:
        assert 0.0 == backend.reserve(float("inf"))
        assert 1.0 == backend.reserve(float("inf"))  # reserved for 1.0
        clock.advance(1.0)
        assert 0.001 == pytest.approx(backend.admit(), abs=2e-6)  # on time: a hair more
        clock.advance(0.001)
        assert 0.0 == backend.admit()
    finally:
        store.clear()
    default = type(redis_store)("redis://127.0.0.1:6379/0")
    assert 0.001 == default.slack  # without a test clock, the store's allowance for jitter
    default.close()
