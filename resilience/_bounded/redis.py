"""
The Redis backend of ``@bounded``: permits as leases that expire unless renewed.

Each grant is a *lease*: an id (``<host>:<pid>:<random>:<n>``) with an expiry and a weight.

- ``<ns>:pool:{<key>}:leases``: a sorted set, lease id -> expiry (whole microseconds).
- ``<ns>:pool:{<key>}:weights``: a hash, lease id -> weight, plus ``#total``, the units held.

``try_acquire`` is one script: purge the expired leases (giving their units back), then
grant if ``#total + weight <= limit``. ``release`` removes one lease (idempotent).
While a process holds leases, one daemon thread per pool renews them all every
``lease / 3`` seconds in one script; so the permits of a process that dies (SIGKILL, OOM,
a lost machine) come back within ``RedisStore.lease`` seconds, and never before it stops
renewing: permits are never over-granted. A release or an acquire whose reply was lost
(timeout) leaves a lease that nobody renews: it expires, nothing leaks for longer.
An async acquire whose caller is cancelled mid-round-trip runs on, shielded (the caller's
``CancelledError`` is raised at once); if it granted, its lease (the id is the client's
own) is given straight back, so a cancelled task holds nothing once the script answers.
An async release is shielded too.

Waiting: callers wait in their process's FIFO ``PermitQueue``; a grant from another
process cannot wake them, so while anyone waits a poller thread retries the head's
acquire, every 2 ms at first, backing off to 50 ms while nothing frees up, and at once
when this process releases. The poller also says how many wait here, for the operator's
view: ``<ns>:pool:{<key>}:waiting``, a hash of ``<host>:<pid>`` -> ``<count>:<expiry us>``,
written when the count changes (at most every ``_REPORT_EVERY`` seconds, and at once when
nobody waits any more: the entry is deleted) or half its life (``RedisStore.lease``) has
passed; a snapshot ignores expired entries, so a dead process's waiters vanish with it. Across processes, the first poller to ask after a release wins.
When the store fails (no answer within its timeout, or an error answer), every waiter is
woken with the ``StoreUnavailableError``: it fails closed, or proceeds with ``fail_open``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import os
import socket
import threading
import time
import uuid

from typing import TYPE_CHECKING, Any, Final

from resilience._bounded.pool import PermitQueue
from resilience._errors import StoreUnavailableError
from resilience._snapshot import PoolSnapshot
from resilience.stores._redis import NOW_LUA
from resilience.stores._redis_snapshot import View, read_one, text


if TYPE_CHECKING:
    from resilience._bounded.pool import PoolBackend
    from resilience._policies import BoundedPolicy
    from resilience.stores._redis import RedisStore


__all__ = [
    "COMMON_LUA",
    "RELEASE_LUA",
    "RedisPermitQueue",
    "RedisPoolBackend",
    "redis_permit_queue",
    "redis_pool_backend",
]

# ARGV: 1 now, 2 idle ttl ms, 3 lease us; then each script's own.
COMMON_LUA: Final = (
    NOW_LUA
    + """
local now = now_us()
local ttl = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local leases, weights = KEYS[1], KEYS[2]
local TOTAL = '#total'

local function purge()
  local dead = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
  if #dead == 0 then return end
  local freed = 0
  for _, id in ipairs(dead) do
    local w = redis.call('HGET', weights, id)
    if w then
      freed = freed + tonumber(w)
      redis.call('HDEL', weights, id)
    end
  end
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  redis.call('HINCRBY', weights, TOTAL, -freed)
end

local function used()
  return tonumber(redis.call('HGET', weights, TOTAL) or '0')
end

-- The idle ttl, or until the newest lease expires (its horizon), whichever is later.
local function keep()
  local ms = math.max(ttl, math.ceil(lease / 1000))
  redis.call('PEXPIRE', leases, ms)
  redis.call('PEXPIRE', weights, ms)
