"""
A task cancelled while an async Redis round trip that takes something is in flight keeps
nothing: a pool's lease, a half-open breaker's probe slot.

The script may already have granted (or will grant, once the server answers) what the
caller never hears of; the backend gives it back, and the cancellation still reaches the
caller at once. A private server is paused (``CLIENT PAUSE WRITE``) so the cancellation
lands while the script waits on it, or after it ran with its reply still unread.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from resilience import AdaptiveLimit, CircuitOpenError, bounded, circuit_breaker, get_bounded
from resilience.stores import RedisStore
from resilience.testing import FakeClock

from ..redis_servers import Server, _base, free_port


pytestmark = pytest.mark.anyio


@pytest.fixture(name="server", scope="module")
def _server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    server = Server(tmp_path_factory.mktemp("cancel"), "cancel", _base(port), port=port).start()
    yield server
    server.kill()


def _blocked(server: Server) -> None:
    """Until the server holds one client's script behind the pause (its request written)."""
    with server.client() as client:
        deadline = time.monotonic() + 10
        while int(client.info("clients")["blocked_clients"]) < 1:
            assert time.monotonic() < deadline, "the acquire never reached the server"
            time.sleep(0.005)


async def _in_use_settles(store: RedisStore, key: str) -> int:
    """The units held once every give-back in flight has landed (at most a few seconds)."""
    deadline = time.monotonic() + 5
    while True:
        held = get_bounded(key, store=store).in_use
        if held == 0 or time.monotonic() > deadline:
            return held
        await asyncio.sleep(0.01)


def _granted(server: Server, store: RedisStore, key: str) -> None:
    """Until the server holds a lease of *key* (its script ran; the reply may be unread)."""
    with server.client() as client:
        deadline = time.monotonic() + 10
        while not client.zcard(store.key("pool", key, "leases")):
            assert time.monotonic() < deadline, "the acquire never ran"
            time.sleep(0.005)


LIMITS = [1, AdaptiveLimit(initial=1, min_limit=1, max_limit=4)]


@pytest.fixture(name="store")
async def _store(server: Server) -> AsyncIterator[RedisStore]:
    store = RedisStore(
        f"redis://127.0.0.1:{server.port}/0",
        namespace=f"cancel-{uuid.uuid4().hex[:8]}",
        timeout=5.0,
        lease=60.0,
    )
    yield store
    store.clear()
    await store.aclose()
    store.close()


def _one(store: RedisStore, limit: Any) -> Any:
    @bounded(limit=limit, key="one", store=store, timeout=0.0)
    async def call() -> int:
        return 1

    return call


@pytest.mark.parametrize("limit", LIMITS)
async def test_cancelled_with_the_grant_unread_keeps_no_lease(
    server: Server, store: RedisStore, limit: Any
) -> None:
    """The script granted, its reply not read yet, the task cancelled: the lease goes back."""
    call = _one(store, limit)
    assert 1 == await call()  # connected, scripts loaded: the next acquire is one EVALSHA
    with server.client() as pauser:
        pauser.execute_command("CLIENT", "PAUSE", "10000", "WRITE")
        try:
            task = asyncio.create_task(call())
            await asyncio.to_thread(_blocked, server)  # the request is written
        finally:
            pauser.execute_command("CLIENT", "UNPAUSE")
    _granted(server, store, "one")  # on the loop's thread: the reply waits unread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 0 == await _in_use_settles(store, "one")
    assert 1 == await call()  # a pool of one is free again, long before the lease (60 s)


@pytest.mark.parametrize("limit", LIMITS)
async def test_cancelled_while_the_server_is_paused(
    server: Server, store: RedisStore, limit: Any
) -> None:
    """Cancelled while the server holds the acquire: raised at once, no lease once it runs."""
    call = _one(store, limit)
    assert 1 == await call()
    with server.client() as pauser:
        pauser.execute_command("CLIENT", "PAUSE", "10000", "WRITE")
        try:
            task = asyncio.create_task(call())
            await asyncio.to_thread(_blocked, server)
            task.cancel()
            started = time.monotonic()
            with pytest.raises(asyncio.CancelledError):
                await task
            cancelled_in = time.monotonic() - started
        finally:
            pauser.execute_command("CLIENT", "UNPAUSE")
    assert cancelled_in < 1.0  # promptly: not after the pause (10 s) or the timeout (5 s)
    assert 0 == await _in_use_settles(store, "one")
    assert 1 == await call()


async def test_cancelled_probe_admission_frees_its_slot(server: Server) -> None:
    """A half-open probe admitted, its reply unread, the task cancelled: the slot is free."""
    clock = FakeClock()
    store = RedisStore(
        f"redis://127.0.0.1:{server.port}/0",
        namespace=f"cancel-{uuid.uuid4().hex[:8]}",
        timeout=5.0,
        clock=clock,
    )
    outcomes = iter([ValueError("down"), None, None])

    @circuit_breaker(name="probe", failure_threshold=1, reset_timeout=10.0, store=store)
    async def call() -> None:
        error = next(outcomes)
        if error is not None:
            raise error

    try:
        with pytest.raises(ValueError, match="down"):
            await call()  # opened
        clock.advance(11.0)  # half-open: one probe slot
        hash_key = store.key("breaker", "probe")
        with server.client() as pauser:
            pauser.execute_command("CLIENT", "PAUSE", "10000", "WRITE")
            try:
                task = asyncio.create_task(call())
                await asyncio.to_thread(_blocked, server)
            finally:
                pauser.execute_command("CLIENT", "UNPAUSE")
            deadline = time.monotonic() + 10
            while pauser.hget(hash_key, "p") != b"1":  # the loop's thread: the reply unread
                assert time.monotonic() < deadline, "the probe was never admitted"
                time.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        deadline = time.monotonic() + 5
        while True:
            try:
                await call()  # the probe slot is free again: this probe closes the breaker
                break
            except CircuitOpenError:
                assert time.monotonic() < deadline, "the cancelled probe kept its slot"
                await asyncio.sleep(0.01)
        await call()
    finally:
        store.clear()
        await store.aclose()
        store.close()
