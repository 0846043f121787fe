"""
``RedisThrottleBackend``: the counts of ``@throttled`` shared through Redis.

The same accounting as ``resilience._throttle.state.ThrottleState`` (requests and accepts in
ten buckets of ``window / 10``, with running totals), in Lua, so each step is one script and
one round trip on the server's clock. The state is one hash, ``<ns>:throttle:<key>``:
``cur`` the newest bucket, ``tq``/``ta`` the totals, ``q0``..``q9``/``a0``..``a9`` the buckets.
"""

from __future__ import annotations

import math

from typing import TYPE_CHECKING, Any, Final, cast

from resilience._throttle.state import throttle_snapshot
from resilience.stores._redis import BUCKETS_LUA, NOW_LUA
from resilience.stores._redis_snapshot import View, read_one, text


if TYPE_CHECKING:
    from resilience._snapshot import ThrottleSnapshot
    from resilience._throttle.state import ThrottlePolicy
    from resilience.stores._redis import RedisStore


__all__ = ["RedisThrottleBackend", "redis_throttle"]

# ARGV: 1 now, 2 ttl ms, 3 k, 4 bucket width us, 5 the step: 'read', 'accept' or 'reject'.
# Reply: {probability (text), requests, accepts} as counted before the step.
_STEP: Final = (
    NOW_LUA
    + BUCKETS_LUA
    + """
local K = KEYS[1]
local now = now_us()
local ttl, k, width, step = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local h = read_hash(K)
local tq, ta, current = roll(h, now, width, 'q', 'a')
local excess = tq - k * ta
local p = 0
if excess > 0 then p = excess / (tq + 1) end
local reply = {string.format('%.17g', p), tq, ta}
if step ~= 'read' then
  local slot = current % 10
  h['q' .. slot] = num(h, 'q' .. slot) + 1
  tq = tq + 1
  if step == 'accept' then
    h['a' .. slot] = num(h, 'a' .. slot) + 1
    ta = ta + 1
  end
end
h.tq, h.ta, h.cur = tq, ta, string.format('%d', current)
write_hash(K, h, ttl)
return reply
"""
)

_US: Final = 1_000_000


class RedisThrottleBackend:
    """``ThrottleBackend`` in Redis: ``ThrottleState``'s accounting, one script per step."""

    __slots__ = ("_args", "_keys", "_meta", "key", "store")

    def __init__(self, key: str, policy: ThrottlePolicy, store: RedisStore) -> None:
        self.key = key
        self.store = store
        window = float(policy.window)  # type: ignore[arg-type]  # seconds after validation
        self._meta = {"k": float(policy.k), "window": window}
        self._keys = (store.key("throttle", key),)
        self._args = (
            max(store.ttl_ms, round(window * 2000)),
            repr(float(policy.k)),
            repr(window * _US / 10),
        )

    def _step(self, step: str) -> tuple[float, int, int]:
        reply = self.store.run(
            _STEP, self._keys, [self.store.now_arg(), *self._args, step], key=self.key
        )
        return _parse(reply)

    async def _astep(self, step: str) -> tuple[float, int, int]:
        reply = await self.store.arun(
            _STEP, self._keys, [self.store.now_arg(), *self._args, step], key=self.key
        )
        return _parse(reply)

    def probability(self) -> tuple[float, int, int]:
        """Return ``(probability, requests, accepts)`` now."""
        return self._step("read")

    def chance(self) -> float:
        """Return the rejection probability now."""
        return self._step("read")[0]

    async def aprobability(self) -> tuple[float, int, int]:
        """The async twin of ``probability``."""
        return await self._astep("read")

    def record(self, accepted: bool) -> None:
        """Count one request, and one accept if *accepted*."""
        self._step("accept" if accepted else "reject")

    async def arecord(self, accepted: bool) -> None:
        """The async twin of ``record``."""
        await self._astep("accept" if accepted else "reject")

    def meta(self) -> dict[str, Any]:
        """The numbers the operator's view needs and Redis does not hold (``k``, ``window``)."""
        return dict(self._meta)

    def snapshot(self, key: str) -> ThrottleSnapshot:
        """Return the operator's view of this throttle (one HGETALL: no script, no write)."""
        found: ThrottleSnapshot = read_one(self.store, "throttle", key, self.meta())
        return found

    def __repr__(self) -> str:
        return f"<RedisThrottleBackend {self._keys[0]!r}>"


def _parse(reply: object) -> tuple[float, int, int]:
    probability, requests, accepts = cast("list[Any]", reply)
    text = probability.decode() if isinstance(probability, bytes) else str(probability)
    return float(text), int(requests), int(accepts)


def redis_throttle(key: str, policy: ThrottlePolicy, store: RedisStore) -> RedisThrottleBackend:
    """``RedisStore``'s ``"throttle"`` factory."""
    return RedisThrottleBackend(key, policy, store)


# -- the operator's view: one HGETALL, never a script ------------------------------------------


def _reads(store: RedisStore, key: str) -> list[Any]:
    return [("hgetall", (store.key("throttle", key),))]


def _build(
    store: RedisStore,
    key: str,
    replies: list[Any],
    now: int,
    wall: float,
    meta: dict[str, Any] | None,
) -> ThrottleSnapshot | None:
    h = {text(name): text(value) for name, value in (replies[0] or {}).items()}
    if not h and meta is None:
        return None
    requests, accepts = int(h.get("tq") or 0), int(h.get("ta") or 0)
    if meta is None:  # numbers unknown: the counts as last written
        return throttle_snapshot(key, None, None, requests, accepts)
    k, window = float(meta["k"]), float(meta["window"])
    index = math.floor(now / (window * _US / 10))
    current = h.get("cur")
    if current is None or current == "":
        requests = accepts = 0
    elif index > int(current):  # what the script's roll() would empty, read, not written
        for back in range(min(10, index - int(current))):
            slot = (index - back) % 10
            requests -= int(h.get(f"q{slot}") or 0)
            accepts -= int(h.get(f"a{slot}") or 0)
    return throttle_snapshot(key, k, window, requests, accepts)


VIEW: Final = View(("",), _reads, _build)
