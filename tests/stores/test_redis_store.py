"""RedisStore basics: scripts run on the server, timeouts give StoreUnavailableError."""

from __future__ import annotations

import time

import pytest
import redis

from resilience import StoreUnavailableError
from resilience.stores._redis import RedisStore
from tests.conftest import _redis_or_skip


def test_runs_scripts_with_server_time(redis_store):
    """A script runs atomically on the server and can read its clock."""
    seconds, micros = redis_store.run("return redis.call('TIME')", [], [], key="t")
    assert abs(int(seconds) + int(micros) / 1e6 - time.time()) < 5


def test_keys_are_namespaced(redis_store):
    """Keys live under namespace:concern:{key}, the key being the hash tag."""
    assert f"{redis_store.namespace}:breaker:{{payments}}" == redis_store.key("breaker", "payments")


def test_accepts_a_client():
    """A redis.Redis client may be passed instead of a URL; one within the timeout is used as is."""
    client = redis.Redis(
        host="127.0.0.1",
        port=6379,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
    )
    store = RedisStore(client)
    assert client is store.client
    store.close()
    assert client.ping()  # a client we were given stays open
    client.close()


def test_a_client_without_timeouts_is_bounded():
    """A client that could wait forever is copied with the store's timeout; it stays untouched."""
    client = redis.Redis(host="127.0.0.1", port=6379)
    store = RedisStore(client, timeout=0.25)
    assert client is not store.client
    assert 0.25 == store.client.connection_pool.connection_kwargs["socket_timeout"]
    assert 5 == client.connection_pool.connection_kwargs.get("socket_timeout")  # its default
    store.close()
    client.close()


@pytest.mark.parametrize("library", ["redis", "valkey"])
def test_a_client_that_retries_timeouts_is_bounded(library):
    """Short socket timeouts, but retries on timeouts (redis-py 6+'s default: 3): copied."""
    lib = pytest.importorskip(library)
    settings = {}
    if library == "valkey":  # valkey-py retries nothing unless told to
        settings = {"retry": lib.retry.Retry(lib.backoff.NoBackoff(), 3), "retry_on_timeout": True}
    client = lib.Redis(
        host="127.0.0.1", port=6379, socket_timeout=0.2, socket_connect_timeout=0.2, **settings
    )
    store = RedisStore(client, timeout=0.25)
    assert client is not store.client
    retry = store.client.connection_pool.connection_kwargs["retry"]
    assert lib.exceptions.TimeoutError not in retry._supported_errors
    store.close()
    client.close()


def test_a_bounded_copy_keeps_the_clients_class():
    """A subclass (instrumenting or guarding commands) survives the store's bounded copy."""
    _redis_or_skip()

    class Counting(redis.Redis):
        sent = 0

        def execute_command(self, *args, **options):
            type(self).sent += 1
            return super().execute_command(*args, **options)

    client = Counting(host="127.0.0.1", port=6379, socket_timeout=5.0)
    store = RedisStore(client, timeout=0.25)
    assert client is not store.client
    assert isinstance(store.client, Counting)
    store.client.ping()
    assert Counting.sent >= 1
    store.close()
    client.close()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"timeout": 0}, ValueError, r"RedisStore\.timeout must be > 0"),
        ({"idle_ttl": -1}, ValueError, r"RedisStore\.idle_ttl must be > 0"),
        ({"namespace": ""}, ValueError, "namespace must be a non-empty string"),
        ({"namespace": "a{b}"}, ValueError, "without '{' or '}'"),
    ],
)
def test_validation(kwargs, error, match):
    """Bad settings are named."""
    with pytest.raises(error, match=match):
        RedisStore("redis://127.0.0.1:6379/0", **kwargs)


def test_wrong_type():
    """Anything but a URL or a client is a TypeError."""
    with pytest.raises(TypeError, match="RedisStore takes a URL, a redis-py or valkey-py client"):
        RedisStore(42)
    with pytest.raises(ValueError, match="URL scheme must be one of"):
        RedisStore("http://127.0.0.1:6379")


def test_unreachable_raises_within_timeout():
    """Nothing listening: StoreUnavailableError naming the key, well within the timeout."""
    store = RedisStore("redis://127.0.0.1:1/0", timeout=0.5)
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="for key 'payments'"):
        store.run("return 1", [], [], key="payments")
    assert time.monotonic() - started < 1.0
    store.close()


@pytest.mark.anyio
async def test_async_run_and_timeout(redis_store):
    """arun works on the running loop; an unreachable server raises in time."""
    assert 1 == await redis_store.arun("return 1", [], [], key="k")
    await redis_store.aclose()
    dead = RedisStore("redis://127.0.0.1:1/0", timeout=0.3)
    with pytest.raises(StoreUnavailableError):
        await dead.arun("return 1", [], [], key="k")
    await dead.aclose()
    dead.close()


def test_store_subclasses_inherit_backends():
    """A subclass of a store still builds every concern's backends."""
    from resilience import circuit_breaker
    from resilience.stores import MemoryStore

    class Tagged(MemoryStore):
        pass

    store = Tagged()

    @circuit_breaker(name="sub", store=store)
    def ok() -> int:
        return 1

    assert 1 == ok()
    assert store.peek("breaker", "sub") is not None
    with pytest.raises(TypeError, match="Tagged has no backend for 'nope'"):
        store.backend("nope", "k", None)
