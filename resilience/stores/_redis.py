"""
``RedisStore``: shared state for many processes and machines, in Redis.

Like ``MemoryStore`` it hands out one backend per (concern, key); each concern registers a
Redis backend factory with ``RedisStore.register``. Every decision a backend makes is one Lua
script, run atomically on the server in one round trip, reading the server's clock
(``TIME``), so callers with skewed clocks agree. Keys live under ``<namespace>:<concern>:<key>``
and expire when idle. Every operation is bounded by ``timeout``; a server that cannot be
reached in time raises ``StoreUnavailableError`` naming the key, never hangs, and the next
operation reconnects by itself.

``redis`` (redis-py) is imported only when a ``RedisStore`` is made.
"""

from __future__ import annotations

import asyncio
import weakref

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from resilience._errors import StoreUnavailableError
from resilience._validate import duration
from resilience.stores._registry import BackendRegistry, resolve


if TYPE_CHECKING:
    from resilience.typing import Clock


__all__ = ["NOW_LUA", "RedisStore"]

NOW_LUA = """
local function now_us()
  if ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"""
"""
Lua preamble defining ``now_us()``: the time in whole microseconds, for every script.

Convention: a script that reads the time starts with ``NOW_LUA`` and takes
``store.now_arg()`` as its *first* ARGV. That is ``""`` normally, so ``now_us()`` reads the
server's clock (``TIME``: machines with skewed clocks agree); with ``RedisStore(clock=...)``
(tests only) it is that clock's ``monotonic()`` in microseconds, so tests run on virtual
time. Whole microseconds keep Lua's doubles exact and replies integers (Redis truncates Lua
floats in replies: return ``tostring(x)`` for a fraction).
"""


def _redis() -> Any:
    try:
        import redis  # noqa: PLC0415 - optional dependency
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        msg = "RedisStore needs redis-py: pip install 'resilience[redis]'"
        raise ImportError(msg) from error
    return redis


