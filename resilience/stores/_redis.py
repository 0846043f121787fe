"""
``RedisStore``: shared state for many processes and machines, in Redis (or Valkey).

Like ``MemoryStore`` it hands out one backend per (concern, key); each concern's Redis twin
is registered below by name, imported when first used. Every decision a backend makes is
one Lua script, run atomically on the server in one round trip, reading the server's clock
(``TIME``), so callers with skewed clocks agree. Keys are named by ``RedisStore.key`` alone:
``<namespace>:<concern>:{<key>}[:<part>]``, so every key of one breaker, limiter (with its
backoff window), pool or budget shares one hash tag (one cluster slot, one script), and
different keys spread over the cluster. Keys expire when idle. Every operation is bounded by
``timeout``; any failure of the store (no answer in time, a refused connection, or an error
answer such as ``READONLY``, ``MOVED``, ``CLUSTERDOWN``, ``WRONGTYPE``) raises
``StoreUnavailableError`` naming the key (and the server's answer), never hangs, and the next
operation reconnects by itself.

The client library (redis-py or valkey-py) is imported only when a ``RedisStore`` is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import time
import weakref

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from resilience._errors import StoreUnavailableError
from resilience._validate import duration
from resilience.stores._registry import BackendRegistry, resolve


if TYPE_CHECKING:
    from resilience.typing import Clock


__all__ = ["BUCKETS_LUA", "NOW_LUA", "RedisStore"]

#: The longest the breakers' change feed is trusted after its last answered heartbeat (s).
_FRESH = 0.1
#: The longest ``sync_interval`` accepted (s).
_MOST_INTERVAL = 10.0

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


BUCKETS_LUA = """
local function read_hash(key)
  local raw = redis.call('HGETALL', key)
  local h = {}
  for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
  return h
end
local function num(h, field) return tonumber(h[field]) or 0 end
local function roll(h, now, width, a, b)
  local ta, tb = num(h, 't' .. a), num(h, 't' .. b)
  local index = math.floor(now / width)
  local current = tonumber(h.cur)
  if current == nil or index > current then
    local stale = 10
    if current ~= nil then stale = math.min(10, index - current) end
    for back = 0, stale - 1 do
      local slot = (index - back) % 10
      ta = ta - num(h, a .. slot)
      tb = tb - num(h, b .. slot)
      h[a .. slot] = 0; h[b .. slot] = 0
    end
    current = index
  end
  return ta, tb, current