end
"""
)

# ARGV 4 limit, 5 weight, 6 lease id. Returns 1 (granted) or 0.
_ACQUIRE: Final = (
    COMMON_LUA
    + """
purge()
local weight = tonumber(ARGV[5])
if used() + weight > tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', leases, now + lease, ARGV[6])
redis.call('HSET', weights, ARGV[6], weight)
redis.call('HINCRBY', weights, TOTAL, weight)
keep()
return 1
"""
)

# ARGV 4 lease id. Returns the units given back (0: the lease was gone already).
RELEASE_LUA: Final = (
    COMMON_LUA
    + """
local w = redis.call('HGET', weights, ARGV[4])
if not w then return 0 end
redis.call('HDEL', weights, ARGV[4])
redis.call('ZREM', leases, ARGV[4])
redis.call('HINCRBY', weights, TOTAL, -tonumber(w))
return tonumber(w)
"""
)

# ARGV 4.. lease ids. Pushes each live lease's expiry out; returns how many it renewed.
# A lease past its expiry that no acquire has purged yet is revived: nobody got its units.
_RENEW: Final = (
    COMMON_LUA
    + """
local n = 0
for i = 4, #ARGV do
  if redis.call('ZSCORE', leases, ARGV[i]) then
    redis.call('ZADD', leases, now + lease, ARGV[i])
    n = n + 1
  end
end
if n > 0 then keep() end
return n
"""
)

# ARGV 4 limit. Returns the free units now.
_AVAILABLE: Final = COMMON_LUA + "purge()\nreturn tonumber(ARGV[4]) - used()\n"

# KEYS[1] the waiting hash. ARGV: 1 now, 2 life us, 3 holder, 4 count (0 deletes the entry).
# Writes only what changed, or an entry past half its life. Returns 1 if it wrote.
_WAITING: Final = (
    NOW_LUA
    + """
local now = now_us()
local life, holder, count = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if count == 0 then return redis.call('HDEL', KEYS[1], holder) end
local old = redis.call('HGET', KEYS[1], holder)
if old then
  local n, expiry = string.match(old, '^(%d+):(%d+)$')
  if tonumber(n) == count and tonumber(expiry) - now > life / 2 then return 0 end
