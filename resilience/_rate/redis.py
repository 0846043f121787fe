"""
The Redis backend of ``@rate_limited``: the sliding log of reserved starts, kept in Redis.

Same rule and same accounting as ``RateState`` (read its module docstring), as Redis data:

- ``<ns>:rate:<key>:log``: a list of the last *rate* reserved start times (whole
  microseconds of server time), in reservation order, so non-decreasing. A reservation
  is decided and appended by one script, so callers in different processes are served in
  the order they reach Redis.
- ``<ns>:rate:<key>:starts``: a list of the last *rate* actual starts (``admit``).
- ``<ns>:window:<key>``: the key's backoff window (see ``_rate.redis_window``), read by the same
  script as one more lower bound on the start.

Every method is one Lua script, one round trip (EVALSHA); every script PEXPIREs what it
writes, so an idle budget disappears after the store's ``idle_ttl`` (or after its last
reservation has left the window, whichever is later).
"""

from __future__ import annotations

import math

from typing import TYPE_CHECKING, Any

from resilience._snapshot import LimiterSnapshot, epoch_of
from resilience.stores._redis import NOW_LUA, RedisStore
from resilience.stores._redis_snapshot import View, read_one


if TYPE_CHECKING:
    from resilience._policies import RateLimitPolicy


__all__ = ["RedisRateBackend", "redis_rate_backend"]

_COMMON = (
    NOW_LUA
    + """
local now = now_us()
local rate = tonumber(ARGV[2])
local per = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local gap = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
local slack = tonumber(ARGV[8]) or 0  -- widens the check of actual starts (see admit)
local log, starts, window = KEYS[1], KEYS[2], KEYS[3]

local function fmt(x) return string.format('%d', x) end

local function window_end()
  local e = redis.call('GET', window)
  if e then return tonumber(e) end
  return nil
end

-- Keep a list alive for at least its idle ttl and until *until_us* has left the window.
local function keep(name, until_us)
  local ms = math.ceil((until_us + per - now) / 1000)
  if ms < ttl then ms = ttl end
  redis.call('PEXPIRE', name, ms)
end

-- RateState.admit: record an actual start now, or return the microseconds to wait first.
-- *slack* covers the jitter between this server reading and where the call really begins.
local function admit()
  local count = redis.call('LLEN', starts)
  local need = now
  if count >= rate then
    local first = tonumber(redis.call('LINDEX', starts, -rate)) + per + slack
    if first > need then need = first end
  end
  if burst < rate and count >= burst then
    local edge = tonumber(redis.call('LINDEX', starts, -burst)) + gap + slack
    if edge > need then need = edge end
  end
  if need > now then return need - now end
  redis.call('RPUSH', starts, fmt(now))
  if count >= rate then redis.call('LTRIM', starts, -rate, -1) end
  keep(starts, now)
  return 0
end

-- RateState.reserve: reserve the earliest allowed start within *max_wait* (< 0: no limit).
local function reserve(max_wait)
  while true do  -- drop reservations no window that matters holds any more
    local head = redis.call('LINDEX', log, 0)
    if not head or tonumber(head) + per > now then break end
    redis.call('LPOP', log)
  end
  local start = now
  local floor = window_end()
  if floor and floor > start then start = floor end
  local count = redis.call('LLEN', log)
  if count > 0 then
    local last = tonumber(redis.call('LINDEX', log, -1))
    if last > start then start = last end
    if count >= rate then
      local first = tonumber(redis.call('LINDEX', log, -rate)) + per
      if first > start then start = first end
    end
    if burst < rate and count >= burst then
      local edge = tonumber(redis.call('LINDEX', log, -burst)) + gap
      if edge > start then start = edge end
    end
  end
  local wait = start - now
  if max_wait >= 0 and wait > max_wait then return -wait end
  redis.call('RPUSH', log, fmt(start))
  if count >= rate then redis.call('LTRIM', log, -rate, -1) end
  keep(log, start)
  if wait > 0 then return wait end
  return admit()
end
"""
)

_RESERVE = _COMMON + "return reserve(tonumber(ARGV[7]))\n"

_ADMIT = _COMMON + "return admit()\n"

# After a sleep: start (admit) unless the backoff window was extended meanwhile, then
# reserve a new turn behind it; one decision, so one script.
_RESUME = (
    _COMMON
    + """
local floor = window_end()
if floor and floor > now then return reserve(tonumber(ARGV[7])) end
return admit()
"""
)

_PENDING = (
    _COMMON
    + """
local entries = redis.call('LRANGE', log, 0, -1)
local n = 0
for i = #entries, 1, -1 do
  if tonumber(entries[i]) <= now then break end
  n = n + 1
end
return n
"""
)


def _micros(seconds: float) -> int:
    return math.ceil(seconds * 1_000_000)


