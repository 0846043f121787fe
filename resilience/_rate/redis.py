"""
The Redis backend of ``@rate_limited``: the sliding log of reserved starts, kept in Redis.

Same rule and same accounting as ``RateState`` (read its module docstring), as Redis data:

- ``<ns>:rate:{<key>}:log``: a list of the reserved start times (whole microseconds of
  server time), in reservation order, so non-decreasing. A reservation is decided and
  appended by one script, so callers in different processes are served in the order they
  reach Redis. Its last entry may be the window flag ``w`` (below).
- ``<ns>:rate:{<key>}:starts``: the same for actual starts (``admit``).
- ``<ns>:window:{<key>}``: the key's backoff window (see ``_rate.redis_window``), one more
  lower bound on the start.

Every key shares the hash tag ``{<key>}``, so one script touches one cluster slot. Every
method is one Lua script, one round trip (EVALSHA); a decision reads only the entries it
needs (``LINDEX`` at -1, -rate, -burst: no scan, no pop loop). Each time a list's length
crosses a multiple of 128 (or reaches 2 x *rate*) the script drops its prefix that can no
longer constrain a start: entries that left the window (trimmed by time: a binary search
with ``LINDEX``, one ``LTRIM``) and entries before the last *rate*, so memory follows the
calls of the last *per* seconds.

A start with room (the common decision) runs inline (``_FAST``), before any Lua function
is defined: ``TIME``, ``LINDEX log -1``, ``RPUSH`` on each list, and nothing else while
the lists are shorter than the burst (``RPUSH`` answers the length, so the entries at
-rate and -burst are read, after the push, only when they exist; a push the rule refuses
is popped again and the general path decides). Two things make that safe:

- The window flag. ``extend`` pushes ``w`` after the log's newest entry when the window now
  ends after it; a reservation behind the window pops it (its own time is then past the
  window), ``clear`` pops it, a settle that drops the newest entry below an open window
  pushes it. So with no flag the window cannot hold a start back beyond the log's newest
  entry, and only a new log (no entry to carry a flag) reads the window key.
- Expiries per bucket of time (``keep``): a list lives until the end of its newest entry's
  bucket (a 16th of the longer of ``idle_ttl`` and *per*, at most 1 s) plus the longer of
  ``idle_ttl`` and *per* + slack, and the starts list at least as long as that for the
  log's newest entry. A push of *now* in the bucket of the log's newest entry needs no
  ``PEXPIRE`` then (one per list per bucket): an idle list still lives past its horizon and
  its ``idle_ttl``, and at most a bucket longer. ``tests/rate/test_redis_fast_path.py``
  holds both to ``RateState`` and to simulated expiry.

So an immediate start costs 4 commands (5 with a burst, 6 when the lists are longer than the
rate), plus about 0.1 for the amortized trim and expiry. Why not fewer (one packed key,
``TIME`` + ``GET`` + ``SET PX``): see ``benchmarks/results/redis.md``.
"""

from __future__ import annotations

import math

from typing import TYPE_CHECKING, Any

from resilience._snapshot import LimiterSnapshot, epoch_of
from resilience.stores._redis import RedisStore
from resilience.stores._redis_snapshot import View, read_one


if TYPE_CHECKING:
    from resilience._policies import RateLimitPolicy


__all__ = ["RedisRateBackend", "redis_rate_backend"]

# The arguments the immediate path needs, and the time, as plain locals. No Lua function is
# defined before the immediate path (``_FAST``) has answered: creating the closures of
# ``_COMMON`` costs, on every call, about what two commands do, and the common decision needs
# none of them (nor most arguments: ``_REST`` reads those after it).
_HEAD = """
local now
if ARGV[1] ~= '' then now = tonumber(ARGV[1]) else
  local t = redis.call('TIME')  -- NOW_LUA's clock, inline (see NOW_LUA)
  now = t[1] * 1000000 + t[2]
end
local rate = tonumber(ARGV[2])
local per = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local ttl = tonumber(ARGV[6])
local log, starts, window = KEYS[1], KEYS[2], KEYS[3]
-- A list's expiry is set for the bucket of its newest entry (see keep): buckets of a 16th of
-- the longer of idle ttl and per, at most a second, the same for every process of a limiter.
local bucket = ttl * 1000
if per > bucket then bucket = per end
bucket = bucket / 16
if bucket > 1000000 then bucket = 1000000 end
"""

