"""Shared fixtures: a clean library for every test, virtual time, and the hypothesis profile."""

from __future__ import annotations

import os

from collections.abc import Iterator
from typing import Any

import pytest

from hypothesis import HealthCheck, settings

from resilience.testing import FakeClock, reset, virtual_time


settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "dev", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def _clean_library() -> Iterator[None]:
    """Every test starts and ends with no breakers, limits, handlers or testing mode."""
    reset()
    yield
    reset()


@pytest.fixture(name="clock")
def _clock() -> Iterator[FakeClock]:
    """Virtual time installed as the default clock of every decorator."""
    with virtual_time() as clock:
        yield clock


@pytest.fixture(name="anyio_backend")
def _anyio_backend() -> str:
    """Our async code targets asyncio (``asyncio.timeout``), so tests run there."""
    return "asyncio"


def _redis_or_skip() -> None:
    """Skip (or, in CI, fail) when no Redis answers at 127.0.0.1:6379."""
    import redis

    try:
        with redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=0.5) as probe:
            probe.ping()
    except redis.exceptions.ConnectionError as error:
        reason = f"no Redis at 127.0.0.1:6379 ({error}); start one to run the shared-state tests"
        if os.environ.get("CI"):
            pytest.fail(f"CI needs Redis: {reason}")
        pytest.skip(reason)


class DefaultClock:
    """
    A clock that reads whatever clock is the process default *now*.

    The ``redis_store`` fixture hands it to ``RedisStore(clock=...)`` so Redis scripts see
    the same time as memory backends: the ``clock`` fixture's virtual time when a test uses
    it, real monotonic time otherwise (one process, so real time still agrees).
    """

    def monotonic(self) -> float:
        from resilience import _clock

        return _clock._default.clock.monotonic()  # type: ignore[no-any-return]

    def time(self) -> float:
        from resilience import _clock

        return _clock._default.clock.time()  # type: ignore[no-any-return]

    def sleep(self, seconds: float) -> None:
        from resilience import _clock

        _clock._default.clock.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        from resilience import _clock

        await _clock._default.clock.asleep(seconds)


TOPOLOGIES = ("single", "cluster", "sentinel", "tls", "unix", "valkey")
"""Where the shared-state tests can run: the shared server, and servers of our own (see
``tests/redis_servers.py``). By default the suite runs on ``single`` (and
``tests/stores/test_topologies.py`` runs a shared-state round on every topology);
``RESILIENCE_REDIS_TOPOLOGIES=all`` (or ``cluster,tls``...) runs the whole suite on those."""

_WANTED = os.environ.get("RESILIENCE_REDIS_TOPOLOGIES", "single")
_CHOSEN = (
    TOPOLOGIES if _WANTED == "all" else tuple(n for n in _WANTED.split(",") if n in TOPOLOGIES)
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``topology`` the runs of the shared-state tests on a topology of our own."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        for name in ("redis_store", "store"):
            value = params.get(name)
            kind = value.removeprefix("redis-") if isinstance(value, str) else None
            if kind in TOPOLOGIES and kind != "single":
                item.add_marker("topology")
                break


@pytest.fixture(name="redis_servers", scope="session")
def _redis_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """This session's (this xdist worker's) private servers, each started on first use."""
    from tests.redis_servers import Servers

    servers = Servers(tmp_path_factory.mktemp("redis"))
    yield servers
    servers.stop()


def redis_store_for(topology: str, request: pytest.FixtureRequest, **settings: object) -> object:
    """A RedisStore of *topology* in a namespace of its own (the caller clears and closes it)."""
    import uuid

    from resilience.stores._redis import RedisStore
    from tests.redis_workers import timeout_for

    namespace = f"test-{uuid.uuid4().hex[:12]}"
    timeout = timeout_for(topology)  # generous: no test of the shared suite is about it
    options: dict[str, object] = {"namespace": namespace, "timeout": timeout, **settings}
    if topology in ("single", "valkey"):
        _redis_or_skip()
    spec: dict[str, object] = {"kind": topology}
    if topology == "single":
        store = RedisStore("redis://127.0.0.1:6379/0", **options)
    elif topology == "valkey":
        import valkey

        client = valkey.Valkey(host="127.0.0.1", port=6379, socket_timeout=timeout)
        store = RedisStore(client, **options)  # a client of valkey-py, given
    else:
        from tests.redis_workers import open_store

        servers: Any = request.getfixturevalue("redis_servers")
        if topology == "cluster":
            spec["port"] = servers.cluster()[0].port
        elif topology == "sentinel":
            spec["port"] = servers.sentinel()[2].port
        elif topology == "tls":
            spec["port"], spec["ca"] = servers.tls()
        else:
            spec["path"] = servers.unix()
        store = open_store(spec, **options)
    store.test_spec = spec  # type: ignore[attr-defined]
    return store


# The twins are held together one call at a time: a failure-rate breaker's outcomes go to
# Redis as they happen, not in batches (``tests/breaker/test_redis_batches.py`` tests those).
_ONE_BY_ONE: dict[str, object] = {"sync_interval": 0.0}


@pytest.fixture(name="redis_store", params=_CHOSEN)
def _redis_store(request: pytest.FixtureRequest) -> Iterator[object]:
    """
    A RedisStore in a namespace of its own, emptied afterwards, on each topology in turn.

    Its scripts read the process's default clock (virtual time under the ``clock``
    fixture); tests of real server time make their own store.
    """
    store: Any = redis_store_for(request.param, request, clock=DefaultClock(), **_ONE_BY_ONE)
    yield store
    store.clear()
    store.close()


@pytest.fixture(name="store", params=["memory", *(f"redis-{name}" for name in _CHOSEN)])
def _store(request: pytest.FixtureRequest) -> Iterator[object]:
    """Each store in turn, so the same test holds for memory and Redis alike."""
    from resilience.stores import MemoryStore

    if request.param == "memory":
        yield MemoryStore()
        return
    store: Any = redis_store_for(request.param[6:], request, clock=DefaultClock(), **_ONE_BY_ONE)
    yield store
    store.clear()
    store.close()
