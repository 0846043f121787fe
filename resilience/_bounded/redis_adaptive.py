"""
The Redis twin of ``AdaptivePoolBackend``: one live limit per key, fed by every process.

The permits are the fixed Redis pool's leases (``_bounded.redis``: expiry, renewal,
waiting, fail-open or closed). Beside them, in the same hash tag (one cluster slot, one
script), the algorithm's whole state lives in one hash:

- ``<ns>:pool:{<key>}:adaptive``: ``limit`` (the live limit), ``algo`` (who wrote it) and
  the machine's fields (Gradient2's window and averages, Vegas' estimate and lowest RTT).

Two scripts, one round trip each, as for a fixed pool:

- acquire: purge expired leases, then grant if ``#total + weight <= limit`` with the
  *live* limit read in the same script; it answers ``{in_use, limit}``, so the grant and
  the limit it was checked against are one instant, and no grant ever takes the units in
  use above the live limit.
- sample-release: give the lease back and apply one sample ``(rtt, in_use, dropped)`` to
  the state, in one script; it answers the new limit.

The Lua below is ``_bounded/adaptive.py``'s ``Aimd``, ``Gradient2`` and ``Vegas`` rule for
rule, on the same doubles (floats are stored with 17 significant digits, so they come back
bit for bit): fed the samples in the order the server ran the scripts, the Redis limit is
exactly the memory machine's. Every process's samples go into one stream, so Gradient2's
windows and averages are the fleet's, not one process's. What is approximate: a caller
that waited for its permit reports the units in use at the latest grant this process saw
(the poller took the permit, not the caller), and the state restarts at ``initial`` when
the key has been idle for the store's ``idle_ttl``.

Cancellation: an async acquire whose caller is cancelled while it is in flight runs on
(shielded), and a lease it was granted is given straight back; the call's end (release
and sample) is shielded too. So a cancelled task holds nothing once its scripts answer.
"""

from __future__ import annotations

import asyncio
import math
import sys

from typing import TYPE_CHECKING, Any, Final

from resilience._bounded.adaptive import TIMED_PER_WINDOW, Gradient2, window_shape
from resilience._bounded.redis import COMMON_LUA, RELEASE_LUA, RedisPoolBackend


if TYPE_CHECKING:
    from resilience._bounded.adaptive import AdaptiveLimit
    from resilience.stores._redis import RedisStore


__all__ = ["RedisAdaptivePoolBackend"]

# ARGV: 1 now, 2 idle ttl ms, 3 lease us (``COMMON_LUA``); 4 algorithm, 5 initial, 6 min,
# 7 max, 8 backoff ratio, 9 tolerance, 10 smoothing, 11 long alpha, 12 short window,
# 13 queue size; then each script's own (from 14).
_STATE: Final = (
    COMMON_LUA
    + """
local state = KEYS[3]
local algo = ARGV[4]
local low, high = tonumber(ARGV[6]), tonumber(ARGV[7])

local function live_limit()
  local limit = redis.call('HGET', state, 'limit')
  if limit then return tonumber(limit) end
  return tonumber(ARGV[5])
end

local function f17(x) return string.format('%.17g', x) end
"""
)

# ARGV 14 weight, 15 lease id. Returns {in_use just after (0: refused), live limit}.
_ACQUIRE: Final = (
    _STATE
    + """
purge()
local limit = live_limit()
local weight = tonumber(ARGV[14])
local total = used() + weight
if total > limit then return {0, limit} end
redis.call('ZADD', leases, now + lease, ARGV[15])
redis.call('HSET', weights, ARGV[15], weight)
redis.call('HINCRBY', weights, TOTAL, weight)
keep()
return {total, limit}
"""
)

