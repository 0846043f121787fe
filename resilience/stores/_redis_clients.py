"""
The clients a ``RedisStore`` talks through: whatever the user hands in, made safe to use.

A store takes any script-capable client of redis-py or valkey-py (standalone, Sentinel-managed,
cluster; sync or asyncio), a URL, or a pair of clients. This module finds the client's
library (so errors and asyncio twins come from the same one), builds a sync client bounded by
the store's timeout when the user's is not, and the asyncio twin of a sync client (or the
sync twin of an asyncio one) with the same transport: TCP or unix socket, TLS settings,
credentials, database, Sentinel discovery, cluster nodes.

Only ``stores._redis`` imports this module, on first use, so ``import resilience`` imports no
client library.
"""

from __future__ import annotations

import importlib
import inspect

from types import ModuleType
from typing import Any


__all__ = [
    "async_twin",
    "base_error",
    "bounded",
    "cluster_router",
    "describe",
    "from_url",
    "is_async",
    "is_cluster",
    "library",
    "sync_twin",
]

_SCHEMES = {
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "valkey": "valkey",
    "valkeys": "valkey",
}

# Connection settings that are plain data (safe to copy to a twin); anything else in a pool's
# kwargs (parsers, handlers, registries, pools) belongs to that client alone.
_PLAIN = (str, int, float, bool, bytes, type(None))
_SHAREABLE = frozenset({"credential_provider"})
_NOT_COPIED = frozenset({"connection_pool", "retry", "retry_on_error"})
_MAX_CONNECTIONS = 8


def library(client: Any) -> ModuleType:
    """Return ``redis`` or ``valkey``: the library *client* (an instance) comes from."""
    names = [klass.__module__.partition(".")[0] for klass in type(client).__mro__]
    name = next((name for name in names if name in ("redis", "valkey")), "")
    if not name:
        msg = (
            "RedisStore takes a URL, a redis-py or valkey-py client (standalone, Sentinel's "
            f"master_for, cluster; sync or asyncio) or a pair of them, got {type(client).__name__}"
        )
        raise TypeError(msg)
    return importlib.import_module(name)


def _library_named(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        extra = "valkey" if name == "valkey" else "redis"
        msg = f"RedisStore needs {name}: pip install 'resilience[{extra}]' (or pip install {name})"
        raise ImportError(msg) from error


def base_error(lib: ModuleType) -> type[Exception]:
    """The base class of every error *lib* raises (``RedisError`` / ``ValkeyError``)."""
    return getattr(lib.exceptions, "RedisError", None) or lib.exceptions.ValkeyError  # type: ignore[no-any-return]


def _classes(lib: ModuleType) -> tuple[Any, Any, Any, Any]:
    """(sync standalone, sync cluster, async standalone, async cluster) of *lib*."""
    if lib.__name__ == "valkey":
        return lib.Valkey, lib.cluster.ValkeyCluster, lib.asyncio.Valkey, lib.asyncio.ValkeyCluster
    return lib.Redis, lib.cluster.RedisCluster, lib.asyncio.Redis, lib.asyncio.RedisCluster


def is_async(client: Any) -> bool:
    """Whether *client* is an asyncio client."""
    classes = _classes(library(client))
    return isinstance(client, classes[2:])


def is_cluster(client: Any) -> bool:
    """Whether *client* talks to a Redis Cluster."""
    classes = _classes(library(client))
    return isinstance(client, (classes[1], classes[3]))


def from_url(url: str, *, cluster: bool, timeout: float) -> Any:
    """A sync client for *url* (``redis://``, ``rediss://``, ``unix://``, ``valkey(s)://``)."""
    scheme = url.partition("://")[0].lower()
    name = _SCHEMES.get(scheme)
    if name is None:
        msg = f"RedisStore URL scheme must be one of {', '.join(sorted(_SCHEMES))}, got {url!r}"
        raise ValueError(msg)
    lib = _library_named(name)
    sync, sync_cluster, _, _ = _classes(lib)
    limits = _limits(lib, timeout, cluster=cluster)
    if cluster:
        if scheme == "unix":
            msg = "RedisStore(cluster=True) needs a TCP URL: Redis Cluster has no unix sockets"
            raise ValueError(msg)
        return sync_cluster.from_url(url, **limits)
    return sync.from_url(url, **limits)


def _limits(lib: ModuleType, timeout: float, *, cluster: bool) -> dict[str, Any]:
    """Client settings that keep one operation within *timeout*: no retry of a timeout."""
    retry = lib.retry.Retry(lib.backoff.NoBackoff(), 0 if cluster else 1)
    if not cluster:
        # A stale pooled connection (the server restarted) is retried once, at once; a
        # timeout is not retried: it already took the whole budget.
        retry = lib.retry.Retry(
            lib.backoff.NoBackoff(), 1, supported_errors=(lib.exceptions.ConnectionError,)
        )
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": retry,
    }


