"""
Breakers on Redis keep a closed state locally (the default): a healthy call costs no round
trip, changes arrive by pub/sub, and the local state is trusted only while the feed is live.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import threading
import time
import uuid

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from resilience import CircuitOpenError, StoreUnavailableError, circuit_breaker, get_circuit_breaker
from resilience.stores import RedisStore
from resilience.testing import capture_events

from ..conftest import TOPOLOGIES, redis_store_for
from ..redis_servers import Server, _base, free_port
from ..redis_workers import open_store, spec_of


TIMEOUT = 0.5


class Boom(Exception):
    """The upstream's failure."""


@pytest.fixture(name="pair", params=TOPOLOGIES)
def _pair(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any]]:
    """Two stores (two processes' views) on one namespace, on each kind of server."""
    one: Any = redis_store_for(request.param, request)
    two = open_store(spec_of(one), namespace=one.namespace, timeout=one.timeout)
    yield one, two
    one.clear()
    one.close()
    two.close()


def declare(store: Any, name: str = "up", **options: Any) -> Any:
    options.setdefault("failure_threshold", 2)

    @circuit_breaker(name=name, reset_timeout=30.0, on=Boom, store=store, **options)
    def call(fail: bool = False) -> str:
        if fail:
            raise Boom
        return "ok"

    return call


def counting(store: Any) -> list[int]:
    """Count the store's round trips (its own ``run``, wrapped; the calls still go through)."""
    count = [0]
    run = store.run

    def counted(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return run(*args, **kwargs)

    store.run = counted
    return count


def until(check: Any, seconds: float = 5.0) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds} s")
        time.sleep(0.001)
    return time.monotonic() - started


def settled(store: Any, name: str) -> Any:
    """The backend of *name*, once the feed is live and it trusts its local state."""
    backend = store.peek("breaker", name)
    listener = store.breaker_listener()

    def ready() -> bool:
        if not backend.closed:
            backend.admit()  # what the next call does: read the state, trust it if live
        return listener.live and backend.closed

    until(ready)
    return backend


def healthy_round_trips(store: Any, call: Any, calls: int = 10_000) -> tuple[int, int]:
    """(round trips, late heartbeats) over *calls* healthy calls."""
    listener = store.breaker_listener()
    trips = counting(store)
    late = listener.late
    for _ in range(calls):
        assert "ok" == call()
    return trips[0], listener.late - late


# -- round trips --------------------------------------------------------------------------------


def test_local_state_is_the_default_and_false_asks_every_time(request):
    """``local_breakers=False`` gives the old behaviour: one round trip per healthy call."""
    store: Any = redis_store_for("single", request, local_breakers=False)
    try:
        call = declare(store, "asks")
        call()
        trips = counting(store)
        for _ in range(20):
            call()
        assert 20 == trips[0]
        assert store.peek("breaker", "asks")._listener is None
    finally:
        store.clear()
        store.close()
    with pytest.raises(TypeError, match="local_breakers must be True or False"):
        RedisStore("redis://127.0.0.1:6379/0", local_breakers="yes")


def test_healthy_calls_cost_no_round_trip(pair):
    """10,000 healthy calls: zero round trips (a spell of late heartbeats, counted, may ask)."""
    one, _ = pair
    call = declare(one)
    call()
    settled(one, "up")
    runs = [healthy_round_trips(one, call) for _ in range(3)]
    assert any(trips == 0 for trips, _ in runs), runs
    assert all(trips == 0 or late > 0 for trips, late in runs), runs


def test_round_trips_counted_by_the_server(redis_servers):
    """The server's own count: 10,000 healthy calls run no script (the heartbeat PINGs only)."""
    path = redis_servers.unix()
    store: Any = RedisStore(f"unix://{path}", namespace=f"t-{uuid.uuid4().hex[:8]}")
    admin = redis.Redis(unix_socket_path=path)
    try:
        call = declare(store)
        call()
        settled(store, "up")
        for _ in range(3):
            before = admin.info("commandstats")
            late = store.breaker_listener().late
            for _ in range(10_000):
                call()
            after = admin.info("commandstats")
            scripts = sum(
                after.get(f"cmdstat_{name}", {}).get("calls", 0)
                - before.get(f"cmdstat_{name}", {}).get("calls", 0)
                for name in ("evalsha", "eval")
            )
            if scripts == 0:
                break
            assert store.breaker_listener().late > late  # only a late feed may ask
        assert 0 == scripts
    finally:
        store.clear()
        store.close()
        admin.close()