_REST = """
local gap = tonumber(ARGV[5])
local slack = tonumber(ARGV[8]) or 0  -- widens the check of actual starts (see admit)
local life = ttl * 1000  -- how long a list outlives its newest entry's bucket (see keep)
if per + slack > life then life = per + slack end
"""

# RateState.reserve's common branch (a start now, with room), inline and before any function:
# push first, then check the entries the push moved to -rate-1 and -burst-1, so a list
# shorter than the burst is not read at all (RPUSH answers its length); a push the rule
# refuses is popped again. A window or a reservation ahead goes straight to the general path;
# the one read tells both (the window flag: see the module docstring); only a new log reads
# the window key.
# The expiry is refreshed only when *now* is in a later bucket than the log's previous newest
# entry (see keep); a trim to do (one push in 128) is left to the tail of _RESERVE.
_FAST = """
local fast, n, m
local last = redis.call('LINDEX', log, -1)
local open
if not last then
  local floor = redis.call('GET', window)
  open = floor and tonumber(floor) > now
elseif last == 'w' then
  open = true
else
  last = tonumber(last)
  open = last > now
end
if not open then
  local stamp = string.format('%d', now)  -- whole microseconds, as every script writes them
  n = redis.call('RPUSH', log, stamp)
  if (n > rate and tonumber(redis.call('LINDEX', log, -rate - 1)) + per > now)
    or (n > burst and burst < rate
        and tonumber(redis.call('LINDEX', log, -burst - 1)) + tonumber(ARGV[5]) > now) then
    redis.call('RPOP', log)  -- no room now: the general path reserves a later turn
  else
    m = redis.call('RPUSH', starts, stamp)
    local need = now
    if m > burst then
      local slack = tonumber(ARGV[8]) or 0
      if m > rate then
        local t = tonumber(redis.call('LINDEX', starts, -rate - 1)) + per + slack
        if t > need then need = t end
      end
      if burst < rate then
        local t = tonumber(redis.call('LINDEX', starts, -burst - 1)) + tonumber(ARGV[5]) + slack
        if t > need then need = t end
      end
      if need > now then
        redis.call('RPOP', starts)  -- reserved now, started a little later (see admit)
        m = 0
      end
    end
    local edge = now - now % bucket
    local moved = not last or last - last % bucket ~= edge
    if moved or m == 1 then  -- a later bucket, or a new starts list: its first expiry
      local life = ttl * 1000
      local slack = tonumber(ARGV[8]) or 0
      if per + slack > life then life = per + slack end
      local ms = math.ceil((edge + bucket + life - now) / 1000)
      if moved then redis.call('PEXPIRE', log, ms) end
      redis.call('PEXPIRE', starts, ms)
    end
    fast = need - now
    if n % 128 ~= 0 and n < 2 * rate and (m % 128 ~= 0 or m == 0) and m < 2 * rate then
      return fast
    end
  end
end
"""

