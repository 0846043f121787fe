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
import itertools
import os
import threading

from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from resilience import _clock
from resilience._snapshot import PoolSnapshot


if TYPE_CHECKING:
    from collections.abc import Callable

    from resilience._policies import BoundedPolicy
    from resilience.stores._memory import MemoryStore
    from resilience.typing import Clock


__all__ = [
    "LEASE_IDS",
    "lease_begin",
    "WATCH_HOOKS",
    "CountedPoolBackend",
    "MemoryPoolBackend",
    "PermitQueue",
    "PoolBackend",
]

#: Called once when a memory pool is first watched (``BoundedLayer`` adds the bump that
#: makes every layer fetch its pool again and so take the lease-recording path).
WATCH_HOOKS: list[Callable[[], None]] = []
#: One id per unit leased, in every pool (``next`` on it is atomic).
LEASE_IDS = itertools.count(1)


def _lease_begin(leases: dict[int, float]) -> int:
    """Record one unit's lease starting now (the default clock) in *leases*; return its id."""
    lease = next(LEASE_IDS)
    leases[lease] = _clock.DEFAULT.monotonic()
    return lease


def _accelerated() -> Callable[[dict[int, float]], int]:
    """``_lease_begin`` in C when built (and not switched off by ``RESILIENCE_NO_EXTENSIONS``)."""
    if os.environ.get("RESILIENCE_NO_EXTENSIONS"):
        return _lease_begin
    try:
        from resilience import _speedups  # noqa: PLC0415 - optional, built where a compiler was
    except ImportError:  # pragma: no cover - built where a C compiler was found
        return _lease_begin
    _speedups.af_configure(LEASE_IDS, _clock.DEFAULT)
    return _speedups.af_lease_begin


