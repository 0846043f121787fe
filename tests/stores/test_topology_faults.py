"""
Faults against a cluster (3 primaries, 3 replicas) and a Sentinel pair of our own.

A primary killed, paused (``CLIENT PAUSE``, ``DEBUG SLEEP``) and failed over; a read-only
replica; ``FLUSHALL``; a wrong-type key; a plain client sent to a cluster node (``MOVED``).
Each gives the configured fail-closed (``StoreUnavailableError`` naming the key and the
server's answer) or fail-open behaviour within the timeout: never a raw client exception,
never a hang, never more admissions than the limit while the data is intact; and recovery
needs nothing from the caller. Each test finds the current primary itself, and leaves the
topology whole (a killed node restarts as a replica), so the order does not matter.
"""

from __future__ import annotations

import asyncio
import threading
import time

from typing import Any

import pytest
import redis

from redis.sentinel import Sentinel

from resilience import (
    CircuitOpenError,
    RateLimitedError,
    StoreUnavailableError,
    bounded,
    circuit_breaker,
    rate_limited,
)
from resilience.stores import RedisStore
from resilience.testing import capture_events

from ..redis_servers import Server, Servers, wait_cluster_ok


pytestmark = pytest.mark.usefixtures("discarded_nodes_collected")


TIMEOUT = 0.3
MARGIN = 0.5  # scheduling on a loaded machine; a hang would be seconds


class Boom(Exception):
    """The upstream's failure."""


class Topology:
    """A store on the cluster or the Sentinel pair, and the servers behind it."""

    def __init__(self, kind: str, servers: Servers) -> None:
        self.kind = kind
        self.servers = servers
        if kind == "cluster":
            self.nodes = servers.cluster("faults-cluster", replicas=1)
        else:
            primary, replica, sentinel = servers.sentinel("faults-sentinel")
            self.nodes = [primary, replica]
            self.sentinel = sentinel

    def store(self, **options: Any) -> RedisStore:
        """A store on the topology; breakers ask Redis on every call unless told otherwise."""
        options.setdefault("timeout", TIMEOUT)
        options.setdefault("local_breakers", False)
        if self.kind == "cluster":
            port = next(node.port for node in self.nodes if node.process is not None)
            return RedisStore(f"redis://127.0.0.1:{port}", cluster=True, **options)
        manager = Sentinel([("127.0.0.1", self.sentinel.port)], socket_timeout=TIMEOUT)
        return RedisStore(manager.master_for("svc", socket_timeout=TIMEOUT), **options)

    def primary_of(self, store: RedisStore, name: str) -> Server:
        """The server that holds *name* now."""
        if self.kind == "cluster":
            port = store.client.get_node_from_key(name).port
        else:
            port = self.primary_now()
        return next(node for node in self.nodes if node.port == port)

    def replica_of(self, primary: Server) -> Server:
        for node in self.nodes:
            if node is primary or node.process is None:
                continue
            with node.client() as client:
                info = client.info("replication")
            if info.get("role") == "slave" and info.get("master_port") == primary.port:
                return node
        raise AssertionError("no replica")

    def fail_over(self, replica: Server) -> None:
        """A planned failover to *replica* (CLUSTER FAILOVER, SENTINEL FAILOVER), until done."""
        if self.kind == "cluster":
            with replica.client() as client:
                client.execute_command("CLUSTER", "FAILOVER")
        else:
            with redis.Redis(port=self.sentinel.port, socket_timeout=2) as sentinel:
                sentinel.execute_command("SENTINEL", "FAILOVER", "svc")

        def promoted() -> bool:
            with replica.client() as client:
                return client.info("replication").get("role") == "master"

        wait_until(promoted)
        if self.kind == "sentinel":
            wait_until(lambda: self.primary_now() == replica.port)

    def heal(self, killed: Server | None = None) -> None:
        """Restart *killed* (as a replica) and wait until the topology is whole again."""
        if killed is not None and killed.process is None:
            if self.kind == "sentinel":
                new = self.primary_now()
                deadline = time.monotonic() + 30
                while new == killed.port:  # Sentinel has not failed over yet
                    if time.monotonic() > deadline:
                        raise AssertionError("Sentinel did not fail over")
                    time.sleep(0.1)
                    new = self.primary_now()
                killed.args = [*_strip_replicaof(killed.args), "--replicaof", "127.0.0.1", str(new)]
            killed.start()
        if self.kind == "cluster":
            wait_cluster_ok(self.nodes)
            return
        deadline = time.monotonic() + 30
        while not self._settled():
            if time.monotonic() > deadline:
                with redis.Redis(port=self.sentinel.port, socket_timeout=2) as sentinel:
                    seen = sentinel.execute_command("SENTINEL", "REPLICAS", "svc")
                raise AssertionError(f"the Sentinel pair did not settle: {seen}")
            time.sleep(0.1)

    def _settled(self) -> bool:
        """Sentinel's primary is a primary, and every other node replicates it."""
        primary = self.primary_now()
        for node in self.nodes:
            with node.client() as client:
                info = client.info("replication")
            if node.port == primary:
                if info.get("role") != "master":
                    return False
            elif info.get("master_port") != primary:
                # Sentinel would convert a stale primary at its next INFO (up to 10 s).
                with node.client() as client:
                    client.replicaof("127.0.0.1", primary)
                return False
            elif info.get("master_link_status") != "up":
                return False
        return self._sentinel_knows_replicas(primary)

    def _sentinel_knows_replicas(self, primary: int) -> bool:
        """Sentinel lists every other node as a healthy replica (else it cannot fail over)."""
        with redis.Redis(port=self.sentinel.port, socket_timeout=2) as sentinel:
            replicas = sentinel.execute_command("SENTINEL", "REPLICAS", "svc")
        healthy = set()
        for entry in replicas:
            fields = (
                dict(zip(entry[::2], entry[1::2], strict=True))
                if isinstance(entry, list)
                else entry
            )
            fields = {_text(k): _text(v) for k, v in fields.items()}
            if fields.get("flags") == "slave" and fields.get("master-link-status") == "ok":
                healthy.add(int(fields["port"]))
        return all(node.port in healthy for node in self.nodes if node.port != primary)

    def primary_now(self) -> int:
        manager = Sentinel([("127.0.0.1", self.sentinel.port)], socket_timeout=1.0)
        deadline = time.monotonic() + 20
        while True:
            try:
                return int(manager.discover_master("svc")[1])
            except redis.exceptions.ConnectionError:  # no primary while a failover runs
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _strip_replicaof(args: list[str]) -> list[str]:
    if "--replicaof" in args:
        at = args.index("--replicaof")
        return args[:at] + args[at + 3 :]
    return args


