"""
Memory stays bounded with keys: state that nothing holds and that is idle past its own
horizon is released (in memory by the store's sweep, in Redis by key expiry), an LRU cap
bounds unbounded key spaces, and keys still in use keep their state and behaviour.
"""

from __future__ import annotations

import gc
import time
import tracemalloc

from typing import Any

import pytest

from resilience import (
    BoundedPolicy,
    CircuitBreakerPolicy,
    CircuitOpenError,
    RateLimitedError,
    RateLimitPolicy,
    RetryBudget,
    backoff_window,
    bounded,
    circuit_breaker,
    rate_limited,
    retry,
)
from resilience._breaker.contract import SUCCESS
from resilience.stores import MemoryStore
from resilience.testing import virtual_time


KEYS = 10**5
MB = 1_000_000


def _work() -> int:
    return 1


def _fail() -> None:
    raise ConnectionError("down")


def _use_once(store: MemoryStore, i: int, policies: dict[str, Any]) -> None:
    """Use key *i* of one concern once, as a decorator's layer or a window handle would."""
    concern = ("rate", "breaker", "window", "pool", "budget")[i % 5]
    key = f"user-{i}"
    if concern == "rate":
        store.backend("rate", key, policies["rate"]).reserve(0.0)
    elif concern == "breaker":
        breaker = store.backend("breaker", key, policies["breaker"])
        breaker.record(breaker.admit().ticket, SUCCESS)
    elif concern == "window":
        store.backend("window", key, None).extend(1.0)  # what backoff_window(key).set does
    elif concern == "pool":
        pool = store.backend("pool", key, policies["pool"])
        assert pool.try_acquire(1)
        pool.release(1)
    else:
        store.backend("budget", key, policies["budget"]).deposit()


#: Where keyed state is allocated (threads left running by other tests allocate elsewhere).
STATE_FILES = [
    tracemalloc.Filter(True, "*/resilience/stores/*"),
    tracemalloc.Filter(True, "*/resilience/_rate/*"),
    tracemalloc.Filter(True, "*/resilience/_breaker/*"),
    tracemalloc.Filter(True, "*/resilience/_bounded/*"),
    tracemalloc.Filter(True, "*/resilience/_budget/*"),
    tracemalloc.Filter(True, __file__),
]


