"""Redis stopped, slow, then back: fail-closed raises in time, fail-open proceeds, both recover."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import time

from collections.abc import Iterator

import pytest
import redis

from resilience import CircuitOpenError, StoreUnavailableError, circuit_breaker
from resilience.stores import RedisStore
from resilience.testing import capture_events


REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
TIMEOUT = 0.3


class Boom(Exception):
    """The failure our fake upstream raises."""


class PrivateRedis:
    """A redis-server of our own on a free loopback port, which a test may stop and restart."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while True:
            try:
                with redis.Redis(port=self.port, socket_connect_timeout=0.1) as client:
                    client.ping()
                return
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
            self.process = None


@pytest.fixture(name="server")
def _server() -> Iterator[PrivateRedis]:
    """A private redis-server, stopped at the end whatever happens."""
    if shutil.which(REDIS_SERVER) is None:
        pytest.skip(f"no redis-server binary at {REDIS_SERVER}; it is needed for fault tests")
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def declare(store: RedisStore, *, fail_open: bool, name: str):
    @circuit_breaker(
        store=store, name=name, failure_threshold=2, reset_timeout=30, on=Boom, fail_open=fail_open
    )
    def call(fail: bool = False) -> str:
        if fail:
            raise Boom
        return "ok"

    return call


def test_stop_and_restart(server):
    """Stopped: closed raises within the timeout, open proceeds with an event. Back: both recover."""
    store = RedisStore(f"redis://127.0.0.1:{server.port}/0", timeout=TIMEOUT)
    closed = declare(store, fail_open=False, name="closed")
    opened = declare(store, fail_open=True, name="open")
    try:
        assert ("ok", "ok") == (closed(), opened())
        server.stop()

        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="for key 'closed'") as caught:
            # Healthy calls may run on the local state until the change feed is lost.
            while time.monotonic() - started < TIMEOUT:
                closed()
        assert time.monotonic() - started < TIMEOUT + 0.2
        assert f"Redis at 127.0.0.1:{server.port}" == caught.value.store

        with capture_events("resilience.store") as events:
            assert "ok" == opened()
            with pytest.raises(Boom):  # the call runs unguarded: its failure is not counted
                opened(fail=True)
        assert 2 == len(events)
        assert {
            "key": "open",
            "store": f"Redis at 127.0.0.1:{server.port}",
            "decorator": "circuit_breaker",
            "fail_open": True,
        } == events[0].metadata

        server.start()
        assert ("ok", "ok") == (closed(), opened())  # the next call reconnects by itself
        for _ in range(2):
            with pytest.raises(Boom):
                closed(fail=True)
        with pytest.raises(CircuitOpenError):
            closed()
    finally:
        store.close()


def test_slow_server_times_out(server):
    """A server that hangs (DEBUG SLEEP) gives StoreUnavailableError within the timeout."""
    store = RedisStore(f"redis://127.0.0.1:{server.port}/0", timeout=TIMEOUT)
    call = declare(store, fail_open=False, name="slow")
    blocker = redis.Redis(port=server.port)
    try:
        assert "ok" == call()
        hang = threading.Thread(target=blocker.execute_command, args=("DEBUG", "SLEEP", "0.6"))
        hang.start()
        time.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            # A healthy call may run on the breaker's local state until its change feed's
            # heartbeat is late (0.1 s at most); then it asks the hung server.
            while time.monotonic() - started < TIMEOUT:
                call()
        assert time.monotonic() - started < TIMEOUT + 0.2
        hang.join(5)
        assert "ok" == call()  # the server answers again: so do we
    finally:
        blocker.close()
        store.close()


@pytest.mark.anyio
async def test_async_stop_and_restart(server):
    """The async driver: same behaviour, on the asyncio client, within the timeout."""
    store = RedisStore(f"redis://127.0.0.1:{server.port}/0", timeout=TIMEOUT)

    @circuit_breaker(store=store, name="async", failure_threshold=2, reset_timeout=30)
    async def closed() -> str:
        return "ok"

    @circuit_breaker(store=store, name="async-open", fail_open=True)
    async def opened() -> str:
        return "ok"

    try:
        assert "ok" == await closed()
        server.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="for key 'async'"):
            # Healthy calls may run on the local state until the change feed is lost.
            while time.monotonic() - started < TIMEOUT:
                await closed()
                await asyncio.sleep(0.001)
        assert time.monotonic() - started < TIMEOUT + 0.2
        with capture_events("resilience.store") as events:
            assert "ok" == await opened()
        assert [True] == [event.metadata["fail_open"] for event in events]
        server.start()
        assert "ok" == await closed()
    finally:
        await store.aclose()
        store.close()


def test_a_given_client_that_retries_timeouts_fails_in_time(server):
    """
    A client of the user's with a short socket timeout and the library's default retries
    (redis-py 6+: three, on timeouts too) would ride out a pause; the store's does not.
    """
    client = redis.Redis(port=server.port, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
    store = RedisStore(client, timeout=TIMEOUT)
    call = declare(store, fail_open=False, name="given")
    blocker = redis.Redis(port=server.port, socket_timeout=5)
    try:
        assert "ok" == call()
        blocker.execute_command("CLIENT", "PAUSE", "2000", "ALL")
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="for key 'given'"):
            call()
        assert time.monotonic() - started < TIMEOUT + 0.5
    finally:
        blocker.close()
        store.close()
        client.close()
