"""
``@bounded``: at most *limit* units of weight run at once, for threads and asyncio tasks.

This module is the decorator's public face: ``bounded()`` with its overloads and
``BoundedFields``. The pool's parts live beside it:

- ``pool``: the ``PoolBackend`` protocol every store implements, ``MemoryPoolBackend`` (a
  counter under a lock) and ``PermitQueue``, the per-process FIFO where threads and tasks
  wait their turn (how grants, timeouts and cancellation meet is in its docstring); it
  registers the ``"pool"`` and ``"pool.queue"`` store factories;
- ``layer``: ``BoundedLayer``, the sync and async drivers that take permits before the call
  and give them back after it;
- ``redis``: the pool as Redis leases, the same accounting as ``MemoryPoolBackend``.
- ``redis_adaptive``: an ``AdaptiveLimit``'s live limit in Redis, fed by every process.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypedDict, TypeVar, Unpack, overload

from resilience._bounded.layer import BoundedLayer
from resilience._decorating import Decorator, is_target, policy_from
from resilience._policies import BoundedPolicy
from resilience.stores._memory import DEFAULT_STORE


if TYPE_CHECKING:
    from resilience._bounded.adaptive import AdaptiveLimit
    from resilience._bounded.pool import PermitQueue
    from resilience.typing import Clock


__all__ = ["BoundedFields", "BoundedPool", "bounded", "get_bounded"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class BoundedFields(TypedDict, total=False):
    """The keyword arguments ``@bounded(...)`` accepts: ``BoundedPolicy``'s fields."""

    limit: int | AdaptiveLimit
    key: str | None
    weight: int
    timeout: float | timedelta | None
    store: Any
    clock: Clock | None
    fail_open: bool


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


class BoundedPool:
    """
    A live view of one ``@bounded`` key's pool: its limit, the units held, the callers waiting.

    Returned by ``get_bounded(key)``. Each attribute is read when asked, so the view follows
    an ``AdaptiveLimit`` as it moves.

    .. versionadded:: 0.2.0
    """

    __slots__ = ("_last", "key", "store")

    def __init__(self, key: str, store: Any) -> None:
        self.key = key
        self.store = store
        self._last = self._queue()

    def _queue(self) -> PermitQueue:
        queue: PermitQueue | None = self.store.peek("pool.queue", self.key)
        if queue is not None:
            self._last = queue
            return queue
        return self._last

    @property
    def limit(self) -> int:
        """The live limit in units (an ``AdaptiveLimit``'s current value; Redis: read now)."""
        backend: Any = self._queue().backend
        live = getattr(backend, "live", None)  # a shared adaptive pool: its limit is remote
        return int(backend.limit if live is None else live()[0])

    @property
    def in_use(self) -> int:
        """The units held now by running calls (every process's, for Redis)."""
        backend: Any = self._queue().backend
        live = getattr(backend, "live", None)
        if live is not None:
            return int(live()[1])
        return int(backend.limit - backend.available())

    @property
    def waiting(self) -> int:
        """The callers of this process waiting for permits now."""
        return len(self._queue().waiters)

    def __repr__(self) -> str:
        return (
            f"<BoundedPool {self.key!r} limit={self.limit} in_use={self.in_use} "
            f"waiting={self.waiting}>"
        )


def get_bounded(key: str, *, store: Any = None) -> BoundedPool:
    """
    Return a live view of the pool that every ``@bounded(key=key)`` shares.

    Args:
        key: The pool's key (a decorated callable's qualified name if none was given).
        store: The store it lives in (default: this process's memory).

    Raises:
        KeyError: If no call or decorator has made a pool of that key in that store yet.

    .. versionadded:: 0.2.0
    """
    where = DEFAULT_STORE if store is None else store
    if where.peek("pool.queue", key) is None:
        known = ", ".join(sorted(where.keys("pool.queue"))) or "none"
        msg = f"no @bounded pool with key {key!r} in {where!r}; known: {known}"
        raise KeyError(msg)
    return BoundedPool(key, where)
