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

TIMEOUT = 5.0
"""The stores' timeout in these tests (10 s for TLS): generous, since no test of the shared
suite is about it (the fault tests make their own stores): on a loaded 2-core machine a
burst of new connections (a TLS handshake costs up to 0.3 s of CPU there) takes seconds."""


def timeout_for(kind: str) -> float:
    """The test stores' timeout on topology *kind*."""
    return 2 * TIMEOUT if kind == "tls" else TIMEOUT


def log_client() -> redis.Redis:
    """A client of the shared server for the workers' logs (BLPOP waits up to 20 s)."""
    return redis.Redis.from_url(URL, socket_timeout=60)


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
    options.setdefault("timeout", timeout_for(kind))
    timeout = options["timeout"]
    if kind == "single":
        return RedisStore(URL, **options)
    assert spec is not None
    if kind == "valkey":
        return RedisStore("valkey://127.0.0.1:6379/0", **options)
    if kind == "cluster":
        return RedisStore(f"redis://127.0.0.1:{spec['port']}", cluster=True, **options)
    if kind == "sentinel":
        from redis.sentinel import Sentinel

        manager = Sentinel([("127.0.0.1", spec["port"])], socket_timeout=timeout)
        return RedisStore(manager.master_for("svc", socket_timeout=timeout), **options)
    if kind == "tls":
        client = redis.Redis(
            host="127.0.0.1",
            port=spec["port"],
            ssl=True,
            ssl_ca_certs=spec["ca"],
            socket_timeout=timeout,
        )
        return RedisStore(client, **options)
    assert kind == "unix"
    return RedisStore(f"unix://{spec['path']}", **options)


SLACK = 0.1
"""The rate tests' ``RedisStore(slack=...)``: the jitter between the server's clock reading
and where a call begins that the rule allows for, so starts as the callers log them keep
the rule at its full width (a loaded machine delays a caller by tens of milliseconds)."""


def rate_worker(
    namespace: str, rate: int, per: float, calls: int, barrier: Any, spec: Any = None
) -> None:
    """Make *calls* rate-limited calls on the shared key; log each start (time.time())."""
    store = open_store(spec, namespace=namespace, slack=SLACK)
    log = log_client()

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
    """
    Make *calls* bounded calls that each hold their permit *hold* s; count holders.

    The first call of each worker holds on until *limit* holders are in (at most 2 s), so
    the pool is full at least once however the workers are scheduled.
    """
    store = open_store(spec, namespace=namespace, lease=2.0)
    log = log_client()
    holders = f"{namespace}:log:holders"
    first = [True]

    @bounded(limit=limit, key="shared", store=store, timeout=30.0)
    def call() -> None:
        now = log.incr(holders)
        log.rpush(f"{namespace}:log:peaks", now)
        time.sleep(hold)
        deadline = time.monotonic() + 2
        while first[0] and int(log.get(holders) or 0) < limit and time.monotonic() < deadline:
            time.sleep(0.005)
        first[0] = False
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
    log = log_client()

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
