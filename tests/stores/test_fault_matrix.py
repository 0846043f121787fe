"""
Every store fault against every shared-state concern, on the cluster and the Sentinel pair.

One test per (fault, topology). It declares a probe per (concern, flavour, policy): breaker,
rate limit, backoff window, permits, retry budget, throttle, retry quota and retry throttle;
sync and async; fail-closed and fail-open where the policy has the choice (the budget, the
throttle and the quotas are advisory: always open). Every probe's key lives on one primary
(a cluster spreads keys by hash tag: the probes' names are picked for that primary's slots).
The fault hits that primary; all probes then run at once (threads, and tasks on one event
loop, as an application would), and each must, within its store operations' timeouts plus
``MARGIN``, either raise ``StoreUnavailableError`` naming its key (fail-closed) or proceed
with a ``resilience.store.unavailable`` event naming its key (fail-open); never a raw client
exception, never a hang. After the fault ends, every probe works again on the same store:
nothing is restarted or rebuilt.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from resilience import (
    Backoff,
    BoundedTimeoutError,
    RateLimitedError,
    RetryBudget,
    RetryQuota,
    RetryThrottle,
    StoreUnavailableError,
    backoff_window,
    bounded,
    circuit_breaker,
    rate_limited,
    retry,
    throttled,
)
from resilience.stores import RedisStore
from resilience.testing import capture_events

from ..redis_servers import Server, Servers
from .test_topology_faults import TIMEOUT, Topology


pytestmark = pytest.mark.usefixtures("discarded_nodes_collected")


MARGIN = 1.5
"""Seconds beyond the timeouts: a loaded 2-core machine runs ~20 probes at once; a hang is
unbounded, and the slowest healthy probe here takes a few milliseconds."""

NO_WAIT = Backoff(base=0)


class Boom(Exception):
    """The upstream's failure (a retry's first attempt)."""


@dataclass
class Probe:
    """One decision of one concern, in one flavour, under one policy."""

    concern: str
    flavour: str
    fail_open: bool
    key: str
    call: Callable[[], Any]
    #: Store operations one call makes when each one times out (advisory concerns go on
    #: after each failure, so each costs a timeout).
    operations: int = 1
    outcome: Any = None
    took: float = 0.0

    @property
    def name(self) -> str:
        policy = "open" if self.fail_open else "closed"
        return f"{self.concern}/{self.flavour}/{policy}"


@dataclass
class Probes:
    """The probes of one store, and the event loop their async twins run on."""

    store: RedisStore
    runner: asyncio.Runner
    all: list[Probe] = field(default_factory=list)

    def run_all(self) -> None:
        """Run every probe at once: sync ones in threads, async ones as tasks of one loop."""

        def timed_sync(probe: Probe) -> None:
            started = time.monotonic()
            try:
                probe.outcome = probe.call()
            except Exception as error:
                probe.outcome = error
            probe.took = time.monotonic() - started

        async def timed_async(probe: Probe) -> None:
            started = time.monotonic()
            try:
                probe.outcome = await probe.call()
            except Exception as error:
                probe.outcome = error
            probe.took = time.monotonic() - started

        async def tasks() -> None:
            async with asyncio.timeout(60):  # a hang fails the test instead of the session
                await asyncio.gather(*(timed_async(p) for p in self.all if p.flavour == "async"))

        threads = [
            threading.Thread(target=timed_sync, args=(p,), daemon=True)
            for p in self.all
            if p.flavour == "sync"
        ]
        for probe in self.all:
            probe.outcome, probe.took = None, 0.0
        for thread in threads:
            thread.start()
        self.runner.run(tasks())
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads), "a sync probe hung"

    def assert_healthy(self) -> None:
        """Every probe proceeds with no store event: the store works."""
        with capture_events("resilience.store") as events:
            self.run_all()
        wrong = [(p.name, p.outcome) for p in self.all if p.outcome != "ok"]
        assert not wrong, wrong
        assert [] == [(e.name, e.metadata) for e in events]

    def assert_faulted(self, reason: str | None = None) -> None:
        """Fail-closed probes raise StoreUnavailableError naming their key, fail-open proceed."""
        with capture_events("resilience.store.unavailable") as events:
            self.run_all()
        opened = {e.metadata["key"] for e in events if e.metadata["fail_open"]}
        wrong = []
        for probe in self.all:
            limit = probe.operations * TIMEOUT + MARGIN
            if probe.took >= limit:
                wrong.append((probe.name, f"took {probe.took:.2f} s >= {limit:.2f} s"))
            if probe.fail_open:
                if probe.outcome != "ok" or probe.key not in opened:
                    wrong.append((probe.name, probe.outcome, sorted(opened)))
                continue
            error = probe.outcome
            if not isinstance(error, StoreUnavailableError):
                wrong.append((probe.name, repr(error)))
            elif f"for key {probe.key!r}" not in str(error) or error.store != (
                self.store.describe()
            ):
                wrong.append((probe.name, str(error)))
            elif reason is not None and reason not in (error.reason or ""):
                wrong.append((probe.name, error.reason))
        assert not wrong, wrong


def keys_on(store: RedisStore, port: int | None, count: int, tag: str) -> Iterator[str]:
    """*count* key names whose slot lives on the primary at *port* (any name without one)."""
    found = 0
    for index in range(10_000):
        name = f"{tag}{index}"
        if port is None or store.client.get_node_from_key(store.key("x", name)).port == port:
            found += 1
            yield name
            if found == count:
                return
    raise AssertionError("no slot of that primary")  # pragma: no cover - 16384 slots


def declare(store: RedisStore, runner: asyncio.Runner, names: Iterator[str]) -> Probes:
    """A probe of every concern x flavour x policy on *store*, one fresh key each."""
    probes = Probes(store, runner)

    def add(concern: str, flavour: str, fail_open: bool, make: Any, operations: int = 1) -> None:
        key = next(names)
        probes.all.append(Probe(concern, flavour, fail_open, key, make(key), operations))

    for flavour in ("sync", "async"):
        for fail_open in (False, True):
            add("breaker", flavour, fail_open, _breaker(store, flavour, fail_open))
            add("rate", flavour, fail_open, _rate(store, flavour, fail_open))
            add("permits", flavour, fail_open, _permits(store, flavour, fail_open))
        # Advisory concerns: the call goes on without them, whatever the outage.
        add(
            "budget",
            flavour,
            True,
            _retried(flavour, lambda key: RetryBudget(ratio=1.0, key=key, store=store)),
            2,
        )
        add("throttle", flavour, True, _throttled(store, flavour), 2)
        add(
            "quota",
            flavour,
            True,
            _retried(flavour, lambda key: RetryQuota(key=key, store=store)),
            3,
        )
        add(
            "retry-throttle",
            flavour,
            True,
            _retried(flavour, lambda key: RetryThrottle(max_tokens=1000, key=key, store=store)),
            3,
        )
    add("window", "sync", False, lambda key: _window(store, key))
    return probes


def _breaker(store: RedisStore, flavour: str, fail_open: bool) -> Callable[[str], Any]:
    def make(key: str) -> Any:
        decorate = circuit_breaker(
            name=key, failure_threshold=3, reset_timeout=30, store=store, fail_open=fail_open
        )
        if flavour == "sync":
            return decorate(lambda: "ok")

        async def call() -> str:
            return "ok"

        return decorate(call)

    return make


def _rate(store: RedisStore, flavour: str, fail_open: bool) -> Callable[[str], Any]:
    def make(key: str) -> Any:
        decorate = rate_limited(
            rate=1000, per=1.0, key=key, store=store, timeout=0, fail_open=fail_open
        )
        if flavour == "sync":
            return decorate(lambda: "ok")

        async def call() -> str:
            return "ok"

        return decorate(call)

    return make


def _permits(store: RedisStore, flavour: str, fail_open: bool) -> Callable[[str], Any]:
    def make(key: str) -> Any:
        decorate = bounded(limit=4, key=key, store=store, timeout=5.0, fail_open=fail_open)
        if flavour == "sync":
            return decorate(lambda: "ok")

        async def call() -> str:
            return "ok"

        return decorate(call)

    return make


def _retried(flavour: str, budget: Callable[[str], Any]) -> Callable[[str], Any]:
    """A call that fails once, retried under the budget (or quota) of its key."""

    def make(key: str) -> Any:
        decorate = retry(attempts=2, on=Boom, backoff=NO_WAIT, budget=budget(key))
        if flavour == "sync":
            failures = threading.local()

            def call() -> str:
                if not getattr(failures, "seen", False):
                    failures.seen = True
                    raise Boom
                failures.seen = False
                return "ok"

            return decorate(call)

        async def acall(state: list[bool]) -> str:
            if not state:
                state.append(True)
                raise Boom
            return "ok"

        retried = decorate(acall)
        return lambda: retried([])

    return make


def _throttled(store: RedisStore, flavour: str) -> Callable[[str], Any]:
    def make(key: str) -> Any:
        decorate = throttled(key=key, store=store, rand=lambda: 0.999)
        if flavour == "sync":
            return decorate(lambda: "ok")

        async def call() -> str:
            return "ok"

        return decorate(call)

    return make


def _window(store: RedisStore, key: str) -> Callable[[], str]:
    """The backoff window handle: a setting that cannot reach the store raises."""
    window = backoff_window(key, store=store)

    def call() -> str:
        window.set(0.001)
        return "ok"

    return call


# -- the faults --------------------------------------------------------------------------------


@pytest.fixture(name="topology", params=["cluster", "sentinel"])
def _topology(request: pytest.FixtureRequest, servers: Servers) -> Topology:
    topology = Topology(request.param, servers)
    topology.heal()
    return topology


@contextlib.contextmanager
def probing(topology: Topology, tag: str, store: RedisStore | None = None) -> Iterator[Any]:
    """(probes, primary): every probe declared on one primary, healthy; closed at the end."""
    store = store or topology.store(namespace=f"matrix-{uuid.uuid4().hex[:10]}")
    probe_store = topology.store()
    port = (
        probe_store.client.get_node_from_key(probe_store.key("x", tag)).port
        if topology.kind == "cluster"
        else None
    )
    probe_store.close()
    runner = asyncio.Runner()
    try:
        probes = declare(store, runner, keys_on(store, port, 64, tag))
        primary = topology.primary_of(store, store.key("x", probes.all[0].key))
        wait_for(probes)  # the first calls connect (a cluster client reads the slot map)
        probes.assert_healthy()
        yield probes, primary
    finally:
        with contextlib.suppress(Exception):
            runner.run(store.aclose())
        runner.close()
        store.close()


def test_primary_killed(topology: Topology) -> None:
    """Killed: every probe fails closed or open in time; after the failover all work again."""
    with probing(topology, "kill") as (probes, primary):
        primary.kill()
        try:
            probes.assert_faulted()
            wait_for(probes)
            probes.assert_healthy()
        finally:
            topology.heal(primary)


PAUSE = 1.5
"""Seconds a primary is paused: below Sentinel's down-after and the cluster's node timeout
(2 s: no failover starts), above the probes' timeout and their start-up on a loaded box."""