@pytest.fixture(name="topology", params=["cluster", "sentinel"])
def _topology(request: pytest.FixtureRequest, servers: Servers) -> Topology:
    topology = Topology(request.param, servers)
    topology.heal()
    return topology


def breakers(store: RedisStore, name: str) -> tuple[Any, Any]:
    """(fail-closed, fail-open) breakers of one name... two names, one per policy."""

    def make(fail_open: bool) -> Any:
        @circuit_breaker(
            store=store,
            name=f"{name}-{fail_open}",
            failure_threshold=2,
            reset_timeout=30,
            on=Boom,
            fail_open=fail_open,
        )
        def call(fail: bool = False) -> str:
            if fail:
                raise Boom
            return "ok"

        return call

    return make(False), make(True)


def assert_fails_in_time(
    call: Any, match: str | None = None, *, local: bool = False
) -> StoreUnavailableError:
    """
    *call* raises StoreUnavailableError within the timeout. *local*: a healthy breaker call
    may run on its local state until the change feed is found dead (0.1 s at most), so
    it is called again until then.
    """
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=match) as caught:
        call()
        while local and time.monotonic() - started < TIMEOUT:
            call()
            time.sleep(0.001)
    assert time.monotonic() - started < TIMEOUT + MARGIN
    return caught.value


def wait_until(check: Any, seconds: float = 20.0) -> float:
    started = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - started
        except StoreUnavailableError:
            pass
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not recovered within {seconds} s")
        time.sleep(0.05)


def test_primary_killed_then_failed_over(topology):
    """Kill the key's primary: closed raises in time, open proceeds; the replica takes over."""
    store = topology.store()
    closed, opened = breakers(store, "kill")
    try:
        assert ("ok", "ok") == (closed(), opened())
        primary = topology.primary_of(store, store.key("breaker", "kill-False"))
        primary.kill()
        error = assert_fails_in_time(closed, "for key 'kill-False'", local=True)
        assert error.store == store.describe()
        with capture_events("resilience.store") as events:
            started = time.monotonic()
            assert "ok" == opened()
            assert time.monotonic() - started < TIMEOUT + MARGIN
        assert [True] == [event.metadata["fail_open"] for event in events]
        took = wait_until(lambda: closed() == "ok")  # promoted replica: no help from us
        assert took < 15
        for _ in range(2):
            with pytest.raises(Boom):
                closed(fail=True)
        with pytest.raises(CircuitOpenError):
            closed()
    finally:
        store.close()
        topology.heal(primary)


