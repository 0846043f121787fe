"""
The permit pool of ``@bounded``: the ``PoolBackend`` contract, the memory pool, the FIFO queue.

Two parts. The *backend* (``PoolBackend``) holds the pool's count and answers one atomic
question at a time (``try_acquire``, ``release``); a Redis backend can hold the same count
as expiring leases. The *permit queue* (``PermitQueue``, one per key and process) is where
callers wait: one lock-protected FIFO of waiters, whatever their kind. A thread waits on a
lock of its own that the granter releases; a task waits on a future that the granter
resolves directly from the loop's own thread, or through ``loop.call_soon_threadsafe``
from any other. So threads and tasks can share one key and are served in arrival order.

Every grant is decided under the queue's lock and recorded on the waiter (``granted``), so
a waiter that times out or is cancelled looks once, under the same lock: granted, it gives
the permits back; not yet, it leaves the queue and lets the next waiter in. No permit
leaks and no dead waiter blocks the queue. A heavy waiter at the head is not overtaken by
lighter ones behind it (strict FIFO: it cannot starve).

The stores register their factories of ``"pool"`` and ``"pool.queue"`` themselves
(``stores._memory`` names ``memory_pool`` and ``permit_queue`` below; ``stores._redis`` names
its twin in ``_bounded.redis``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from resilience._snapshot import PoolSnapshot


if TYPE_CHECKING:
    from resilience._policies import BoundedPolicy
    from resilience.stores._memory import MemoryStore
    from resilience.typing import Clock


__all__ = ["MemoryPoolBackend", "PermitQueue", "PoolBackend"]


class PoolBackend(Protocol):
    """
    The shared count of one permit pool; each method is one atomic decision.

    .. versionadded:: 0.1.0
    """

    limit: int

    def try_acquire(self, weight: int) -> bool:
        """Take *weight* units if they are free now; return whether they were taken."""
        ...

    def release(self, weight: int) -> None:
        """Give back *weight* units taken by ``try_acquire``."""
        ...

    def available(self) -> int:
        """Return the free units now."""
        ...

    async def atry_acquire(self, weight: int, timeout: float | None = None) -> bool:
        """The async twin of ``try_acquire``; *timeout* (seconds) may bound a remote round trip."""
        ...

    async def arelease(self, weight: int) -> None:
        """The async twin of ``release``."""
        ...

    def snapshot(self, key: str) -> PoolSnapshot:
        """Return the operator's view of the pool of *key*, changing nothing."""
        ...