@pytest.mark.anyio
async def test_async_tasks_cost_no_round_trip_and_hear_a_change(request):
    """Real asyncio tasks: healthy calls stay local; an open elsewhere refuses them all."""
    one: Any = redis_store_for("single", request)
    two = open_store(spec_of(one), namespace=one.namespace)
    try:

        @circuit_breaker(name="aio", failure_threshold=1, reset_timeout=30.0, store=one)
        async def call() -> str:
            await asyncio.sleep(0)
            return "ok"

        await call()
        backend = await asyncio.to_thread(settled, one, "aio")
        trips = counting(one)
        late = one.breaker_listener().late

        async def many() -> None:
            for _ in range(500):
                assert "ok" == await call()

        await asyncio.gather(*(many() for _ in range(8)))
        assert trips[0] == 0 or one.breaker_listener().late > late
        theirs = declare(two, "aio", failure_threshold=1)
        with pytest.raises(Boom):
            theirs(fail=True)
        took = await asyncio.to_thread(until, lambda: not backend.closed, 1.0)
        assert took < 0.1
        results = await asyncio.gather(*(call() for _ in range(8)), return_exceptions=True)
        assert all(isinstance(result, CircuitOpenError) for result in results)
    finally:
        await one.aclose()
        one.clear()
        one.close()
        two.close()


# -- changes from the others --------------------------------------------------------------------


def test_an_open_elsewhere_is_heard_within_100_ms(pair):
    """The other store opens the breaker; this one refuses within 100 ms, no call needed."""
    one, two = pair
    mine, theirs = declare(one), declare(two)
    mine()
    theirs()
    backend = settled(one, "up")
    for _ in range(2):
        with pytest.raises(Boom):
            theirs(fail=True)
    took = until(lambda: not backend.closed, 1.0)
    assert took < 0.1
    with pytest.raises(CircuitOpenError):
        mine()
    get_circuit_breaker("up", store=two).reset()
    assert until(lambda: backend.closed, 1.0) < 0.1
    assert "ok" == mine()


def _opener(spec: dict[str, Any], namespace: str, go: Any, done: Any) -> None:
    """Another process: open the breaker when told, and say when (wall clock)."""
    store = open_store(spec, namespace=namespace)
    call = declare(store)
    call()
    go.wait(30)
    for _ in range(2):
        try:
            call(fail=True)
        except Boom:
            pass
    done.put(time.time())
    store.close()


def test_a_change_in_another_process_arrives_within_100_ms(request):
    """A real second process opens the breaker; this process hears it within 100 ms."""
    one: Any = redis_store_for("single", request)
    context = multiprocessing.get_context("spawn")
    go, done = context.Event(), context.Queue()
    worker = context.Process(target=_opener, args=(spec_of(one), one.namespace, go, done))
    try:
        call = declare(one)
        call()
        backend = settled(one, "up")
        worker.start()
        seen: list[float] = []

        def watch() -> None:
            while backend._closed:  # the state as the feed left it
                time.sleep(0.0005)
            seen.append(time.time())

        watcher = threading.Thread(target=watch)
        watcher.start()
        go.set()
        opened_at = done.get(timeout=30)
        watcher.join(5)
        assert seen, "the open was never heard"
        assert seen[0] - opened_at < 0.1
        with pytest.raises(CircuitOpenError):
            call()
    finally:
        worker.join(10)
        one.clear()
        one.close()


