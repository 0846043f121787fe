"""
``@bounded``: at most *limit* units of weight run at once, for threads and asyncio tasks.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from collections import deque
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypedDict, TypeVar, Unpack, overload

from resilience import _clock, _config
from resilience._decorating import Decorator, Kind, Layer, Runner, is_target, policy_from
from resilience._errors import BoundedTimeoutError, StoreUnavailableError
from resilience._policies import BoundedPolicy
from resilience._rate import EPOCH
from resilience.stores._memory import DEFAULT_STORE, MemoryStore
from resilience.stores._redis import RedisStore, store_unavailable
from resilience.telemetry._bus import BUS, emit


if TYPE_CHECKING:
    from resilience.typing import Clock


__all__ = ["BoundedFields", "MemoryPoolBackend", "PermitQueue", "PoolBackend", "bounded"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class PoolBackend(Protocol):
    """
    The shared count of one permit pool; each method is one atomic decision.

    .. versionadded:: 0.1.0
    """

    limit: int

    def try_acquire(self, weight: int) -> bool:
        """Take *weight* units if they are free now; return whether they were taken."""

    def release(self, weight: int) -> None:
        """Give back *weight* units taken by ``try_acquire``."""

    def available(self) -> int:
        """Return the free units now."""

    async def atry_acquire(self, weight: int, timeout: float | None = None) -> bool:
        """The async twin of ``try_acquire``; *timeout* (seconds) may bound a remote round trip."""

    async def arelease(self, weight: int) -> None:
        """The async twin of ``release``."""


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


def _memory_pool(key: str, policy: BoundedPolicy, store: MemoryStore) -> MemoryPoolBackend:
    return MemoryPoolBackend(policy.limit)


def _permit_queue(key: str, backend: PoolBackend, store: Any) -> PermitQueue:
    # Given the key's pool backend (not a policy): factories run under the store's lock.
    return PermitQueue(backend)


def _redis_pool(key: str, policy: BoundedPolicy, store: Any) -> PoolBackend:
    from resilience.stores._redis_pool import redis_pool_backend  # noqa: PLC0415 - circular

    return redis_pool_backend(key, policy, store)


def _redis_permit_queue(key: str, backend: PoolBackend, store: Any) -> PermitQueue:
    from resilience.stores._redis_pool import redis_permit_queue  # noqa: PLC0415 - circular

    return redis_permit_queue(key, backend, store)


MemoryStore.register("pool", _memory_pool)
MemoryStore.register("pool.queue", _permit_queue)
RedisStore.register("pool", _redis_pool)
RedisStore.register("pool.queue", _redis_permit_queue)


class BoundedFields(TypedDict, total=False):
    """The keyword arguments ``@bounded(...)`` accepts: ``BoundedPolicy``'s fields."""

    limit: int
    key: str | None
    weight: int
    timeout: float | timedelta | None
    store: Any
    clock: Clock | None
    fail_open: bool