def _grown(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> int:
    """Bytes still allocated by keyed state that were not allocated before."""
    stats = after.filter_traces(STATE_FILES).compare_to(
        before.filter_traces(STATE_FILES), "filename"
    )
    return sum(stat.size_diff for stat in stats)


def _kept(store: MemoryStore) -> int:
    return sum(len(store.keys(c)) for c in ("rate", "breaker", "window", "pool", "budget"))


class TestIdleKeysAreReleased:
    @pytest.mark.timeout(300)  # ~6 s on a quiet machine; tracemalloc slows every allocation
    def test_a_hundred_thousand_keys_used_once(self) -> None:
        """10**5 keys used once, then idle: the process is back within 3 MB of its start."""
        policies = {
            "rate": RateLimitPolicy(rate=5, per=1.0),
            "breaker": CircuitBreakerPolicy(reset_timeout=5.0),
            "pool": BoundedPolicy(limit=2),
            "budget": RetryBudget(window=10.0),
        }
        with virtual_time() as clock:
            store = MemoryStore()
            # keys in use throughout: their state must survive every sweep unchanged
            limited = rate_limited(rate=1, per=1000.0, key="held-rate", wait=False, store=store)(
                _work
            )
            broken = circuit_breaker(
                name="held-breaker", failure_threshold=1, reset_timeout=1000.0, store=store
            )(_fail)
            limited()
            with pytest.raises(ConnectionError):
                broken()
            backoff_window("held-window", store=store).set(1000.0)  # unheld, but not idle
            _use_once(store, 0, policies)  # first-use imports and caches, outside the count
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.take_snapshot()
                start = tracemalloc.get_traced_memory()[0]
                for i in range(1, KEYS):
                    _use_once(store, i, policies)
                    if i % 10_000 == 0:
                        clock.advance(1.0)
                peak = tracemalloc.get_traced_memory()[0]
                clock.advance(60.0)  # past every horizon: 1 s windows, 10 s budgets
                store.sweep()
                gc.collect()
                after = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
            assert peak - start > 5 * MB  # the keys did cost memory while in use
            assert _grown(before, after) < 3 * MB
            kept = {(c, k) for c in ("rate", "breaker", "window", "pool") for k in store.keys(c)}
            assert {
                ("rate", "held-rate"),
                ("window", "held-rate"),  # the limiter's own window, held by its layer
                ("breaker", "held-breaker"),
                ("window", "held-window"),
            } == kept
            assert [] == store.keys("budget")
            # and the keys in use behave exactly as before
            with pytest.raises(RateLimitedError):
                limited()
            with pytest.raises(CircuitOpenError):
                broken()
            assert backoff_window("held-window", store=store).remaining() > 900.0

    def test_decorated_functions_gone_release_their_state(self) -> None:
        """Per-key decorators used once and dropped leave nothing behind once idle."""
        with virtual_time() as clock:
            store = MemoryStore()
            for i in range(500):
                rate_limited(rate=5, key=f"rate-{i}", store=store)(_work)()
                circuit_breaker(name=f"url-{i}", store=store)(_work)()
                bounded(limit=2, key=f"pool-{i}", store=store)(_work)()
                budget = RetryBudget(key=f"budget-{i}", store=store)
                retry(attempts=2, budget=budget)(_work)()
            clock.advance(60.0)
            gc.collect()
            store.sweep()
            assert 0 == _kept(store)
            assert 0 == len(store.keys("pool.queue"))

    def test_sweeps_run_on_their_own(self) -> None:
        """No sweep() call needed: new keys trigger sweeps that release the idle ones."""
        with virtual_time() as clock:
            store = MemoryStore()
            for i in range(20_000):
                backoff_window(f"w-{i}", store=store).set(0.5)
                clock.advance(0.001)
            assert len(store.keys("window")) < 5_000
            assert store.evicted > 15_000


class TestKeysInUse:
    def test_held_state_is_never_released(self) -> None:
        """A decorator still alive keeps its backend, idle or not: the same object."""
        with virtual_time() as clock:
            store = MemoryStore()
            limited = rate_limited(rate=2, per=10.0, key="kept", store=store)(_work)
            limited()
            before = store.backend("rate", "kept", None)
            store.sweep()
            clock.advance(100.0)
            store.sweep()
            assert before is store.backend("rate", "kept", None)
            assert limited is not None

    def test_busy_state_is_kept_even_when_unheld(self) -> None:
        """A window still open, a permit still held: not idle, so not released."""
        with virtual_time():
            store = MemoryStore()
            backoff_window("open", store=store).set(30.0)
            pool = store.backend("pool", "busy", BoundedPolicy(limit=1))
            assert pool.try_acquire(1)
            del pool
            store.sweep()
            assert ["open"] == store.keys("window")
            assert ["busy"] == store.keys("pool")
            assert 0 == store.backend("pool", "busy", None).available()

    def test_open_breaker_is_kept(self) -> None:
        """An open breaker nobody holds stays open: releasing it would close it."""
        with virtual_time() as clock:
            store = MemoryStore()
            circuit_breaker(name="flaky", failure_threshold=1, reset_timeout=5.0, store=store)(
                _fail
            )
            with pytest.raises(ConnectionError):
                circuit_breaker(name="flaky", failure_threshold=1, reset_timeout=5.0, store=store)(
                    _fail
                )()
            gc.collect()
            clock.advance(1.0)
            store.sweep()
            assert ["flaky"] == store.keys("breaker")


class TestMaxKeys:
    def test_least_recently_used_go_first(self) -> None:
        """Past max_keys the least recently used unheld keys go, even when not idle."""
        with virtual_time():
            store = MemoryStore(max_keys=100)
            for i in range(1_000):
                backoff_window(f"w-{i}", store=store).set(1000.0)
            backoff_window("w-950", store=store)  # used again: now the most recent
            for i in range(1_000, 1_050):
                backoff_window(f"w-{i}", store=store).set(1000.0)
            kept = set(store.keys("window"))
            assert len(kept) <= 100
            assert "w-950" in kept
            assert "w-1049" in kept
            assert "w-0" not in kept

    def test_held_keys_survive_the_cap(self) -> None:
        """A key a live decorator holds is never evicted, however old."""
        with virtual_time():
            store = MemoryStore(max_keys=10)
            limited = rate_limited(rate=1, per=1000.0, key="oldest", wait=False, store=store)(_work)
            limited()
            for i in range(100):
                backoff_window(f"w-{i}", store=store).set(1000.0)
            assert "oldest" in store.keys("rate")
            with pytest.raises(RateLimitedError):
                limited()

    @pytest.mark.parametrize(
        ("value", "error"), [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)]
    )
    def test_validation(self, value: object, error: type[Exception]) -> None:
        """max_keys is a whole number >= 1, or None."""
        with pytest.raises(error, match="max_keys"):
            MemoryStore(max_keys=value)  # type: ignore[arg-type]