end
redis.call('HSET', KEYS[1], holder, string.format('%d:%.17g', count, now + life))
redis.call('PEXPIRE', KEYS[1], math.ceil(life / 1000))
return 1
"""
)

_POLL_MIN: Final = 0.002
_POLL_MAX: Final = 0.05
_REPORT_EVERY: Final = 0.25  # seconds between two waiter counts sent while the count moves


def holder_name() -> str:
    """Name the process as the snapshot does: ``<host>:<pid>`` (as its lease ids begin)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class RedisPoolBackend:
    """
    One permit pool in Redis, as expiring leases (see the module docstring).

    Implements ``PoolBackend``; the ``a``-prefixed twins run on the asyncio client.
    """

    __slots__ = (
        "_giving_back",
        "_held",
        "_ids",
        "_keys",
        "_lease_us",
        "_lock",
        "_pid",
        "_prefix",
        "_renewer",
        "key",
        "lease",
        "limit",
        "store",
    )

    def __init__(self, store: RedisStore, key: str, limit: int, lease: float) -> None:
        self.store = store
        self.key = key
        self.limit = limit
        self.lease = lease
        self._lease_us = math.ceil(lease * 1_000_000)
        self._keys = (store.key("pool", key, "leases"), store.key("pool", key, "weights"))
        self._lock = threading.Lock()
        self._held: dict[int, list[str]] = {}  # weight -> ids of the leases this process holds
        self._renewer: threading.Thread | None = None
        self._pid = -1
        self._prefix = ""
        self._ids = itertools.count()
        self._giving_back: set[asyncio.Task[Any]] = set()  # leases of cancelled acquires

    # -- leases held by this process ------------------------------------------------------

    def _new_id(self) -> str:
        if self._pid != os.getpid():  # first use, or a forked child: leases of its own
            with self._lock:
                self._pid = os.getpid()
                self._prefix = f"{socket.gethostname()}:{self._pid}:{uuid.uuid4().hex[:8]}"
                self._held = {}
                self._renewer = None
        return f"{self._prefix}:{next(self._ids)}"

    def _hold(self, weight: int, lease_id: str) -> None:
        with self._lock:
            self._held.setdefault(weight, []).append(lease_id)
            if self._renewer is None:
                self._renewer = threading.Thread(
                    target=self._renew_loop, name=f"resilience-lease-{self.key}", daemon=True
                )
                self._renewer.start()

    def _unhold(self, weight: int) -> str | None:
        """Forget one lease of *weight* (any: equal weights are interchangeable)."""
        with self._lock:
            ids = self._held.get(weight)
            return ids.pop() if ids else None

    def held(self) -> int:
        """Return the units this process holds."""
        with self._lock:
            return sum(weight * len(ids) for weight, ids in self._held.items())

    def _renew_loop(self) -> None:
        """Renew every lease this process holds each lease/3 s; stop when it holds none."""
        while True:
            time.sleep(self.lease / 3)
            with self._lock:
                ids = [lease_id for group in self._held.values() for lease_id in group]
                if not ids:
                    self._renewer = None
                    return
            try:
                self.store.run(_RENEW, self._keys, self._argv(*ids), key=self.key)
            except StoreUnavailableError:
                continue  # try again next round; the leases last lease seconds

    def _argv(self, *extra: Any) -> list[Any]:
        return [self.store.now_arg(), self.store.ttl_ms, self._lease_us, *extra]

    # -- PoolBackend --------------------------------------------------------------------

    def try_acquire(self, weight: int) -> bool:
        """Take *weight* units if they are free now; return whether they were taken."""
        lease_id = self._new_id()
        argv = self._argv(self.limit, weight, lease_id)
        if not self.store.run(_ACQUIRE, self._keys, argv, key=self.key):
            return False
        self._hold(weight, lease_id)
        return True

    async def atry_acquire(self, weight: int, timeout: float | None = None) -> bool:
        """The async twin of ``try_acquire``; *timeout* bounds the round trip further."""
        lease_id = self._new_id()
        argv = self._argv(self.limit, weight, lease_id)
        reply = await self._shielded_acquire(_ACQUIRE, self._keys, argv, lease_id, timeout, bool)
        if not reply:
            return False
        self._hold(weight, lease_id)
        return True

    async def _shielded_acquire(
        self,
        script: str,
        keys: tuple[str, ...],
        argv: list[Any],
        lease_id: str,
        timeout: float | None,
        granted: Any,
    ) -> Any:
        """
        Run an acquire *script* that a cancelled caller cannot orphan a lease of.

        The round trip is shielded: the caller's ``CancelledError`` is raised at once, while
        the script's answer is still awaited (within the store's timeout); if it granted
        (``granted(reply)``), the lease *lease_id* (the client's own id) is given back.
        """
        pending = asyncio.ensure_future(
            self.store.arun(script, keys, argv, key=self.key, timeout=timeout)
        )
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            pending.add_done_callback(functools.partial(self._orphaned, lease_id, granted))
            raise

    def _orphaned(self, lease_id: str, granted: Any, pending: asyncio.Future[Any]) -> None:
        """A cancelled caller's acquire was granted after all: release that lease at once."""
        if pending.cancelled() or pending.exception() is not None or not granted(pending.result()):
            return  # refused, or no answer: nothing granted, or a lease nobody renews
        run = self.store.arun(RELEASE_LUA, self._keys, self._argv(lease_id), key=self.key)
        task = pending.get_loop().create_task(run)
        self._giving_back.add(task)
        task.add_done_callback(self._given_back)

    def _given_back(self, task: asyncio.Task[Any]) -> None:
        self._giving_back.discard(task)
        if not task.cancelled():
            task.exception()  # unreachable store: the lease expires by itself

    def release(self, weight: int) -> None:
        """Give back one lease of *weight* units (no-op if this process holds none)."""
        lease_id = self._unhold(weight)
        if lease_id is not None:
            self.store.run(RELEASE_LUA, self._keys, self._argv(lease_id), key=self.key)

    async def arelease(self, weight: int) -> None:
        """The async twin of ``release`` (shielded: a cancelled caller's still goes back)."""
        lease_id = self._unhold(weight)
        if lease_id is not None:
            run = self.store.arun(RELEASE_LUA, self._keys, self._argv(lease_id), key=self.key)
            await asyncio.shield(run)

    def available(self) -> int:
        """Return the free units now, across every process."""
        return int(self.store.run(_AVAILABLE, self._keys, self._argv(self.limit), key=self.key))

    def meta(self) -> dict[str, Any]:
        """The numbers the operator's view needs and Redis does not hold (see ``RedisStore``)."""
        return {"limit": self.limit, "lease": self.lease}

    def snapshot(self, key: str) -> PoolSnapshot:
        """Return the operator's view of this pool (plain reads: no script, no write)."""
        found: PoolSnapshot = read_one(self.store, "pool", key, self.meta())
        return found

    def __repr__(self) -> str:
        return f"<RedisPoolBackend {self.key!r} limit={self.limit} on {self.store.describe()}>"


