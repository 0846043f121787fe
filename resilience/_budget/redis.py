"""
``RedisBudgetBackend``: a retry budget shared through Redis.

The same accounting as ``resilience._budget.state.BudgetState`` (calls and retries in ten buckets
of ``window / 10``, with running totals), written in Lua so that each step is one script,
one round trip, on the server's clock. The state is one hash, ``<ns>:budget:{<key>}``: ``cur``
the newest bucket, ``tc``/``tr`` the totals, ``c0``..``c9``/``r0``..``r9`` the buckets.
"""

from __future__ import annotations

import math

from typing import TYPE_CHECKING, Any, Final

from resilience._snapshot import BudgetSnapshot
from resilience.stores._redis import BUCKETS_LUA, NOW_LUA
from resilience.stores._redis_snapshot import View, read_one, text


if TYPE_CHECKING:
    from resilience._budget.state import RetryBudget
    from resilience.stores._redis import RedisStore


__all__ = ["RedisBudgetBackend", "RedisTokenBackend", "redis_budget_backend", "redis_tokens"]

# ARGV: 1 now, 2 ttl ms, 3 ratio, 4 bucket width us, 5 floor (retries allowed whatever the
# calls), 6 the step: 'deposit', 'withdraw' or 'balance'. Reply: the balance (text) or 1/0.
_STEP: Final = (
    NOW_LUA
    + BUCKETS_LUA
    + """
local K = KEYS[1]
local now = now_us()
local ttl, ratio = tonumber(ARGV[2]), tonumber(ARGV[3])
local width, floor, step = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local h = read_hash(K)
local tc, tr, current = roll(h, now, width, 'c', 'r')
local slot = current % 10
local balance = ratio * tc + floor - tr
local reply
if step == 'deposit' then
  h['c' .. slot] = num(h, 'c' .. slot) + 1
  tc = tc + 1
  reply = 1
elseif step == 'withdraw' then
  if balance < 1 then
    reply = 0
  else
    h['r' .. slot] = num(h, 'r' .. slot) + 1
    tr = tr + 1
    reply = 1
  end
else
  reply = string.format('%.17g', balance)
end
h.tc, h.tr, h.cur = tc, tr, string.format('%d', current)
write_hash(K, h, ttl)
return reply
"""
)

_US: Final = 1_000_000


class RedisBudgetBackend:
    """``BudgetBackend`` in Redis: ``BudgetState``'s accounting, one script per step."""

    __slots__ = ("_args", "_keys", "_meta", "key", "store")

    def __init__(self, key: str, budget: RetryBudget, store: RedisStore) -> None:
        self.key = key
        self.store = store
        window = float(budget.window)  # type: ignore[arg-type]  # seconds after validation
        self._meta = {
            "ratio": budget.ratio,
            "window": window,
            "min_retries_per_second": budget.min_retries_per_second,
        }
        self._keys = (store.key("budget", key),)
        self._args = (
            max(store.ttl_ms, round(window * 1000)),  # the idle ttl, or the window's horizon
            repr(budget.ratio),
            repr(window * _US / 10),
            repr(budget.min_retries_per_second * window),
        )

    def _argv(self, step: str) -> list[object]:
        return [self.store.now_arg(), *self._args, step]

    def deposit(self) -> None:
        """Count one call."""
        self.store.run(_STEP, self._keys, self._argv("deposit"), key=self.key)

    async def adeposit(self) -> None:
        """The async twin of ``deposit``."""
        await self.store.arun(_STEP, self._keys, self._argv("deposit"), key=self.key)

    def withdraw(self) -> bool:
        """Take one retry if the budget allows it; return whether it did."""
        return bool(self.store.run(_STEP, self._keys, self._argv("withdraw"), key=self.key))

    async def awithdraw(self) -> bool:
        """The async twin of ``withdraw``."""
        reply = await self.store.arun(_STEP, self._keys, self._argv("withdraw"), key=self.key)
        return bool(reply)

    def balance(self) -> float:
        """Return how many retries the budget allows now."""
        return float(self.store.run(_STEP, self._keys, self._argv("balance"), key=self.key))

    async def abalance(self) -> float:
        """The async twin of ``balance``."""
        reply = await self.store.arun(_STEP, self._keys, self._argv("balance"), key=self.key)
        return float(reply)

    def meta(self) -> dict[str, Any]:
        """The numbers the operator's view needs and Redis does not hold (see ``RedisStore``)."""
        return dict(self._meta)

    def snapshot(self, key: str) -> BudgetSnapshot:
        """Return the operator's view of this budget (one HGETALL: no script, no write)."""
        found: BudgetSnapshot = read_one(self.store, "budget", key, self.meta())
        return found

    def __repr__(self) -> str:
        return f"<RedisBudgetBackend {self._keys[0]!r}>"