class BoundedLayer(Layer):
    """``@bounded``'s layer: take permits before the call, give them back after it."""

    decorator = "bounded"
    __slots__ = ("_epoch", "_queue", "_remote", "key", "timeout")
    policy: BoundedPolicy

    def __init__(self, policy: BoundedPolicy) -> None:
        super().__init__(policy)
        self.key = ""
        self.timeout: float | None = policy.timeout  # type: ignore[assignment]
        self._epoch = -1
        self._remote = False

    def bind(self, kind: Kind, qualname: str) -> None:
        self.name = qualname
        self.key = self.policy.key or qualname
        if kind in ("gen", "asyncgen"):
            msg = (
                f"@bounded does not support generator functions ({qualname}): "
                f"decorate the function that consumes them instead"
            )
            raise TypeError(msg)
        self._refresh()

    def _refresh(self) -> PermitQueue:
        """Fetch (and check) the key's pool; again after ``resilience.testing.reset()``."""
        policy = self.policy
        store = policy.store or DEFAULT_STORE
        queue: PermitQueue = store.backend(
            "pool.queue", self.key, store.backend("pool", self.key, policy)
        )
        if queue.backend.limit != policy.limit:
            msg = (
                f"@bounded key {self.key!r} already has a pool of {queue.backend.limit} units; "
                f"a pool sharing the key must use the same limit (got limit={policy.limit})"
            )
            raise ValueError(msg)
        self._queue = queue
        # Memory pools never block: the runners call them inline; others go through
        # ``_run_remote``/``_arun_remote`` (async twins, store-unavailable handling).
        self._remote = not isinstance(queue.backend, MemoryPoolBackend)
        self._epoch = EPOCH.n
        return queue

    def _clock(self) -> Clock:
        clock: Clock = self.policy.clock or _clock._default.clock  # type: ignore[assignment]
        return clock

    def _waited(self, queue: PermitQueue, got: bool, started: float, clock: Clock) -> None:
        waited = clock.monotonic() - started
        if BUS.subs:
            name = "resilience.bounded.wait" if got else "resilience.bounded.timeout"
            emit(
                name,
                {"waited": waited, "queue_depth": float(len(queue.waiters))},
                {
                    "key": self.key,
                    "name": self.name,
                    "limit": self.policy.limit,
                    "weight": self.policy.weight,
                },
            )
        if not got:
            timeout = waited if self.timeout is None else self.timeout
            raise BoundedTimeoutError(
                self.key, limit=self.policy.limit, weight=self.policy.weight, timeout=timeout
            )

    def _wait_sync(self, queue: PermitQueue) -> None:
        clock: Clock = _clock.SYSTEM_CLOCK  # threads block on a real lock: measure real time
        started = clock.monotonic()
        got = queue.acquire(self.policy.weight, self.timeout)
        self._waited(queue, got, started, clock)

    async def _wait_async(self, queue: PermitQueue) -> None:
        clock = self._clock()
        started = clock.monotonic()
        got = await queue.acquire_async(self.policy.weight, self.timeout, clock)
        self._waited(queue, got, started, clock)

    # -- a remote store (Redis) ----------------------------------------------------------

    def _unavailable(self, error: StoreUnavailableError) -> None:
        """The store is unreachable: raise, or (fail-open) say so and run without permits."""
        store_unavailable(error, decorator="bounded", fail_open=self.policy.fail_open)

    def _release_failed(self, error: StoreUnavailableError) -> None:
        """A release did not reach the store: its lease expires by itself; never mask the call."""
        with contextlib.suppress(StoreUnavailableError):
            self._unavailable(error)

    def _run_remote(
        self,
        queue: PermitQueue,
        call_next: Runner,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        weight = self.policy.weight
        try:
            if queue.waiters or not queue.backend.try_acquire(weight):
                self._wait_sync(queue)
        except StoreUnavailableError as error:
            self._unavailable(error)
            return call_next(wrapped, instance, args, kwargs)
        try:
            return call_next(wrapped, instance, args, kwargs)
        finally:
            try:
                queue.release(weight)
            except StoreUnavailableError as error:
                self._release_failed(error)

    async def _arun_remote(
        self,
        queue: PermitQueue,
        call_next: Runner,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        weight = self.policy.weight
        try:
            if queue.waiters or not await queue.backend.atry_acquire(weight, self.timeout or None):
                await self._wait_async(queue)
        except StoreUnavailableError as error:
            self._unavailable(error)
            return await call_next(wrapped, instance, args, kwargs)
        try:
            return await call_next(wrapped, instance, args, kwargs)
        finally:
            try:
                await queue.arelease(weight)
            except StoreUnavailableError as error:
                self._release_failed(error)

    def build_sync(self, call_next: Runner) -> Runner:
        layer = self
        switches = _config.state
        epoch = EPOCH
        weight = self.policy.weight

        def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not switches.active:
                return call_next(wrapped, instance, args, kwargs)
            queue = layer._queue if layer._epoch == epoch.n else layer._refresh()
            if layer._remote:
                return layer._run_remote(queue, call_next, wrapped, instance, args, kwargs)
            if queue.waiters or not queue.backend.try_acquire(weight):
                layer._wait_sync(queue)
            try:
                return call_next(wrapped, instance, args, kwargs)
            finally:
                queue.release(weight)

        return run

    def build_async(self, call_next: Runner) -> Runner:
        layer = self
        switches = _config.state
        epoch = EPOCH
        weight = self.policy.weight

        async def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not switches.active:
                return await call_next(wrapped, instance, args, kwargs)
            queue = layer._queue if layer._epoch == epoch.n else layer._refresh()
            if layer._remote:
                return await layer._arun_remote(queue, call_next, wrapped, instance, args, kwargs)
            if queue.waiters or not queue.backend.try_acquire(weight):
                await layer._wait_async(queue)
            try:
                return await call_next(wrapped, instance, args, kwargs)
            finally:
                queue.release(weight)

        return run


@overload
def bounded(func: classmethod[T, P, R], /) -> classmethod[T, P, R]: ...
@overload
def bounded(func: staticmethod[P, R], /) -> staticmethod[P, R]: ...
@overload
def bounded(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def bounded(
    policy: BoundedPolicy | None = None, /, **fields: Unpack[BoundedFields]
) -> Decorator[BoundedPolicy]: ...
def bounded(policy: Any = None, /, **fields: Any) -> Any:
    """
    Let at most *limit* units of weight run at once; callers wait their turn in order.

    Use with a policy (``@bounded(BoundedPolicy(limit=10))``) or its fields
    (``@bounded(limit=10, key="db", weight=2)``). Works on sync functions (threads) and
    async functions (tasks), methods, classmethods and staticmethods; threads and tasks
    may share one key. Permits are released on return, exception and cancellation.

    Raises:
        BoundedTimeoutError: When no permits were granted within ``timeout`` seconds.
        TypeError: At decoration time, for generator functions and wrong types.
        ValueError: At decoration time, for out-of-range fields (a weight above the
            limit), or a key that already has a pool of another size.

    .. versionadded:: 0.1.0
    """
    if is_target(policy) and not fields:
        msg = "@bounded needs a limit: use @bounded(limit=...)"
        raise TypeError(msg)
    return Decorator(policy_from(BoundedPolicy, "bounded", policy, fields), BoundedLayer)