# ARGV 14 lease id ('' for none), 15 rtt (0: no latency sample), 16 in use, 17 dropped
# (0/1), 18 AIMD's timeout ('' for none). Gives the lease back, feeds the sample, returns
# the new live limit.
_SAMPLE: Final = (
    _STATE
    + """
local id = ARGV[14]
if id ~= '' then
  local w = redis.call('HGET', weights, id)
  if w then
    redis.call('HDEL', weights, id)
    redis.call('ZREM', leases, id)
    redis.call('HINCRBY', weights, TOTAL, -tonumber(w))
  end
end
local rtt, in_use, dropped = tonumber(ARGV[15]), tonumber(ARGV[16]), ARGV[17] == '1'
local ratio = tonumber(ARGV[8])
local raw = redis.call('HGETALL', state)
local s = {}
for i = 1, #raw, 2 do s[raw[i]] = raw[i + 1] end
if s.algo ~= algo then  -- none yet, or another algorithm's: start afresh
  if s.algo then redis.call('DEL', state) end
  s = {}
end
local limit = tonumber(s.limit) or tonumber(ARGV[5])
local out = {'algo', algo}

if algo == 'aimd' then
  local timeout = tonumber(ARGV[18])
  if dropped or (timeout and rtt > timeout) then  -- slower than the timeout: a drop too
    limit = math.max(low, math.floor(limit * ratio))
  elseif 2 * in_use >= limit then
    limit = math.min(high, limit + 1)
  end
elseif algo == 'vegas' then
  local estimate = tonumber(s.estimate) or limit
  local rtt_min = tonumber(s.rtt_min)
  local moved = true
  if dropped then
    estimate = estimate * ratio
  elseif not (rtt > 0) then
    moved = false
  elseif rtt_min == nil or rtt < rtt_min then
    rtt_min = rtt
    moved = false
  elseif 2 * in_use < estimate then
    moved = false
  else
    local log = math.max(1.0, math.log10(estimate))
    local queue = estimate * (1.0 - rtt_min / rtt)
    if queue <= log then
      estimate = estimate + 3.0 * log
    elseif queue < 3.0 * log then
      estimate = estimate + log
    elseif queue > 6.0 * log then
      estimate = estimate - log
    end
  end
  if moved then
    estimate = math.min(high, math.max(low, estimate))
    limit = math.max(low, math.min(high, math.floor(estimate)))
  end
  out[#out + 1] = 'estimate'; out[#out + 1] = f17(estimate)
  if rtt_min then out[#out + 1] = 'rtt_min'; out[#out + 1] = f17(rtt_min) end
else  -- gradient2
  local estimate = tonumber(s.estimate) or limit
  local count, total = tonumber(s.count) or 0, tonumber(s.total) or 0.0
  local busy, was_dropped = tonumber(s.busy) or 0, s.dropped == '1'
  local long_n, long_rtt = tonumber(s.long_n) or 0, tonumber(s.long_rtt) or 0.0
  if dropped then
    was_dropped = true
  elseif rtt > 0 then
    total = total + rtt
    count = count + 1
  end
  busy = math.max(busy, in_use)
  -- window_shape: every stride-th call is timed; the window closes after due timed calls
  local calls = math.max(tonumber(ARGV[12]), limit)
  local stride = math.max(1, math.floor(calls / TIMED_PER_WINDOW))
  if dropped or count >= math.ceil(calls / stride) then
    if was_dropped then
      estimate = math.max(low, estimate * ratio)
    elseif count > 0 then
      local short = total / count
      if long_n == 0 then
        long_rtt = short
      else
        local alpha = tonumber(ARGV[11])
        if long_n < 10 then alpha = 1.0 / (long_n + 1) end
        long_rtt = long_rtt + alpha * (short - long_rtt)
      end
      long_n = long_n + 1
      if long_rtt / short > 2.0 then long_rtt = long_rtt * 0.95 end
      if 2 * busy >= estimate then
        local tolerance, smoothing = tonumber(ARGV[9]), tonumber(ARGV[10])
        local gradient = math.min(1.0, math.max(0.5, tolerance * long_rtt / short))
        local target = estimate * gradient + tonumber(ARGV[13])
        local next_estimate = estimate * (1.0 - smoothing) + target * smoothing
        estimate = math.min(high, math.max(low, next_estimate))
      end
    end
    count, total, busy, was_dropped = 0, 0.0, 0, false
    limit = math.max(low, math.min(high, math.floor(estimate)))
  end
  local d = '0'
  if was_dropped then d = '1' end
  for _, pair in ipairs({
    {'estimate', f17(estimate)}, {'count', count}, {'total', f17(total)}, {'busy', busy},
    {'dropped', d}, {'long_n', long_n}, {'long_rtt', f17(long_rtt)},
  }) do
    out[#out + 1] = pair[1]; out[#out + 1] = pair[2]
  end
end

out[#out + 1] = 'limit'; out[#out + 1] = limit
redis.call('HSET', state, unpack(out))  -- one algorithm's fields: each one rewritten
redis.call('PEXPIRE', state, ttl)
return limit
"""
).replace("TIMED_PER_WINDOW", str(TIMED_PER_WINDOW))

