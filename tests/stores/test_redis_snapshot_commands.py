"""A Redis snapshot sends only plain reads: every command it issues, seen by MONITOR."""

from __future__ import annotations

import threading
import time

import pytest

from resilience import RetryBudget, backoff_window, bounded, circuit_breaker, rate_limited, snapshot
from resilience.stores import RedisStore

from .test_redis_faults import REDIS_SERVER, PrivateRedis


READS = {"SCAN", "HGETALL", "LRANGE", "GET", "ZRANGE", "TIME", "MULTI", "EXEC"}
HANDSHAKE = {"HELLO", "CLIENT", "AUTH", "SELECT"}  # a new connection's setup, no data


class Boom(Exception):
    """The failure of our fake upstream."""


@pytest.fixture(name="server")
def _server():
    import shutil

    if shutil.which(REDIS_SERVER) is None:
        pytest.skip(f"no redis-server binary at {REDIS_SERVER}")
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


def test_every_command_of_a_snapshot_is_a_plain_read(server):
    """No script, no write, no blocking command: SCAN, then one MULTI/EXEC of reads."""
    import redis

    store = RedisStore(f"redis://127.0.0.1:{server.port}/0", namespace="snap")
    breaker = circuit_breaker(store=store, name="b", failure_threshold=1, on=Boom)
    with pytest.raises(Boom):
        breaker(lambda: (_ for _ in ()).throw(Boom))()
    rate_limited(rate=3, per=1.0, key="r", store=store)(lambda: 1)()
    backoff_window("r", store=store).set(5.0)
    bounded(limit=2, key="p", store=store)(lambda: 1)()
    budget = RetryBudget(key="u", store=store)
    budget.record_call()
    store._meta.settle()

    seen: list[str] = []
    ready = threading.Event()
    watcher = redis.Redis(port=server.port)

    def watch():
        with watcher.monitor() as monitor:
            ready.set()
            for command in monitor.listen():
                words = command["command"].split()
                if words[:2] == ["ECHO", "snapshot-done"]:
                    return
                if words and words[0].upper() not in HANDSHAKE | {"PING"}:
                    seen.append(words[0].upper())

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    assert ready.wait(5)
    time.sleep(0.1)  # MONITOR is registered once its reply is read
    taken = snapshot(store)
    store.client.echo("snapshot-done")
    thread.join(5)
    watcher.close()
    store.close()
    assert ["b"] == [b.name for b in taken.breakers]
    assert {"r"} == {r.key for r in taken.limiters}
    assert not thread.is_alive()  # it saw the marker: every command before it is in *seen*
    assert READS == set(seen), sorted(set(seen) ^ READS)
    assert 1 == seen.count("TIME")  # one pipeline: one clock reading