end
local function write_hash(key, h, ttl)
  local flat = {}
  for field, value in pairs(h) do
    flat[#flat + 1] = field
    flat[#flat + 1] = value
  end
  redis.call('HSET', key, unpack(flat))
  redis.call('PEXPIRE', key, ttl)
end
"""
"""
Lua preamble for two counters in ten buckets of *width* microseconds, kept in one hash.

``roll(h, now, width, a, b)`` moves the window to *now*: buckets ``<a><slot>`` and
``<b><slot>`` that fell out of it are emptied and taken off the totals ``t<a>``/``t<b>``;
it returns the two totals and the current bucket index (stored back as ``cur``). The retry
budget (calls ``c``, retries ``r``) and the throttle (requests ``q``, accepts ``a``) share it.
"""


def _clients() -> Any:
    from resilience.stores import _redis_clients  # noqa: PLC0415 - imports the client library

    return _redis_clients


_BRACES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D"})
_GLOB = str.maketrans({c: f"\\{c}" for c in "*?[]\\"})


class RedisStore(BackendRegistry):
    """
    Keeps breakers, rate budgets, backoff windows and permit pools in Redis or Valkey.

    Args:
        url_or_client: Where the state lives. A URL (``redis://``, ``rediss://`` for TLS,
            ``unix://``, ``valkey://``, ``valkeys://``); a client of redis-py or valkey-py:
            ``redis.Redis``, ``redis.cluster.RedisCluster``, their asyncio counterparts, a
            Sentinel-managed client (``Sentinel(...).master_for(name)``), ``valkey.Valkey``,
            ``valkey.cluster.ValkeyCluster``; or a pair ``(sync_client, async_client)``.
            From one client the store builds its twin (sync or asyncio) with the same
            transport, TLS settings, credentials, socket path and Sentinel discovery. A client
            whose socket timeouts exceed *timeout* is copied with *timeout* applied (the copy
            is the store's); yours is left as it is.
        cluster: With a URL: the server is a Redis Cluster node (clients say so themselves).
        timeout: The most seconds any store operation may wait on Redis (> 0).
        namespace: The prefix of every key this store writes (no ``{`` nor ``}``: the key
            names carry their own hash tags).
        idle_ttl: Seconds after which an untouched key expires (> 0), so Redis does not
            fill up with state nobody uses. A key whose state still matters (an open
            breaker, a window not yet over, a lease not yet expired) lives until then too.
        clock: For tests only: read time from this clock (its ``monotonic()``) instead of
            the Redis server's ``TIME``, so a test can run on virtual time. Never set it in
            production: processes with different clocks would disagree.
        lease: Seconds a ``@bounded`` permit stays granted unless its holder renews it
            (> 0). Holders renew every ``lease / 3`` seconds while the call runs, so the
            permits of a process that dies come back within *lease* seconds.
        slack: Seconds by which ``@rate_limited`` widens its check of actual starts (>= 0):
            the jitter between the server's clock reading and where a call really begins
            (the reply's way back and the scheduler), so the rule holds where calls begin.
        local_breakers: Keep the state of each closed breaker in consecutive-failure mode
            in this process (the default), so a healthy call costs no round trip. Failures
            are still recorded atomically in Redis; every change is published (pub/sub) and
            applied by one listener thread per store, typically within a millisecond. The
            local state is trusted only while that feed is live: subscribed, and its
            heartbeat (a PING every ~33 ms on the subscribed connection) answered within
            the last 0.1 s (or ``timeout / 2``, if smaller). Otherwise every call asks
            Redis, so an unreachable server still raises ``StoreUnavailableError`` (or
            fails open) as without the option; after a reconnect each breaker reads its
            state again before trusting it. ``False``: every call asks Redis.
        sync_interval: Seconds between the batches in which breakers in failure-rate mode
            (``failure_rate=``) send the outcomes of their closed calls to Redis (0 to 10;
            0: one round trip per call, as with ``local_breakers=False``). A failure is sent
            at once (by the same background thread), successes at most this far apart, so
            the window's rate in Redis may lag this process's last calls by up to
            *sync_interval*. Failed batches are reported and retried; ``flush()`` and
            ``close()`` (and the interpreter's exit) send what is left.

    .. versionadded:: 0.1.0
    """

    __module__ = "resilience.stores"

    _loaders: ClassVar[dict[str, Callable[[str, RedisStore], Any] | str]] = {}
    _views: ClassVar[dict[str, str]] = {}
    #: The state lives in Redis: a handle nothing holds can be dropped from this process.
    stateless_backends: ClassVar[bool] = True

    def __init__(
        self,
        url_or_client: Any,
        *,
        cluster: bool = False,
        timeout: float = 1.0,
        namespace: str = "resilience",
        idle_ttl: float = 3600.0,
        clock: Clock | None = None,
        lease: float = 10.0,
        slack: float = 0.001,
        local_breakers: bool = True,
        sync_interval: float = 0.1,
    ) -> None:
        self.timeout: float = duration("RedisStore", "timeout", timeout, strict=True) or 0.0
        self.idle_ttl: float = duration("RedisStore", "idle_ttl", idle_ttl, strict=True) or 0.0
        if not namespace or set(namespace) & set("{}"):
            msg = (
                "RedisStore.namespace must be a non-empty string without '{' or '}' "
                f"(keys carry their own hash tags), got {namespace!r}"
            )
            raise ValueError(msg)
        self.namespace = namespace
        self.clock = clock
        self.ttl_ms: int = max(1, round(self.idle_ttl * 1000))
        self.lease: float = duration("RedisStore", "lease", lease, strict=True) or 0.0
        self.slack: float = duration("RedisStore", "slack", slack) or 0.0
        if not isinstance(local_breakers, bool):
            msg = f"RedisStore.local_breakers must be True or False, got {local_breakers!r}"
            raise TypeError(msg)
        self.local_breakers = local_breakers
        interval = duration("RedisStore", "sync_interval", sync_interval) or 0.0
        if interval > _MOST_INTERVAL:
            msg = (
                f"RedisStore.sync_interval must be between 0 and {_MOST_INTERVAL:g} seconds "
                f"(0: record every outcome at once), got {sync_interval!r}"
            )
            raise ValueError(msg)
        self.sync_interval: float = interval
        self._listener: _Listener | None = None
        self._flusher: _Flusher | None = None
        clients = _clients()
        self.url: str | None = None
        given_async: Any = None
        if isinstance(url_or_client, str):
            self.url = url_or_client
            self.client: Any = clients.from_url(
                url_or_client, cluster=cluster, timeout=self.timeout
            )
            self._owns_client = True
        elif isinstance(url_or_client, tuple):
            if len(url_or_client) != 2:
                msg = f"RedisStore takes a pair (sync_client, async_client), got {url_or_client!r}"
                raise TypeError(msg)
            sync, given_async = url_or_client
            if clients.is_async(sync) or not clients.is_async(given_async):
                msg = (
                    "RedisStore's pair is (sync_client, async_client), got "
                    f"({type(sync).__name__}, {type(given_async).__name__})"
                )
                raise TypeError(msg)
            self.client, self._owns_client = clients.bounded(sync, self.timeout)
        elif clients.is_async(url_or_client):
            given_async = url_or_client
            self.client = clients.sync_twin(url_or_client, self.timeout)
            self._owns_client = True
        else:
            self.client, self._owns_client = clients.bounded(url_or_client, self.timeout)
        self._library = clients.library(self.client)
        self.cluster: bool = clients.is_cluster(self.client)
        self._error: type[Exception] = clients.base_error(self._library)
        self._no_script: type[Exception] = self._library.exceptions.NoScriptError
        self._description: str = clients.describe(self.client)
        # On a cluster, asyncio calls go through a ClusterRouter of the running loop, built
        # from the given asyncio client's settings (else the sync client's), never through
        # the library's asyncio cluster client (see ``_redis_cluster``).
        self._cluster_source: Any = given_async if given_async is not None else self.client
        self._given_async = None if self.cluster else given_async
        super().__init__()
        from resilience.stores._redis_snapshot import MetaWriter  # noqa: PLC0415 - circular

        self._meta = MetaWriter(self)
        self._shas: dict[str, str] = {}
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
        None when Redis holds nothing for the key. *loader* may be a name, as for
        ``register``.
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
            prefix = f"{self.namespace}:{concern}:{{"
            for name in self._scan(f"{prefix.translate(_GLOB)}*}}"):
                if not name.startswith(prefix) or not name.endswith("}"):
                    continue
                rest = _unquote(name[len(prefix) : -1])
                if rest not in found and self.peek(concern, rest) is not None:
                    found.add(rest)
        return sorted(found)

    def key(self, concern: str, key: str, *parts: str) -> str:
        """
        Return the Redis key for *concern*/*key* (plus sub-parts): the one naming rule.

        ``<namespace>:<concern>:{<key>}[:<part>...]``: the braces are a hash tag, so every
        key of one *key* (whatever its concern and parts) lives in one cluster slot and one
        script may touch them all; ``{``, ``}`` and ``%`` inside *key* are percent-escaped
        so the tag is always the whole key.
        """
        name = f"{self.namespace}:{concern}:{{{key.translate(_BRACES)}}}"
        return ":".join((name, *parts)) if parts else name

    def now_arg(self) -> str:
        """The first ARGV of a ``NOW_LUA`` script: ``""`` (server time) or the test clock's."""
        clock = self.clock
        return "" if clock is None else str(round(clock.monotonic() * 1_000_000))

    # -- running scripts ----------------------------------------------------------------------

    def _sha(self, source: str) -> str:
        sha = self._shas.get(source)
        if sha is None:
            sha = self._shas[source] = hashlib.sha1(source.encode()).hexdigest()
        return sha

    def unavailable(self, key: str, error: BaseException, timeout: float) -> StoreUnavailableError:
        """The ``StoreUnavailableError`` for *error* (the client's) on *key*."""
        reason = None
        if not isinstance(error, TimeoutError | OSError) and type(error).__name__ not in (
            "ConnectionError",
            "TimeoutError",
            "BusyLoadingError",
        ):
            reason = f"{type(error).__name__}: {error}"
            if type(error).__name__ in ("MovedError", "AskError") and not self.cluster:
                reason += " (a cluster node: RedisStore(url, cluster=True) or a cluster client)"
        return StoreUnavailableError(key, store=self._description, timeout=timeout, reason=reason)

    def run(self, source: str, keys: Sequence[str], args: Sequence[Any], *, key: str) -> Any:
        """
        Run the Lua *source* atomically (EVALSHA, loading it once) and return its reply.

        The client's socket timeout (the store's *timeout*) bounds the call.

        Raises:
            StoreUnavailableError: Redis did not answer within the store's timeout, or
                answered with an error (its answer is in the message).
        """
        client = self.client
        try:
            try:
                return client.evalsha(self._sha(source), len(keys), *keys, *args)
            except self._no_script:
                return client.eval(source, len(keys), *keys, *args)
        except (self._error, OSError) as error:
            raise self.unavailable(key, error, self.timeout) from error

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
        limit = self.timeout if timeout is None else min(self.timeout, max(timeout, 0.0))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        for attempt in (1, 2):
            client = self._async_client()
            try:
                async with asyncio.timeout_at(deadline):
                    if self.cluster:  # a ClusterRouter: straight to the slot's primary
                        return await client.run(source, self._sha(source), keys, args)
                    try:
                        return await client.evalsha(self._sha(source), len(keys), *keys, *args)
                    except self._no_script:
                        return await client.eval(source, len(keys), *keys, *args)
            except (TimeoutError, OSError, self._error) as error:
                raise self.unavailable(key, error, limit) from error
            except Exception as error:
                # Not the library's own error: a client left broken (e.g. a connection
                # cancelled while it connected). Drop it; try once more on a fresh twin
                # within the same deadline.
                if self._given_async is None:
                    self._async_clients.pop(loop, None)
                if attempt == 2 or self._given_async is not None or loop.time() >= deadline:
                    raise self.unavailable(key, error, limit) from error
        raise AssertionError  # pragma: no cover - the loop returns or raises

    def _async_client(self) -> Any:
        if self._given_async is not None:
            return self._given_async
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            if self.cluster:  # the given asyncio cluster client's settings, else the sync one's
                client = _clients().cluster_router(self._cluster_source, self.timeout)
            else:
                client = _clients().async_twin(self.client, self.timeout)
            self._async_clients[loop] = client
        return client

    def _scan(self, match: str) -> list[str]:
        """Every key name matching *match*, on every node (a cluster's primaries too)."""
        try:
            names = list(self.client.scan_iter(match=match, count=500))
        except (self._error, OSError) as error:
            raise self.unavailable(match, error, self.timeout) from error
        return [name.decode() if isinstance(name, bytes) else name for name in names]

    @classmethod
    def from_sentinel(cls, url: str, service: str, **options: Any) -> RedisStore:
        """
        A store on the primary that the Sentinel at *url* names for *service*.

        *url* is ``redis://[user:password@]host[:port][/db]``: the Sentinel's address (port
        26379 when left out), and the credentials and database of the primary. *options*
        are ``RedisStore``'s (``namespace``, ``timeout``...). The store closes the client it
        made. For Sentinel over TLS, or sentinels with settings of their own, build the
        client (``redis.sentinel.Sentinel(...).master_for(...)``) and give it instead.

        .. versionadded:: 0.1.0
        """
        from urllib.parse import unquote, urlsplit  # noqa: PLC0415

        if not url.startswith("redis://"):
            msg = (
                f"RedisStore.from_sentinel needs a redis:// URL of a Sentinel, got {url!r} "
                "(for TLS, give RedisStore a client of your own)"
            )
            raise ValueError(msg)
        import redis.sentinel  # noqa: PLC0415

        timeout = duration("RedisStore", "timeout", options.get("timeout", 1.0), strict=True) or 1.0
        parts = urlsplit(url)
        primary: dict[str, Any] = {"socket_timeout": timeout}
        if parts.username:
            primary["username"] = unquote(parts.username)
        if parts.password:
            primary["password"] = unquote(parts.password)
        path = parts.path.strip("/")
        sentinel: Any = redis.sentinel.Sentinel  # untyped in redis-py
        manager = sentinel(
            [(parts.hostname or "127.0.0.1", parts.port or 26379)],
            socket_timeout=timeout,
            sentinel_kwargs={"socket_timeout": timeout},
        )
        client = manager.master_for(service, db=int(path) if path.isdigit() else 0, **primary)
        store = cls(client, **options)
        store._owns_client = True
        return store

    def describe(self) -> str:
        """A short description for messages: where the store is, without credentials."""
        return self._description

    def breaker_listener(self) -> _Listener:
        """The one thread that hears this store's breaker changes (``local_breakers``)."""
        with self._lock:
            listener = self._listener
            if listener is None or listener.pid != os.getpid():  # none yet, or a forked child
                listener = self._listener = _Listener(self, f"{self.namespace}:breaker-changes")
                weakref.finalize(self, listener.stop, wait=False)
            return listener

    def breaker_flusher(self) -> _Flusher:
        """The one thread that sends failure-rate breakers' batched outcomes (``sync_interval``)."""
        with self._lock:
            flusher = self._flusher
            if flusher is None or flusher.pid != os.getpid():
                flusher = self._flusher = _Flusher(self.namespace, self.sync_interval)
                weakref.finalize(self, flusher.stop)  # also at exit: the last batch is sent
            return flusher

    def flush(self) -> bool:
        """Send every batched breaker outcome now; False if Redis could not take them all."""
        flusher = self._flusher
        return flusher is None or flusher.flush()

    def clear(self) -> None:
        """Delete every key of this store's namespace (for tests) and forget backends."""
        self._meta.settle()
        self._meta.forget()
        self._forget_backends()
        pattern = f"{self.namespace.translate(_GLOB)}:*"
        names = self._scan(pattern)
        try:
            for name in names:  # one by one: a cluster refuses a DEL across slots
                self.client.delete(name)
        except (self._error, OSError) as error:
            raise self.unavailable(pattern, error, self.timeout) from error

    def __repr__(self) -> str:
        return (
            f"RedisStore({self._description}, namespace={self.namespace!r}, timeout={self.timeout})"
        )

    def close(self) -> None:
        """Close the connections this store opened (a client passed in stays open)."""
        self._meta.stop()
        if self._flusher is not None:
            self._flusher.stop()
            self._flusher = None
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if self._owns_client:
            self.client.close()

    async def aclose(self) -> None:
        """Close this store's asyncio client of the running loop, if it made one."""
        client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
            # A Sentinel-managed twin also holds clients of the sentinels themselves.
            manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
            for sentinel in getattr(manager, "sentinels", ()):
                await sentinel.aclose()


class _Listener:
    """
    One daemon thread per store: its breakers' change feed, and whether it is live.

    The thread subscribes to the store's change channel and PINGs on that connection every
    ``heartbeat`` seconds (in a cluster it also PINGs every primary first). A pong for a PING
    sent at *t* proves that every change published before *t* has been applied here (one
    connection delivers in order), so the feed is trusted until ``t + bound``
    (``fresh_until``, on ``time.monotonic``). ``bound`` is at most 0.1 s and half the store's
    timeout: a late heartbeat, a lost connection or a dead primary makes every watched
    breaker ask Redis again within it, so an unreachable server still raises
    ``StoreUnavailableError`` (or fails open) within the timeout. A lost connection (and any
    resubscription, even one the client made by itself) makes the breakers forget their
    local state: each reads it again from Redis before trusting it. ``heard`` counts the
    changes applied and the losses, so a reply can tell whether one overtook it; ``late``
    counts the heartbeats answered after the feed had stopped being trusted.
    """

    def __init__(self, store: RedisStore, channel: str) -> None:
        self.channel = channel
        self.bound = min(_FRESH, store.timeout / 2)
        self.heartbeat = self.bound / 3
        self.fresh_until = 0.0
        self.heard = 0
        self.late = 0
        self.pid = os.getpid()
        self._client = store.client
        self._timeout = store.timeout
        self._cluster = store.cluster
        self._watched: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"resilience-breakers-{store.namespace}", daemon=True
        )
        self._thread.start()

    @property
    def live(self) -> bool:
        """Whether the feed is trusted now (subscribed, and a heartbeat answered in time)."""
        return time.monotonic() < self.fresh_until

    def watch(self, key: str, backend: Any) -> None:
        self._watched[key] = backend

    def stop(self, *, wait: bool = True) -> None:
        self._stopped.set()
        if wait and self._thread is not threading.current_thread():
            self._thread.join(2.0)

    def _down(self) -> None:
        self.fresh_until = 0.0
        self.heard += 1
        for backend in list(self._watched.values()):
            backend.forget()

    def _apply(self, data: Any) -> None:
        text = data.decode() if isinstance(data, bytes) else str(data)
        state, dirty, key = text.split("|", 2)
        backend = self._watched.get(key)
        self.heard += 1
        if backend is not None:
            backend.apply(int(state), dirty == "1")

    def _ping_primaries(self) -> None:
        """In a cluster: every primary must answer too (a breaker's slot may live on any)."""
        if self._cluster:
            for node in self._client.get_primaries():
                self._client.get_redis_connection(node).ping()

    def _serve(self) -> None:
        """Subscribe, then heartbeat and apply changes until the connection fails."""
        pubsub = self._client.pubsub()
        try:
            started = time.monotonic()
            pubsub.subscribe(self.channel)
            subscribed = False
            sent: float | None = None  # when the PING awaiting its pong was sent
            waiting: float | None = started  # since when an answer is awaited (None: none is)
            due = 0.0
            while not self._stopped.is_set():
                now = time.monotonic()
                if subscribed and sent is None and now >= due:
                    self._ping_primaries()
                    sent = waiting = now
                    pubsub.ping()
                wait = self.heartbeat  # for an answer, or (below) until the next PING is due
                if subscribed and sent is None:
                    wait = min(wait, max(due - time.monotonic(), 0.0))
                message = pubsub.get_message(timeout=wait)
                if message is not None:
                    kind = message.get("type")
                    if kind == "message":
                        self._apply(message["data"])
                    elif kind == "pong" and sent is not None:
                        if 0.0 < self.fresh_until < time.monotonic():
                            self.late += 1  # a spell in which calls asked Redis
                        self.fresh_until = sent + self.bound
                        due = sent + self.heartbeat
                        sent = waiting = None
                    elif kind == "subscribe":
                        if subscribed:  # the client reconnected by itself: changes may be lost
                            self._down()
                        subscribed = True
                        sent = waiting = None
                        due = 0.0
                if waiting is not None and time.monotonic() - waiting > self._timeout:
                    msg = "no answer to PING" if subscribed else "no subscription"
                    raise TimeoutError(msg)
        finally:
            with contextlib.suppress(Exception):
                pubsub.close()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._serve()
            except Exception:  # any failure: forget, reconnect
                self._down()
                self._stopped.wait(min(0.1, self._timeout))
        self._down()


class _Flusher:
    """
    One daemon thread per store sending its failure-rate breakers' batches to Redis.

    Every *interval* seconds, or at once when a breaker keeps a failure, each watched
    backend's ``flush()`` runs one script with its pending outcomes. A batch Redis cannot
    take is reported by the backend and kept; ``failures`` counts them, and the thread
    waits a whole interval before trying again. ``stop()`` sends what is left.
    """

    def __init__(self, namespace: str, interval: float) -> None:
        self.interval = interval
        self.failures = 0
        self.pid = os.getpid()
        self._backends: weakref.WeakSet[Any] = weakref.WeakSet()
        self._woken = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"resilience-batches-{namespace}", daemon=True
        )
        self._thread.start()

    def watch(self, backend: Any) -> None:
        self._backends.add(backend)

    def wake(self) -> None:
        self._woken.set()

    def flush(self) -> bool:
        """Flush every watched backend; whether all batches reached Redis."""
        sent = True
        for backend in list(self._backends):
            if not backend.flush():
                self.failures += 1
                sent = False
        return sent

    def stop(self) -> None:
        self._stopped.set()
        self._woken.set()
        if self._thread is not threading.current_thread():
            self._thread.join(2.0)
        self.flush()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._woken.wait(self.interval)
            self._woken.clear()
            try:
                sent = self.flush()
            except Exception:  # a bug must not end the thread: the next round retries
                sent = False
            if not sent:
                self._stopped.wait(self.interval)


def _unquote(text: str) -> str:
    return text.replace("%7B", "{").replace("%7D", "}").replace("%25", "%")


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
RedisStore.register_view("tokens", "resilience._budget.redis:TOKENS_VIEW")
RedisStore.register_view("throttle", "resilience._throttle.redis")
RedisStore.register("throttle", "resilience._throttle.redis:redis_throttle")
RedisStore.register("tokens", "resilience._budget.redis:redis_tokens")
