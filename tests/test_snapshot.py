"""The operator's snapshot: every field right over memory and Redis, and nothing changed."""

from __future__ import annotations

import json
import threading
import time

from collections import deque

import pytest

from resilience import (
    BreakerSnapshot,
    BudgetSnapshot,
    LimiterSnapshot,
    PoolSnapshot,
    RetryBudget,
    RetryQuota,
    backoff_window,
    bounded,
    circuit_breaker,
    rate_limited,
    snapshot,
    throttled,
)
from resilience._bounded.pool import MemoryPoolBackend
from resilience._snapshot import ThrottleSnapshot
from resilience._throttle.state import Tally, new_tally
from resilience.stores import MemoryStore

from .conftest import DefaultClock, redis_store_for


_TALLY = type(new_tally())  # the C tally when the accelerator is in use


class Boom(Exception):
    """The failure of our fake upstream."""


@pytest.fixture(name="snap_store", params=["memory", "redis-single", "redis-cluster"])
def _snap_store(request):
    """
    Each store in turn: memory, the shared Redis, and a 3-master cluster of our own.

    Redis leases are renewed rarely here, so nothing in the store moves by itself.
    """
    if request.param == "memory":
        yield MemoryStore()
        return
    store = redis_store_for(request.param[6:], request, clock=DefaultClock(), lease=600.0)
    yield store
    store.clear()
    store.close()


def _breaker(store, name, **fields):
    @circuit_breaker(store=store, name=name, on=Boom, **fields)
    def call(fail=False):
        if fail:
            raise Boom
        return "ok"

    return call


def _fail(call, times):
    for _ in range(times):
        with pytest.raises(Boom):
            call(fail=True)


class Scene:
    """Breakers in every state, saturated and idle limiters, held and waiting permits."""

    def __init__(self, store, clock):
        self.store = store
        self.release = threading.Event()
        self.threads = []
        idle = rate_limited(rate=5, per=1.0, key="r-idle", store=store)(lambda: "ok")
        idle()
        clock.advance(2.0)  # t = 2
        self.opened_wall = clock.time()
        self.b_open = _breaker(store, "b-open", failure_threshold=2, reset_timeout=30.0)
        _fail(self.b_open, 2)
        half = _breaker(store, "b-half", failure_threshold=2, reset_timeout=1.0)
        _fail(half, 2)
        probing = _breaker(store, "b-probing", failure_threshold=2, reset_timeout=1.0)
        _fail(probing, 2)
        reclosed = _breaker(store, "b-reclosed", failure_threshold=2, reset_timeout=1.0)
        _fail(reclosed, 2)
        closed = _breaker(store, "b-closed", failure_threshold=3, reset_timeout=5.0)
        _fail(closed, 1)
        assert "ok" == _breaker(store, "b-quiet")()  # never failed: Redis keeps no state
        rated = _breaker(store, "b-rate", failure_rate=0.5, window_duration=10.0, minimum_calls=10)
        for _ in range(3):
            rated()
        _fail(rated, 1)
        clock.advance(1.5)  # t = 3.5: b-half and b-probing report half-open since t = 3
        self.half_wall = clock.time() - 0.5
        assert "ok" == reclosed()  # its probe succeeds: closed again since t = 3.5
        self.reclosed_wall = clock.time()
        assert 0 < store.peek("breaker", "b-probing").admit().ticket  # a probe in flight
        busy = rate_limited(rate=2, per=1.0, key="r-busy", store=store)(lambda: "ok")
        busy()
        busy()
        assert 0 < store.peek("rate", "r-busy").reserve(10.0)  # a caller waiting its turn
        backoff_window("r-busy", store=store).set(5.0)
        self.now_wall = clock.time()
        backoff_window("w-only", store=store).set(7.0)
        self._pools(store)
        budget = RetryBudget(
            key="bud", store=store, ratio=0.5, window=10.0, min_retries_per_second=0.1
        )
        for _ in range(4):
            budget.record_call()
        assert budget.try_retry()
        self._quotas_and_throttles(store)

    def _quotas_and_throttles(self, store):
        quota = RetryQuota(capacity=50, key="q-aws", store=store)
        assert quota.backend().step(5, 5, 0) == (True, 45)
        RetryQuota(capacity=20, key="q-full", store=store).backend()  # declared, untouched

        @throttled(k=1.0, window=10.0, on=Boom, key="t-hot", store=store, rand=lambda: 0.99)
        def hot():
            raise Boom

        for _ in range(4):
            with pytest.raises(Boom):
                hot()
        cool = throttled(k=2.0, window=10.0, key="t-cool", store=store)(lambda: "ok")
        assert "ok" == cool() == cool()

    def _pools(self, store):
        held = threading.Event()

        @bounded(limit=3, key="p-busy", store=store)
        def hold(weight_marker=None):
            held.set()
            self.release.wait(10)

        @bounded(limit=3, key="p-busy", store=store, weight=2)
        def heavy():
            held.set()
            self.release.wait(10)

        first = threading.Thread(target=heavy)
        first.start()
        assert held.wait(5)
        waiter = threading.Thread(target=heavy)
        waiter.start()
        self.threads = [first, waiter]
        queue = store.peek("pool.queue", "p-busy")
        deadline = time.monotonic() + 5
        while not queue.waiters and time.monotonic() < deadline:
            time.sleep(0.002)
        assert 1 == len(queue.waiters)
        bounded(limit=2, key="p-idle", store=store)(lambda: "ok")()

    def end(self):
        self.release.set()
        for thread in self.threads:
            thread.join(5)