# KEYS: the bucket. ARGV: 1 capacity, 2 take, 3 need, 4 give, 5 ttl ms. A missing bucket is
# full. Reply: {1 if taken (or nothing to take) else 0, tokens after}.
_TOKENS: Final = """
local capacity = tonumber(ARGV[1])
local take, need, give = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tokens = tonumber(redis.call('GET', KEYS[1])) or capacity
local ok = 1
if take > 0 then
  if tokens >= need then
    tokens = math.max(0, tokens - take)
  else
    ok = 0
  end
end
tokens = math.min(capacity, tokens + give)
redis.call('SET', KEYS[1], string.format('%d', tokens), 'PX', tonumber(ARGV[5]))
return {ok, tokens}
"""


class RedisTokenBackend:
    """``TokenBackend`` in Redis: one integer per key, each step one script."""

    __slots__ = ("_capacity", "_keys", "key", "store")

    def __init__(self, key: str, capacity: int, store: RedisStore) -> None:
        self.key = key
        self.store = store
        self._capacity = capacity
        self._keys = (store.key("tokens", key),)

    def step(self, take: int, need: int, give: int) -> tuple[bool, int]:
        """Take *take* tokens if at least *need* are there, then add *give*."""
        args = [self._capacity, take, need, give, self.store.ttl_ms]
        ok, tokens = self.store.run(_TOKENS, self._keys, args, key=self.key)
        return bool(ok), int(tokens)

    async def astep(self, take: int, need: int, give: int) -> tuple[bool, int]:
        """The async twin of ``step``, on the store's asyncio client."""
        args = [self._capacity, take, need, give, self.store.ttl_ms]
        ok, tokens = await self.store.arun(_TOKENS, self._keys, args, key=self.key)
        return bool(ok), int(tokens)

    def meta(self) -> dict[str, Any]:
        """The bucket's capacity: a bucket with no key in Redis is full."""
        return {"capacity": self._capacity}

    def snapshot(self, key: str) -> BudgetSnapshot:
        """Return the operator's view of this bucket (one GET: no script, no write)."""
        found: BudgetSnapshot = read_one(self.store, "tokens", key, self.meta())
        return found

    def __repr__(self) -> str:
        return f"<RedisTokenBackend {self._keys[0]!r}>"


def redis_budget_backend(key: str, budget: RetryBudget, store: RedisStore) -> RedisBudgetBackend:
    """``RedisStore``'s ``"budget"`` factory."""
    return RedisBudgetBackend(key, budget, store)


def redis_tokens(key: str, owner: Any, store: RedisStore) -> RedisTokenBackend:
    """``RedisStore``'s ``"tokens"`` factory (``RetryQuota``, ``RetryThrottle``)."""
    return RedisTokenBackend(key, owner.bucket_capacity, store)


# -- the operator's view: one HGETALL, never a script ------------------------------------------


def _reads(store: RedisStore, key: str) -> list[Any]:
    return [("hgetall", (store.key("budget", key),))]


def _build(
    store: RedisStore,
    key: str,
    replies: list[Any],
    now: int,
    wall: float,
    meta: dict[str, Any] | None,
) -> BudgetSnapshot | None:
    h = {text(k): text(v) for k, v in (replies[0] or {}).items()}
    if not h and meta is None:
        return None
    calls = retries = 0
    ratio = window = balance = None
    if meta is not None:
        ratio, window = float(meta["ratio"]), float(meta["window"])
        width = window * _US / 10
        index = math.floor(now / width)
        current = int(h.get("cur") or 0)
        if index - current < 10:
            calls, retries = int(h.get("tc") or 0), int(h.get("tr") or 0)
            for step in range(current + 1, index + 1):
                calls -= int(h.get(f"c{step % 10}") or 0)
                retries -= int(h.get(f"r{step % 10}") or 0)
        balance = ratio * calls + float(meta["min_retries_per_second"]) * window - retries
    else:
        calls, retries = int(h.get("tc") or 0), int(h.get("tr") or 0)
    return BudgetSnapshot(key, balance, ratio, window, calls, retries)


VIEW: Final = View(("",), _reads, _build)


def _token_reads(store: RedisStore, key: str) -> list[Any]:
    return [("get", (store.key("tokens", key),))]


def _token_build(
    store: RedisStore,
    key: str,
    replies: list[Any],
    now: int,
    wall: float,
    meta: dict[str, Any] | None,
) -> BudgetSnapshot | None:
    raw = replies[0]
    if raw is None and meta is None:
        return None
    tokens = float(text(raw)) if raw is not None else float(meta["capacity"])  # type: ignore[index]
    return BudgetSnapshot(key, tokens, None, None, 0, 0)


#: The view of a ``RetryQuota``'s or ``RetryThrottle``'s bucket (``"tokens"``).
TOKENS_VIEW: Final = View(("",), _token_reads, _token_build)