class MemoryPoolBackend:
    """A pool in this process: a counter under a lock."""

    __slots__ = ("_acquire", "_lock", "_release", "limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()
        # bound once: acquire/release calls cost about half of a `with` block on the hot path
        self._acquire = self._lock.acquire
        self._release = self._lock.release

    def try_acquire(self, weight: int) -> bool:
        """Take *weight* units if they are free now; return whether they were taken."""
        self._acquire()
        try:
            if self.used + weight > self.limit:
                return False
            self.used += weight
            return True
        finally:
            self._release()

    def release(self, weight: int) -> None:
        """Give back *weight* units (never below zero in use)."""
        self._acquire()
        try:
            used = self.used - weight
            self.used = used if used > 0 else 0
        finally:
            self._release()

    def available(self) -> int:
        """Return the free units now."""
        return self.limit - self.used

    # Async twins for the protocol; the layer calls the sync methods of a memory pool
    # directly (they never block), so these cost nothing on its hot path.
    async def atry_acquire(self, weight: int, timeout: float | None = None) -> bool:
        """The async twin of ``try_acquire`` (no I/O: the same call)."""
        return self.try_acquire(weight)

    async def arelease(self, weight: int) -> None:
        """The async twin of ``release`` (no I/O: the same call)."""
        self.release(weight)

    def snapshot(self, key: str) -> PoolSnapshot:
        """Return the operator's view of the pool of *key* (waiters: see ``PermitQueue``)."""
        return PoolSnapshot(key, self.limit, None, self.used, None, None)


class _Waiter:
    """One waiting caller: a thread (``lock``) or a task (``future`` on ``loop``)."""

    __slots__ = ("expired", "future", "granted", "lock", "loop", "thread", "weight")

    def __init__(
        self,
        weight: int,
        future: asyncio.Future[None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.weight = weight
        self.granted = False
        self.expired = False
        self.future = future
        self.loop = loop
        self.thread = threading.get_ident()
        if future is None:
            self.lock: threading.Lock | None = threading.Lock()
            self.lock.acquire()
        else:
            self.lock = None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class PermitQueue:
    """The waiting room of one pool in this process: a FIFO of threads and tasks."""

    __slots__ = ("_lock", "backend", "waiters")

    def __init__(self, backend: PoolBackend) -> None:
        self.backend = backend
        self.waiters: deque[_Waiter] = deque()
        self._lock = threading.Lock()

    def try_acquire(self, weight: int) -> bool:
        """Take *weight* units at once if nobody is waiting and they are free."""
        return not self.waiters and self.backend.try_acquire(weight)

    def release(self, weight: int) -> None:
        """Give back *weight* units and let waiters in, in arrival order."""
        self.backend.release(weight)
        if self.waiters:
            with self._lock:
                self._dispatch()

    async def arelease(self, weight: int) -> None:
        """The async twin of ``release`` (a remote store's queue gives back without blocking)."""
        self.release(weight)

    def _dispatch(self) -> None:
        """Grant the head of the queue while its weight fits (the lock is held)."""
        waiters = self.waiters
        backend = self.backend
        while waiters:
            head = waiters[0]
            if not backend.try_acquire(head.weight):
                return
            waiters.popleft()
            head.granted = True
            if head.lock is not None:
                head.lock.release()
                continue
            future = head.future
            assert future is not None
            assert head.loop is not None
            if head.thread == threading.get_ident():
                _resolve(future)
                continue
            try:
                head.loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # its loop is closed: nobody will ever use these permits
                head.granted = False
                backend.release(head.weight)

    def _enqueue(self, waiter: _Waiter) -> None:
        with self._lock:
            self.waiters.append(waiter)
            self._dispatch()

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiter gives up (timeout, cancellation): return its grant or leave the queue."""
        with self._lock:
            if waiter.granted:
                waiter.granted = False
                self.backend.release(waiter.weight)
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
            self._dispatch()

    def acquire(self, weight: int, timeout: float | None) -> bool:
        """Block the thread until *weight* units are granted; False after *timeout* seconds."""
        if self.try_acquire(weight):
            return True
        if timeout == 0.0:
            return False
        waiter = _Waiter(weight)
        self._enqueue(waiter)
        lock = waiter.lock
        assert lock is not None
        try:
            got = lock.acquire(timeout=-1.0 if timeout is None else timeout)
        except BaseException:
            self._abandon(waiter)
            raise
        if got:
            return True
        with self._lock:
            if waiter.granted:  # granted just as the time ran out: keep it
                return True
            self.waiters.remove(waiter)
            self._dispatch()
        return False

    async def acquire_async(self, weight: int, timeout: float | None, clock: Clock) -> bool:
        """Suspend the task until *weight* units are granted; False after *timeout* seconds."""
        if self.try_acquire(weight):
            return True
        return await self._queue_async(weight, timeout, clock)

    async def _queue_async(self, weight: int, timeout: float | None, clock: Clock) -> bool:
        """Join the queue and suspend until granted; False after *timeout* seconds."""
        if timeout == 0.0:
            return False
        loop = asyncio.get_running_loop()
        waiter = _Waiter(weight, loop.create_future(), loop)
        self._enqueue(waiter)
        if waiter.granted:
            return True
        timer = None if timeout is None else loop.create_task(self._expire(waiter, clock, timeout))
        try:
            await waiter.future  # type: ignore[misc]
        except BaseException:
            self._abandon(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        return not waiter.expired

    async def _expire(self, waiter: _Waiter, clock: Clock, timeout: float) -> None:
        await clock.asleep(timeout)
        with self._lock:
            if waiter.granted:
                return
            waiter.expired = True
            with contextlib.suppress(ValueError):
                self.waiters.remove(waiter)
            self._dispatch()
        assert waiter.future is not None
        _resolve(waiter.future)


def memory_pool(key: str, policy: BoundedPolicy, store: MemoryStore) -> MemoryPoolBackend:
    """``MemoryStore``'s ``"pool"`` factory."""
    return MemoryPoolBackend(policy.limit)


def permit_queue(key: str, backend: PoolBackend, store: Any) -> PermitQueue:
    """``MemoryStore``'s ``"pool.queue"`` factory."""
    # Given the key's pool backend (not a policy): factories run under the store's lock.
    return PermitQueue(backend)