def _copyable(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in kwargs.items()
        if key not in _NOT_COPIED
        and not key.startswith(("orig_", "maint"))
        and (isinstance(value, _PLAIN) or key in _SHAREABLE)
    }


def _accepted(target: Any) -> set[str] | None:
    """The keyword names *target* (a class or callable) takes; None: any."""
    names: set[str] = set()
    for klass in inspect.getmro(target) if inspect.isclass(target) else (target,):
        init = vars(klass).get("__init__") if inspect.isclass(target) else klass
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):  # pragma: no cover - builtins
            return None
        names.update(p.name for p in params if p.kind is not p.VAR_KEYWORD)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
    return names


def _fit(kwargs: dict[str, Any], target: Any) -> dict[str, Any]:
    accepted = _accepted(target)
    plain = _copyable(kwargs)
    return plain if accepted is None else {k: v for k, v in plain.items() if k in accepted}


def _fit_cluster(kwargs: dict[str, Any], lib: ModuleType) -> dict[str, Any]:
    """
    The part of *kwargs* a sync cluster client of *lib* takes.

    Its own parameters, and the connection settings it passes on to each node (TLS,
    credentials, client name...), which its ``__init__`` takes as ``**kwargs`` and filters
    by the library's list of allowed keys.
    """
    cluster = lib.cluster
    names = getattr(cluster, "REDIS_ALLOWED_KEYS", None) or cluster.VALKEY_ALLOWED_KEYS
    allowed = frozenset(str(name) for name in names)
    own = _fit(kwargs, _classes(lib)[1])
    return {**own, **{k: v for k, v in _copyable(kwargs).items() if k in allowed}}


def _pool_kwargs(client: Any) -> dict[str, Any]:
    return dict(client.connection_pool.connection_kwargs)


def _needs_limits(kwargs: dict[str, Any], timeout: float, lib: ModuleType, retry: Any) -> bool:
    """
    Whether a paused server could hold a call longer than *timeout*.

    So it could when reads are unbounded or longer, or when the client retries a timeout
    (redis-py 6+ and valkey-py retry three times by default: a 0.3 s socket timeout then
    rides out a 3 s pause, and the call waits for it).
    """
    read = kwargs.get("socket_timeout")
    if read is None or read > timeout:
        return True
    return _retries_timeouts(retry, lib)


def _retries_timeouts(retry: Any, lib: ModuleType) -> bool:
    """Whether *retry* (a client's ``Retry``, or None) tries again after a timeout."""
    if retry is None or not getattr(retry, "_retries", 0):
        return False
    timeouts = (TimeoutError, lib.exceptions.TimeoutError)
    return any(
        issubclass(error, timeouts) or issubclass(lib.exceptions.TimeoutError, error)
        for error in getattr(retry, "_supported_errors", ())
    )