@pytest.mark.parametrize("how", ["client-pause", "debug-sleep"])
def test_primary_paused(topology: Topology, how: str) -> None:
    """Paused (CLIENT PAUSE, DEBUG SLEEP): every probe in time; unpaused: all work again."""
    with probing(topology, f"pause-{how}") as (probes, primary):
        blocker = primary.client(socket_timeout=30)
        watcher = primary.client(  # no retries: a timeout is the answer it waits for
            socket_timeout=0.05, retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0)
        )
        watcher.ping()  # connected before the pause: from now on only the answers stop
        pausing = threading.Thread(
            target=blocker.execute_command,
            args=("CLIENT", "PAUSE", str(int(PAUSE * 1000)), "ALL")
            if how == "client-pause"
            else ("DEBUG", "SLEEP", str(PAUSE)),
            daemon=True,
        )
        try:
            pausing.start()
            _until_busy(primary, watcher)
            probes.assert_faulted()
        finally:
            pausing.join(30)
            blocker.close()
            watcher.close()
        wait_for(probes)
        probes.assert_healthy()


def test_failed_over(topology: Topology) -> None:
    """A planned failover (CLUSTER FAILOVER, SENTINEL FAILOVER): followed without help."""
    with probing(topology, "failover") as (probes, primary):
        replica = topology.replica_of(primary)
        try:
            topology.fail_over(replica)
            wait_for(probes)
            probes.assert_healthy()
        finally:
            topology.heal()