class RedisPermitQueue(PermitQueue):
    """
    A ``PermitQueue`` whose grants are decided by a poller thread, never inline.

    Inline dispatch would run Redis round trips on an event loop's thread; and a release
    in another process cannot wake this queue, so while anyone waits the poller retries.
    """

    __slots__ = ("_poller", "_wake")

    def __init__(self, backend: PoolBackend) -> None:
        super().__init__(backend)
        self._wake = threading.Event()
        self._poller: threading.Thread | None = None

    def _dispatch(self) -> None:
        """Hand the work to the poller (the queue's lock is held)."""
        if self.waiters:
            if self._poller is None:
                self._poller = threading.Thread(
                    target=self._poll, name="resilience-permit-poller", daemon=True
                )
                self._poller.start()
            self._wake.set()

    def _poll(self) -> None:
        """Grant the head while its weight fits; retry with short sleeps while anyone waits."""
        interval = _POLL_MIN
        reported = (0, 0.0)  # the waiter count this poller last sent, and when
        while True:
            with self._lock:
                before = len(self.waiters)
                try:
                    PermitQueue._dispatch(self)
                except StoreUnavailableError as error:
                    # An outage: every waiter hears of it now (within the store's timeout)
                    # and fails closed or proceeds per its policy, instead of polling on.
                    self._fail_all(error)
                waiting = len(self.waiters)
                if not waiting:
                    self._poller = None
            reported = self._report(waiting, reported)
            if not waiting:
                return
            moved = waiting < before
            interval = _POLL_MIN if moved else min(interval * 2, _POLL_MAX)
            self._wake.wait(interval)
            self._wake.clear()

    def _report(self, waiting: int, reported: tuple[int, float]) -> tuple[int, float]:
        """Tell the store how many wait here (the poller's thread: never a caller's)."""
        sent, at = reported
        now = time.monotonic()
        if waiting == sent == 0:
            return reported  # nothing said yet: nothing to take back
        if waiting == sent and now - at < _REPORT_EVERY:
            return reported
        if waiting != sent and waiting and now - at < _REPORT_EVERY:
            return reported  # moving fast: the next report in a moment
        backend: Any = self.backend
        store = backend.store
        argv = [store.now_arg(), round(store.lease * 1_000_000), holder_name(), waiting]
        try:
            store.run(_WAITING, (store.key("pool", backend.key, "waiting"),), argv, key=backend.key)
        except Exception:  # advisory (a closed store too): next round, or the entry expires
            return reported
        return waiting, now

    async def acquire_async(self, weight: int, timeout: float | None, clock: Any) -> bool:
        """Like ``PermitQueue.acquire_async``, with the first try on the asyncio client."""
        backend: Any = self.backend
        if not self.waiters and await backend.atry_acquire(weight, timeout or None):
            return True
        return await self._queue_async(weight, timeout, clock)

    async def arelease(self, weight: int) -> None:
        """Give back *weight* units on the asyncio client; the poller lets waiters in."""
        backend: Any = self.backend
        await backend.arelease(weight)
        if self.waiters:
            self._wake.set()