def bounded(client: Any, timeout: float) -> tuple[Any, bool]:
    """
    *client*, or a client of the same server with its settings bounded by *timeout*.

    Returns the client and whether the store made it (and so closes it). A paused server
    must not hold a call longer than the store's timeout, whoever built the client.
    """
    lib = library(client)
    if is_cluster(client):
        kwargs = dict(client.nodes_manager.connection_kwargs)
        retried = _retries_timeouts(getattr(client, "retry", None), lib)
        if not retried and not _needs_limits(kwargs, timeout, lib, kwargs.get("retry")):
            return client, False
        sync_cluster = _classes(lib)[1]
        nodes = [lib.cluster.ClusterNode(node.host, node.port) for node in client.get_primaries()]
        ssl = "SSL" in getattr(kwargs.get("connection_class"), "__name__", "")
        settings = _fit_cluster(kwargs, lib)
        settings.pop("host", None)
        settings.pop("port", None)
        if ssl:
            settings["ssl"] = True
        settings.update(_limits(lib, timeout, cluster=True))
        return sync_cluster(startup_nodes=nodes, **settings), True
    pool = client.connection_pool
    kwargs = _pool_kwargs(client)
    if not _needs_limits(kwargs, timeout, lib, kwargs.get("retry")):
        return client, False
    settings = _copyable(kwargs)
    settings.update(_limits(lib, timeout, cluster=False))
    sentinel = getattr(pool, "sentinel_manager", None)
    if sentinel is not None:
        new_pool = type(pool)(
            pool.service_name,
            sentinel,
            is_master=pool.is_master,
            connection_class=pool.connection_class,
            **settings,
        )
    else:
        new_pool = type(pool)(connection_class=pool.connection_class, **settings)
    try:  # the user's own client class (a subclass that instruments or guards commands)
        return type(client).from_pool(new_pool), True
    except TypeError:  # a subclass whose constructor wants more than a pool
        return _classes(lib)[0].from_pool(new_pool), True


def _mirror_standalone(client: Any, target: ModuleType, timeout: float, *, to_async: bool) -> Any:
    """The twin of a standalone or Sentinel-managed client, in *target* (its asyncio or sync)."""
    lib = library(client)
    pool = client.connection_pool
    kwargs = _pool_kwargs(client)
    kwargs.update(socket_timeout=timeout, socket_connect_timeout=timeout)
    name = pool.connection_class.__name__
    sentinel = getattr(pool, "sentinel_manager", None)
    standalone = _classes(lib)[2 if to_async else 0]
    if sentinel is not None:
        sentinels = [
            (
                node.connection_pool.connection_kwargs["host"],
                node.connection_pool.connection_kwargs["port"],
            )
            for node in sentinel.sentinels
        ]
        module = target.sentinel
        twin = module.Sentinel(
            sentinels,
            min_other_sentinels=sentinel.min_other_sentinels,
            sentinel_kwargs=_fit(dict(sentinel.sentinel_kwargs), standalone),
            **_fit(dict(sentinel.connection_kwargs), standalone),
        )
        settings = _fit(kwargs, module.SentinelManagedConnection)
        settings.pop("host", None)
        settings.pop("port", None)
        if "SSL" in name:
            settings["ssl"] = True
        return twin.master_for(pool.service_name, **settings)
    connection_class = getattr(target.connection, name, None)
    if connection_class is None:
        msg = f"RedisStore cannot mirror a {name} connection between sync and asyncio clients"
        raise TypeError(msg)
    # A bounded pool: a burst of tasks queues for a few connections instead of opening one
    # each (a TLS handshake apiece), and the store's timeout bounds the queueing too.
    twin_pool = target.BlockingConnectionPool(
        connection_class=connection_class,
        max_connections=_MAX_CONNECTIONS,
        timeout=timeout,
        **_fit(kwargs, connection_class),
    )
    return standalone.from_pool(twin_pool)  # the client owns (and closes) its pool


