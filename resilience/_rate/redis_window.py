"""
``RedisWindowBackend``: a key's shared backoff window in Redis.

The window is one string key, ``<ns>:window:<key>``, holding the time it ends in whole
microseconds on the scripts' clock (server ``TIME``; see ``NOW_LUA``). ``extend`` is a
max-merge, so a short delay never shortens a long one; each method is one script, one round
trip. The key expires once it has been idle for ``idle_ttl`` *and* its window has ended.
Other scripts (such as a rate limiter's) may read that key directly to honour the window in
the same round trip. ``extend`` also leaves a flag at the end of the key's rate log when the
window now ends after the log's newest entry, and ``clear`` takes it away: the limiter's
common decision reads only that entry (see ``_rate.redis``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from resilience._snapshot import LimiterSnapshot, epoch_of
from resilience.stores._redis import NOW_LUA
from resilience.stores._redis_snapshot import View, read_one


if TYPE_CHECKING:
    from resilience.stores._redis import RedisStore


__all__ = ["RedisWindowBackend", "redis_window_backend"]

# ARGV: 1 now, 2 idle ttl ms, 3 seconds to extend by (us). Reply: microseconds left.
# KEYS[2] is the key's rate log: when its newest entry is before the new end, the flag 'w' is
# pushed after it, since a limiter's immediate path reads only that entry (``_rate.redis``).
_EXTEND: Final = (
    NOW_LUA
    + """
local now = now_us()
local ends = now + tonumber(ARGV[3])
local current = tonumber(redis.call('GET', KEYS[1]))
if current ~= nil and current > ends then ends = current end
local ttl = math.max(tonumber(ARGV[2]), math.ceil((ends - now) / 1000) + 1000)
redis.call('SET', KEYS[1], string.format('%d', ends), 'PX', ttl)
local last = redis.call('LINDEX', KEYS[2], -1)
if last and last ~= 'w' and tonumber(last) < ends then redis.call('RPUSH', KEYS[2], 'w') end
return ends - now
"""
)

_REMAINING: Final = (
    NOW_LUA
    + """
local ends = tonumber(redis.call('GET', KEYS[1]))
if ends == nil then return 0 end
local left = ends - now_us()
if left <= 0 then return 0 end
redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[2]), math.ceil(left / 1000) + 1000))
return left
"""
)

_CLEAR: Final = """
redis.call('DEL', KEYS[1])
if redis.call('LINDEX', KEYS[2], -1) == 'w' then redis.call('RPOP', KEYS[2]) end
return 0
"""

_US: Final = 1_000_000


class RedisWindowBackend:
    """``WindowBackend`` in Redis: the end time as one key, max-merged by a script."""

    __slots__ = ("_keys", "key", "store")

    def __init__(self, key: str, store: RedisStore) -> None:
        self.key = key
        self.store = store
        self._keys = (store.key("window", key), store.key("rate", key, "log"))

    def _run(self, script: str, *extra: object) -> int:
        argv = [self.store.now_arg(), self.store.ttl_ms, *extra]
        return int(self.store.run(script, self._keys, argv, key=self.key))

    async def _arun(self, script: str, *extra: object) -> int:
        argv = [self.store.now_arg(), self.store.ttl_ms, *extra]
        return int(await self.store.arun(script, self._keys, argv, key=self.key))

    def extend(self, seconds: float) -> float:
        """Make the window last at least *seconds* from now; return the seconds it now has left."""
        return self._run(_EXTEND, round(seconds * _US)) / _US

    async def aextend(self, seconds: float) -> float:
        """The async twin of ``extend``."""
        return await self._arun(_EXTEND, round(seconds * _US)) / _US

    def remaining(self) -> float:
        """Return the seconds until the window ends (0.0 when closed)."""
        return self._run(_REMAINING) / _US

    async def aremaining(self) -> float:
        """The async twin of ``remaining``."""
        return await self._arun(_REMAINING) / _US

    def clear(self) -> None:
        """Close the window at once."""
        self._run(_CLEAR)

    async def aclear(self) -> None:
        """The async twin of ``clear``."""
        await self._arun(_CLEAR)

    def snapshot(self, key: str) -> LimiterSnapshot:
        """Return the operator's view of this window (one GET: no script, no write)."""
        found: LimiterSnapshot | None = read_one(self.store, "window", key, None)
        return found or LimiterSnapshot(key, None, None, None, 0, 0, False, 0.0, None)

    def view(self) -> tuple[float, float | None]:
        """Return (seconds left, epoch seconds of the end or None when closed)."""
        found = self.snapshot(self.key)
        return found.window_remaining, found.window_ends_at

    def __repr__(self) -> str:
        return f"<RedisWindowBackend {self._keys[0]!r}>"


def redis_window_backend(key: str, policy: object, store: RedisStore) -> RedisWindowBackend:
    """``RedisStore``'s ``"window"`` factory."""
    return RedisWindowBackend(key, store)


# -- the operator's view: one GET, never a script ----------------------------------------------


def _reads(store: RedisStore, key: str) -> list[Any]:
    return [("get", (store.key("window", key),))]


def _build(
    store: RedisStore,
    key: str,
    replies: list[Any],
    now: int,
    wall: float,
    meta: dict[str, Any] | None,
) -> LimiterSnapshot | None:
    if replies[0] is None:
        return None
    end = int(replies[0])
    left = max(0, end - now)
    ends_at = epoch_of(end / _US, now / _US, wall) if left > 0 else None
    return LimiterSnapshot(key, None, None, None, 0, 0, left > 0, left / _US, ends_at)


VIEW: Final = View(("",), _reads, _build)