_COMMON = """
local function fmt(x) return string.format('%d', x) end

local function window_end()
  local e = redis.call('GET', window)
  if e then return tonumber(e) end
  return nil
end

local function at(name, index)
  local v = redis.call('LINDEX', name, index)
  if v then return tonumber(v) end
  return nil
end

-- How many entries the window flag takes at the log's end (0 or 1).
local function flagged()
  if redis.call('LINDEX', log, -1) == 'w' then return 1 end
  return 0
end

-- The log's newest reservation (the flag skipped), or nil.
local function newest()
  return at(log, -1 - flagged())
end

-- The expiry of a list whose newest entry is at most *v*: until the end of *v*'s bucket plus
-- the longer of idle ttl and per + slack. Invariant (every script keeps it): each list lives
-- until its own newest entry's bucket end + life, and the starts list also until the log's
-- newest entry's bucket end + life. So a push of *now* into both lists needs no expiry
-- while *now* is in the bucket of the log's newest entry (_FAST): both already live past
-- now + life, that is past idle ttl and past the moment *now* leaves the (slack-widened)
-- window; an idle list lives at most a bucket (a 16th, at most 1 s) longer than that.
local function keep(name, v)
  local ms = math.ceil((v - v % bucket + bucket + life - now) / 1000)
  redis.call('PEXPIRE', name, ms)
end

-- After a push that left *n* entries (*added* of them new): drop what can no longer
-- constrain a start: entries that left the window (at or before now - per - slack) and
-- entries before the last *rate*. Done when the length crosses a multiple of 128 or reaches
-- 2 x rate, so amortized: one LINDEX of the head, and when it is stale a binary search
-- (LINDEX) and one LTRIM, per 128 entries. A list is in time order: what goes is a prefix.
-- The newest entry always stays, so a trim never changes what keep relies on.
local function trim(name, n, added)
  if n < 2 * rate and math.floor(n / 128) == math.floor((n - added) / 128) then return end
  local edge = now - per - slack
  local low, high = 0, n - 1  -- the last entry is at least now: it stays
  if tonumber(redis.call('LINDEX', name, 0)) > edge then high = 0 end
  while low < high do
    local mid = math.floor((low + high) / 2)
    if tonumber(redis.call('LINDEX', name, mid)) > edge then high = mid else low = mid + 1 end
  end
  if n - low > rate then low = n - rate end
  if low > 0 then redis.call('LTRIM', name, low, -1) end
end

-- Append *t* (see trim). The rule reads the entries at -1, -rate and -burst only.
local function push(name, t)
  trim(name, redis.call('RPUSH', name, fmt(t)), 1)
end

-- RateState.admit: record an actual start now, or return the microseconds to wait first.
-- *slack* covers the jitter between this server reading and where the call really begins.
-- *top*: the log's newest entry when the caller knows it (read otherwise), for keep.
local function admit(top)
  local need = now
  local first = at(starts, -rate)
  if first and first + per + slack > need then need = first + per + slack end
  if burst < rate then
    local edge = at(starts, -burst)
    if edge and edge + gap + slack > need then need = edge + gap + slack end
  end
  if need > now then return need - now end
  push(starts, now)
  if top == nil then top = newest() end
  if top == nil or top < now then top = now end
  keep(starts, top)
  return 0
end

-- RateState.reserve: reserve the earliest allowed start within *max_wait* (< 0: no limit).
-- An entry older than the window gives a bound in the past: no need to drop it first.
local function reserve(max_wait)
  local start = now
  local floor = window_end()
  if floor and floor > start then start = floor end
  local off = flagged()
  local last = at(log, -1 - off)
  if last then
    if last > start then start = last end
    local first = at(log, -rate - off)
    if first and first + per > start then start = first + per end
    if burst < rate then
      local edge = at(log, -burst - off)
      if edge and edge + gap > start then start = edge + gap end
    end
  end
  local wait = start - now
  if max_wait >= 0 and wait > max_wait then return -wait end
  if off == 1 then redis.call('RPOP', log) end  -- the flag goes: *start* is past the window
  push(log, start)
  keep(log, start)
  keep(starts, start)
  if wait > 0 then return wait end
  return admit(start)
end
"""

_RESERVE = (
    _HEAD
    + _FAST
    + _REST
    + _COMMON
    + """
if fast then  -- the immediate path's push crossed a trim point
  trim(log, n, 1)
  if m > 0 then trim(starts, m, 1) end
  return fast
end
return reserve(tonumber(ARGV[7]))
"""
)

_ADMIT = _HEAD + _REST + _COMMON + "return admit()\n"

# After a sleep: start (admit) unless the backoff window was extended meanwhile, then
# reserve a new turn behind it; one decision, so one script.
_RESUME = (
    _HEAD
    + _REST
    + _COMMON
    + """
local floor = window_end()
if floor and floor > now then return reserve(tonumber(ARGV[7])) end
return admit()
"""
)