#: ``_lease_begin``, in one C call when the accelerator is built: a watched pool's hot path.
lease_begin = _accelerated()


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
    """
    A pool in this process: its free units as tokens in a deque of at most *limit*.

    Taking or giving back one unit is one ``pop`` or ``append``, which a deque does
    atomically (it is thread-safe without a lock), so the common ``weight=1`` call takes no
    lock at all. Several units at once are taken under the lock, all or none: a one-unit
    caller may pop between them, and then the units taken so far go back. The ``maxlen``
    keeps a release beyond what was taken from ever raising the free units above *limit*.
    A pool of more than ``TOKENS_MAX`` units (``memory_pool`` decides) is a
    ``CountedPoolBackend`` instead: a counter under a lock, in constant memory.

    Lease starts (the snapshot's ``oldest_lease``) are recorded only once the pool is
    watched: its first snapshot calls ``watch``, and from then on ``BoundedLayer`` runs
    its calls through a path that records each unit's lease in ``leases`` (id -> start on
    the default clock) before the unit is taken and forgets it after the unit is back. An
    unwatched pool's hot path reads no clock and records nothing.
    """

    __slots__ = ("_before", "_free", "_lock", "_pop", "_push", "_watched_at", "leases", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free: deque[None] = deque([None] * limit, maxlen=limit)
        # bound once: the hot path calls them directly
        self._pop = self._free.pop
        self._push = self._free.append
        self._lock = threading.Lock()
        self.leases: dict[int, float] | None = None  # None: not watched, nothing recorded
        self._watched_at = 0.0  # when the first snapshot watched the pool
        self._before = 0  # units held then (no start known), as many as may still be held

    @property
    def used(self) -> int:
        """The units taken now."""
        return self.limit - len(self._free)

    def try_acquire(self, weight: int) -> bool:
        """Take *weight* units if they are free now; return whether they were taken."""
        if weight == 1:
            try:
                self._pop()
            except IndexError:
                return False
            return True
        with self._lock:
            if len(self._free) < weight:
                return False
            taken = 0
            try:
                while taken < weight:
                    self._pop()
                    taken += 1
            except IndexError:  # a one-unit caller took one meanwhile: all or none
                for _ in range(taken):
                    self._push(None)
                return False
            return True

    def release(self, weight: int) -> None:
        """Give back *weight* units (never more free than *limit*)."""
        push = self._push
        for _ in range(weight):
            push(None)

    def available(self) -> int:
        """Return the free units now."""
        return len(self._free)

    def idle(self) -> bool:
        """Whether no permit is held: a fresh pool would be the same (eviction)."""
        return self.used == 0

    # Async twins for the protocol; the layer calls the sync methods of a memory pool
    # directly (they never block), so these cost nothing on its hot path.
    async def atry_acquire(self, weight: int, timeout: float | None = None) -> bool:
        """The async twin of ``try_acquire`` (no I/O: the same call)."""
        return self.try_acquire(weight)

    async def arelease(self, weight: int) -> None:
        """The async twin of ``release`` (no I/O: the same call)."""
        self.release(weight)

    # -- lease starts, once watched -------------------------------------------------------

    def watch(self) -> None:
        """Record lease starts from now on (the first snapshot asks; the layers follow)."""
        if self.leases is None:
            self._watched_at = _clock.DEFAULT.monotonic()
            self._before = self.used
            self.leases = {}
            for hook in WATCH_HOOKS:
                hook()

    def record(self, weight: int) -> tuple[int, ...]:
        """Record *weight* units' lease starting now (before they are taken); return the ids."""
        leases = self.leases
        if leases is None:
            return ()
        if weight == 1:
            return (lease_begin(leases),)
        now = _clock.DEFAULT.monotonic()
        ids = tuple(itertools.islice(LEASE_IDS, weight))
        for lease in ids:
            leases[lease] = now
        return ids

    def forget(self, ids: tuple[int, ...]) -> None:
        """Forget the leases *ids* (after their units are back, or when none was granted)."""
        leases = self.leases
        if leases is not None:
            for lease in ids:
                leases.pop(lease, None)

    def oldest_lease(self) -> tuple[float | None, bool]:
        """
        Seconds since the oldest unit held now was leased, and whether that is a lower bound.

        A unit leased before the pool was watched has no start: while one may still be held
        the answer is the seconds since the watch, marked at least (True). Such units are
        counted down as they go back: the units held beyond the recorded leases bound them,
        and one that went back never returns. (None, False): nothing held, or, for a few
        instructions, a unit just granted to a waiter and not yet recorded. The starts are
        read in one C-level copy, so threads recording meanwhile never break the read.
        """
        leases = self.leases
        used = self.used
        if leases is None:
            return None, False
        if not used:
            self._before = 0
            return None, False
        starts = list(leases.values())
        before = self._before = min(self._before, max(0, used - len(starts)))
        now = _clock.DEFAULT.monotonic()
        if before:
            return max(0.0, now - self._watched_at), True
        if used > len(starts) or not starts:
            return None, False
        return max(0.0, now - min(starts)), False

    def snapshot(self, key: str) -> PoolSnapshot:
        """Return the operator's view of the pool of *key* (waiters: see ``PermitQueue``)."""
        self.watch()
        oldest, at_least = self.oldest_lease()
        return PoolSnapshot(key, self.limit, None, self.used, None, oldest, None, at_least)


class CountedPoolBackend(MemoryPoolBackend):
    """A memory pool too large for tokens: the units in use as a counter under the lock."""

    __slots__ = ("_used",)

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()
        self.leases = None

    @property
    def used(self) -> int:
        """The units taken now."""
        return self._used

    def try_acquire(self, weight: int) -> bool:
        """Take *weight* units if they are free now; return whether they were taken."""
        with self._lock:
            if self._used + weight > self.limit:
                return False
            self._used += weight
            return True

    def release(self, weight: int) -> None:
        """Give back *weight* units (never below zero in use)."""
        with self._lock:
            used = self._used - weight
            self._used = used if used > 0 else 0

    def available(self) -> int:
        """Return the free units now."""
        return self.limit - self._used


class _Waiter:
    """One waiting caller: a thread (``lock``) or a task (``future`` on ``loop``)."""

    __slots__ = ("error", "expired", "future", "granted", "lock", "loop", "thread", "weight")

    def __init__(
        self,
        weight: int,
        future: asyncio.Future[None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.weight = weight
        self.granted = False
        self.expired = False
        self.error: Exception | None = None  # the store failed while it waited
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

    def idle(self) -> bool:
        """Whether nobody waits and its pool is idle (eviction; a Redis pool's is in Redis)."""
        if self.waiters:
            return False
        idle = getattr(self.backend, "idle", None)
        return True if idle is None else bool(idle())

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

    def wake(self) -> None:
        """Let waiters in after units came back to the backend some other way."""
        if self.waiters:
            with self._lock:
                self._dispatch()

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

    def _fail_all(self, error: Exception) -> None:
        """The store failed: wake every waiter with *error* (the lock is held)."""
        while self.waiters:
            waiter = self.waiters.popleft()
            waiter.error = error
            if waiter.lock is not None:
                waiter.lock.release()
                continue
            assert waiter.future is not None
            assert waiter.loop is not None
            if waiter.thread == threading.get_ident():
                _resolve(waiter.future)
                continue
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there
                waiter.loop.call_soon_threadsafe(_resolve, waiter.future)

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
        if waiter.error is not None:
            raise waiter.error
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
        if waiter.error is not None:
            raise waiter.error
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


class _MemoryPermitQueue(PermitQueue):
    """A memory pool's queue: ``release`` gives one unit back inline, one frame per call."""

    __slots__ = ()
    backend: MemoryPoolBackend

    def release(self, weight: int) -> None:
        """Give back *weight* units (``MemoryPoolBackend.release``) and let waiters in."""
        if weight == 1:
            self.backend._push(None)
        else:
            self.backend.release(weight)
        if self.waiters:
            with self._lock:
                self._dispatch()


#: The largest pool kept as tokens (8 bytes each); larger ones count under a lock.
TOKENS_MAX = 1024


def memory_pool(key: str, policy: BoundedPolicy, store: MemoryStore) -> MemoryPoolBackend:
    """``MemoryStore``'s ``"pool"`` factory (an adaptive pool for an ``AdaptiveLimit``)."""
    if not isinstance(policy.limit, int):
        from resilience._bounded.adaptive import AdaptivePoolBackend  # noqa: PLC0415 - circular

        return AdaptivePoolBackend(policy.limit)
    if policy.limit > TOKENS_MAX:
        return CountedPoolBackend(policy.limit)
    return MemoryPoolBackend(policy.limit)


def permit_queue(key: str, backend: PoolBackend, store: Any) -> PermitQueue:
    """``MemoryStore``'s ``"pool.queue"`` factory."""
    # Given the key's pool backend (not a policy): factories run under the store's lock.
    if type(backend) is MemoryPoolBackend:
        return _MemoryPermitQueue(backend)
    return PermitQueue(backend)
