"""
Decisions per second through Redis on loopback: ours against limits and pyrate-limiter.

Cost: each contender makes ONE decision with room (a huge rate, a huge pool), so what is
timed is the library's own work plus its round trips to the local Redis. The baseline is a
bare ``PING`` (one round trip), the floor of any Redis-backed decision.

- rate: ``@rate_limited`` on a ``RedisStore`` (one ``EVALSHA``), limits'
  ``MovingWindowRateLimiter`` on ``RedisStorage`` and pyrate-limiter's ``RedisBucket``;
- permit: ``@bounded`` on a ``RedisStore`` (acquire + release: two ``EVALSHA``) against
  redis-py's own ``Lock`` (acquire + release), the simplest shared mutex there is; neither
  peer library has a shared semaphore.

Round trips per decision (``python -m benchmarks.bench_redis``): client round trips are
counted by wrapping redis-py's ``send_packed_command`` (a pipeline counts once); Redis
commands executed per decision come from the ``INFO stats`` ``total_commands_processed``
delta (it counts the commands a script runs too). The same counts are in the scenario notes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from benchmarks._harness import Scenario, Target, close_event_loop, measure, optional
from resilience import AdaptiveLimit, bounded, rate_limited
from resilience.stores import RedisStore


redis = optional("redis")
limits = optional("limits")
pyrate = optional("pyrate_limiter")

URL = "redis://127.0.0.1:6379/0"
HUGE = 10**7
RATE = "Redis: rate decision with room (sync)"
ARATE = "Redis: rate decision with room (async)"
PERMIT = "Redis: permit acquire and release with room (sync)"
APERMIT = "Redis: permit acquire and release with room (async)"

_names = itertools.count()
_NAMESPACE = f"bench-{uuid.uuid4().hex[:8]}"


def work() -> int:
    return 1


async def awork() -> int:
    return 1


def _client() -> Any:
    if redis is None:
        msg = "redis-py is not installed"
        raise RuntimeError(msg)
    client = redis.Redis.from_url(URL, socket_connect_timeout=0.5)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as error:
        msg = f"no Redis at 127.0.0.1:6379 ({error})"
        raise RuntimeError(msg) from None
    return client


def _key() -> str:
    return f"{_NAMESPACE}-{next(_names)}"


# -- contenders ------------------------------------------------------------------------------


def _ours_rate(store: RedisStore) -> Callable[[], Any]:
    return rate_limited(rate=HUGE, per=1.0, key=_key(), store=store)(work)


def _ours_arate(store: RedisStore) -> Callable[[], Awaitable[Any]]:
    return rate_limited(rate=HUGE, per=1.0, key=_key(), store=store)(awork)


def _ours_permit(store: RedisStore) -> Callable[[], Any]:
    return bounded(limit=HUGE, key=_key(), store=store)(work)


def _ours_apermit(store: RedisStore) -> Callable[[], Awaitable[Any]]:
    return bounded(limit=HUGE, key=_key(), store=store)(awork)


def _ours_adaptive(store: RedisStore, algorithm: str) -> Callable[[], Any]:
    """An adaptive pool with room: the grant checks the live limit, the end feeds a sample."""
    limit = AdaptiveLimit(algorithm=algorithm, initial=1000, max_limit=HUGE)
    return bounded(limit=limit, key=_key(), store=store)(work)


def _ours_aadaptive(store: RedisStore, algorithm: str) -> Callable[[], Awaitable[Any]]:
    limit = AdaptiveLimit(algorithm=algorithm, initial=1000, max_limit=HUGE)
    return bounded(limit=limit, key=_key(), store=store)(awork)


def _limits_rate() -> Callable[[], Any] | None:
    if limits is None:
        return None
    from limits import RateLimitItemPerSecond, storage, strategies

    limiter = strategies.MovingWindowRateLimiter(storage.RedisStorage(URL))
    item = RateLimitItemPerSecond(HUGE)
    key = _key()

    def call() -> int:
        if not limiter.hit(item, key):
            raise RuntimeError("limited")
        return work()

    return call


def _limits_arate() -> Callable[[], Awaitable[Any]] | None:
    if limits is None:
        return None
    from limits import RateLimitItemPerSecond
    from limits.aio import storage, strategies

    backend = storage.RedisStorage(f"async+{URL}", implementation="redispy")
    limiter = strategies.MovingWindowRateLimiter(backend)
    item = RateLimitItemPerSecond(HUGE)
    key = _key()

    async def call() -> int:
        if not await limiter.hit(item, key):
            raise RuntimeError("limited")
        return await awork()

    return call


def _pyrate_rate(client: Any) -> Callable[[], Any] | None:
    if pyrate is None:
        return None
    rates = [pyrate.Rate(HUGE, pyrate.Duration.SECOND)]
    limiter = pyrate.Limiter(pyrate.RedisBucket.init(rates, client, _key()))

    def call() -> int:
        if not limiter.try_acquire("bench", blocking=False):
            raise RuntimeError("limited")
        return work()

    return call


def _redis_lock(client: Any) -> Callable[[], Any]:
    lock = client.lock(_key(), timeout=10.0)

    def call() -> int:
        if not lock.acquire(blocking=False):
            raise RuntimeError("locked")
        try:
            return work()
        finally:
            lock.release()

    return call


def _redis_alock() -> Callable[[], Awaitable[Any]] | None:
    if redis is None:
        return None
    clients: dict[asyncio.AbstractEventLoop, Any] = {}
    name = _key()

    async def call() -> int:
        loop = asyncio.get_running_loop()
        client = clients.get(loop)
        if client is None:
            client = clients[loop] = redis.asyncio.Redis.from_url(URL)
        lock = client.lock(name, timeout=10.0)
        if not await lock.acquire(blocking=False):
            raise RuntimeError("locked")
        try:
            return await awork()
        finally:
            await lock.release()

    return call


# -- round trips -----------------------------------------------------------------------------


@contextlib.contextmanager
def _counting_sends() -> Iterator[list[int]]:
    """Count redis-py's sends (sync and asyncio): one per round trip, a pipeline once."""
    assert redis is not None
    count = [0]
    patched = [redis.connection.AbstractConnection, redis.asyncio.connection.AbstractConnection]
    originals = [cls.send_packed_command for cls in patched]

    def sync_send(self: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return originals[0](self, *args, **kwargs)

    async def async_send(self: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return await originals[1](self, *args, **kwargs)

    patched[0].send_packed_command = sync_send  # type: ignore[method-assign]
    patched[1].send_packed_command = async_send  # type: ignore[method-assign]
    try:
        yield count
    finally:
        patched[0].send_packed_command = originals[0]  # type: ignore[method-assign]
        patched[1].send_packed_command = originals[1]  # type: ignore[method-assign]


def round_trips(
    client: Any, kind: str, func: Callable[[], Any], calls: int = 200
) -> tuple[float, float]:
    """
    Return (client round trips, Redis commands executed) per call of *func*.

    Async calls run on the harness's one event loop (clients are bound to their loop).
    Other clients of the same Redis add to the command count: run it on a quiet server.
    """
    measure(kind, func, 5)  # warm up: scripts loaded, connections open
    idle = client.info("stats")["total_commands_processed"]
    idle = client.info("stats")["total_commands_processed"] - idle  # INFO's own count
    with _counting_sends() as sent:
        before = client.info("stats")["total_commands_processed"]
        measure(kind, func, calls)
        after = client.info("stats")["total_commands_processed"]
    sends = sent[0] - 2  # the two INFO calls
    return sends / calls, (after - before - idle) / calls


def _note(client: Any, what: str, kind: str, rows: dict[str, Callable[[], Any] | None]) -> str:
    counts = []
    for label, func in rows.items():
        if func is None:
            continue
        try:
            trips, commands = round_trips(client, kind, func)
        except Exception as error:  # a broken peer must not hide the others
            counts.append(f"{label}: {type(error).__name__}")
            continue
        counts.append(f"{label}: {trips:.2g} round trips, {commands:.3g} commands")
    return f"{what}; per decision: " + "; ".join(counts)


# -- scenarios -------------------------------------------------------------------------------


def scenarios() -> list[Scenario]:
    """Rate decisions and permit acquire/release through the local Redis, sync and async."""
    client = _client()
    store = RedisStore(URL, namespace=_NAMESPACE, idle_ttl=60.0)
    ping = client.ping

    async def aping() -> Any:
        return await _async_client().ping()

    rate = {
        "redis PING": ping,
        "resilience": _ours_rate(store),
        "limits (moving window, Redis)": _limits_rate(),
        "pyrate-limiter (Redis bucket)": _pyrate_rate(client),
    }
    arate = {
        "redis PING": aping,
        "resilience": _ours_arate(store),
        "limits (moving window, Redis)": _limits_arate(),
    }
    permit = {
        "redis PING": ping,
        "resilience": _ours_permit(store),
        "resilience, AdaptiveLimit (gradient2)": _ours_adaptive(store, "gradient2"),
        "resilience, AdaptiveLimit (aimd)": _ours_adaptive(store, "aimd"),
        "redis-py Lock": _redis_lock(client),
    }
    apermit = {
        "redis PING": aping,
        "resilience": _ours_apermit(store),
        "resilience, AdaptiveLimit (gradient2)": _ours_aadaptive(store, "gradient2"),
        "redis-py Lock": _redis_alock(),
    }
    one = "one admitted call with room (10**7/s) through Redis on loopback"
    pool = "one permit taken and given back (pool of 10**7) through Redis on loopback"
    return [
        Scenario(RATE, "sync", rate, "redis PING", _note(client, one, "sync", rate)),
        Scenario(ARATE, "async", arate, "redis PING", _note(client, one, "async", arate)),
        Scenario(PERMIT, "sync", permit, "redis PING", _note(client, pool, "sync", permit)),
        Scenario(APERMIT, "async", apermit, "redis PING", _note(client, pool, "async", apermit)),
    ]


_async_clients: dict[asyncio.AbstractEventLoop, Any] = {}


def _async_client() -> Any:
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        assert redis is not None
        client = _async_clients[loop] = redis.asyncio.Redis.from_url(URL)
    return client


def targets() -> list[Target]:
    """
    Our claim: one round trip like the peers, so within 1.5x of their cost per decision.

    Our script does more on the server (a reservation log plus the actual-start log and the
    backoff window, for the exact sliding rule), and loopback timings are noisy.
    """
    return [
        Target(RATE, "resilience", "limits (moving window, Redis)", 1.5, "<= 1.5x limits"),
        Target(RATE, "resilience", "pyrate-limiter (Redis bucket)", 1.5, "<= 1.5x pyrate"),
        Target(
            PERMIT,
            "resilience, AdaptiveLimit (gradient2)",
            "resilience",
            1.5,
            "adaptive <= 1.5x a fixed Redis pool",
        ),
    ]


def main() -> None:
    """Print the round trips per decision of every contender as a markdown table."""
    client = _client()
    store = RedisStore(URL, namespace=_NAMESPACE, idle_ttl=60.0)
    try:
        built = scenarios()
        print("| scenario | contender | round trips / decision | Redis commands / decision |")
        print("|---|---|---:|---:|")
        for scenario in built:
            for label, func in scenario.contenders.items():
                if func is None:
                    continue
                trips, commands = round_trips(client, scenario.kind, func)
                print(f"| {scenario.title} | {label} | {trips:.2f} | {commands:.2f} |")
    finally:
        close_event_loop()
        for name in client.scan_iter(match=f"*{_NAMESPACE}*"):
            client.delete(name)
        store.close()
        client.close()


if __name__ == "__main__":
    main()
