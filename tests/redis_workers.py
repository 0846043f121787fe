"""
Worker processes for the multi-process Redis tests (started with multiprocessing "spawn").

Each worker builds its own ``RedisStore`` on the test's namespace, as a separate program
would, waits at a barrier so all start together, and logs what it did into Redis.
"""

from __future__ import annotations

import threading
import time

from typing import Any

import redis

from resilience import AdaptiveLimit, bounded, get_bounded, rate_limited
from resilience.stores import RedisStore


URL = "redis://127.0.0.1:6379/0"


def spec_of(store: object) -> dict[str, Any]:
    """How to build another store on *store*'s servers (set by the ``redis_store`` fixture)."""
    return getattr(store, "test_spec", {"kind": "single"})


def open_store(spec: dict[str, Any] | None = None, **options: Any) -> RedisStore:
    """
    A new ``RedisStore`` on the servers *spec* names, as another process would build it.

    *spec* (from ``conftest.spec_of(store)``, picklable for worker processes): None or
    ``{"kind": "single"}`` for the shared server; ``{"kind": "cluster", "port": p}``,
    ``{"kind": "sentinel", "port": p}``, ``{"kind": "tls", "port": p, "ca": path}``,
    ``{"kind": "unix", "path": path}``, ``{"kind": "valkey"}``.
    """
    kind = (spec or {}).get("kind", "single")
    if kind == "single":
        return RedisStore(URL, **options)
    assert spec is not None
    if kind == "valkey":
        return RedisStore("valkey://127.0.0.1:6379/0", **options)
    if kind == "cluster":
        return RedisStore(f"redis://127.0.0.1:{spec['port']}", cluster=True, **options)
    if kind == "sentinel":
        from redis.sentinel import Sentinel

        manager = Sentinel([("127.0.0.1", spec["port"])], socket_timeout=1.0)
        return RedisStore(manager.master_for("svc", socket_timeout=1.0), **options)
    if kind == "tls":
        client = redis.Redis(
            host="127.0.0.1",
            port=spec["port"],
            ssl=True,
            ssl_ca_certs=spec["ca"],
            socket_timeout=1.0,
        )
        return RedisStore(client, **options)
    assert kind == "unix"
    return RedisStore(f"unix://{spec['path']}", **options)


def rate_worker(
    namespace: str, rate: int, per: float, calls: int, barrier: Any, spec: Any = None
) -> None:
    """Make *calls* rate-limited calls on the shared key; log each start (time.time())."""
    store = open_store(spec, namespace=namespace)
    log = redis.Redis.from_url(URL)

    @rate_limited(rate=rate, per=per, key="shared", store=store, timeout=30.0)
    def call() -> None:
        log.rpush(f"{namespace}:log:starts", repr(time.time()))

    barrier.wait(timeout=30)
    for _ in range(calls):
        call()
    store.close()
    log.close()


def pool_worker(
    namespace: str, limit: int, calls: int, hold: float, barrier: Any, spec: Any = None
) -> None:
    """Make *calls* bounded calls that each hold their permit *hold* s; count holders."""
    store = open_store(spec, namespace=namespace, lease=2.0)
    log = redis.Redis.from_url(URL)
    holders = f"{namespace}:log:holders"

    @bounded(limit=limit, key="shared", store=store, timeout=30.0)
    def call() -> None:
        now = log.incr(holders)
        log.rpush(f"{namespace}:log:peaks", now)
        time.sleep(hold)
        log.decr(holders)

    barrier.wait(timeout=30)
    for _ in range(calls):
        call()
    log.rpush(f"{namespace}:log:done", 1)
    store.close()
    log.close()


def hog_worker(namespace: str, limit: int, lease: float, spec: Any = None) -> None:
    """Take every permit of the pool, say so, and hold them until killed."""
    store = open_store(spec, namespace=namespace, lease=lease)
    log = redis.Redis.from_url(URL)

    @bounded(limit=limit, weight=limit, key="shared", store=store)
    def hold() -> None:
        log.rpush(f"{namespace}:log:holding", 1)
        time.sleep(60)

    hold()


def adaptive_worker(
    namespace: str, calls: int, samples: int, barrier: Any, spec: Any = None
) -> None:
    """
    Four threads make *calls* each through the AIMD pool "shared", logging (holders, live
    limit) at each entry; then feed *samples* busy successes to the pool "exact".
    """
    store = open_store(spec, namespace=namespace, lease=2.0)
    log = redis.Redis.from_url(URL)
    holders = f"{namespace}:holders"

    @bounded(
        limit=AdaptiveLimit(algorithm="aimd", initial=2, max_limit=8),
        key="shared",
        store=store,
        timeout=30.0,
    )
    def call() -> None:
        now = log.incr(holders)
        limit = get_bounded("shared", store=store).limit
        log.rpush(f"{namespace}:log", f"{now},{limit}")
        time.sleep(0.002)
        log.decr(holders)

    exact = AdaptiveLimit(algorithm="aimd", initial=5, max_limit=1000)
    bounded(limit=exact, key="exact", store=store)(lambda: None)
    backend = store.backend("pool", "exact", None)
    barrier.wait(timeout=30)
    threads = [threading.Thread(target=lambda: [call() for _ in range(calls)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for _ in range(samples):
        backend.sample(0.01, 1000, False)
    store.close()
    log.close()