@pytest.fixture(name="scene")
def _scene(snap_store, clock):
    scene = Scene(snap_store, clock)
    yield scene
    scene.end()


def _by(items, attr):
    return {getattr(item, attr): item for item in items}


class TestFields:
    def test_breakers_in_every_state(self, scene, snap_store):
        """Open, half-open (idle and probing), closed with a failure, and failure-rate mode."""
        taken = snapshot(snap_store)
        breakers = _by(taken.breakers, "name")
        assert [
            "b-open",
            "b-half",
            "b-probing",
            "b-closed",
            "b-quiet",
            "b-rate",
            "b-reclosed",
        ] == [b.name for b in taken.breakers]
        assert ["open", "half_open", "half_open", "closed", "closed", "closed", "closed"] == [
            b.state for b in taken.breakers
        ]
        assert (
            BreakerSnapshot(
                name="b-open",
                state="open",
                since=pytest.approx(scene.opened_wall, abs=1e-3),
                reason="opened after 2 consecutive failure(s)",
                consecutive_failures=2,
                failure_threshold=2,
                failure_rate=None,
                failure_rate_threshold=None,
                window_calls=0,
                window_failures=0,
                probes=0,
                next_probe_in=pytest.approx(28.5, abs=1e-3),
                reset_timeout=30.0,
                times_opened=1,
                failures=2,
                rejected=0,
            )
            == breakers["b-open"]
        )
        half = breakers["b-half"]
        assert ("half_open", 0, 0.0) == (half.state, half.probes, half.next_probe_in)
        assert pytest.approx(scene.half_wall, abs=1e-3) == half.since
        probing = breakers["b-probing"]
        assert ("half_open", 1) == (probing.state, probing.probes)
        assert pytest.approx(scene.half_wall, abs=1e-3) == probing.since
        assert "opened after 2 consecutive failure(s)" == probing.reason
        closed = breakers["b-closed"]
        assert ("closed", None, "", 1, 3) == (
            closed.state,
            closed.since,
            closed.reason,
            closed.consecutive_failures,
            closed.failure_threshold,
        )
        reclosed = breakers["b-reclosed"]
        assert ("closed", "", 0, 1) == (
            reclosed.state,
            reclosed.reason,
            reclosed.consecutive_failures,
            reclosed.times_opened,
        )
        assert pytest.approx(scene.reclosed_wall, abs=1e-3) == reclosed.since
        assert None is breakers["b-quiet"].since is breakers["b-rate"].since  # never opened
        quiet = breakers["b-quiet"]
        assert (0, 0, 5, 30.0) == (
            quiet.consecutive_failures,
            quiet.failures,
            quiet.failure_threshold,
            quiet.reset_timeout,
        )
        rated = breakers["b-rate"]
        assert (4, 1, 0.25, 0.5) == (
            rated.window_calls,
            rated.window_failures,
            rated.failure_rate,
            rated.failure_rate_threshold,
        )

    def test_limiters_saturated_idle_and_windows(self, scene, snap_store):
        """Starts in the window, reserved turns, the open window and its end, window-only keys."""
        taken = snapshot(snap_store)
        limiters = _by(taken.limiters, "key")
        assert (
            LimiterSnapshot(
                key="r-busy",
                rate=2,
                per=1.0,
                burst=2,
                starts=2,
                waiting=1,
                saturated=True,
                window_remaining=pytest.approx(5.0, abs=1e-3),
                window_ends_at=pytest.approx(scene.now_wall + 5.0, abs=1e-3),
            )
            == limiters["r-busy"]
        )
        assert LimiterSnapshot("r-idle", 5, 1.0, 5, 0, 0, False, 0.0, None) == limiters["r-idle"]
        only = limiters["w-only"]
        assert (None, True) == (only.rate, only.saturated)
        assert pytest.approx(7.0, abs=1e-3) == only.window_remaining
        assert not limiters["r-idle"].saturated
        assert {"r-busy", "w-only"} == {r.key for r in taken.limiters[:2]}  # saturated first

    def test_pools_held_and_waiting(self, scene, snap_store):
        """Units held, this process's waiters, the idle pool; Redis adds holders and lease age."""
        pools = _by(snapshot(snap_store).pools, "key")
        busy, idle = pools["p-busy"], pools["p-idle"]
        assert ("p-busy", 3, None, 2, 1) == (
            busy.key,
            busy.limit,
            busy.live_limit,
            busy.in_use,
            busy.waiting,
        )
        assert ("p-idle", 2, 0, 0) == (idle.key, idle.limit, idle.in_use, idle.waiting)
        if isinstance(snap_store, MemoryStore):
            # both units were leased before this first snapshot watched the pool: their
            # starts are unknown, so the age is since the watch (virtual time: 0), at least
            assert PoolSnapshot("p-busy", 3, None, 2, 1, 0.0, None, True) == busy
        else:
            import os
            import socket

            assert {f"{socket.gethostname()}:{os.getpid()}": 2} == busy.holders
            assert 0.0 <= busy.oldest_lease < 5.0

    def test_budget(self, scene, snap_store):
        """Calls and retries in the window, and what the ratio and the floor leave."""
        budgets = _by(snapshot(snap_store).budgets, "key")
        assert BudgetSnapshot("bud", 2.0, 0.5, 10.0, 4, 1) == budgets["bud"]

    def test_quotas_and_throttles(self, scene, snap_store):
        """A quota's tokens left (a declared, untouched one is full); a throttle's counts."""
        taken = snapshot(snap_store)
        budgets = _by(taken.budgets, "key")
        assert BudgetSnapshot("q-aws", 45.0, None, None, 0, 0) == budgets["q-aws"]
        assert BudgetSnapshot("q-full", 20.0, None, None, 0, 0) == budgets["q-full"]
        assert [
            ThrottleSnapshot("t-hot", 1.0, 10.0, 4, 0, pytest.approx(0.8)),
            ThrottleSnapshot("t-cool", 2.0, 10.0, 2, 2, 0.0),
        ] == list(taken.throttles)  # the likeliest to refuse first
        assert taken.throttles[0] == snap_store.peek("throttle", "t-hot").snapshot("t-hot")
        assert budgets["q-aws"] == snap_store.peek("tokens", "q-aws").snapshot("q-aws")

    def test_backend_snapshots_agree_with_the_store(self, scene, snap_store):
        """Each backend's own snapshot() is the record the store-level snapshot shows."""
        taken = snapshot(snap_store)
        assert (
            _by(taken.breakers, "name")["b-open"] == snap_store.peek("breaker", "b-open").snapshot()
        )
        budget = snap_store.peek("budget", "bud").snapshot("bud")
        assert _by(taken.budgets, "key")["bud"] == budget

    def test_json_and_filter(self, scene, snap_store):
        """to_dict() is plain JSON; a prefix keeps only matching names and keys."""
        data = json.loads(json.dumps(snapshot(snap_store, prefix="b-").to_dict()))
        assert {"b-open", "b-half", "b-probing", "b-closed", "b-quiet", "b-rate", "b-reclosed"} == {
            b["name"] for b in data["breakers"]
        }
        assert [] == data["limiters"] == data["pools"] == data["budgets"] == data["throttles"]
        assert data["metrics"] is None