def test_a_read_only_replica(topology: Topology) -> None:
    """A store on a replica: READONLY (or MOVED) in time; once it is promoted, all work."""
    probe = topology.store(namespace=f"matrix-{uuid.uuid4().hex[:10]}")
    with probing(topology, "ro", probe) as (probes, primary):
        pass  # the keys and their primary
    replica = topology.replica_of(primary)
    client = replica.client(socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
    store = RedisStore(client, timeout=TIMEOUT, namespace=probe.namespace, local_breakers=False)
    runner = asyncio.Runner()
    names = iter([p.key for p in probes.all])
    on_replica = declare(store, runner, names)
    try:
        on_replica.assert_faulted()
        refusals = ("ReadOnlyError", "MovedError")
        assert all(
            any(refusal in (p.outcome.reason or "") for refusal in refusals)
            for p in on_replica.all
            if not p.fail_open
        ), [p.outcome for p in on_replica.all]
        topology.fail_over(replica)  # the node it points at becomes the primary
        wait_for(on_replica)
        on_replica.assert_healthy()
    finally:
        with contextlib.suppress(Exception):
            runner.run(store.aclose())
        runner.close()
        store.close()
        client.close()
        topology.heal()


def test_flushall_and_script_flush(topology: Topology) -> None:
    """FLUSHALL and SCRIPT FLUSH: the state is gone, not the service; nothing raises."""
    with probing(topology, "flush") as (probes, primary):
        with primary.client() as client:
            client.flushall()
            client.script_flush()
        probes.assert_healthy()


def test_a_wrong_type_key(topology: Topology) -> None:
    """Someone else's value at every key: WRONGTYPE, named, in time; removed: all work."""
    with probing(topology, "wt") as (probes, primary):
        store = probes.store
        with primary.client() as client:
            written = _spoil(store, client, probes)
            try:
                probes.assert_faulted("WRONGTYPE")
            finally:
                for name in written:  # one by one: a cluster node refuses a cross-slot DEL
                    client.delete(name)
        probes.assert_healthy()


MAIN_KEYS = {
    "breaker": [("breaker",)],
    "rate": [("rate", "log"), ("window",)],
    "window": [("window",)],
    "permits": [("pool", "leases")],
    "budget": [("budget",)],
    "throttle": [("throttle",)],
    "quota": [("tokens",)],
    "retry-throttle": [("tokens",)],
}
"""The key each concern's script reads first (a closed breaker's may not exist yet)."""


def _spoil(store: RedisStore, client: redis.Redis, probes: Probes) -> list[str]:
    """Put a set (a type none of ours is) at each probe's keys; return the names written."""
    written = set()
    for probe in probes.all:
        pattern = f"{store.namespace}:*{{{probe.key}}}*"
        names = {name.decode() for name in client.scan_iter(match=pattern, count=1000)}
        for concern, *parts in MAIN_KEYS[probe.concern]:
            names.add(store.key(concern, probe.key, *parts))
        for name in names:
            client.delete(name)
            client.sadd(name, "not ours")
        written |= names
    return sorted(written)


def wait_for(probes: Probes, seconds: float = 30.0) -> None:
    """Until every probe proceeds with no store event (after a failover, a restart), unhelped."""
    deadline = time.monotonic() + seconds
    while True:
        with capture_events("resilience.store") as events:
            probes.run_all()
        if not events and all(p.outcome == "ok" for p in probes.all):
            return
        if time.monotonic() > deadline:
            raise AssertionError([(p.name, p.outcome) for p in probes.all if p.outcome != "ok"])
        time.sleep(0.1)


def _until_busy(server: Server, watcher: redis.Redis) -> None:
    """Until *server* stops answering (its pause or DEBUG SLEEP has begun)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            watcher.ping()
        except (redis.exceptions.TimeoutError, redis.exceptions.ConnectionError):
            return
        time.sleep(0.01)
    raise AssertionError(f"{server.name} did not pause")


# -- admissions through a fault that keeps the data --------------------------------------------

LIMIT = 60
POOL = 3


@pytest.mark.parametrize("fault", ["pause", "failover"])
def test_never_more_admissions_than_the_limit(topology: Topology, fault: str) -> None:
    """
    Threads and tasks call a rate limit (60 per minute) and a pool (3 permits) before,
    through and after a pause or a planned failover (the data survives both): never more
    than 60 starts, never more than 3 holders; every refusal is one of ours.
    """
    if fault == "failover" and topology.kind == "sentinel":
        pytest.skip("Sentinel's failover is not coordinated: writes in flight may be lost")
    store = topology.store(namespace=f"matrix-{uuid.uuid4().hex[:10]}", lease=10.0)
    names = keys_on(
        store,
        store.client.get_node_from_key(store.key("x", "adm")).port
        if topology.kind == "cluster"
        else None,
        2,
        "adm",
    )
    rate_key, pool_key = next(names), next(names)
    lock = threading.Lock()
    tally = {"started": 0, "inside": 0, "peak": 0, "limited": 0, "unavailable": 0}
    raw: list[BaseException] = []

    def start() -> None:
        with lock:
            tally["started"] += 1

    def enter() -> None:
        with lock:
            tally["inside"] += 1
            tally["peak"] = max(tally["peak"], tally["inside"])

    def leave() -> None:
        with lock:
            tally["inside"] -= 1

    limited = rate_limited(rate=LIMIT, per=60.0, key=rate_key, store=store, timeout=0)
    pooled = bounded(limit=POOL, key=pool_key, store=store, timeout=0.5)

    @limited
    def sync_start() -> None:
        start()

    @pooled
    def sync_hold() -> None:
        enter()
        time.sleep(0.005)
        leave()

    @limited
    async def async_start() -> None:
        start()

    @pooled
    async def async_hold() -> None:
        enter()
        await asyncio.sleep(0.005)
        leave()

    def note(error: BaseException) -> None:
        with lock:
            if isinstance(error, RateLimitedError):
                tally["limited"] += 1
            elif isinstance(error, StoreUnavailableError | BoundedTimeoutError):
                tally["unavailable"] += 1
            else:
                raw.append(error)

    stop = threading.Event()

    def thread_worker() -> None:
        while not stop.is_set():
            for call in (sync_start, sync_hold):
                try:
                    call()
                except Exception as error:
                    note(error)
            time.sleep(0.02)

    async def task_worker() -> None:
        while not stop.is_set():
            for call in (async_start, async_hold):
                try:
                    await call()
                except Exception as error:
                    note(error)
            await asyncio.sleep(0.02)

    async def tasks() -> None:
        await asyncio.gather(*(task_worker() for _ in range(4)))
        await store.aclose()

    workers = [threading.Thread(target=thread_worker, daemon=True) for _ in range(4)]
    workers.append(threading.Thread(target=lambda: asyncio.run(tasks()), daemon=True))
    primary = topology.primary_of(store, store.key("x", rate_key))
    try:
        for worker in workers:
            worker.start()
        time.sleep(0.2)
        if fault == "pause":
            with primary.client(socket_timeout=5) as blocker:
                blocker.execute_command("CLIENT", "PAUSE", str(int(PAUSE * 1000)), "ALL")
            time.sleep(PAUSE)
        else:
            topology.fail_over(topology.replica_of(primary))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the limit is reached after the fault
            with lock:
                if tally["limited"] and tally["started"] + tally["unavailable"] >= LIMIT:
                    break
            time.sleep(0.05)
        time.sleep(0.3)  # more calls against the spent limit
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
        store.close()
        if fault == "failover":
            topology.heal()
    assert [] == raw
    assert not any(worker.is_alive() for worker in workers)
    assert tally["started"] <= LIMIT, tally  # not one start more than the limit
    # and all of it, but for the calls that timed out while the server still took their start
    # (a paused server runs a script after its client gave up: the start is spent, unused)
    assert LIMIT - tally["started"] <= tally["unavailable"], tally
    assert 0 < tally["peak"] <= POOL, tally
    assert tally["limited"] > 0, tally


# -- breakers kept locally: bounded staleness ---------------------------------------------------


def test_local_breakers_notice_a_dead_primary_in_time(topology: Topology) -> None:
    """
    ``local_breakers=True``: a healthy call may run without Redis for a moment after the
    primary dies, but every call returns within the timeout, and within the listener's
    heartbeat bound the calls go back to Redis (StoreUnavailableError, or fail-open).
    """
    store = topology.store(namespace=f"matrix-{uuid.uuid4().hex[:10]}", local_breakers=True)

    def make(fail_open: bool) -> Any:
        @circuit_breaker(
            name=f"local-{fail_open}", failure_threshold=3, store=store, fail_open=fail_open
        )
        def call() -> str:
            return "ok"

        return call

    closed, opened = make(False), make(True)
    listener = store.breaker_listener()
    primary = None
    try:
        wait_until_true(lambda: listener.live and closed() == "ok" and opened() == "ok")
        primary = topology.primary_of(store, store.key("breaker", "local-False"))
        primary.kill()
        killed = time.monotonic()
        bound = listener.bound + store.timeout + MARGIN  # trusted at most `bound` after a pong
        refused: StoreUnavailableError | None = None
        while refused is None:
            started = time.monotonic()
            try:
                assert "ok" == closed()
            except StoreUnavailableError as error:
                refused = error
            assert time.monotonic() - started < TIMEOUT + MARGIN
            assert time.monotonic() - killed < bound + TIMEOUT, "still trusting local state"
            time.sleep(0.01)
        assert "for key 'local-False'" in str(refused)
        assert "ok" == opened()
    finally:
        store.close()
        topology.heal(primary)


def wait_until_true(check: Callable[[], bool], seconds: float = 20.0) -> None:
    """Until *check()* holds (a StoreUnavailableError counts as not yet)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except StoreUnavailableError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s")
        time.sleep(0.05)
