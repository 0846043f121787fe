"""
Worker processes for the multi-process Redis tests (started with multiprocessing "spawn").

Each worker builds its own ``RedisStore`` on the test's namespace, as a separate program
would, waits at a barrier so all start together, and logs what it did into Redis.
"""

from __future__ import annotations

import time

from typing import Any

import redis

from resilience import bounded, rate_limited
from resilience.stores import RedisStore


URL = "redis://127.0.0.1:6379/0"


def rate_worker(namespace: str, rate: int, per: float, calls: int, barrier: Any) -> None:
    """Make *calls* rate-limited calls on the shared key; log each start (time.time())."""
    store = RedisStore(URL, namespace=namespace)
    log = redis.Redis.from_url(URL)

    @rate_limited(rate=rate, per=per, key="shared", store=store, timeout=30.0)
    def call() -> None:
        log.rpush(f"{namespace}:log:starts", repr(time.time()))

    barrier.wait(timeout=30)
    for _ in range(calls):
        call()
    store.close()
    log.close()


def pool_worker(namespace: str, limit: int, calls: int, hold: float, barrier: Any) -> None:
    """Make *calls* bounded calls that each hold their permit *hold* s; count holders."""
    store = RedisStore(URL, namespace=namespace, lease=2.0)
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


def hog_worker(namespace: str, limit: int, lease: float) -> None:
    """Take every permit of the pool, say so, and hold them until killed."""
    store = RedisStore(URL, namespace=namespace, lease=lease)
    log = redis.Redis.from_url(URL)

    @bounded(limit=limit, weight=limit, key="shared", store=store)
    def hold() -> None:
        log.rpush(f"{namespace}:log:holding", 1)
        time.sleep(60)

    hold()