def _memory_state(value, depth=0):
    """Every slot of a backend, recursively, as plain comparable data (locks left out)."""
    if depth > 6:
        return repr(value)
    if isinstance(value, int | float | str | bytes | bool | type(None)):
        return value
    if isinstance(value, deque | list | tuple | bytearray):
        return [_memory_state(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return sorted((repr(k), _memory_state(v, depth + 1)) for k, v in value.items())
    if isinstance(value, Tally | _TALLY):  # the throttle's accepts: what it counted, not how
        # (reading a Python tally takes one of its counter's values, which a read must leave
        # counting the same accepts)
        return {"accepts": value.peek(), "until": value.until, "calm": value.calm}
    slots = [s for k in type(value).__mro__ for s in getattr(k, "__slots__", ())]
    if not slots or "lock" in type(value).__name__.lower():
        return type(value).__name__
    state = {
        s: _memory_state(getattr(value, s, None), depth + 1)
        for s in slots
        if s not in ("__weakref__", "_lock", "_acquire", "_release", "_clock", "store", "lock")
        and not callable(getattr(value, s, None))
    }
    if isinstance(value, MemoryPoolBackend):
        # the first snapshot switches lease recording on (``leases``: None -> {}); what the
        # pool holds and decides is the rest, which a read must leave as it was
        assert state.pop("leases") in (None, [])  # no lease was taken after the switch
        state.pop("_watched_at")  # when the switch was, and how many units were held then
        state.pop("_before")
    return state


def _store_state(store):
    if isinstance(store, MemoryStore):
        return sorted(
            (repr(key), _memory_state(backend)) for key, backend in store._backends.items()
        )
    client = store.client
    names = sorted(store._scan(f"{store.namespace}:*"))  # every node of a cluster
    return [(name, client.dump(name)) for name in names]


def _settle(store):
    """Wait for what Redis learns off the call path: the meta hash, the waiter counts."""
    store._meta.settle()
    reported = store.key("pool", "p-busy", "waiting")
    deadline = time.monotonic() + 5
    while not store.client.hlen(reported) and time.monotonic() < deadline:
        time.sleep(0.01)  # the poller says how many wait here (off the call path)


def test_a_snapshot_changes_nothing(scene, snap_store, clock):
    """Key count and every value (DUMP) are the same before and after three snapshots."""
    if not isinstance(snap_store, MemoryStore):
        _settle(snap_store)
    before = _store_state(snap_store)
    assert len(before) >= 8
    for _ in range(3):
        snapshot(snap_store)
        clock.advance(0.1)  # later reads must not "catch up" on the state either
    assert before == _store_state(snap_store)


def test_redis_fleet_view_from_another_process_store(scene, snap_store):
    """A fresh RedisStore (as the CLI makes) sees every backend other processes declared."""
    if isinstance(snap_store, MemoryStore):
        pytest.skip("the fleet view is Redis's")
    from tests.redis_workers import open_store

    _settle(snap_store)
    mine = snapshot(snap_store)
    other = open_store(snap_store.test_spec, namespace=snap_store.namespace, clock=DefaultClock())
    try:
        theirs = snapshot(other)
    finally:
        other.close()
    assert 7 == len(theirs.breakers)  # b-quiet too: its config is in the meta hash
    assert mine.breakers == theirs.breakers
    assert mine.limiters == theirs.limiters
    assert mine.budgets == theirs.budgets
    assert mine.throttles == theirs.throttles
    assert mine.pools == theirs.pools  # waiters too: each process reports its own
    assert {"p-busy": 1, "p-idle": 0} == {p.key: p.waiting for p in theirs.pools}


def test_an_empty_store():
    """A store with nothing in it gives empty parts."""
    taken = snapshot(MemoryStore())
    assert ((), (), (), (), "memory") == (
        taken.breakers,
        taken.limiters,
        taken.pools,
        taken.budgets,
        taken.store,
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ns:breaker:payments", ("breaker", "payments")),
        ("ns:breaker:payments:ring", ("breaker", "payments")),
        ("ns:rate:api:tenant:log", ("rate", "api:tenant")),
        ("ns:window:api:tenant", ("window", "api:tenant")),
        ("ns:pool:db:leases", ("pool", "db")),
        ("ns:budget:fleet", ("budget", "fleet")),
        # hash-tagged names: <ns>:<concern>:{<key>}[:<part>], braces in keys escaped
        ("ns:rate:{api:tenant}:starts", ("rate", "api:tenant")),
        ("ns:breaker:{a%7Bb%7D%25}", ("breaker", "a{b}%")),
        ("ns:pool:{db}:weights", ("pool", "db")),
        ("ns:pool:{db}", None),  # a pool has no key without a part
        ("ns:meta", None),
        ("other:breaker:x", None),
        ("ns:unknown:x", None),
    ],
)
def test_key_names_map_to_concern_and_key(name, expected):
    """Both key layouts (plain and hash-tagged) name the concern and the key they hold."""
    from types import SimpleNamespace

    from resilience.stores import RedisStore
    from resilience.stores._redis_snapshot import _split, view_of

    store = SimpleNamespace(namespace="ns", _views=RedisStore._views)
    known = {concern: view_of(store, concern) for concern in RedisStore._views}
    assert expected == _split(store, name, known)


def test_the_meta_hash_is_bounded(monkeypatch, request):
    """Keys used once do not pile up: past MAX_ENTRIES the oldest declared leave the hash."""
    from resilience.stores._redis_snapshot import MetaWriter, meta_key

    monkeypatch.setattr(MetaWriter, "MAX_ENTRIES", 3)
    store = redis_store_for("single", request)
    try:
        for n in range(5):
            rate_limited(rate=2, key=f"k{n}", store=store)(lambda: "ok")()
        store._meta.settle()
        fields = {f.decode() for f in store.client.hkeys(meta_key(store))}
        assert 3 == len(store._meta)
        assert {"rate:k2", "rate:k3", "rate:k4"} == fields  # k0 and k1 deleted again
    finally:
        store.clear()
        store.close()


def test_adaptive_pools_and_quotas_in_memory():
    """An adaptive pool shows its ceiling and its live limit; a keyed quota its tokens left."""
    from resilience import AdaptiveLimit, RetryQuota

    store = MemoryStore()
    adaptive = AdaptiveLimit(algorithm="aimd", initial=7, min_limit=2, max_limit=40)
    assert "ok" == bounded(limit=adaptive, key="svc", store=store)(lambda: "ok")()
    quota = RetryQuota(capacity=50, key="q", store=store)
    quota.backend().step(5, 5, 0)
    taken = snapshot(store)
    (pool,) = taken.pools
    assert ("svc", 40, 0) == (pool.key, pool.limit, pool.in_use)
    assert 2 <= pool.live_limit <= 40
    assert BudgetSnapshot("q", 45.0, None, None, 0, 0) == _by(taken.budgets, "key")["q"]


def test_a_watched_memory_pool_gives_its_oldest_lease(clock):
    """Once a snapshot has watched it, a memory pool's row carries every field, lease age too."""
    store = MemoryStore()
    gate, held = threading.Event(), threading.Semaphore(0)

    @bounded(limit=3, key="p-watched", store=store)
    def hold():
        held.release()
        gate.wait(10)

    assert [PoolSnapshot("p-watched", 3, None, 0, 0, None, None)] == list(snapshot(store).pools)
    threads = [threading.Thread(target=hold) for _ in range(2)]
    for thread in threads:
        thread.start()
        assert held.acquire(timeout=10)
        clock.advance(1.5)
    try:
        assert [PoolSnapshot("p-watched", 3, None, 2, 0, 3.0, None)] == list(snapshot(store).pools)
    finally:
        gate.set()
        for thread in threads:
            thread.join(10)
    assert [PoolSnapshot("p-watched", 3, None, 0, 0, None, None)] == list(snapshot(store).pools)


@pytest.mark.parametrize("topology", ["single", "cluster"])
def test_redis_snapshot_on_the_servers_clock(topology, request):
    """No test clock (as in production): the snapshot reads the server's TIME, a cluster's too."""
    store = redis_store_for(topology, request)
    try:
        call = _breaker(store, "on-server-time", failure_threshold=1)
        _fail(call, 1)
        before = time.time()
        taken = snapshot(store)
        found = _by(taken.breakers, "name")["on-server-time"]
        assert "open" == found.state
        # the breaker opened a moment ago by the server's wall clock, the same as ours here
        assert found.since is not None
        assert before - 5.0 <= found.since <= time.time() + 5.0
    finally:
        store.clear()
        store.close()
