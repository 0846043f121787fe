"""Shared fixtures: a clean library for every test, virtual time, and the hypothesis profile."""

from __future__ import annotations

import os

from collections.abc import Iterator

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


@pytest.fixture(name="redis_store")
def _redis_store() -> Iterator[object]:
    """
    A RedisStore on the local Redis, in a namespace of its own, emptied afterwards.

    Its scripts read the process's default clock (virtual time under the ``clock``
    fixture); tests of real server time make their own store.
    """
    import uuid

    from resilience.stores._redis import RedisStore

    _redis_or_skip()
    store = RedisStore(
        "redis://127.0.0.1:6379/0",
        namespace=f"test-{uuid.uuid4().hex[:12]}",
        timeout=1.0,
        clock=DefaultClock(),
    )
    yield store
    store.clear()
    store.close()


@pytest.fixture(name="store", params=["memory", "redis"])
def _store(request: pytest.FixtureRequest) -> object:
    """Each store in turn, so the same test holds for memory and Redis alike."""
    from resilience.stores import MemoryStore

    if request.param == "memory":
        return MemoryStore()
    return request.getfixturevalue("redis_store")