_PENDING = (
    _HEAD
    + _REST
    + _COMMON
    + """
local entries = redis.call('LRANGE', log, 0, -1)
local n = 0
for i = #entries, 1, -1 do
  local t = tonumber(entries[i])  -- nil: the window flag
  if t then
    if t <= now then break end
    n = n + 1
  end
end
return n
"""
)


# -- weighted calls: RateState.reserve_units / admit_units / settle_units, as Lua ----------
# A call of cost c is c copies of its start in the lists; ARGV[9] is the cost.
_UNITS = (
    _HEAD
    + _REST
    + _COMMON
    + """
local cost = tonumber(ARGV[9])

local function bound(list, start, span, spacing, off)
  local count = redis.call('LLEN', list) - off
  local back = rate - cost + 1
  if count >= back then
    local t = tonumber(redis.call('LINDEX', list, -back - off)) + span
    if t > start then start = t end
  end
  if burst < rate then
    local c = cost
    if c > burst then c = burst end
    local bback = burst - c + 1
    if count >= bback then
      local e = tonumber(redis.call('LINDEX', list, -bback - off)) + spacing
      if e > start then start = e end
    end
  end
  return start
end

local function push(list, value, n)
  local values = {}
  for i = 1, n do values[i] = value end
  local size = 0
  for i = 1, n, 1000 do
    size = redis.call('RPUSH', list, unpack(values, i, math.min(i + 999, n)))
  end
  trim(list, size, n)
end

local function admit_units(top)
  local need = bound(starts, now, per + slack, gap + slack, 0)
  if need > now then return need - now end
  push(starts, fmt(now), cost)
  if top == nil then top = at(log, -1) end
  if top == nil or top < now then top = now end
  keep(starts, top)
  return 0
end

local function reserve_units(max_wait)
  local start = now
  local floor = window_end()
  if floor and floor > start then start = floor end
  local off = flagged()
  local last = at(log, -1 - off)
  if last and last > start then start = last end
  start = bound(log, start, per, gap, off)
  local wait = start - now
  if max_wait >= 0 and wait > max_wait then return {-wait, start, -1} end
  if off == 1 then redis.call('RPOP', log) end  -- the flag goes: *start* is past the window
  push(log, fmt(start), cost)
  keep(log, start)
  keep(starts, start)
  if wait > 0 then return {wait, start, -1} end
  local need = admit_units(start)
  if need == 0 then return {0, start, now} end
  return {need, start, -1}
end
"""
)

_RESERVE_UNITS = _UNITS + "return reserve_units(tonumber(ARGV[7]))\n"

_RESUME_UNITS = (
    _UNITS
    + """
local floor = window_end()
if floor and floor > now then return reserve_units(tonumber(ARGV[7])) end
local need = admit_units()
if need == 0 then return {0, -1, now} end
return {need, -1, -1}
"""
)

# ARGV[10] the reservation, ARGV[11] the actual start (microseconds; -1: none), ARGV[12]
# the units to give back (< 0) or charge (> 0), as of those times.
_SETTLE_UNITS = (
    _HEAD
    + _REST
    + _COMMON
    + """
local delta = tonumber(ARGV[12])
local function settle(list, stamp)
  if stamp < 0 then return end
  local value = fmt(stamp)
  if delta < 0 then
    redis.call('LREM', list, delta, value)  -- never the flag
    return
  end
  local off = 0
  if list == log then off = flagged() end
  if off == 1 then redis.call('RPOP', list) end  -- set aside while the list is rebuilt
  local items = redis.call('LRANGE', list, 0, -1)
  local out, placed = {}, false
  for i = 1, #items do
    if not placed and tonumber(items[i]) > stamp then
      for _ = 1, delta do out[#out + 1] = value end
      placed = true
    end
    out[#out + 1] = items[i]
  end
  if not placed then
    for _ = 1, delta do out[#out + 1] = value end
  end
  redis.call('DEL', list)
  for i = 1, #out, 1000 do
    redis.call('RPUSH', list, unpack(out, i, math.min(i + 999, #out)))
  end
  redis.call('LTRIM', list, -rate, -1)
  if off == 1 then redis.call('RPUSH', list, 'w') end
end

-- A rebuilt list has lost its expiry: give both lists what keep's invariant asks for their
-- newest entries, and a settled list at least the idle ttl (a settle changed it), never
-- shortening one.
local function keep_both(settled)
  local top = newest() or 0
  local latest = at(starts, -1) or 0
  if latest > top then top = latest end
  local ms = math.ceil((top - top % bucket + bucket + life - now) / 1000)
  for _, name in ipairs({log, starts}) do
    local want = ms
    if settled[name] and want < ttl then want = ttl end
    local left = redis.call('PTTL', name)
    if left == -1 or (left >= 0 and left < want) then redis.call('PEXPIRE', name, want) end
  end
end
local reserved, started = tonumber(ARGV[10]), tonumber(ARGV[11])
settle(log, reserved)
settle(starts, started)
keep_both({[log] = reserved >= 0, [starts] = started >= 0})
-- A refund may have dropped the log's newest entry below an open window: flag it.
local ends, top = window_end(), newest()
if ends and top and ends > top and flagged() == 0 then redis.call('RPUSH', log, 'w') end
return 1
"""
)