@pytest.mark.parametrize("how", ["client-pause", "debug-sleep"])
def test_paused_primary(topology, how):
    """A paused primary: every caller gives up or proceeds within the timeout; then recovers."""
    store = topology.store()
    closed, opened = breakers(store, f"pause-{how}")
    try:
        assert "ok" == closed()
        primary = topology.primary_of(store, store.key("breaker", f"pause-{how}-False"))
        blocker = primary.client(socket_timeout=5)
        if how == "client-pause":
            blocker.execute_command("CLIENT", "PAUSE", "1000", "ALL")
            hang = None
        else:
            hang = threading.Thread(
                target=blocker.execute_command, args=("DEBUG", "SLEEP", "1.0"), daemon=True
            )
            hang.start()
            time.sleep(0.2)  # the DEBUG SLEEP has reached the server
        assert_fails_in_time(closed, local=True)
        started = time.monotonic()
        assert "ok" == opened()
        assert time.monotonic() - started < TIMEOUT + MARGIN
        if hang is not None:
            hang.join(5)
        wait_until(lambda: closed() == "ok", 10)
        blocker.close()
    finally:
        store.close()


def test_manual_failover_is_followed(topology):
    """A planned failover: calls keep working after it, the client follows the new primary."""
    store = topology.store()
    closed, _ = breakers(store, "planned")
    try:
        assert "ok" == closed()
        primary = topology.primary_of(store, store.key("breaker", "planned-False"))
        topology.fail_over(topology.replica_of(primary))
        wait_until(lambda: closed() == "ok")  # the client follows (MOVED, or Sentinel)
    finally:
        store.close()
        topology.heal()


