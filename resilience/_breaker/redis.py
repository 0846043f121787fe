"""
``RedisBreaker``: a circuit breaker's state in Redis, shared by every process that names it.

The state machine is the memory backend's (``resilience._breaker.memory.MemoryBreaker``),
written once more in Lua so that each step (``admit``, ``record``, ``reset``, ``stats``) is one
script: atomic on the server, one round trip, on the server's clock. The state lives in one
hash, ``<ns>:breaker:<name>``; a count window (the last N calls) adds a string of ``0``/``1``
bytes, ``<ns>:breaker:<name>:ring``, read and written with ``GETRANGE``/``SETRANGE`` so every
step is O(1). A time window keeps its ten buckets as fields of the hash. Times are whole
microseconds (see ``NOW_LUA``). Every script refreshes the keys' expiry: the store's
``idle_ttl``, or longer while the state still matters (an open spell until its
``reset_timeout``, a time window for its span). Both keys share the hash tag ``{<name>}``.

Hash fields: ``s`` state (0 closed, 1 open, 2 half-open), ``c`` consecutive failures, ``e``
spell number, ``p`` probes running, ``o`` opened at, ``r`` reason, ``n`` times opened, ``f``
failures, ``j`` rejected, ``k`` last closed at, ``wc``/``wf`` window calls/failures, ``wp`` ring position, ``wh``
newest time bucket, ``c0``..``c9``/``f0``..``f9`` bucket counts.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading

from collections import deque
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any, Final

from resilience import _clock
from resilience._breaker.contract import (
    ADMITTED,
    FAILURE,
    IGNORED,
    REFUSED,
    STATE_NAMES,
    SUCCESS,
    Admission,
    BreakerConfig,
    CircuitBreakerStats,
    Transition,
)
from resilience._breaker.registry import announce
from resilience._errors import StoreUnavailableError
from resilience._snapshot import BreakerSnapshot, epoch_of
from resilience.stores._redis import NOW_LUA
from resilience.stores._redis_snapshot import View, read_one
from resilience.stores._registry import store_unavailable


if TYPE_CHECKING:
    from resilience._policies import CircuitBreakerPolicy
    from resilience.stores._redis import RedisStore


__all__ = ["RedisBreaker"]

# ARGV: 1 now, 2 ttl ms, 3 threshold, 4 reset_timeout us, 5 half_open_max_calls,
# 6 failure_rate ('' without), 7 window_size (0 without), 8 window_duration us (0 without),
# 9 minimum_calls, 10 reset_timeout as text, 11 the config as JSON (so another process can
# inspect the breaker: ``RedisStore.peek``); then each script's own arguments.
_COMMON: Final = (
    NOW_LUA
    + """
local K, RING = KEYS[1], KEYS[2]
local now = now_us()
local ttl = tonumber(ARGV[2])
local threshold = tonumber(ARGV[3])
local reset_us = tonumber(ARGV[4])
local max_probes = tonumber(ARGV[5])
local rate = tonumber(ARGV[6])
local size = tonumber(ARGV[7])
local span = tonumber(ARGV[8])
local minimum = tonumber(ARGV[9])
local CLOSED, OPEN, HALF_OPEN = 0, 1, 2