def _stamp(micros: int) -> float:
    return math.nan if micros < 0 else micros / 1_000_000


def _units_reply(reply: Any) -> tuple[float, float, float]:
    wait, reserved, started = (int(part) for part in reply)
    return wait / 1_000_000, _stamp(reserved), _stamp(started)


def _stamp_arg(seconds: float) -> int:
    return -1 if math.isnan(seconds) else round(seconds * 1_000_000)


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

    # -- weighted calls (cost, settle) ------------------------------------------------------

    def _units_argv(self, max_wait: float | None, cost: int) -> list[Any]:
        return [*self._argv(max_wait), cost]

    def reserve_units(self, max_wait: float, cost: int) -> tuple[float, float, float]:
        """``reserve`` for *cost* units: ``(wait, reserved, started)`` (see ``RateState``)."""
        argv = self._units_argv(max_wait, cost)
        return _units_reply(self.store.run(_RESERVE_UNITS, self._keys, argv, key=self.key))

    async def areserve_units(self, max_wait: float, cost: int) -> tuple[float, float, float]:
        """The async twin of ``reserve_units``."""
        argv = self._units_argv(max_wait, cost)
        reply = await self.store.arun(_RESERVE_UNITS, self._keys, argv, key=self.key)
        return _units_reply(reply)

    def resume_units(self, max_wait: float, cost: int) -> tuple[float, float, float]:
        """``resume`` for *cost* units: ``(wait, reserved, started)``; reserved NaN if kept."""
        argv = self._units_argv(max_wait, cost)
        return _units_reply(self.store.run(_RESUME_UNITS, self._keys, argv, key=self.key))

    async def aresume_units(self, max_wait: float, cost: int) -> tuple[float, float, float]:
        """The async twin of ``resume_units``."""
        argv = self._units_argv(max_wait, cost)
        reply = await self.store.arun(_RESUME_UNITS, self._keys, argv, key=self.key)
        return _units_reply(reply)

    def _settle_argv(self, reserved: float, started: float, delta: int) -> list[Any]:
        return [*self._units_argv(None, 1), _stamp_arg(reserved), _stamp_arg(started), delta]

    def settle_units(self, reserved: float, started: float, delta: int) -> None:
        """Give back or charge *delta* units as of the call's start (see ``RateState``)."""
        argv = self._settle_argv(reserved, started, delta)
        self.store.run(_SETTLE_UNITS, self._keys, argv, key=self.key)

    async def asettle_units(self, reserved: float, started: float, delta: int) -> None:
        """The async twin of ``settle_units``."""
        argv = self._settle_argv(reserved, started, delta)
        await self.store.arun(_SETTLE_UNITS, self._keys, argv, key=self.key)

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


_FLAGS = (b"w", "w")
"""The window flag, as bytes or text (whichever the client decodes to): not a reservation."""


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
    log = [int(x) for x in replies[0] or () if x not in _FLAGS]
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