def _mirror_cluster(client: Any, timeout: float, *, to_async: bool) -> Any:
    lib = library(client)
    target_class = _classes(lib)[3 if to_async else 1]
    if to_async:
        kwargs = dict(client.nodes_manager.connection_kwargs)
        nodes = [(node.host, node.port) for node in client.get_primaries()]
        node_class = lib.asyncio.cluster.ClusterNode
    else:
        kwargs = dict(client.connection_kwargs)
        # Not yet initialised (no command sent): it knows only its startup nodes.
        known = client.get_primaries() or list(client.nodes_manager.startup_nodes.values())
        nodes = [(node.host, node.port) for node in known]
        node_class = lib.cluster.ClusterNode
    ssl = "SSL" in getattr(kwargs.get("connection_class"), "__name__", "")
    settings = _fit(kwargs, target_class) if to_async else _fit_cluster(kwargs, lib)
    settings.pop("host", None)
    settings.pop("port", None)
    settings.update(socket_timeout=timeout, socket_connect_timeout=timeout)
    if ssl:
        settings["ssl"] = True
    startup = [node_class(host, port) for host, port in nodes]
    if to_async:
        # No retries, as for the sync cluster client: a script whose reply was lost may
        # have run, and running it again would count twice (a permit granted twice).
        retry = lib.asyncio.retry.Retry(lib.backoff.NoBackoff(), 0)
        return target_class(startup_nodes=startup, **settings, retry=retry)
    settings.update(_limits(lib, timeout, cluster=True))  # the same timeouts, and no retry
    return target_class(startup_nodes=startup, **settings)


def cluster_router(client: Any, timeout: float) -> Any:
    """
    The asyncio way to the cluster *client* (sync or asyncio) talks to, for the running loop.

    A ``ClusterRouter``: a few asyncio connections per primary with *client*'s connection
    settings (TLS, credentials, client name, protocol, decoding) and socket timeouts of
    *timeout*, seeded with its nodes and its ``address_remap``.
    """
    from resilience.stores._redis_cluster import ClusterRouter  # noqa: PLC0415 - on use

    lib = library(client)
    manager = client.nodes_manager
    kwargs = dict(manager.connection_kwargs)
    given = kwargs.get("connection_class")
    name = getattr(given, "__name__", "Connection")
    if name == "Connection" and kwargs.get("ssl"):  # a sync cluster client told ssl=True
        name = "SSLConnection"
    connection_class = getattr(lib.asyncio.connection, name, None)
    if connection_class is None:
        msg = f"RedisStore cannot use a {name} connection from asyncio on a cluster"
        raise TypeError(msg)
    settings = _fit(kwargs, connection_class)
    for key in ("host", "port", "max_connections", "connection_class"):
        settings.pop(key, None)
    settings.update(socket_timeout=timeout, socket_connect_timeout=timeout)
    nodes = client.get_nodes() or list(manager.startup_nodes.values())
    seeds = [(node.host, int(node.port)) for node in nodes]
    return ClusterRouter(
        lib,
        seeds,
        connection_class=connection_class,
        settings=settings,
        max_connections=_MAX_CONNECTIONS,
        remap=getattr(manager, "address_remap", None),
    )


def async_twin(client: Any, timeout: float) -> Any:
    """A new asyncio client for the server(s) sync *client* talks to, the same way."""
    lib = library(client)
    if is_cluster(client):
        return _mirror_cluster(client, timeout, to_async=True)
    return _mirror_standalone(client, lib.asyncio, timeout, to_async=True)


def sync_twin(client: Any, timeout: float) -> Any:
    """A new sync client for the server(s) asyncio *client* talks to, the same way."""
    lib = library(client)
    if is_cluster(client):
        return _mirror_cluster(client, timeout, to_async=False)
    twin = _mirror_standalone(client, lib, timeout, to_async=False)
    return bounded(twin, timeout)[0]


def describe(client: Any) -> str:
    """A short description for messages: where *client* goes, without credentials."""
    lib = library(client)
    product = "Valkey" if lib.__name__ == "valkey" else "Redis"
    if is_cluster(client):
        nodes = client.get_primaries() if not is_async(client) else client.get_nodes()
        where = ",".join(f"{node.host}:{node.port}" for node in nodes[:3])
        return f"{product} Cluster at {where}"
    pool = client.connection_pool
    sentinel = getattr(pool, "service_name", None)
    if sentinel is not None:
        return f"{product} Sentinel service {sentinel!r}"
    kwargs = pool.connection_kwargs
    if "path" in kwargs:
        return f"{product} at unix:{kwargs['path']}"
    tls = "s" if "SSL" in pool.connection_class.__name__ else ""
    return f"{product}{tls and ' (TLS)'} at {kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