class RedisRateBackend:
    """
    One rate budget in Redis (see the module docstring); implements ``RateBackend``.

    Every method is one script round trip; the ``a``-prefixed twins run on the asyncio
    client, so an async caller never blocks its loop.
    """

    __slots__ = ("_args", "_keys", "burst", "key", "per", "rate", "store")

    def __init__(self, store: RedisStore, key: str, rate: int, per: float, burst: int | None):
        self.store = store
        self.key = key
        self.rate = rate
        self.per = per
        self.burst = rate if burst is None else burst
        self._keys = (
            store.key("rate", key, "log"),
            store.key("rate", key, "starts"),
            store.key("window", key),
        )
        gap = per * self.burst / rate
        # ARGV[2:7]: rate, per, burst, gap (whole microseconds, rounded up: never looser
        # than the rule), idle ttl in ms.
        self._args = (rate, _micros(per), self.burst, _micros(gap), store.ttl_ms)

    def _argv(self, max_wait: float | None = None) -> list[Any]:
        limit = -1 if max_wait is None or math.isinf(max_wait) else _micros(max_wait)
        store = self.store
        # ARGV[8]: slack in microseconds: the test clock's (none on virtual time), else the
        # store's allowance for network and scheduling jitter.
        clock = store.clock
        slack = store.slack if clock is None else getattr(clock, "slack", 0.0)
        return [store.now_arg(), *self._args, limit, _micros(slack)]

    def reserve(self, max_wait: float) -> float:
        """Reserve the earliest allowed start within *max_wait* seconds (see ``RateBackend``)."""
        reply = self.store.run(_RESERVE, self._keys, self._argv(max_wait), key=self.key)
        return int(reply) / 1_000_000

    async def areserve(self, max_wait: float, timeout: float | None = None) -> float:
        """The async twin of ``reserve``; *timeout* bounds the round trip further."""
        reply = await self.store.arun(
            _RESERVE, self._keys, self._argv(max_wait), key=self.key, timeout=timeout
        )
        return int(reply) / 1_000_000

    def admit(self) -> float:
        """Record an actual start now if the rule allows it (see ``RateBackend``)."""
        return int(self.store.run(_ADMIT, self._keys, self._argv(), key=self.key)) / 1_000_000

    def resume(self, max_wait: float) -> float:
        """After a wait: start now, or the next wait (see ``RateBackend``)."""
        reply = self.store.run(_RESUME, self._keys, self._argv(max_wait), key=self.key)
        return int(reply) / 1_000_000

    async def aresume(self, max_wait: float, timeout: float | None = None) -> float:
        """The async twin of ``resume``."""
        reply = await self.store.arun(
            _RESUME, self._keys, self._argv(max_wait), key=self.key, timeout=timeout
        )
        return int(reply) / 1_000_000

    def pending(self) -> int:
        """Return how many reserved starts lie in the future."""
        return int(self.store.run(_PENDING, self._keys, self._argv(), key=self.key))

    async def apending(self) -> int:
        """The async twin of ``pending``."""
        return int(await self.store.arun(_PENDING, self._keys, self._argv(), key=self.key))

    def meta(self) -> dict[str, Any]:
        """The numbers the operator's view needs and Redis does not hold (see ``RedisStore``)."""
        return {"rate": self.rate, "per": self.per, "burst": self.burst}

    def snapshot(self, key: str) -> LimiterSnapshot:
        """Return the operator's view of this budget (plain reads: no script, no write)."""
        found: LimiterSnapshot = read_one(self.store, "rate", key, self.meta())
        return found

    def __repr__(self) -> str:
        return (
            f"<RedisRateBackend {self.key!r} {self.rate} per {self.per:g} s, "
            f"burst {self.burst} on {self.store.describe()}>"
        )


def redis_rate_backend(key: str, policy: RateLimitPolicy, store: RedisStore) -> RedisRateBackend:
    """Build the Redis backend of *key*'s budget from *policy* (the ``"rate"`` factory)."""
    per = policy.per
    assert isinstance(per, float)
    return RedisRateBackend(store, key, policy.rate, per, policy.burst)


# -- the operator's view: plain reads of the logs and the window, never a script ---------------


def _reads(store: RedisStore, key: str) -> list[Any]:
    return [
        ("lrange", (store.key("rate", key, "log"), 0, -1)),
        ("lrange", (store.key("rate", key, "starts"), 0, -1)),
        ("get", (store.key("window", key),)),
    ]


def _build(
    store: RedisStore,
    key: str,
    replies: list[Any],
    now: int,
    wall: float,
    meta: dict[str, Any] | None,
) -> LimiterSnapshot | None:
    log = [int(x) for x in replies[0] or ()]
    starts = [int(x) for x in replies[1] or ()]
    end = None if replies[2] is None else int(replies[2])
    left = max(0, end - now) if end is not None else 0
    window_end = None
    if end is not None and left > 0:
        window_end = epoch_of(end / 1_000_000, now / 1_000_000, wall)
    if not log and not starts and end is None and meta is None:
        return None
    rate = per = burst = None
    ahead = sum(1 for t in log if t > now)
    waits = ahead > 0
    started = len(starts)
    if meta is not None:
        rate, per, burst = int(meta["rate"]), float(meta["per"]), int(meta["burst"])
        per_us = _micros(per)
        started = sum(1 for t in starts if now - per_us < t <= now)
        live = [t for t in log if t + per_us > now]
        if len(live) >= rate and live[-rate] + per_us > now:
            waits = True
        if burst < rate and len(live) >= burst and live[-burst] + _micros(per * burst / rate) > now:
            waits = True
    return LimiterSnapshot(
        key=key,
        rate=rate,
        per=per,
        burst=burst,
        starts=started,
        waiting=ahead,
        saturated=waits or left > 0,
        window_remaining=left / 1_000_000,
        window_ends_at=window_end,
    )


VIEW = View(("log", "starts"), _reads, _build)