local raw = redis.call('HGETALL', K)
local h = {}
for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
local function num(field) return tonumber(h[field]) or 0 end
local state, consecutive, probes = num('s'), num('c'), num('p')
local epoch = tonumber(h.e) or 1
local opened_at, reason = num('o'), h.r or ''
local wcalls, wfails = num('wc'), num('wf')
local state0, dirty0 = state, consecutive > 0
local CHANNEL = ARGV[#ARGV]  -- '' unless processes keep this breaker's state locally

local function advance()
  local width = span / 10
  local index = math.floor(now / width)
  local head = tonumber(h.wh)
  if head == nil or index - head >= 10 then
    for i = 0, 9 do h['c' .. i] = 0; h['f' .. i] = 0 end
    wcalls, wfails = 0, 0
  elseif index > head then
    for step = head + 1, index do
      local slot = step % 10
      wcalls = wcalls - num('c' .. slot)
      wfails = wfails - num('f' .. slot)
      h['c' .. slot] = 0; h['f' .. slot] = 0
    end
  else
    return head  -- a clock that went back: count it in the newest bucket
  end
  h.wh = index
  return index
end

local function window_add(failed)
  if size > 0 then
    local pos = num('wp')
    if wcalls == size then
      if redis.call('GETRANGE', RING, pos, pos) == '1' then wfails = wfails - 1 end
    else
      wcalls = wcalls + 1
    end
    redis.call('SETRANGE', RING, pos, failed == 1 and '1' or '0')
    wfails = wfails + failed
    pos = pos + 1
    if pos >= size then pos = 0 end
    h.wp = pos
  elseif span > 0 then
    local slot = advance() % 10
    h['c' .. slot] = num('c' .. slot) + 1
    h['f' .. slot] = num('f' .. slot) + failed
    wcalls = wcalls + 1
    wfails = wfails + failed
  end
end

local function window_clear()
  wcalls, wfails = 0, 0
  if size > 0 then
    h.wp = 0
    redis.call('DEL', RING)
  elseif span > 0 then
    h.wh = ''
    for i = 0, 9 do h['c' .. i] = 0; h['f' .. i] = 0 end
  end
end

-- How long the keys must live: the idle ttl, and while the state still matters (an open
-- spell until its reset_timeout, a time window's span) at least that: its horizon.
local function life()
  local ms = ttl
  if state == OPEN then
    local left = math.ceil((opened_at + reset_us - now) / 1000)
    if left > ms then ms = left end
  end
  if span > 0 and math.ceil(span / 1000) > ms then ms = math.ceil(span / 1000) end
  return ms
end

local function reported()
  if state == OPEN and now >= opened_at + reset_us then return HALF_OPEN end
  return state
end

local function save()
  h.s, h.c, h.e, h.p, h.o, h.r = state, consecutive, epoch, probes, opened_at, reason
  h.wc, h.wf, h.cfg = wcalls, wfails, ARGV[11]
  local flat = {}
  for field, value in pairs(h) do
    flat[#flat + 1] = field
    flat[#flat + 1] = value
  end
  redis.call('HSET', K, unpack(flat))
  local ms = life()
  redis.call('PEXPIRE', K, ms)
  if size > 0 then redis.call('PEXPIRE', RING, ms) end
  -- Tell the processes that keep this state locally: "<state>|<dirty>|<key>".
  local dirty = consecutive > 0
  if size > 0 or span > 0 then dirty, dirty0 = true, true end  -- a window: always recorded
  if CHANNEL ~= '' and (state ~= state0 or dirty ~= dirty0) then
    redis.call('PUBLISH', CHANNEL, state .. '|' .. (dirty and 1 or 0) .. '|' .. K)
  end
end

-- {from, to, reason, consecutive, window calls, window failures}
local function change(to, why, before)
  local t = {before, to, why, consecutive, wcalls, wfails}
  state = to
  epoch = epoch + 1  -- late outcomes of the last spell's probes count as ordinary calls
  return t
end

local function open(why, before)
  opened_at = now
  reason = 'opened after ' .. why
  h.n = num('n') + 1
  probes = 0
  return change(OPEN, why, before)
end

-- A failure just counted in the window: open if the window's failure rate reached the rule.
local function rate_tripped()
  if wcalls >= minimum and rate ~= nil and wfails / wcalls >= rate then
    return open(string.format('%d of the last %d calls failed (%.0f%% >= failure_rate %.0f%%)',
      wfails, wcalls, wfails / wcalls * 100, rate * 100), CLOSED)
  end
  return false
end

local function close(why, before)
  local t = false
  if before ~= CLOSED then t = change(CLOSED, why, before); h.k = now end
  consecutive, probes, reason = 0, 0, ''
  window_clear()
  return t
end
"""
)

# Reply: {ticket, retry_after us, open_for us, reason, state met, consecutive[, transition...]}
_ADMIT: Final = (
    _COMMON
    + """
if state == CLOSED then
  redis.call('PEXPIRE', K, life())
  return {0, 0, 0, '', CLOSED, consecutive}
end
local open_for = now - opened_at
local t = nil
if state == OPEN then
  if now < opened_at + reset_us then
    h.j = num('j') + 1
    save()
    return {-1, opened_at + reset_us - now, open_for, reason, OPEN, consecutive}
  end
  t = change(HALF_OPEN, 'reset_timeout of ' .. ARGV[10] .. ' s passed', OPEN)
  probes = 0
end
local reply
if probes < max_probes then
  probes = probes + 1
  reply = {epoch, 0, open_for, reason, HALF_OPEN, consecutive}
else
  h.j = num('j') + 1
  reply = {-1, 0, open_for, reason, HALF_OPEN, consecutive}
end
save()
if t then for i = 1, 6 do reply[6 + i] = t[i] end end
return reply
"""
)

# ARGV 12 ticket, 13 outcome (0 success, 1 failure, 2 ignored). Reply: a transition or nil.
_RECORD: Final = (
    _COMMON
    + """
local ticket, outcome = tonumber(ARGV[12]), tonumber(ARGV[13])
local t = false
if ticket > 0 and ticket == epoch and state == HALF_OPEN then
  if outcome == 0 then
    t = close('a probe call succeeded', HALF_OPEN)
  elseif outcome == 1 then
    h.f = num('f') + 1
    consecutive = consecutive + 1
    t = open('a probe call failed', HALF_OPEN)
  else
    probes = probes - 1
  end
  save()
  return t
end
-- A call admitted while closed (or a probe of a spell that is over) counts only while the
-- breaker is closed: open and half-open states are decided by probes.
if state ~= CLOSED or outcome == 2 then return false end
if outcome == 0 then
  if size == 0 and span == 0 and consecutive == 0 then
    redis.call('PEXPIRE', K, life())
    return false
  end
  consecutive = 0
  window_add(0)
  save()
  return false
end
h.f = num('f') + 1
consecutive = consecutive + 1
if size == 0 and span == 0 then
  if consecutive >= threshold then
    t = open(string.format('%d consecutive failure(s)', consecutive), CLOSED)
  end
else
  window_add(1)
  t = rate_tripped()
end
save()
return t
"""
)

# ARGV 12: outcomes of calls admitted while closed, oldest first ('0' success, '1' failure),
# recorded as ``_RECORD`` would one by one (a failure-rate breaker's batch). Outcomes after
# the breaker left the closed state are dropped, as ``_RECORD`` drops them. Reply: a
# transition or nil.
_BATCH: Final = (
    _COMMON
    + """
local outcomes = ARGV[12]
local t = false
if state ~= CLOSED then return false end
for i = 1, #outcomes do
  if string.byte(outcomes, i) == 49 then
    h.f = num('f') + 1
    consecutive = consecutive + 1
    window_add(1)
    t = rate_tripped()
    if t then break end
  else
    consecutive = 0
    window_add(0)
  end
end
save()
return t
"""
)

_RESET: Final = (
    _COMMON
    + """
local t = close('reset by hand', reported())
save()
return t
"""
)

# Reply: {state, consecutive, window calls, window failures, probes, is open, open_for us,
#         retry_after us, times opened, failures, rejected}
_STATS: Final = (
    _COMMON
    + """
if span > 0 then advance() end
local shown = reported()
local is_open = (state == OPEN or state == HALF_OPEN) and 1 or 0
local retry_after = 0
if shown == OPEN then retry_after = opened_at + reset_us - now end
if raw[1] ~= nil then redis.call('PEXPIRE', K, life()) end
return {shown, consecutive, wcalls, wfails, state == HALF_OPEN and probes or 0, is_open,
  now - opened_at, retry_after, num('n'), num('f'), num('j')}
"""
)

_LOAD: Final = """
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return false end
return redis.call('HGET', KEYS[1], 'cfg')
"""

_US: Final = 1_000_000
#: The most outcomes a failure-rate breaker keeps for Redis while it cannot take them.
_MOST_PENDING: Final = 10_000


_GIVING_BACK: set[asyncio.Task[Any]] = set()  # probe slots of cancelled admissions


def _given_back(task: asyncio.Task[Any]) -> None:
    _GIVING_BACK.discard(task)
    if not task.cancelled():
        task.exception()  # unreachable store: the slot frees with the next spell


class RedisBreaker:
    """
    ``BreakerBackend`` in Redis: one Lua script (one round trip) per step, on server time.

    ``dirty`` is refreshed from each admission's consecutive count, so a success in the
    closed state of a breaker without failures costs no second round trip.

    With ``RedisStore(local_breakers=True)`` (the default), a breaker in consecutive-failure
    mode keeps "closed" and ``dirty`` in this process: a healthy call costs no round trip;
    failures are still recorded atomically in Redis, and every change (open, half-open,
    closed, a failure streak begun or broken) is published by the script that made it and
    applied here by the store's listener thread (see ``stores._redis._Listener``). ``closed``
    reads True only while that feed is live (its heartbeat answered within its bound);
    otherwise every call asks Redis. Without local state ``closed`` stays False.
    """

    __slots__ = (
        "__weakref__",
        "_args",
        "_channel",
        "_closed",
        "_flusher",
        "_flushing",
        "_keys",
        "_listener",
        "_pending",
        "_policy_clock",
        "_windowed",
        "config",
        "dirty",
        "name",
        "retired",
        "store",
    )

    def __init__(
        self,
        name: str,
        policy: CircuitBreakerPolicy | None,
        store: RedisStore,
        config: BreakerConfig | None = None,
    ) -> None:
        self.name = name
        self.store = store
        if config is None:
            assert policy is not None
            config = BreakerConfig.of(policy)
        self.config = config
        self._policy_clock = policy.clock if policy is not None else None
        self._closed = False
        self.retired = False
        self.dirty = True
        self._windowed = config.window_size is not None or config.window_duration is not None
        self._keys = (store.key("breaker", name), store.key("breaker", name, "ring"))
        # The scripts keep an open state until reset_timeout passed, and a time window's
        # buckets for its span, even past the idle ttl (``life()``).
        self._args: tuple[Any, ...] = (
            store.ttl_ms,
            config.failure_threshold,
            round(config.reset_timeout * _US),
            config.half_open_max_calls,
            "" if config.failure_rate is None else repr(config.failure_rate),
            config.window_size or 0,
            round((config.window_duration or 0.0) * _US),
            config.minimum_calls,
            f"{config.reset_timeout:g}",
            json.dumps(list(config)),
        )
        self._listener: Any = None
        self._channel = ""
        # Outcomes of calls admitted while closed, not yet in Redis (failure-rate mode).
        self._pending: deque[str] | None = None
        self._flusher: Any = None
        self._flushing = threading.Lock()  # one flush at a time takes from ``_pending``
        batched = self._windowed and getattr(store, "sync_interval", 0.0) > 0
        if getattr(store, "local_breakers", False) and (batched or not self._windowed):
            self._listener = store.breaker_listener()
            self._channel = self._listener.channel
            self._listener.watch(self._keys[0], self)
            if batched:
                self._pending = deque(maxlen=_MOST_PENDING)  # the oldest go first
                self._flusher = store.breaker_flusher()
                self._flusher.watch(self)

    @classmethod
    def load(cls, name: str, store: RedisStore) -> RedisBreaker | None:
        """Return a backend for a breaker another process declared, or None if Redis has none."""
        raw = store.run(_LOAD, [store.key("breaker", name)], [], key=name)
        if raw is None:
            return None
        return cls(name, None, store, BreakerConfig(*json.loads(_text(raw))))

    # -- plumbing -------------------------------------------------------------------------------

    def _argv(self, *extra: Any) -> list[Any]:
        return [self.store.now_arg(), *self._args, *extra, self._channel]

    @property
    def closed(self) -> bool:
        """Whether a call may skip ``admit``: locally closed, and the change feed is live."""
        return self._closed and _monotonic() < self._listener.fresh_until

    @closed.setter
    def closed(self, value: bool) -> None:
        self._closed = value and self._listener is not None

    def apply(self, state: int, dirty: bool) -> None:
        """A change published by a script (the listener's thread): follow it."""
        self.dirty = self._windowed or dirty or state != 0
        self._closed = state == 0
        if state != 0 and self._pending:
            self._pending.clear()  # outcomes of a closed spell that is over count no more

    def forget(self) -> None:
        """The feed was lost (changes may be missed): ask Redis until it reads the state again."""
        self._closed = False
        self.dirty = True

    def _run(self, script: str, *extra: Any) -> Any:
        return self.store.run(script, self._keys, self._argv(*extra), key=self.name)

    async def _arun(self, script: str, *extra: Any) -> Any:
        return await self.store.arun(script, self._keys, self._argv(*extra), key=self.name)

    def _transition(self, reply: Any) -> Transition | None:
        if not reply:
            return None
        before, after, why, consecutive, calls, failures = reply
        return Transition(
            self.name,
            STATE_NAMES[int(before)],
            STATE_NAMES[int(after)],
            _text(why),
            int(consecutive),
            int(calls),
            int(failures),
        )

    def _admission(self, reply: Any, seen: int = -1) -> Admission:
        ticket, retry_after, open_for, reason, met, consecutive = reply[:6]
        if met == 0:
            self.dirty = self._windowed or consecutive > 0
            listener = self._listener
            # Closed now, and no change was heard while we asked: keep it locally. (A change
            # heard meanwhile may be newer than this reply; the next call asks again.)
            if listener is not None and listener.live and listener.heard == seen:
                self._closed = True
            return ADMITTED
        self._closed = False
        self.dirty = True
        transition = self._transition(reply[6:12]) if len(reply) > 6 else None
        text = _text(reason)
        if ticket == REFUSED and met == 2:
            text = f"{text}; its {self.config.half_open_max_calls} probe slot(s) are taken"
        return Admission(
            int(ticket),
            retry_after / _US,
            open_for / _US,
            text,
            STATE_NAMES[int(met)],
            transition,
        )

    # -- the protocol ---------------------------------------------------------------------------

    def _heard(self) -> int:
        listener = self._listener
        return -1 if listener is None else int(listener.heard)

    def admit(self) -> Admission:
        """Decide whether a call may start; reserve a probe slot if it is a probe."""
        seen = self._heard()
        return self._admission(self._run(_ADMIT), seen)

    async def aadmit(self) -> Admission:
        """
        The async twin of ``admit``.

        Shielded: a caller cancelled while the script is in flight hears ``CancelledError``
        at once; if the script made it a probe, that slot is given back (``IGNORED``) when
        the reply arrives, so a lost reply never holds a half-open breaker's probe slot.
        """
        seen = self._heard()
        pending = asyncio.ensure_future(self._arun(_ADMIT))
        try:
            reply = await asyncio.shield(pending)
        except asyncio.CancelledError:
            pending.add_done_callback(self._orphaned)
            raise
        return self._admission(reply, seen)

    def _orphaned(self, pending: asyncio.Future[Any]) -> None:
        """A cancelled caller's admission was a probe after all: give its slot back."""
        if pending.cancelled() or pending.exception() is not None:
            return  # no answer: nothing known was taken
        ticket = int(pending.result()[0])
        if ticket > 0:
            task = pending.get_loop().create_task(self._arun(_RECORD, ticket, IGNORED))
            _GIVING_BACK.add(task)
            task.add_done_callback(_given_back)

    def _recorded(self, ticket: int, outcome: int, reply: Any) -> Transition | None:
        transition = self._transition(reply)
        if transition is not None and transition.to_state != "closed":
            self._closed = False
        if self._listener is not None and ticket == 0 and outcome != 2:
            self.dirty = outcome == 1  # a failure begins a streak; a success ends it
        return transition

    def _batched(self, ticket: int, outcome: int) -> bool:
        """Keep a closed call's outcome for the next batch (failure-rate mode); whether kept."""
        pending = self._pending
        if pending is None or ticket != 0:
            return False
        if outcome == FAILURE:
            pending.append("1")
            self._flusher.wake()  # a failure may open the breaker: send it at once
        elif outcome == SUCCESS:
            pending.append("0")
        return True

    def record(self, ticket: int, outcome: int) -> Transition | None:
        """Apply a call's outcome; return the state change it caused, if any."""
        if self._batched(ticket, outcome):
            return None
        return self._recorded(ticket, outcome, self._run(_RECORD, ticket, outcome))

    async def arecord(self, ticket: int, outcome: int) -> Transition | None:
        """The async twin of ``record`` (shielded: a cancelled caller's outcome still lands)."""
        if self._batched(ticket, outcome):
            return None
        reply = await asyncio.shield(self._arun(_RECORD, ticket, outcome))
        return self._recorded(ticket, outcome, reply)

    def flush(self) -> bool:
        """
        Record the batched outcomes in Redis (one script); False if Redis could not take them.

        A batch that fails is reported (``resilience.store.unavailable``) and kept, in
        order, for the next flush.
        """
        pending = self._pending
        if not pending:
            return True
        with self._flushing:
            batch = "".join([pending.popleft() for _ in range(len(pending))])
            if not batch:
                return True
            try:
                reply = self._run(_BATCH, batch)
            except StoreUnavailableError as error:
                room = _MOST_PENDING - len(pending)  # put back before newer ones, oldest lost
                pending.extendleft(reversed(batch[max(len(batch) - room, 0) :]))
                store_unavailable(error, decorator="circuit_breaker", fail_open=True)
                return False
        transition = self._transition(reply)
        if transition is not None:
            self._closed = False
            announce(transition)
        return True

    def reset(self) -> Transition | None:
        """Close the breaker and clear its counts (the totals since creation stay)."""
        if self._pending:
            self._pending.clear()
        return self._transition(self._run(_RESET))

    def state(self) -> str:
        """Return ``"closed"``, ``"open"`` or ``"half_open"`` as of now."""
        self.flush()
        return STATE_NAMES[int(self._run(_STATS)[0])]

    def stats(self) -> CircuitBreakerStats:
        """Return a snapshot of the counts and the state as of now (one round trip)."""
        self.flush()
        (
            state,
            consecutive,
            calls,
            failures,
            probes,
            is_open,
            open_for,
            retry_after,
            times_opened,
            total_failures,
            rejected,
        ) = self._run(_STATS)
        clock = _clock.resolve(self._policy_clock)
        return CircuitBreakerStats(
            name=self.name,
            state=STATE_NAMES[int(state)],
            consecutive_failures=int(consecutive),
            window_calls=int(calls),
            window_failures=int(failures),
            failure_rate=failures / calls if calls else None,
            probes=int(probes),
            opened_at=clock.time() - open_for / _US if is_open else None,
            retry_after=retry_after / _US,
            times_opened=int(times_opened),
            failures=int(total_failures),
            rejected=int(rejected),
        )

    def meta(self) -> dict[str, Any]:
        """The config, for the operator's view of a breaker that has no state in Redis yet."""
        return {"cfg": list(self.config)}

    def snapshot(self) -> BreakerSnapshot:
        """Return the operator's view of this breaker (plain reads: no script, no write)."""
        found: BreakerSnapshot = read_one(self.store, "breaker", self.name, self.meta())
        return found

    def __repr__(self) -> str:
        return f"<RedisBreaker {self.name!r} at {self._keys[0]!r}>"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- the operator's view: plain reads of the hash, never a script ------------------------------


def _reads(store: RedisStore, name: str) -> list[Any]:
    return [("hgetall", (store.key("breaker", name),))]


def _window_counts(h: dict[str, str], config: BreakerConfig, now: int) -> tuple[int, int]:
    """The window's (calls, failures) as of *now*, as the scripts' ``advance`` would leave them."""
    calls, failures = int(h.get("wc") or 0), int(h.get("wf") or 0)
    if config.window_duration is None:
        return calls, failures
    width = round(config.window_duration * _US) / 10
    index = math.floor(now / width)
    head = h.get("wh") or ""
    if not head:
        return 0, 0
    start = int(float(head))
    if index - start >= 10:
        return 0, 0
    for step in range(start + 1, index + 1):
        calls -= int(h.get(f"c{step % 10}") or 0)
        failures -= int(h.get(f"f{step % 10}") or 0)
    return calls, failures


def _build(
    store: RedisStore,
    name: str,
    replies: list[Any],
    now: int,
    wall: float,
    meta: dict[str, Any] | None,
) -> BreakerSnapshot | None:
    h = {_text(k): _text(v) for k, v in (replies[0] or {}).items()}
    if "cfg" in h:
        config = BreakerConfig(*json.loads(h["cfg"]))
    elif meta is not None:  # declared, never failed: no state in Redis yet
        config = BreakerConfig(*meta["cfg"])
    else:
        return None
    stored = int(h.get("s") or 0)
    opened = int(h.get("o") or 0)
    reset_us = round(config.reset_timeout * _US)
    state = STATE_NAMES[stored]
    if stored == 1 and now >= opened + reset_us:
        state = "half_open"
    closed = h.get("k")
    since = None if not closed else epoch_of(int(closed) / _US, now / _US, wall)
    if state == "open":
        since = epoch_of(opened / _US, now / _US, wall)
    elif state == "half_open":
        since = epoch_of((opened + reset_us) / _US, now / _US, wall)
    calls, failures = _window_counts(h, config, now)
    return BreakerSnapshot(
        name=name,
        state=state,
        since=since,
        reason=h.get("r", "") if state != "closed" else "",
        consecutive_failures=int(h.get("c") or 0),
        failure_threshold=config.failure_threshold,
        failure_rate=failures / calls if calls else None,
        failure_rate_threshold=config.failure_rate,
        window_calls=calls,
        window_failures=failures,
        probes=int(h.get("p") or 0) if stored == 2 else 0,
        next_probe_in=(opened + reset_us - now) / _US if state == "open" else 0.0,
        reset_timeout=config.reset_timeout,
        times_opened=int(h.get("n") or 0),
        failures=int(h.get("f") or 0),
        rejected=int(h.get("j") or 0),
    )


VIEW: Final = View(("", "ring"), _reads, _build)