def test_threads_hear_an_open_and_failures_count_atomically(pair):
    """Real threads: failures from both stores add up in Redis; every thread sees the open."""
    one, two = pair
    mine, theirs = declare(one, failure_threshold=40), declare(two, failure_threshold=40)
    mine()
    theirs()
    settled(one, "up")
    refused = []

    def fail(call: Any) -> None:
        for _ in range(10):
            try:
                call(fail=True)
            except (Boom, CircuitOpenError):
                pass

    threads = [threading.Thread(target=fail, args=(c,)) for c in (mine, theirs) * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    stats = get_circuit_breaker("up", store=one).stats
    assert "open" == stats.state
    assert 40 == stats.failures  # the 40th opened it; none was lost or counted twice
    mine_backend = one.peek("breaker", "up")
    until(lambda: not mine_backend._closed, 1.0)  # heard (within 100 ms when not loaded)

    def refuse() -> None:
        with pytest.raises(CircuitOpenError):
            mine()
        refused.append(1)

    threads = [threading.Thread(target=refuse) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert 4 == len(refused)


def test_a_success_elsewhere_breaks_the_streak(pair):
    """A failure here and one there open it (one count in Redis); a success between resets."""
    one, two = pair
    mine, theirs = declare(one), declare(two)
    mine()
    theirs()
    other = settled(two, "up")
    with pytest.raises(Boom):
        mine(fail=True)
    until(lambda: other.dirty, 1.0)  # the streak began: their next success must record
    assert "ok" == theirs()
    with pytest.raises(Boom):
        mine(fail=True)
    assert "closed" == get_circuit_breaker("up", store=one).state  # 1 failure since success
    with pytest.raises(Boom):
        theirs(fail=True)
    assert "open" == get_circuit_breaker("up", store=one).state


# -- a feed that is not live --------------------------------------------------------------------


class Proxy:
    """A TCP forwarder to a server that can be cut (every connection dropped, new ones refused)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listening = socket.create_server(("127.0.0.1", 0))
        self.port = self.listening.getsockname()[1]
        self.open = True
        self.links: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.listening.accept()
            except OSError:
                return
            if not self.open:
                near.close()
                continue
            far = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.links += [near, far]
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.open = False
        with self.lock:
            for link in self.links:
                try:
                    link.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                link.close()
            self.links.clear()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listening.close()


@pytest.fixture(name="server")
def _server(tmp_path: Path) -> Iterator[Server]:
    """A private redis-server on an ephemeral loopback port."""
    port = free_port()
    server = Server(tmp_path, "local", _base(port), port=port).start()
    yield server
    server.kill()


def hammer(call: Any, stop: threading.Event, results: list[Any]) -> None:
    """Healthy calls until *stop*: (started, ended, what each returned or raised)."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            outcome: Any = call()
        except (StoreUnavailableError, CircuitOpenError) as error:
            outcome = error
        results.append((started, time.monotonic(), outcome))
        time.sleep(0.001)


MARGIN = 0.3  # scheduling on a loaded 2-core machine; a hang would be seconds


@pytest.mark.parametrize("how", ["kill", "debug-sleep"])
def test_an_unreachable_server_fails_healthy_calls_within_the_timeout(server, how):
    """Killed or hung while threads call: StoreUnavailableError within the timeout, then back."""
    store = RedisStore(f"redis://127.0.0.1:{server.port}/0", timeout=TIMEOUT)
    call = declare(store, "down")
    blocker = server.client(socket_timeout=5)
    bound = store.breaker_listener().bound
    try:
        call()
        settled(store, "down")
        results: list[Any] = []
        stop = threading.Event()
        threads = [threading.Thread(target=hammer, args=(call, stop, results)) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(0.1)
        broke = time.monotonic()
        if how == "kill":
            server.kill()
        else:
            threading.Thread(
                target=blocker.execute_command, args=("DEBUG", "SLEEP", "0.8"), daemon=True
            ).start()
        time.sleep(0.8)
        if how == "kill":
            server.start()
        back = time.monotonic()
        until(lambda: any(r == "ok" for s, e, r in results if s > back + TIMEOUT), 10.0)
        stop.set()
        for thread in threads:
            thread.join(10)
        assert all(r == "ok" for s, e, r in results if e < broke)
        errors = [(s, e, r) for s, e, r in results if isinstance(r, Exception)]
        assert errors, "no call noticed the outage"
        assert all(isinstance(r, StoreUnavailableError) for s, e, r in errors)
        assert errors[0][1] - broke < bound + TIMEOUT + MARGIN  # the first error: in time
        slow = [
            (round(s - broke, 3), round(e - s, 3), r)
            for s, e, r in results
            if e - s >= TIMEOUT + MARGIN
        ]
        assert not slow, slow  # no call hung: (started after the break, took, outcome)
        assert any(r == "ok" for s, e, r in results if s > back + TIMEOUT)  # it recovered
        settled(store, "down")  # the feed is live again: calls are local again
    finally:
        blocker.close()
        store.close()


def test_fail_open_proceeds_when_the_feed_is_lost(server):
    """With ``fail_open=True`` the same outage lets calls run, each reported by an event."""
    store = RedisStore(f"redis://127.0.0.1:{server.port}/0", timeout=TIMEOUT)
    call = declare(store, "open", fail_open=True)
    try:
        call()
        settled(store, "open")
        with capture_events("resilience.store") as events:
            server.kill()
            until(lambda: not store.breaker_listener().live, TIMEOUT)
            assert "ok" == call()
        assert events
        assert events[0].metadata["fail_open"] is True
    finally:
        store.close()


def test_a_change_made_while_disconnected_is_seen_after_reconnect(server):
    """The feed is cut; another process opens the breaker; after the cut, this one knows."""
    proxy = Proxy(server.port)
    mine_store = RedisStore(f"redis://127.0.0.1:{proxy.port}/0", timeout=TIMEOUT)
    theirs_store = RedisStore(f"redis://127.0.0.1:{server.port}/0", timeout=TIMEOUT)
    try:
        mine, theirs = declare(mine_store, "cut"), declare(theirs_store, "cut")
        mine()
        theirs()
        backend = settled(mine_store, "cut")
        proxy.cut()
        until(lambda: not mine_store.breaker_listener().live, TIMEOUT)
        with pytest.raises(StoreUnavailableError):
            mine()
        for _ in range(2):
            with pytest.raises(Boom):
                theirs(fail=True)
        proxy.restore()
        until(lambda: mine_store.breaker_listener().live, 5.0)
        assert not backend.closed  # the state before the cut is not trusted again
        with pytest.raises(CircuitOpenError):
            mine()
        get_circuit_breaker("cut", store=theirs_store).reset()
        until(lambda: backend.closed or mine() == "ok", 2.0)
    finally:
        mine_store.close()
        theirs_store.close()
        proxy.close()


def test_a_resubscription_by_the_client_forgets_the_local_state(server):
    """The server drops the subscriber (the client reconnects by itself): state is re-read."""
    store = RedisStore(f"redis://127.0.0.1:{server.port}/0", timeout=TIMEOUT)
    admin = server.client()
    try:
        call = declare(store, "kick")
        call()
        backend = settled(store, "kick")
        heard = store.breaker_listener().heard
        admin.client_kill_filter(_type="pubsub")
        until(lambda: store.breaker_listener().heard > heard, 2.0)  # a loss was noted
        trips = counting(store)
        assert "ok" == call()
        assert trips[0] == 1 or not store.breaker_listener().live  # it asked Redis once
        assert backend is settled(store, "kick")  # and trusts the state it read again
    finally:
        admin.close()
        store.close()


def test_the_feed_follows_a_sentinel_failover(redis_servers):
    """After a failover, a change made through the new primary still reaches this process."""
    from redis.sentinel import Sentinel

    _, replica, sentinel = redis_servers.sentinel("feed")

    def store() -> RedisStore:
        manager = Sentinel([("127.0.0.1", sentinel.port)], socket_timeout=1.0)
        return RedisStore(manager.master_for("svc", socket_timeout=1.0), namespace="feed")

    one, two = store(), store()
    try:
        mine, theirs = declare(one, "fo"), declare(two, "fo")
        mine()
        theirs()
        backend = settled(one, "fo")
        with redis.Redis(port=sentinel.port, socket_timeout=2) as admin:
            admin.execute_command("SENTINEL", "FAILOVER", "svc")

        def promoted() -> bool:
            with replica.client() as client:
                return client.info("replication").get("role") == "master"

        until(promoted, 20.0)

        def answered() -> bool:
            try:
                return theirs() == "ok" and mine() == "ok"
            except StoreUnavailableError:
                return False

        until(answered, 20.0)  # both clients follow the new primary
        backend = settled(one, "fo")
        for _ in range(2):
            with pytest.raises(Boom):
                theirs(fail=True)
        assert until(lambda: not backend._closed, 2.0) < 0.1
        with pytest.raises(CircuitOpenError):
            mine()
    finally:
        one.clear()
        one.close()
        two.close()