# Returns {live limit, units in use now}.
_LIVE: Final = _STATE + "purge()\nreturn {live_limit(), used()}\n"


def _rtt_arg(rtt: float, aimd: bool) -> str:
    """
    The RTT as Lua reads it back exactly; ``0`` for what the algorithms take as no latency.

    AIMD's timeout still sees an endless call as slow: +inf goes as the largest double.
    """
    if 0.0 < rtt < math.inf:
        return repr(rtt)
    return repr(sys.float_info.max) if aimd and rtt == math.inf else "0"


def _granted_reply(reply: Any) -> bool:
    """Whether an adaptive acquire's reply ``(in use after, limit)`` granted."""
    return bool(int(reply[0]))


class RedisAdaptivePoolBackend(RedisPoolBackend):
    """
    A Redis pool whose live limit an ``AdaptiveLimit`` moves, shared by every process.

    ``limit`` is the live limit as of this process's latest reply from Redis (each acquire
    and sample answers it); ``live()`` asks Redis now.
    """

    __slots__ = (
        "_aimd",
        "_busy",
        "_gradient",
        "_keys3",
        "_params",
        "_short",
        "_skip",
        "_timeout",
        "adaptive",
        "granted_in_use",
    )

    def __init__(self, store: RedisStore, key: str, adaptive: AdaptiveLimit, lease: float) -> None:
        super().__init__(store, key, adaptive.initial, lease)
        self.adaptive = adaptive
        self._keys3 = (*self._keys, store.key("pool", key, "adaptive"))
        shape = Gradient2(adaptive)  # its constants, so both twins use the same numbers
        self._params = (
            adaptive.algorithm,
            adaptive.initial,
            adaptive.min_limit,
            adaptive.max_limit,
            repr(adaptive.backoff_ratio),
            repr(shape.tolerance),
            repr(shape.smoothing),
            repr(shape.long_a),
            shape.short_window,
            repr(shape.queue_size),
        )
        self._aimd = adaptive.algorithm == "aimd"
        timeout = adaptive.timeout  # seconds after validation
        self._timeout = "" if timeout is None else repr(float(timeout))  # type: ignore[arg-type]
        self.granted_in_use = adaptive.initial  # in use at this process's latest grant
        # Gradient2's stride (``window_shape``), counted per process: untimed calls give
        # their lease back with the fixed pool's script; the most units they saw in use
        # goes with the next sample, so the window's ``busy`` still covers every call.
        self._gradient = adaptive.algorithm == "gradient2"
        self._short = shape.short_window
        self._skip = 0
        self._busy = 0

    def _state_argv(self, *extra: Any) -> list[Any]:
        return [*self._argv(*self._params), *extra]

    # -- acquiring: the same lease, checked against the live limit ----------------------------

    def _granted(self, reply: Any, weight: int, lease_id: str) -> int:
        in_use, limit = int(reply[0]), int(reply[1])
        self.limit = limit
        if not in_use:
            return 0
        self.granted_in_use = in_use
        self._hold(weight, lease_id)
        return in_use

    def try_acquire_used(self, weight: int) -> int:
        """Take *weight* units if free under the live limit; return the units in use after (0: no)."""
        lease_id = self._new_id()
        argv = self._state_argv(weight, lease_id)
        reply = self.store.run(_ACQUIRE, self._keys3, argv, key=self.key)
        return self._granted(reply, weight, lease_id)

    async def atry_acquire_used(self, weight: int, timeout: float | None = None) -> int:
        """The async twin of ``try_acquire_used``; *timeout* bounds the round trip further."""
        lease_id = self._new_id()
        argv = self._state_argv(weight, lease_id)
        reply = await self._shielded_acquire(
            _ACQUIRE, self._keys3, argv, lease_id, timeout, _granted_reply
        )
        return self._granted(reply, weight, lease_id)

    def try_acquire(self, weight: int) -> bool:
        """Take *weight* units if they are free under the live limit (the poller's grant)."""
        return self.try_acquire_used(weight) > 0

    async def atry_acquire(self, weight: int, timeout: float | None = None) -> bool:
        """The async twin of ``try_acquire``."""
        return await self.atry_acquire_used(weight, timeout) > 0

    # -- the call's end: release and sample in one script -----------------------------------

    def timed(self, in_use: int) -> bool:
        """
        Whether this call is timed and sampled: every call, but Gradient2's every stride-th.

        An untimed call (a window of many calls, ``window_shape``) ends with ``release``
        unless it drops (drops are never sampled); *in_use* still counts for ``busy``.
        """
        if not self._gradient:
            return True
        if in_use > self._busy:  # noqa: PLR1730 - once per call: no call
            self._busy = in_use
        skip = self._skip
        if skip:
            self._skip = skip - 1
            return False
        self._skip = window_shape(self._short, self.limit)[0] - 1
        return True

    def _sample_argv(self, lease_id: str | None, rtt: float, in_use: int, dropped: bool) -> Any:
        lease = "" if lease_id is None else lease_id
        busy = self._busy
        if busy:  # the most in use since the last sample, untimed calls' included
            self._busy = 0
            in_use = max(in_use, busy)
        return self._state_argv(
            lease, _rtt_arg(rtt, self._aimd), in_use, int(dropped), self._timeout
        )

    def sample_release(self, weight: int, rtt: float, in_use: int, dropped: bool) -> int:
        """Give back one lease of *weight* and feed one sample; return the new live limit."""
        argv = self._sample_argv(self._unhold(weight), rtt, in_use, dropped)
        self.limit = limit = int(self.store.run(_SAMPLE, self._keys3, argv, key=self.key))
        return limit

    async def asample_release(self, weight: int, rtt: float, in_use: int, dropped: bool) -> int:
        """The async twin of ``sample_release``."""
        argv = self._sample_argv(self._unhold(weight), rtt, in_use, dropped)
        # Shielded: a caller cancelled now still gives its lease back (the script runs on).
        reply = await asyncio.shield(self.store.arun(_SAMPLE, self._keys3, argv, key=self.key))
        self.limit = limit = int(reply)
        return limit

    async def arelease(self, weight: int) -> None:
        """Give back one lease of *weight* (shielded: a cancelled caller's still goes back)."""
        lease_id = self._unhold(weight)
        if lease_id is not None:
            run = self.store.arun(RELEASE_LUA, self._keys, self._argv(lease_id), key=self.key)
            await asyncio.shield(run)

    def sample(self, rtt: float, in_use: int, dropped: bool) -> int:
        """Feed one sample without a lease to give back; return the new live limit."""
        argv = self._sample_argv(None, rtt, in_use, dropped)
        self.limit = limit = int(self.store.run(_SAMPLE, self._keys3, argv, key=self.key))
        return limit

    # -- reading ----------------------------------------------------------------------------

    def live(self) -> tuple[int, int]:
        """Return ``(live limit, units in use)`` across every process, read at one instant."""
        reply = self.store.run(_LIVE, self._keys3, self._state_argv(), key=self.key)
        self.limit = limit = int(reply[0])
        return limit, int(reply[1])

    async def alive(self) -> tuple[int, int]:
        """The async twin of ``live``."""
        reply = await self.store.arun(_LIVE, self._keys3, self._state_argv(), key=self.key)
        return int(reply[0]), int(reply[1])

    def available(self) -> int:
        """Return the free units under the live limit now (never below 0)."""
        limit, in_use = self.live()
        return max(0, limit - in_use)

    def meta(self) -> dict[str, Any]:
        """The operator's numbers: the ceiling as ``limit``, and where the live one starts."""
        return {
            "limit": self.adaptive.max_limit,
            "lease": self.lease,
            "initial": self.adaptive.initial,
        }

    def __repr__(self) -> str:
        return (
            f"<RedisAdaptivePoolBackend {self.key!r} {self.adaptive.algorithm} "
            f"limit={self.limit} on {self.store.describe()}>"
        )