class RedisStore(BackendRegistry):
    """
    Keeps breakers, rate budgets, backoff windows and permit pools in Redis.

    Args:
        url_or_client: A ``redis://`` URL, or a sync ``redis.Redis`` client.
        timeout: The most seconds any store operation may wait on Redis (> 0).
        namespace: The prefix of every key this store writes.
        idle_ttl: Seconds after which an untouched key expires (> 0), so Redis does not
            fill up with state nobody uses.
        clock: For tests only: read time from this clock (its ``monotonic()``) instead of
            the Redis server's ``TIME``, so a test can run on virtual time. Never set it in
            production: processes with different clocks would disagree.
        lease: Seconds a ``@bounded`` permit stays granted unless its holder renews it
            (> 0). Holders renew every ``lease / 3`` seconds while the call runs, so the
            permits of a process that dies come back within *lease* seconds.
        slack: Seconds by which ``@rate_limited`` widens its check of actual starts (>= 0):
            the jitter between the server's clock reading and where a call really begins
            (the reply's way back and the scheduler), so the rule holds where calls begin.

    .. versionadded:: 0.1.0
    """

    __module__ = "resilience.stores"

    _loaders: ClassVar[dict[str, Callable[[str, RedisStore], Any] | str]] = {}
    _views: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        url_or_client: Any,
        *,
        timeout: float = 1.0,
        namespace: str = "resilience",
        idle_ttl: float = 3600.0,
        clock: Clock | None = None,
        lease: float = 10.0,
        slack: float = 0.001,
    ) -> None:
        redis = _redis()
        self.timeout: float = duration("RedisStore", "timeout", timeout, strict=True) or 0.0
        self.idle_ttl: float = duration("RedisStore", "idle_ttl", idle_ttl, strict=True) or 0.0
        if not namespace:
            msg = f"RedisStore.namespace must be a non-empty string, got {namespace!r}"
            raise ValueError(msg)
        self.namespace = namespace
        self.clock = clock
        self.ttl_ms: int = max(1, round(self.idle_ttl * 1000))
        self.lease: float = duration("RedisStore", "lease", lease, strict=True) or 0.0
        self.slack: float = duration("RedisStore", "slack", slack) or 0.0
        self._owns_client = isinstance(url_or_client, str)
        if isinstance(url_or_client, str):
            self.url: str | None = url_or_client
            self.client = redis.Redis.from_url(
                url_or_client,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry_on_timeout=False,
            )
        elif isinstance(url_or_client, redis.Redis):
            self.url = None
            self.client = url_or_client
        else:
            msg = (
                "RedisStore takes a redis:// URL or a redis.Redis client, "
                f"got {type(url_or_client).__name__}"
            )
            raise TypeError(msg)
        super().__init__()
        from resilience.stores._redis_snapshot import MetaWriter  # noqa: PLC0415 - circular

        self._meta = MetaWriter(self)
        self._scripts: dict[str, Any] = {}
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    # -- backends ---------------------------------------------------------------------------

    @classmethod
    def register_loader(cls, concern: str, loader: Callable[[str, RedisStore], Any] | str) -> None:
        """
        Make *loader(key, store)* rebuild a backend of *concern* from what Redis holds.

        ``peek`` uses it for keys another process declared (a breaker's config is kept in
        Redis), so ``get_circuit_breaker(name, store=...)`` works in any process. It returns
        None when Redis holds nothing for the key.
        """
        cls._loaders[concern] = loader

    @classmethod
    def register_view(cls, concern: str, module: str) -> None:
        """Make ``snapshot()`` read the keys of *concern* with the ``VIEW`` of *module*."""
        cls._views[concern] = module

    def backend(self, concern: str, key: str, policy: Any) -> Any:
        """Return the backend of *concern* for *key*; a new one's numbers go to the meta hash."""
        found = self._backends.get((concern, key))
        if found is None:
            found = super().backend(concern, key, policy)
            meta = getattr(found, "meta", None)
            if meta is not None:
                self._meta.declare(concern, key, meta())
        return found

    def snapshot(self) -> Any:
        """Read every breaker, limiter, window, pool and budget of the namespace (no writes)."""
        from resilience.stores._redis_snapshot import snapshot  # noqa: PLC0415 - on use

        return snapshot(self)

    def peek(self, concern: str, key: str) -> Any:
        """
        Return the backend of *concern* for *key*, or None if there is none.

        A backend this process made, else (for a concern with a loader) one rebuilt from
        the state another process left in Redis.
        """
        found = self._backends.get((concern, key))
        loader = self._loaders.get(concern)
        if isinstance(loader, str):
            loader = self._loaders[concern] = resolve(loader)
        if found is None and loader is not None:
            with self._lock:
                found = self._backends.get((concern, key))
                if found is None:
                    found = loader(key, self)
                    if found is not None:
                        self._backends[(concern, key)] = found
        return found

    def keys(self, concern: str) -> list[str]:
        """Return the keys of *concern* made here or (with a loader) found in Redis."""
        found = {key for (kind, key) in list(self._backends) if kind == concern}
        if concern in self._loaders:
            prefix = self.key(concern, "")
            try:
                names = list(self.client.scan_iter(match=f"{prefix}*", count=500))
            except (_redis().exceptions.ConnectionError, _redis().exceptions.TimeoutError) as error:
                raise StoreUnavailableError(
                    f"{prefix}*", store=self.describe(), timeout=self.timeout
                ) from error
            for name in names:
                rest = (name.decode() if isinstance(name, bytes) else name)[len(prefix) :]
                if rest not in found and self.peek(concern, rest) is not None:
                    found.add(rest)
        return sorted(found)

    def key(self, concern: str, key: str, *parts: str) -> str:
        """Return the namespaced Redis key for *concern*/*key* (plus sub-parts)."""
        return ":".join((self.namespace, concern, key, *parts))

    def now_arg(self) -> str:
        """The first ARGV of a ``NOW_LUA`` script: ``""`` (server time) or the test clock's."""
        clock = self.clock
        return "" if clock is None else str(round(clock.monotonic() * 1_000_000))

    # -- running scripts ----------------------------------------------------------------------

    def _script(self, source: str) -> Any:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client.register_script(source)
        return script

    def run(self, source: str, keys: Sequence[str], args: Sequence[Any], *, key: str) -> Any:
        """
        Run the Lua *source* atomically (EVALSHA, loading it once) and return its reply.

        The client's socket timeout (the store's *timeout*) bounds the call.

        Raises:
            StoreUnavailableError: Redis did not answer within the store's timeout.
        """
        redis = _redis()
        try:
            return self._script(source)(keys=list(keys), args=list(args), client=self.client)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            raise StoreUnavailableError(key, store=self.describe(), timeout=self.timeout) from error

    async def arun(
        self,
        source: str,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        key: str,
        timeout: float | None = None,
    ) -> Any:
        """
        The async twin of ``run``, on an asyncio client of the running loop.

        *timeout* (if smaller than the store's) bounds this one call, e.g. by a policy's own
        remaining time.
        """
        redis = _redis()
        client = self._async_client()
        limit = self.timeout if timeout is None else min(self.timeout, max(timeout, 0.0))
        try:
            async with asyncio.timeout(limit):
                script = client.register_script(source)
                return await script(keys=list(keys), args=list(args), client=client)
        except (
            TimeoutError,
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
        ) as error:
            raise StoreUnavailableError(key, store=self.describe(), timeout=limit) from error

    def _async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            asyncio_redis = _redis().asyncio
            kwargs = self.client.connection_pool.connection_kwargs
            client = asyncio_redis.Redis(
                host=kwargs.get("host", "127.0.0.1"),
                port=kwargs.get("port", 6379),
                db=kwargs.get("db", 0),
                username=kwargs.get("username"),
                password=kwargs.get("password"),
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
            )
            self._async_clients[loop] = client
        return client

    def describe(self) -> str:
        """A short description for messages: the URL without credentials, or host:port."""
        kwargs = self.client.connection_pool.connection_kwargs
        return f"Redis at {kwargs.get('host', '?')}:{kwargs.get('port', '?')}"

    def clear(self) -> None:
        """Delete every key of this store's namespace (for tests) and forget backends."""
        redis = _redis()
        self._meta.settle()
        self._meta.forget()
        self._forget_backends()
        try:
            for name in self.client.scan_iter(match=f"{self.namespace}:*", count=500):
                self.client.delete(name)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            raise StoreUnavailableError(
                f"{self.namespace}:*", store=self.describe(), timeout=self.timeout
            ) from error

    def __repr__(self) -> str:
        return (
            f"RedisStore({self.describe()}, namespace={self.namespace!r}, timeout={self.timeout})"
        )

    def close(self) -> None:
        """Close the connections this store opened (a client passed in stays open)."""
        self._meta.stop()
        if self._owns_client:
            self.client.close()

    async def aclose(self) -> None:
        """Close this store's asyncio client of the running loop, if it made one."""
        client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


# Each concern's Redis twin, imported when the first backend of that concern is built.
RedisStore.register("breaker", "resilience._breaker.redis:RedisBreaker")
RedisStore.register_loader("breaker", "resilience._breaker.redis:RedisBreaker.load")
RedisStore.register("rate", "resilience._rate.redis:redis_rate_backend")
RedisStore.register("window", "resilience._rate.redis_window:redis_window_backend")
RedisStore.register("pool", "resilience._bounded.redis:redis_pool_backend")
RedisStore.register("pool.queue", "resilience._bounded.redis:redis_permit_queue")
RedisStore.register("budget", "resilience._budget.redis:redis_budget_backend")
# The operator's view: each concern's plain reads of its keys (``_redis_snapshot.View``).
RedisStore.register_view("breaker", "resilience._breaker.redis")
RedisStore.register_view("rate", "resilience._rate.redis")
RedisStore.register_view("window", "resilience._rate.redis_window")
RedisStore.register_view("pool", "resilience._bounded.redis")
RedisStore.register_view("budget", "resilience._budget.redis")