def redis_pool_backend(key: str, policy: BoundedPolicy, store: RedisStore) -> RedisPoolBackend:
    """Build the Redis pool of *key* from *policy* (the ``"pool"`` factory; adaptive or fixed)."""
    if not isinstance(policy.limit, int):
        from resilience._bounded.redis_adaptive import (  # noqa: PLC0415 - circular
            RedisAdaptivePoolBackend,
        )

        return RedisAdaptivePoolBackend(store, key, policy.limit, store.lease)
    return RedisPoolBackend(store, key, policy.limit, store.lease)


def redis_permit_queue(key: str, backend: PoolBackend, store: RedisStore) -> RedisPermitQueue:
    """Build this process's waiting room of *key*'s pool (the ``"pool.queue"`` factory)."""
    return RedisPermitQueue(backend)


# -- the operator's view: plain reads of the leases, never a script ----------------------------


def _reads(store: RedisStore, key: str) -> list[Any]:
    return [
        ("zrange", (store.key("pool", key, "leases"), 0, -1), {"withscores": True}),
        ("hgetall", (store.key("pool", key, "weights"),)),
        ("hgetall", (store.key("pool", key, "adaptive"),)),
        ("hgetall", (store.key("pool", key, "waiting"),)),
    ]


def _waiting(store: RedisStore, key: str, reply: Any, now: int) -> int:
    """Waiters of every process (expired entries left out); this process's own, live."""
    own = store._backends.get(("pool.queue", key))
    me = holder_name() if own is not None else None
    total = len(own.waiters) if own is not None else 0
    for holder, value in (reply or {}).items():
        count, _, expiry = text(value).partition(":")
        if text(holder) != me and count.isdigit() and expiry and float(expiry) > now:
            total += int(count)
    return total


def _build(
    store: RedisStore,
    key: str,
    replies: list[Any],
    now: int,
    wall: float,
    meta: dict[str, Any] | None,
) -> PoolSnapshot | None:
    leases = [(text(lease), int(score)) for lease, score in replies[0] or ()]
    weights = {text(k): int(v) for k, v in (replies[1] or {}).items()}
    state = {text(k): v for k, v in (replies[2] or {}).items()}  # an adaptive pool's state
    live_limit = int(state["limit"]) if "limit" in state else None
    if live_limit is None and meta is not None and "initial" in meta:
        live_limit = int(meta["initial"])  # adaptive, nothing learnt yet (or idle and expired)
    if not leases and not weights and not replies[3] and meta is None and live_limit is None:
        return None
    live = [(lease, expiry) for lease, expiry in leases if expiry > now]
    holders: dict[str, int] = {}
    for lease, _ in live:
        holder = ":".join(lease.split(":")[:2])
        holders[holder] = holders.get(holder, 0) + weights.get(lease, 0)
    oldest = None
    if live and meta is not None:
        renewed = min(expiry for _, expiry in live) - math.ceil(float(meta["lease"]) * 1e6)
        oldest = max(0, now - renewed) / 1_000_000
    return PoolSnapshot(
        key=key,
        limit=None if meta is None else int(meta["limit"]),
        live_limit=live_limit,
        in_use=sum(holders.values()),
        waiting=_waiting(store, key, replies[3], now),
        oldest_lease=oldest,
        holders=holders,
    )


VIEW: Final = View(("leases", "weights", "adaptive", "waiting"), _reads, _build)