class TestRedis:
    def test_every_key_expires(self, redis_store: Any) -> None:
        """Every key each concern writes has a TTL (none lives forever) within the idle TTL."""
        store = redis_store
        with virtual_time():
            rate_limited(rate=5, key="r", store=store)(_work)()
            circuit_breaker(name="c", failure_threshold=1, store=store)(_work)()
            with pytest.raises(ConnectionError):
                circuit_breaker(name="c2", failure_threshold=1, store=store)(_fail)()
            bounded(limit=2, key="p", store=store)(_work)()
            backoff_window("w", store=store).set(5.0)
            budget = RetryBudget(key="b", store=store)
            retry(attempts=2, budget=budget)(_work)()
        names = list(store.client.scan_iter(match=f"{store.namespace}:*", count=500))
        assert names
        ceiling = store.ttl_ms + 10_000  # the idle TTL, or a window's end plus a second
        for name in names:
            ttl = store.client.pttl(name)
            assert 0 < ttl <= ceiling, (name, ttl)

    def test_keys_gone_after_their_horizon(self, request: pytest.FixtureRequest) -> None:
        """
        With a short idle TTL each key lives max(idle_ttl, its own horizon), then is gone.

        Every concern used once: its keys' PTTLs are bounded by that, keys with a longer
        horizon (an open breaker, a backoff window) outlive the idle TTL until it, and the
        rest really expire from Redis within 0.3 s (no sweep, no PEXPIRE by the test).
        """
        from tests.conftest import redis_store_for

        idle = 0.15
        store: Any = redis_store_for("single", request, idle_ttl=idle, lease=0.2)
        horizons = {  # (concern, key) -> its horizon in seconds
            ("rate", "r"): 0.1,
            ("breaker", "c"): 0.0,
            ("breaker", "open"): 30.0,
            ("pool", "p"): 0.2,
            ("window", "short"): 0.1 + 1.0,  # a window's key stays a second past its end
            ("window", "long"): 5.0 + 1.0,
            ("budget", "b"): 0.1,
        }
        try:
            with virtual_time():
                rate_limited(rate=5, per=0.1, key="r", store=store)(_work)()
                with pytest.raises(ConnectionError):  # closed, one failure counted
                    circuit_breaker(name="c", failure_threshold=5, store=store)(_fail)()
                with pytest.raises(ConnectionError):
                    circuit_breaker(
                        name="open", failure_threshold=1, reset_timeout=30.0, store=store
                    )(_fail)()
                bounded(limit=2, key="p", store=store)(_work)()
                backoff_window("short", store=store).set(0.1)
                backoff_window("long", store=store).set(5.0)
                budget = RetryBudget(key="b", window=0.1, store=store)
                retry(attempts=2, budget=budget)(_work)()
            owners = {store.key(*owner): horizon for owner, horizon in horizons.items()}
            seen: dict[str, float] = {}  # a key -> the horizon of its owner
            for raw in store.client.scan_iter(match=f"{store.namespace}:*", count=500):
                name = raw.decode()
                owner = next((o for o in owners if name.startswith(o)), None)
                if owner is None:  # the store's own bookkeeping (the fleet's snapshot)
                    continue
                ttl = store.client.pttl(name)
                ceiling = max(idle, owners[owner]) * 1000 + 50  # + a little clock skew
                assert 0 < ttl <= ceiling, (name, ttl, ceiling)
                seen[name] = owners[owner]
            used = {o for o in owners if any(name.startswith(o) for name in seen)}
            assert set(owners) == used  # every concern wrote a key, and each was checked
            assert store.client.pttl(store.key("breaker", "open")) > 29_000  # its horizon
            short = [name for name, horizon in seen.items() if horizon < 0.3]
            quick = {store.key(*o) for o in [("rate", "r"), ("breaker", "c"), ("pool", "p")]}
            quick.add(store.key("budget", "b"))
            assert quick == {o for o in quick if any(name.startswith(o) for name in short)}
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline and store.client.exists(*short):
                time.sleep(0.02)
            assert [] == [name for name in short if store.client.exists(name)]
            assert store.client.exists(store.key("breaker", "open"))
            assert store.client.exists(store.key("window", "long"))
        finally:
            store.clear()
            store.close()

    def test_unheld_handles_are_released_locally(self, redis_store: Any) -> None:
        """Redis state lives in Redis: handles nothing holds leave this process's registry."""
        store = redis_store
        with virtual_time():
            for i in range(50):
                backoff_window(f"w-{i}", store=store).set(1.0)
        gc.collect()
        store.sweep()
        assert [] == [key for (concern, key) in list(store._backends) if concern == "window"]


class TestConcurrentSweeps:
    def test_threads_never_lose_state_in_use(self) -> None:
        """Eight threads making keys (so sweeps run) never lose an open window or a count."""
        import threading

        with virtual_time() as clock:
            store = MemoryStore()
            backoff_window("shared", store=store).set(1000.0)
            limited = rate_limited(rate=100_000, per=1000.0, key="counted", store=store)(_work)
            errors: list[BaseException] = []
            lost: list[str] = []

            def worker(n: int) -> None:
                try:
                    for i in range(3_000):
                        backoff_window(f"t{n}-{i}", store=store).set(0.0001)
                        if backoff_window("shared", store=store).remaining() <= 0.0:
                            lost.append("shared window")
                        limited()
                        if i % 100 == 0:
                            clock.advance(0.01)  # the short windows close; sweeps release them
                except BaseException as error:
                    errors.append(error)

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert [] == errors
            assert [] == lost
            assert store.evicted > 0
            backend = store.backend("rate", "counted", None)
            assert 24_000 == len(backend._state.log)  # every start of the held limiter counted