def test_a_read_only_replica(topology):
    """A store pointed at a replica: READONLY becomes StoreUnavailableError, or fail-open."""
    probe = topology.store()
    primary = topology.primary_of(probe, probe.key("breaker", "ro-False"))
    probe.close()
    replica = topology.replica_of(primary)
    client = replica.client(socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
    if topology.kind == "cluster":
        client.execute_command("READONLY")  # a cluster replica still refuses writes
    store = RedisStore(client, timeout=TIMEOUT)
    closed, opened = breakers(store, "ro")
    try:
        error = assert_fails_in_time(closed, "for key 'ro-False'")
        assert error.reason is not None
        # A cluster replica that has not yet heard of the failover history answers a write
        # script with MOVED (to its primary), one that has with READONLY: both are refusals.
        refusals = (
            ("ReadOnlyError", "MovedError") if topology.kind == "cluster" else ("ReadOnlyError",)
        )
        assert any(name in error.reason for name in refusals)
        assert "ok" == opened()
    finally:
        store.close()
        client.close()


def test_flushall_loses_state_not_service(topology):
    """FLUSHALL (our servers only): the state is gone, calls go on; nothing raises raw."""
    store = topology.store()
    closed, _ = breakers(store, "flush")
    try:
        for _ in range(2):
            with pytest.raises(Boom):
                closed(fail=True)
        with pytest.raises(CircuitOpenError):
            closed()
        for node in topology.nodes:
            with node.client() as client, contextlib_suppress():
                client.flushall()
        assert "ok" == closed()  # a fresh, closed breaker: what a flush means
    finally:
        store.close()


def test_a_wrong_type_key(topology):
    """Someone else's value where our key should be: WRONGTYPE, named; fail-open proceeds."""
    store = topology.store()
    closed, opened = breakers(store, "wt")
    try:
        for name in ("wt-False", "wt-True"):
            store.client.set(store.key("breaker", name), "not a hash")
        error = assert_fails_in_time(closed, "for key 'wt-False'")
        assert "WRONGTYPE" in (error.reason or "")
        assert "ok" == opened()

        @rate_limited(rate=1, per=60.0, key="wt", store=store, timeout=0)
        def limited() -> None:
            pass

        store.client.hset(store.key("window", "wt"), "x", "1")
        assert_fails_in_time(limited, "WRONGTYPE")
    finally:
        store.client.delete(store.key("breaker", "wt-False"), store.key("breaker", "wt-True"))
        store.client.delete(store.key("window", "wt"))
        store.close()


def test_no_over_admission_through_a_pause(topology):
    """Rate limit 5/60 s, fail-closed, through a pause: never more than 5 admitted in all."""
    store = topology.store()
    admitted = 0

    @rate_limited(rate=5, per=60.0, key="strict", store=store, timeout=0)
    def call() -> None:
        nonlocal admitted
        admitted += 1

    try:
        primary = topology.primary_of(store, store.key("rate", "strict", "log"))
        call()
        call()
        with primary.client(socket_timeout=5) as blocker:
            blocker.execute_command("CLIENT", "PAUSE", "1000", "ALL")
            for _ in range(2):
                with pytest.raises(StoreUnavailableError):
                    call()
        outcomes = []
        for _ in range(8):
            try:
                call()
                outcomes.append("in")
            except RateLimitedError:
                outcomes.append("limited")
            except StoreUnavailableError:
                outcomes.append("unavailable")
            time.sleep(0.1)
        assert admitted <= 5
        assert "limited" in outcomes
    finally:
        store.close()


def test_bounded_waiters_fail_over_an_outage(topology):
    """Waiters queued on a full pool hear of an outage within the timeout: closed or open."""
    store = topology.store(lease=5.0)
    gate = threading.Event()

    @bounded(limit=1, key="w", store=store, timeout=None)
    def hold() -> None:
        gate.wait(10)

    @bounded(limit=1, key="w", store=store, timeout=None)
    def closed() -> str:
        return "ran"

    @bounded(limit=1, key="w", store=store, timeout=None, fail_open=True)
    def opened() -> str:
        return "ran"

    results: dict[str, Any] = {}

    def wait(name: str, call: Any) -> None:
        started = time.monotonic()
        try:
            results[name] = call()
        except StoreUnavailableError as error:
            results[name] = error
        results[name + "-took"] = time.monotonic() - started

    holder = threading.Thread(target=hold)
    holder.start()
    primary = topology.primary_of(store, store.key("pool", "w", "leases"))
    try:
        time.sleep(0.1)
        waiters = [
            threading.Thread(target=wait, args=pair) for pair in (("c", closed), ("o", opened))
        ]
        for thread in waiters:
            thread.start()
        time.sleep(0.2)  # both queued behind the holder
        with primary.client(socket_timeout=5) as blocker:
            blocker.execute_command("CLIENT", "PAUSE", "1000", "ALL")
            paused = time.monotonic()
            for thread in waiters:
                thread.join(5)
        assert isinstance(results["c"], StoreUnavailableError)
        assert "ran" == results["o"]
        assert time.monotonic() - paused < 2 * TIMEOUT + 2 * MARGIN
    finally:
        gate.set()
        holder.join(5)
        store.close()


@pytest.mark.anyio
async def test_async_callers_fail_in_time(topology):
    """The asyncio twin: a paused primary gives StoreUnavailableError within the timeout."""
    store = topology.store()

    @circuit_breaker(store=store, name="aio", failure_threshold=2, reset_timeout=30)
    async def call() -> str:
        return "ok"

    try:
        for _ in range(50):  # the first call also builds the asyncio twin (a cluster's map)
            try:
                assert "ok" == await call()
                break
            except StoreUnavailableError:
                await asyncio.sleep(0.05)
        primary = topology.primary_of(store, store.key("breaker", "aio"))
        with primary.client(socket_timeout=5) as blocker:
            blocker.execute_command("CLIENT", "PAUSE", "800", "ALL")
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError, match="for key 'aio'"):
                # Healthy calls may run on the breaker's local state until its change
                # feed's heartbeat is late (0.1 s at most); then they ask the paused server.
                while time.monotonic() - started < TIMEOUT:
                    await call()
                    await asyncio.sleep(0.001)
            assert time.monotonic() - started < TIMEOUT + MARGIN
        for _ in range(100):
            try:
                assert "ok" == await call()
                break
            except StoreUnavailableError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("no recovery")
    finally:
        await store.aclose()
        store.close()


def test_a_plain_client_on_a_cluster_node_says_so(servers):
    """redis:// to a cluster node without cluster=True: MOVED, named, with the way out."""
    nodes = Topology("cluster", servers).nodes
    reasons = []
    for node in nodes:
        store = RedisStore(f"redis://127.0.0.1:{node.port}", timeout=TIMEOUT)
        try:
            store.run("return redis.call('GET', KEYS[1])", [store.key("x", "k")], [], key="k")
        except StoreUnavailableError as error:
            reasons.append(error.reason or "")
        finally:
            store.close()
    assert len(reasons) >= 2, reasons  # the slot lives on one primary (and its replica)
    assert all("Moved" in reason and "cluster=True" in reason for reason in reasons), reasons


class contextlib_suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], redis.exceptions.ResponseError)  # type: ignore[arg-type]
