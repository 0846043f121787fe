"""
``MemoryStore``: shared state for one process, the default store of every stateful decorator.

A store hands out *backends*: one object per (concern, name/key) that keeps that state and
applies each transition atomically. Decorators with the same name/key on the same store get
the same backend, so they share one breaker, one budget, one window or one pool.

Each concern's package (``_breaker``, ``_rate``, ``_bounded``...) defines the backend protocol
it needs and its memory implementation; this module registers them by name (imported on
first use); a store for another medium (Redis) registers its own implementations of the same
protocols, so a decorator asks ``store.backend(concern, key, policy)`` without knowing the
medium.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from resilience import _clock
from resilience._config import on_reset
from resilience.stores._registry import BackendRegistry


if TYPE_CHECKING:
    from resilience._snapshot import Snapshot


__all__ = ["DEFAULT_STORE", "MemoryStore"]


class MemoryStore(BackendRegistry):
    """
    Keeps breakers, rate budgets, backoff windows and permit pools in this process's memory.

    ``MemoryStore()`` is the default of every policy's ``store=``; pass your own instance to
    keep a group of decorators apart from the rest of the process.

    Memory stays bounded as keys come and go: state that nothing holds and that is idle
    past its own horizon (a closed window, a rate log older than *per*, a pool with no
    permit held, a closed breaker with nothing counted, a spent budget window) is released
    every so many new keys, or at once by ``sweep()``.

    Args:
        max_keys: The most backends kept; past it the least recently used that no
            decorator holds are released even if not idle (None: no cap). For key spaces
            with no bound (a limiter per user, a breaker per URL).

    .. versionadded:: 0.1.0
    """

    __module__ = "resilience.stores"

    def peek(self, concern: str, key: str) -> Any:
        """Return the backend of *concern* for *key*, or None if nothing made it yet."""
        return self._backends.get((concern, key))

    def keys(self, concern: str) -> list[str]:
        """Return the keys that have a backend of *concern*."""
        return [key for (kind, key) in list(self._backends) if kind == concern]

    def snapshot(self) -> Snapshot:
        """
        Read every breaker, limiter, window, pool, budget, quota and throttle here, changing nothing.

        Each backend is read under its own lock, so every record is consistent with itself.
        """
        from resilience._snapshot import Snapshot  # noqa: PLC0415 - loaded with the view

        items = list(self._backends.items())
        rated = {key for (concern, key), _ in items if concern == "rate"}
        queues = {key: queue for (concern, key), queue in items if concern == "pool.queue"}
        breakers, limiters, pools, budgets, throttles = [], [], [], [], []
        for (concern, key), backend in items:
            if getattr(backend, "snapshot", None) is None:
                continue
            if concern == "breaker":
                if not backend.retired:
                    breakers.append(backend.snapshot())
            elif concern == "rate" or (concern == "window" and key not in rated):
                limiters.append(backend.snapshot(key))
            elif concern == "pool":
                queue = queues.get(key)
                waiting = len(queue.waiters) if queue is not None else 0
                pools.append(replace(backend.snapshot(key), waiting=waiting))
            elif concern in ("budget", "tokens"):
                budgets.append(backend.snapshot(key))
            elif concern == "throttle":
                throttles.append(backend.snapshot(key))
        clock = _clock.current_clock()
        return Snapshot.of(clock.time(), "memory", breakers, limiters, pools, budgets, throttles)

    def clear(self) -> None:
        """Forget every backend (for test isolation)."""
        self._forget_backends()

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._backends)} backends)"


MemoryStore.register("breaker", "resilience._breaker.memory:MemoryBreaker")
MemoryStore.register("rate", "resilience._rate.state:memory_rate")
MemoryStore.register("window", "resilience._rate.window:memory_window")
MemoryStore.register("pool", "resilience._bounded.pool:memory_pool")
MemoryStore.register("pool.queue", "resilience._bounded.pool:permit_queue")
MemoryStore.register("budget", "resilience._budget.state:memory_budget")
MemoryStore.register("throttle", "resilience._throttle.state:memory_throttle")
MemoryStore.register("tokens", "resilience._budget.quota:memory_tokens")

DEFAULT_STORE = MemoryStore()
on_reset(DEFAULT_STORE.clear)
